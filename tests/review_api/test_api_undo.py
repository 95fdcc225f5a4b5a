"""Amend and undo your own decision through HTTP: who may, for how long, and the audit trail that keeps every
version (consensus, metrics and confirmed_items read the latest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgemine.review_api import storage
from tests.support.review import SPLIT_2_1, T0, UNANIMOUS_3, ReviewEnv, env_on_both_stores

DEBRIS = {"verdict": "edge_case", "category": "debris"}
NOT = {"verdict": "not_edge_case"}

env = env_on_both_stores()  # each test runs on SQLite and on PostgreSQL


def _put(env: ReviewEnv, name: str, item_id: int, **body: Any) -> Any:
    return env.client.put(f"/items/{item_id}/decisions/mine", json=body, headers=env.auth(name))


def _undo(env: ReviewEnv, name: str, item_id: int) -> Any:
    return env.client.delete(f"/items/{item_id}/decisions/mine", headers=env.auth(name))


def _consensus(env: ReviewEnv, item_id: int) -> dict[str, Any]:
    view = env.client.get(f"/items/{item_id}/review", headers=env.auth("lead")).json()
    return {**view["consensus"], "n_decisions": view["n_decisions"], "decisions": view["decisions"]}


def test_amend_and_undo_your_own_decision_within_the_window(env: ReviewEnv, run_dirs: dict[str, Path]) -> None:
    env.import_run(run_dirs["small"], overlap_fraction=0.0)
    first = env.next("ana")["item"]["id"]  # type: ignore[index]
    assert env.decide("ana", first, notes="cone", **DEBRIS).status_code == 201
    assert _consensus(env, first)["category"] == "debris"
    env.clock.advance(30)
    r = _put(env, "ana", first, root_causes=["occlusion"], seconds=2.0, **NOT)
    assert r.status_code == 200, r.text
    amended = r.json()
    assert (amended["verdict"], amended["category"], amended["version"]) == ("not_edge_case", None, 2)
    assert amended["decided_at"] == "2026-03-01T09:00:00Z"  # the window runs from the first answer
    c = _consensus(env, first)
    assert (c["status"], c["verdict"], c["category"], c["method"]) == ("complete", "not_edge_case", None, "majority")
    assert [d["version"] for d in c["decisions"]] == [2]
    # only your own: someone else's decision is not there to change
    assert _put(env, "ben", first, **DEBRIS).status_code == 404
    assert _undo(env, "ben", first).status_code == 404
    assert _put(env, "ana", 999, **DEBRIS).status_code == 404
    # invalid amendments are 422 naming the field, like a first decision
    bad = _put(env, "ana", first, verdict="edge_case", category="dragons")
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "category"

    mine = env.client.get("/me/decisions", params={"run_id": "run-small"}, headers=env.auth("ana")).json()
    assert [(d["item_id"], d["version"], d["can_change"], d["why_not"]) for d in mine] == [(first, 2, True, None)]
    assert mine[0]["change_until"] == "2026-03-01T09:10:00Z" and mine[0]["verdict"] == "not_edge_case"

    # undo while holding a lease on the next item: that item goes back to the queue, the undone one comes back
    second = env.next("ana")["item"]["id"]  # type: ignore[index]
    env.clock.advance(10)
    r = _undo(env, "ana", first)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"lease", "item"} and body["item"]["id"] == body["lease"]["item_id"] == first
    assert body["lease"]["expires_at"] == "2026-03-01T09:10:40Z"  # a fresh lease of the run's length
    c = _consensus(env, first)
    assert (c["status"], c["verdict"], c["n_decisions"], c["decisions"]) == ("queued", None, 0, [])
    assert env.next("ana")["item"]["id"] == first  # type: ignore[index]  # held: the page shows it again
    assert env.next("ben")["item"]["id"] == second  # type: ignore[index]  # dropped lease: back in the queue
    assert env.client.get("/me/decisions", headers=env.auth("ana")).json() == []
    env.clock.advance(5)
    redo = env.decide("ana", first, **DEBRIS)
    assert redo.status_code == 201 and redo.json()["version"] == 1
    assert _consensus(env, first)["category"] == "debris"

    history = env.client.get(f"/items/{first}/history", headers=env.auth("ana")).json()
    assert [(h["action"], h["at"], h["reviewer_name"]) for h in history] == [
        ("decide", "2026-03-01T09:00:00Z", "ana"), ("amend", "2026-03-01T09:00:30Z", "ana"),
        ("undo", "2026-03-01T09:00:40Z", "ana"), ("decide", "2026-03-01T09:00:45Z", "ana")]
    assert history[0]["before"] is None
    assert history[0]["after"] == {"verdict": "edge_case", "category": "debris", "root_causes": [], "notes": "cone"}
    assert history[1]["before"] == history[0]["after"]
    assert history[1]["after"] == {"verdict": "not_edge_case", "category": None, "root_causes": ["occlusion"],
                                   "notes": None}
    assert history[2]["before"] == history[1]["after"] and history[2]["after"] is None
    # a reviewer who never touched the item gets the same 404 as a missing item; a lead sees everything
    assert env.client.get(f"/items/{first}/history", headers=env.auth("cho")).status_code == 404
    assert env.client.get(f"/items/{first}/history", headers=env.auth("lead")).json() == history

    # the window ends 600 s (the default) after the decision was made
    env.clock.advance(599)
    assert _put(env, "ana", first, **NOT).status_code == 200
    env.clock.advance(1)
    for r in (_put(env, "ana", first, **DEBRIS), _undo(env, "ana", first)):
        assert r.status_code == 409 and "10 min window" in r.json()["detail"] and "ended" in r.json()["detail"]
    (row,) = env.client.get("/me/decisions", headers=env.auth("ana")).json()
    assert (row["can_change"], row["change_until"]) == (False, "2026-03-01T09:10:45Z")
    assert "window" in row["why_not"]


def test_lead_resolution_and_publication_are_final(env: ReviewEnv, run_dirs: dict[str, Path],
                                                   synth_logs: Path) -> None:
    env.import_run(run_dirs["small"], ground_truth=str(synth_logs / "ground_truth.parquet"), gold_fraction=0.25,
                   gold_rate=0.5, overlap_fraction=0.0, amend_window_seconds=900)
    lead = env.auth("lead")
    assert env.client.get("/runs/run-small", headers=lead).json()["amend_window_seconds"] == 900
    decided: dict[str, list[int]] = {"gold": [], "regular": []}
    while len(decided["regular"]) < 3 or not decided["gold"]:
        held = env.next("ana")
        assert held is not None
        item_id = held["item"]["id"]
        is_gold = env.client.get(f"/items/{item_id}/review", headers=lead).json()["is_gold"]
        decided["gold" if is_gold else "regular"].append(item_id)
        assert env.decide("ana", item_id, **NOT).status_code == 201
    gold, (resolved, published, free, *_) = decided["gold"][0], decided["regular"]
    r = env.client.post(f"/items/{resolved}/resolve", headers=lead, json=DEBRIS)
    assert r.status_code == 200
    with env.app_state.db.write() as s:
        assert storage.mark_published(s, item_ids=[published, gold], dataset="/data/edge", version=3, now=T0) == 2
        assert storage.mark_published(s, item_ids=[published], dataset="/data/edge", version=3, now=T0) == 0
    expected = {resolved: "a lead resolved", published: "published in dataset '/data/edge' version 3"}
    for item_id, words in expected.items():
        for r in (_put(env, "ana", item_id, **DEBRIS), _undo(env, "ana", item_id)):
            assert r.status_code == 409 and words in r.json()["detail"], r.text
    rows = {d["item_id"]: d for d in env.client.get("/me/decisions", headers=env.auth("ana")).json()}
    for item_id, words in expected.items():
        assert not rows[item_id]["can_change"] and words in rows[item_id]["why_not"]
        assert rows[item_id]["change_until"] is None  # final for good, not for a while
    assert rows[free]["can_change"] and _put(env, "ana", free, **DEBRIS).status_code == 200
    # the lead's resolution is in the trail, before (the majority answer) and after
    trail = env.client.get(f"/items/{resolved}/history", headers=lead).json()
    assert [h["action"] for h in trail] == ["decide", "resolve"]
    assert trail[1]["reviewer_name"] == "lead" and trail[1]["before"]["verdict"] == "not_edge_case"
    assert trail[1]["after"]["category"] == "debris"
    assert [h["action"] for h in env.client.get(f"/items/{resolved}/history", headers=env.auth("ana")).json()] == [
        "decide"]  # a reviewer sees only their own entries

    # a gold item looks like any other to its reviewer, here too: the window alone applies (even though its known
    # answer is published), and a change is scored again; the item's known answer never moves
    assert rows[gold] == {**rows[free], **{k: rows[gold][k] for k in ("decision_id", "item_id", "frame_id",
                                                                       "decided_at", "change_until", "version")}}
    answer = env.client.get(f"/items/{gold}/review", headers=lead).json()
    right = {"verdict": answer["gold_verdict"], **({"category": answer["gold_category"]}
                                                   if answer["gold_category"] else {})}
    wrong = NOT if right != NOT else DEBRIS

    def scored() -> tuple[Any, Any]:
        view = env.client.get(f"/items/{gold}/review", headers=lead).json()
        return view["decisions"][0]["gold_correct"], (view["consensus"]["status"], view["consensus"]["verdict"])

    known = scored()[1]
    assert _put(env, "ana", gold, **right).status_code == 200 and scored() == (True, known)
    assert _put(env, "ana", gold, **wrong).status_code == 200 and scored() == (False, known)
    r = _undo(env, "ana", gold)
    assert r.status_code == 200 and r.json()["item"]["id"] == gold
    view = env.client.get(f"/items/{gold}/review", headers=lead).json()
    assert (view["decisions"], view["consensus"]["status"]) == ([], "gold")
    assert env.decide("ana", gold, **right).status_code == 201 and scored() == (True, known)

    # the window is a run policy setting: 0 closes it
    r = env.client.patch("/runs/run-small", json={"amend_window_seconds": 0}, headers=lead)
    assert r.status_code == 200 and r.json()["amend_window_seconds"] == 0
    r = _put(env, "ana", free, **NOT)
    assert r.status_code == 409 and "0 s window" in r.json()["detail"]
    bad = env.client.patch("/runs/run-small", json={"amend_window_seconds": -1}, headers=lead)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "amend_window_seconds"


def test_consensus_metrics_and_confirmed_items_use_the_latest_version(env: ReviewEnv,
                                                                      run_dirs: dict[str, Path]) -> None:
    env.import_run(run_dirs["other"], overlap_fraction=1.0, overlap_reviews=3)
    item = None
    for name, body in (("ana", DEBRIS), ("ben", DEBRIS), ("cho", NOT)):
        held = env.next(name)
        item = item or held["item"]["id"]  # type: ignore[index]
        assert held["item"]["id"] == item  # type: ignore[index]
        assert env.decide(name, item, **body).status_code == 201
    assert item is not None
    c = _consensus(env, item)
    assert (c["status"], c["category"]) == ("complete", "debris") and c["confidence"] == pytest.approx(SPLIT_2_1)
    assert _put(env, "cho", item, **DEBRIS).status_code == 200
    c = _consensus(env, item)
    assert (c["status"], c["category"]) == ("complete", "debris") and c["confidence"] == pytest.approx(UNANIMOUS_3)

    def confirmed() -> list[int]:
        with env.app_state.db.read() as s:
            return storage.confirmed_items(s, run_id="run-other").column("item_id").to_pylist()

    def agreement() -> dict[str, Any]:
        return env.client.get("/runs/run-other/metrics", headers=env.auth("lead")).json()["agreement"]

    assert confirmed() == [item] and agreement()["items"] == 1
    # two reviewers turn it round: the consensus follows, and the amended votes are what agreement counts
    assert _put(env, "ana", item, **NOT).status_code == 200
    assert _put(env, "ben", item, **NOT).status_code == 200
    c = _consensus(env, item)
    assert (c["status"], c["verdict"]) == ("complete", "not_edge_case") and confirmed() == []
    labels = {d["reviewer"]: d["category"] or d["verdict"] for d in c["decisions"]}
    assert labels == {"ana": "not_edge_case", "ben": "not_edge_case", "cho": "debris"}
    # an undo takes the review away: the item waits for a third review again, and is offered to someone new
    r = _undo(env, "cho", item)
    assert r.status_code == 200
    c = _consensus(env, item)
    assert (c["status"], c["n_decisions"], c["verdict"]) == ("queued", 2, None)
    assert agreement()["items"] == 1  # two reviews still make an overlap item
    assert env.decide("cho", item, **NOT).status_code == 201
    c = _consensus(env, item)
    assert (c["status"], c["verdict"]) == ("complete", "not_edge_case")
    assert c["confidence"] == pytest.approx(UNANIMOUS_3)
    # the export of decisions has one (the latest) row per reviewer
    with env.app_state.db.read() as s:
        rows = [t.to_pylist() for t in storage.iter_decisions(s, run_id="run-other")]
    assert sorted((r["reviewer"], r["verdict"]) for t in rows for r in t) == [
        ("ana", "not_edge_case"), ("ben", "not_edge_case"), ("cho", "not_edge_case")]


def test_dawid_skene_leaves_an_item_amended_since_its_snapshot_alone(env: ReviewEnv,
                                                                   run_dirs: dict[str, Path]) -> None:
    env.import_run(run_dirs["other"], overlap_fraction=1.0, overlap_reviews=3)
    item = None
    for name, body in (("ana", DEBRIS), ("ben", DEBRIS), ("cho", NOT)):
        held = env.next(name)
        item = item or held["item"]["id"]  # type: ignore[index]
        env.decide(name, item, **body)
    with env.app_state.db.read() as s:
        plan = storage.plan_consensus(s, run_id="run-other")
    assert [a.item_id for a in plan.answers if a.changed] == [item]
    env.clock.advance(1)
    assert _put(env, "ana", item, **NOT).status_code == 200  # majority is now not_edge_case 2/3
    with env.app_state.db.write() as s:
        report = storage.apply_consensus(s, plan=plan, now=env.clock())
    assert report.items_updated == 0
    c = _consensus(env, item)
    assert (c["method"], c["verdict"]) == ("majority", "not_edge_case")
