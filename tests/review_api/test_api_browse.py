"""The lead's item browser (GET /runs/{id}/items): every filter and their combinations against a brute-force
reading of the same reviews, keyset pages, reviews side by side, and 422s that name the bad value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tests.support.review import ReviewEnv, env_on_both_stores

CHOICES = [{"verdict": "not_edge_case"}, {"verdict": "edge_case", "category": "debris"},
           {"verdict": "edge_case", "category": "other"}, {"verdict": "unsure"}]

env = env_on_both_stores()  # each test runs on SQLite and on PostgreSQL


def _all_pages(env: ReviewEnv, limit: int = 5, **filters: Any) -> tuple[int, list[dict[str, Any]]]:
    items: list[dict[str, Any]] = []
    after: int | None = None
    totals = set()
    while True:
        params = {**filters, "limit": limit, **({"after_id": after} if after is not None else {})}
        r = env.client.get("/runs/run-small/items", params=params, headers=env.auth("lead"))
        assert r.status_code == 200, r.text
        page = r.json()
        totals.add(page["total"])
        assert len(page["items"]) <= limit
        items += page["items"]
        after = page["next_after_id"]
        if after is None:
            break
        assert after == page["items"][-1]["item_id"]
    assert len(totals) == 1  # every page tells the same total
    return totals.pop(), items


def test_filters_pages_and_reviews_side_by_side(env: ReviewEnv, run_dirs: dict[str, Path]) -> None:
    env.import_run(run_dirs["small"], overlap_fraction=0.5, overlap_reviews=2)
    rng = np.random.default_rng(3)
    labels: dict[int, dict[str, str]] = {}
    active = ["ana", "ben", "cho"]
    while active:
        for name in list(active):
            held = env.next(name)
            if held is None:
                active.remove(name)
                continue
            body = CHOICES[int(rng.integers(0, 4))]
            assert env.decide(name, held["item"]["id"], **body).status_code == 201
            labels.setdefault(held["item"]["id"], {})[name] = body.get("category") or body["verdict"]
    lead = env.auth("lead")
    amended = next(i for i, v in labels.items() if "cho" in v)
    r = env.client.put(f"/items/{amended}/decisions/mine", json=CHOICES[1], headers=env.auth("cho"))
    if r.status_code == 200:
        labels[amended]["cho"] = "debris"
    gold = next(i for i in sorted(labels) if i != amended)
    assert env.client.post(f"/items/{gold}/resolve", headers=lead,
                           json={**CHOICES[0], "make_gold": True}).status_code == 200
    views = {i: env.client.get(f"/items/{i}/review", headers=lead).json() for i in range(1, 25)}
    ids = {name: env.client.get("/me", headers=env.auth(name)).json()["id"] for name in ("ana", "ben", "cho")}

    def expect(**f: Any) -> list[int]:
        out = []
        for i, v in sorted(views.items()):
            votes = labels.get(i, {})
            c = v["consensus"]
            if "status" in f and c["status"] != f["status"]:
                continue
            if "disagreement" in f and (len(set(votes.values())) > 1) != f["disagreement"]:
                continue
            if "reviewer" in f and f["reviewer"] not in votes:
                continue
            if "category" in f and c["category"] != f["category"] and f["category"] not in votes.values():
                continue
            if "gold" in f and v["is_gold"] != f["gold"]:
                continue
            out.append(i)
        return out

    cases: list[dict[str, Any]] = [
        {}, {"status": "complete"}, {"status": "escalated"}, {"status": "gold"}, {"disagreement": True},
        {"disagreement": False}, {"reviewer": "ana"}, {"reviewer": "cho"}, {"category": "debris"},
        {"category": "other"}, {"gold": True}, {"gold": False}, {"status": "complete", "disagreement": True},
        {"reviewer": "ben", "category": "debris", "disagreement": True}, {"status": "queued"},
    ]
    for f in cases:
        params = {("reviewer_id" if k == "reviewer" else k): (ids[v] if k == "reviewer" else
                                                             str(v).lower() if isinstance(v, bool) else v)
                  for k, v in f.items()}
        total, got = _all_pages(env, **params)
        want = expect(**f)
        assert [g["item_id"] for g in got] == want and total == len(want), f
    assert expect(disagreement=True) and expect(status="escalated") and expect(gold=True) == [gold]

    total, everything = _all_pages(env, limit=500)
    assert total == 24
    for row in everything:
        v = views[row["item_id"]]
        assert (row["status"], row["n_decisions"], row["is_gold"]) == (v["consensus"]["status"], v["n_decisions"],
                                                                     v["is_gold"])
        assert [(x["reviewer_name"], x["verdict"], x["category"]) for x in row["reviews"]] == [
            (d["reviewer"], d["verdict"], d["category"]) for d in v["decisions"]]
        assert {x["reviewer_name"]: (x["category"] or x["verdict"]) for x in row["reviews"]} == labels.get(
            row["item_id"], {})
        assert row["disagreement"] == (len(set(labels.get(row["item_id"], {}).values())) > 1)
        assert (row["escalation_text"] is None) == (row["escalation_reason"] is None)
    versions = {x["reviewer_name"]: x["version"] for x in everything[amended - 1]["reviews"]}
    assert versions["cho"] == (2 if r.status_code == 200 else 1)


def test_bad_filters_are_422_naming_them(env: ReviewEnv, run_dirs: dict[str, Path]) -> None:
    env.import_run(run_dirs["small"], overlap_fraction=0.0)
    lead = env.auth("lead")
    for params, field, words in [({"status": "bogus"}, "status", "bogus"),
                                 ({"category": "dragons"}, "category", "dragons"),
                                 ({"reviewer_id": 999}, "reviewer_id", "999"),
                                 ({"disagreement": "maybe"}, "disagreement", "maybe"),
                                 ({"gold": "perhaps"}, "gold", "perhaps"),
                                 ({"limit": 0}, "limit", "0"),
                                 ({"after_id": -1}, "after_id", "-1")]:
        r = env.client.get("/runs/run-small/items", params=params, headers=lead)
        assert r.status_code == 422, (params, r.text)
        (err,) = r.json()["detail"]
        assert err["loc"] == ["query", field] and words in err["msg"], err
    assert env.client.get("/runs/nope/items", headers=lead).status_code == 404
    assert env.client.get("/runs/run-small/items", headers=env.auth("ana")).status_code == 403
    page = env.client.get("/runs/run-small/items", params={"limit": 10}, headers=lead).json()
    assert (page["total"], len(page["items"]), page["next_after_id"]) == (24, 10, page["items"][-1]["item_id"])
    assert page["items"][0]["reviews"] == [] and page["items"][0]["disagreement"] is False


def test_nothing_a_lead_reads_leases_them_an_item(env: ReviewEnv, run_dirs: dict[str, Path]) -> None:
    """Only POST /queue/next leases; the lead view's reads (and a lead's progress) leave the queue alone."""
    from sqlalchemy import func, select

    from edgemine.review_api.db import Assignment

    env.import_run(run_dirs["small"], overlap_fraction=0.0)
    lead = env.auth("lead")
    for path in ("/me", "/me/progress", "/me/decisions", "/runs", "/runs/run-small", "/runs/run-small/metrics",
                 "/runs/run-small/items", "/escalations", "/items/1/review", "/items/1/history"):
        assert env.client.get(path, headers=lead).status_code == 200, path
    with env.app_state.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Assignment)) == 0
    assert env.next("lead") is not None  # when the lead chooses to review, they get an item like anyone
