"""GET /me/progress: item k of N, your counts and pace from the store (they survive a reload), and at the end
of the queue what still waits and why, in words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgemine.review_api import storage
from tests.support.review import ReviewEnv, env_on_both_stores

NOT = {"verdict": "not_edge_case"}

env = env_on_both_stores()  # each test runs on SQLite and on PostgreSQL


def _progress(env: ReviewEnv, name: str, **params: Any) -> dict[str, Any]:
    r = env.client.get("/me/progress", params=params, headers=env.auth(name))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _reasons(p: dict[str, Any]) -> dict[str, tuple[int, str]]:
    return {w["reason"]: (w["count"], w["text"]) for w in p["waiting"]}


def test_counts_position_and_pace_come_from_the_store(env: ReviewEnv, run_dirs: dict[str, Path]) -> None:
    env.import_run(run_dirs["small"], overlap_fraction=0.0)
    for wait in (4, 8, 6):
        held = env.next("ana")
        env.clock.advance(wait)
        assert env.decide("ana", held["item"]["id"], **NOT).status_code == 201  # type: ignore[index]
    p = _progress(env, "ana")  # no run given: the run of ana's last decision
    assert p == {"run_id": "run-small", "total_items": 24, "done_items": 3, "position": 4, "mine_in_run": 3,
                 "mine_today": 3, "pace_s": 6.0, "queue_empty": False, "waiting": []}
    env.next("ana")  # a live lease: its run is the default
    assert _progress(env, "ana")["mine_in_run"] == 3
    fresh = _progress(env, "ben")  # nothing yet: the first active run
    assert (fresh["run_id"], fresh["mine_in_run"], fresh["pace_s"], fresh["position"]) == ("run-small", 0, None, 4)
    r = env.client.get("/me/progress", params={"run_id": "nope"}, headers=env.auth("ana"))
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    assert env.client.get("/me/progress").status_code == 401


def test_the_end_of_the_queue_says_what_waits_and_why(env: ReviewEnv, run_dirs: dict[str, Path]) -> None:
    report = env.import_run(run_dirs["other"], overlap_fraction=0.5, overlap_reviews=3, gold_fraction=0.0)
    k = report["overlap"]
    assert 0 < k < 12
    with env.app_state.db.write() as s:
        storage.deactivate_reviewer(s, name="cho")  # two reviewers left for items that need three
    lead = env.auth("lead")
    unsure_given = False
    active = ["ana", "ben"]
    while active:
        for name in list(active):
            held = env.next(name)
            if held is None:
                active.remove(name)
                continue
            item_id = held["item"]["id"]
            single = env.client.get(f"/items/{item_id}/review", headers=lead).json()["required_reviews"] == 1
            body = {"verdict": "unsure"} if single and not unsure_given else NOT
            unsure_given = unsure_given or body != NOT
            assert env.decide(name, item_id, **body).status_code == 201
    p = _progress(env, "ana")
    assert p["queue_empty"] and (p["total_items"], p["done_items"], p["position"]) == (12, 12 - k - 1, 12 - k)
    assert _reasons(p) == {
        "needs_more_reviewers": (k, f"{k} items wait for a 3rd reviewer; only 2 reviewers are active"),
        "escalated": (1, "1 item waits for a lead"),
    }
    warning = f"overlap_reviews=3 but only 2 reviewers are active: {k} items can never get 3 reviews"
    assert env.client.get("/runs/run-other", headers=lead).json()["warnings"] == [warning]
    assert [r["warnings"] for r in env.client.get("/runs", headers=lead).json()] == [[warning]]
    assert env.client.get("/runs/run-other/metrics", headers=lead).json()["warnings"] == [warning]

    env.add("dan")  # a third reviewer: the overlap items can finish, and wait for dan
    assert env.client.get("/runs/run-other", headers=lead).json()["warnings"] == []
    p = _progress(env, "ana")
    assert p["queue_empty"] and _reasons(p) == {
        "decided_by_you": (k, f"{k} items you decided wait for reviews from others"),
        "escalated": (1, "1 item waits for a lead"),
    }
    assert not _progress(env, "dan", run_id="run-other")["queue_empty"]
    r = env.client.patch("/runs/run-other", json={"active": False}, headers=lead)
    assert r.status_code == 200
    p = _progress(env, "dan", run_id="run-other")
    assert p["queue_empty"] and _reasons(p) == {
        "paused": (k, f"the run is paused: {k} items wait until a lead resumes it"),
        "escalated": (1, "1 item waits for a lead"),
    }


def test_items_others_hold_or_you_skipped(env: ReviewEnv, run_dirs: dict[str, Path]) -> None:
    env.import_run(run_dirs["other"], overlap_fraction=0.0, gold_fraction=0.0)
    held_by_ana = env.next("ana")["item"]["id"]  # type: ignore[index]
    skipped = env.next("ben")
    assert env.client.delete(f"/leases/{skipped['lease']['id']}", headers=env.auth("ben")).status_code == 204  # type: ignore[index]
    while (held := env.next("ben")) is not None:
        env.clock.advance(2)
        assert env.decide("ben", held["item"]["id"], **NOT).status_code == 201
    p = _progress(env, "ben")
    assert p["queue_empty"] and (p["done_items"], p["mine_in_run"], p["pace_s"]) == (10, 10, 2.0)
    assert _reasons(p) == {
        "skipped_by_you": (1, "1 item you skipped waits for other reviewers"),
        "leased_by_others": (1, "1 item is being reviewed by others; it returns within 10 min if not decided"),
    }
    assert not _progress(env, "ana")["queue_empty"]  # ana holds a lease
    env.clock.advance(600)  # ana's lease has run out: the item is ben's to take again
    p = _progress(env, "ben")
    assert not p["queue_empty"] and "leased_by_others" not in _reasons(p)
    assert env.next("ben")["item"]["id"] == held_by_ana  # type: ignore[index]
