"""Consensus, Dawid-Skene, agreement and reviewer metrics through HTTP, checked against reference libraries."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import krippendorff
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from tests.support.review import SPLIT_2_1, UNANIMOUS_3, ReviewEnv

Answer = Callable[[str, dict[str, Any]], dict[str, Any]]


def review_all(env: ReviewEnv, names: list[str], answer: Answer, *, seconds: float = 5.0) -> dict[int, dict[str, str]]:
    """Reviewers take turns (next -> decide) until the queue is empty for all; returns item -> reviewer -> label."""
    labels: dict[int, dict[str, str]] = {}
    active = list(names)
    while active:
        for name in list(active):
            held = env.next(name)
            if held is None:
                active.remove(name)
                continue
            body = answer(name, held["item"])
            r = env.decide(name, held["item"]["id"], seconds=seconds, **body)
            assert r.status_code == 201, r.text
            labels.setdefault(held["item"]["id"], {})[name] = body.get("category") or body["verdict"]
            env.clock.advance(1)
    return labels


def edge(category: str) -> dict[str, Any]:
    return {"verdict": "edge_case", "category": category}


NOT = {"verdict": "not_edge_case"}
UNSURE = {"verdict": "unsure"}


def test_majority_consensus_escalations_and_lead_resolution(env: ReviewEnv, run_dirs: dict[str, Path]) -> None:
    env.import_run(run_dirs["small"], overlap_fraction=1.0, overlap_reviews=3)
    script = {  # rank % 4 -> answers of ana, ben, cho
        0: (edge("debris"), edge("debris"), edge("debris")),
        1: (edge("debris"), edge("debris"), NOT),
        2: (edge("debris"), edge("other"), NOT),
        3: (UNSURE, UNSURE, NOT),
    }
    who = {"ana": 0, "ben": 1, "cho": 2}
    review_all(env, list(who), lambda name, item: script[item["rank"] % 4][who[name]])
    lead = env.auth("lead")
    views = {i["rank"]: i for i in (env.client.get(f"/items/{k}/review", headers=lead).json() for k in range(1, 25))}
    for rank, view in views.items():
        c = view["consensus"]
        assert view["n_decisions"] == 3 and len(view["decisions"]) == 3
        if rank % 4 == 0:
            assert (c["status"], c["category"], c["method"]) == ("complete", "debris", "majority")
            assert c["confidence"] == pytest.approx(UNANIMOUS_3) and c["confidence"] < 1.0
        elif rank % 4 == 1:
            assert (c["status"], c["verdict"], c["category"]) == ("complete", "edge_case", "debris")
            assert c["confidence"] == pytest.approx(SPLIT_2_1)
        elif rank % 4 == 2:
            assert (c["status"], c["escalation_reason"], c["verdict"]) == ("escalated", "tie", None)
        else:
            assert (c["status"], c["escalation_reason"]) == ("escalated", "low_agreement")
    escalations = env.client.get("/escalations", params={"run_id": "run-small"}, headers=lead).json()
    assert sorted(e["rank"] for e in escalations) == sorted(r for r in views if r % 4 in (2, 3))
    assert {e["reason"]: e["reason_text"] for e in escalations} == {
        "tie": "the reviews tie: two or more answers got the same number of votes",
        "low_agreement": "the reviewers disagree: the most chosen answer got 33% of the votes, below the run's "
                         "min_agreement of 60%",
    }
    tie = next(e for e in escalations if e["reason"] == "tie")
    assert tie["votes"] == {"debris": 1, "other": 1, "not_edge_case": 1}
    r = env.client.post(f"/items/{tie['item_id']}/resolve", headers=lead,
                        json={"verdict": "edge_case", "category": "debris", "root_cause": "perception_miss"})
    assert r.status_code == 200 and r.json()["consensus"]["status"] == "resolved"
    assert r.json()["consensus"]["method"] == "lead"
    r = env.client.post(f"/items/{tie['item_id']}/resolve", headers=lead, json={"verdict": "unsure"})
    assert r.status_code == 422
    left = env.client.get("/escalations", headers=lead).json()
    assert len(left) == len(escalations) - 1
    metrics = env.client.get("/runs/run-small/metrics", headers=lead).json()
    assert metrics["queue"]["by_status"]["escalated"] == len(left)
    assert metrics["queue"]["confirmed_edge_cases"] == 12 + 1
    assert metrics["consensus_methods"] == {"majority": 24 - 1, "lead": 1}


def test_dawid_skene_settles_what_majority_cannot(env: ReviewEnv, run_dirs: dict[str, Path]) -> None:
    """ana is right; ben calls every debris 'other'; cho says 'not an edge case' to everything.

    On debris items the three votes tie and majority escalates. Lead-confirmed gold items show how each
    reviewer errs, and Dawid-Skene then reads ben's 'other' as debris.
    """
    env.import_run(run_dirs["small"], overlap_fraction=1.0, overlap_reviews=3, gold_rate=0.5)
    lead = env.auth("lead")
    truth = {rank: ("debris" if rank % 2 else "not_edge_case") for rank in range(1, 25)}
    gold_ranks = {1, 2, 3, 4, 5, 6, 7, 8}
    for item_id in range(1, 25):  # ids follow ranks in a fresh store
        assert env.client.get(f"/items/{item_id}/review", headers=lead).json()["rank"] == item_id
    for rank in gold_ranks:
        body = {"verdict": "edge_case", "category": "debris"} if truth[rank] == "debris" else NOT
        r = env.client.post(f"/items/{rank}/resolve", headers=lead, json={**body, "make_gold": True})
        assert r.status_code == 200 and r.json()["is_gold"]

    def answer(name: str, item: dict[str, Any]) -> dict[str, Any]:
        t = truth[item["rank"]]
        if name == "cho":
            return NOT
        if t == "not_edge_case":
            return NOT
        return edge("debris") if name == "ana" else edge("other")

    labels = review_all(env, ["ana", "ben", "cho"], answer)
    gold_reviewed = [i for i in labels if i in gold_ranks]
    assert len(gold_reviewed) >= 3  # the gold items were interleaved
    debris_items = [r for r in range(9, 25) if truth[r] == "debris"]
    before = [env.client.get(f"/items/{r}/review", headers=lead).json()["consensus"] for r in debris_items]
    assert all(c["status"] == "escalated" and c["escalation_reason"] == "tie" for c in before)
    r = env.client.post("/runs/run-small/consensus", headers=lead)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["method"] == "dawid_skene" and report["converged"]
    assert report["items_considered"] == 16 and report["items_updated"] >= len(debris_items)
    # ~20 items each: the prior (0.8, DS_PRIOR_STRENGTH pseudo-votes a row) still holds ana's estimate below 0.95
    assert report["reviewer_accuracy"]["ana"] > 0.9 > report["reviewer_accuracy"]["cho"]
    for rank in range(9, 25):
        c = env.client.get(f"/items/{rank}/review", headers=lead).json()["consensus"]
        assert c["status"] == "complete" and c["method"] == "dawid_skene"
        assert (c["category"] or c["verdict"]) == truth[rank]
        assert 0.9 < c["confidence"] < 1.0
    for rank in gold_ranks:  # gold items keep their known answer
        c = env.client.get(f"/items/{rank}/review", headers=lead).json()["consensus"]
        assert (c["status"], c["method"]) == ("gold", "lead")


def test_agreement_and_reviewer_metrics_equal_reference_libraries(env: ReviewEnv, run_dirs: dict[str, Path]) -> None:
    env.import_run(run_dirs["small"], overlap_fraction=1.0, overlap_reviews=3)
    rng = np.random.default_rng(7)
    choices = [NOT, edge("debris"), edge("other"), UNSURE]
    truth = {rank: int(rng.integers(0, 4)) for rank in range(1, 25)}
    skill = {"ana": 0.9, "ben": 0.7, "cho": 0.5}

    def answer(name: str, item: dict[str, Any]) -> dict[str, Any]:
        right = rng.random() < skill[name]
        return choices[truth[item["rank"]] if right else int(rng.integers(0, 4))]

    labels = review_all(env, ["ana", "ben", "cho"], answer, seconds=6.0)
    metrics = env.client.get("/runs/run-small/metrics", headers=env.auth("lead")).json()
    agreement = metrics["agreement"]
    names = ["ana", "ben", "cho"]
    space = agreement["labels"]
    index = {lab: i for i, lab in enumerate(space)}
    items = sorted(labels)
    assert agreement["items"] == len(items) == 24
    matrix = np.array([[index[labels[i][n]] for n in names] for i in items])
    for pair in agreement["cohen_kappa_pairs"]:
        a, b = names.index(pair["a"]), names.index(pair["b"])
        ref = cohen_kappa_score(matrix[:, a], matrix[:, b], labels=list(range(len(space))))
        assert pair["kappa"] == pytest.approx(ref, abs=1e-12) and pair["items"] == pair["n"] == 24
    assert len(agreement["cohen_kappa_pairs"]) == 3
    assert agreement["cohen_kappa_mean"] == pytest.approx(np.mean([p["kappa"] for p in agreement["cohen_kappa_pairs"]]))
    table, _ = aggregate_raters(matrix, n_cat=len(space))
    assert agreement["fleiss_kappa"] == pytest.approx(sm_fleiss_kappa(table, method="fleiss"), abs=1e-12)
    assert (agreement["fleiss_items"], agreement["fleiss_raters"]) == (24, 3)
    ref_alpha = krippendorff.alpha(reliability_data=matrix.T.astype(float), level_of_measurement="nominal")
    assert agreement["krippendorff_alpha"] == pytest.approx(ref_alpha, abs=1e-12)
    # per reviewer: pace from the reported seconds, agreement with the consensus they helped form
    for row in metrics["reviewers"]:
        assert row["decisions"] == 24 and row["median_seconds"] == 6.0
        assert row["items_per_hour"] == pytest.approx(600.0)
        assert row["gold_accuracy"] is None
    for row in metrics["reviewers"]:  # leave-one-out: against the plurality of the other two, when there is one
        me = row["reviewer"]
        compared = agree = 0
        for i in items:
            others = [labels[i][n] for n in names if n != me and labels[i][n] != "unsure"]
            counts = sorted(((others.count(x), x) for x in set(others)), reverse=True)
            if not counts or (len(counts) > 1 and counts[0][0] == counts[1][0]):
                continue
            compared += 1
            agree += labels[i][me] == counts[0][1]
        assert row["agreement_n"] == row["consensus_compared"] == compared > 0
        assert row["agreement_with_consensus"] == pytest.approx(round(agree / compared, 4))
    queue = metrics["queue"]
    assert queue["waiting_reviews"] == 0 and queue["leased"] == 0 and queue["oldest_waiting_seconds"] is None
    assert not math.isnan(agreement["krippendorff_alpha"])


def test_queue_depth_age_cost_and_prometheus(tmp_path: Path, run_dirs: dict[str, Path]) -> None:
    from tests.support.review import make_env

    env = make_env(f"sqlite:///{tmp_path / 'r.db'}", tmp_path, reviewer_cost_per_hour=36.0)
    with env.client:
        env.import_run(run_dirs["small"], overlap_fraction=0.0)
        env.clock.advance(120)
        for k in range(3):
            held = env.next("ana")
            env.decide("ana", held["item"]["id"], seconds=100, **(edge("debris") if k else NOT))  # type: ignore[index]
        env.next("ben")
        m = env.client.get("/runs/run-small/metrics", headers=env.auth("lead")).json()
        q = m["queue"]
        assert (q["waiting_items"], q["leased"], q["by_status"]["complete"]) == (20, 1, 3)
        assert q["oldest_waiting_seconds"] == 120.0
        assert m["cost"] == pytest.approx(3.0) and m["cost_per_confirmed_edge_case"] == pytest.approx(1.5)
        text = env.client.get("/metrics", headers=env.auth("lead")).text
        assert 'edgemine_review_decisions_total{verdict="edge_case"} 2.0' in text
        assert 'edgemine_review_decisions_total{verdict="not_edge_case"} 1.0' in text
        assert 'edgemine_review_queue_waiting_reviews{run_id="run-small"} 20.0' in text
        assert 'edgemine_review_leases_live{run_id="run-small"} 1.0' in text
        assert 'edgemine_review_queue_oldest_age_seconds{run_id="run-small"} 120.0' in text
        assert 'edgemine_review_http_request_seconds_bucket{le="0.05",route="/queue/next"}' in text


def test_admin_import_endpoint_errors_name_the_problem(env: ReviewEnv, tmp_path: Path,
                                                       run_dirs: dict[str, Path]) -> None:
    admin = env.auth("admin")
    r = env.client.post("/runs/import", json={"run_dir": str(tmp_path / "nope")}, headers=admin)
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text('{"run_id": "x"}')
    pq.write_table(pa.table({"frame_id": ["a"], "rank": [1]}), broken / "candidates.parquet")
    r = env.client.post("/runs/import", json={"run_dir": str(broken)}, headers=admin)
    assert r.status_code == 422 and "uri" in r.json()["detail"][0]["msg"]
    r = env.client.post("/runs/import", json={"run_dir": str(run_dirs["other"]), "categories": ["unsure"]},
                        headers=admin)
    assert r.status_code == 422 and "unsure" in r.json()["detail"][0]["msg"]
    r = env.client.post("/runs/import", json={"run_dir": str(run_dirs["other"]), "overlap_reviews": 7},
                        headers=admin)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "overlap_reviews"]
    first = env.client.post("/runs/import", json={"run_dir": str(run_dirs["other"])}, headers=admin)
    again = env.client.post("/runs/import", json={"run_dir": str(run_dirs["other"])}, headers=admin)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["inserted"] == 0 and again.json()["items"] == first.json()["items"] == 12


def test_dawid_skene_reruns_in_the_background_after_a_third_review(tmp_path: Path,
                                                                     run_dirs: dict[str, Path]) -> None:
    from tests.support.review import make_env

    env = make_env(f"sqlite:///{tmp_path / 'r.db'}", tmp_path)
    env.app_state.settings = env.app_state.settings.model_copy(update={"ds_refresh_seconds": 30.0})
    with env.client:
        env.import_run(run_dirs["other"], overlap_fraction=1.0, overlap_reviews=3)
        first = None
        for name, body in (("ana", edge("debris")), ("ben", edge("debris")), ("cho", NOT)):
            held = env.next(name)
            first = first or held["item"]["id"]  # type: ignore[index]
            assert held["item"]["id"] == first  # type: ignore[index]
            assert env.decide(name, first, **body).status_code == 201
        c = env.client.get(f"/items/{first}/review", headers=env.auth("lead")).json()["consensus"]
        assert (c["method"], c["category"], c["status"]) == ("dawid_skene", "debris", "complete")
        # the refresh took some time: the next one waits at least 10x that, so a big run's EM can't hog the cores
        took = env.app_state.ds_last_seconds["run-other"]
        assert took > 0
        from edgemine.review_api.routes.items import DS_MAX_SHARE, _consensus_refresh_due

        env.app_state.ds_last_seconds["run-other"] = 10.0  # as if the EM had taken 10 s: wait 100 s, not 30 s
        env.app_state.ds_last_refresh["run-other"] = time.monotonic() - 50.0
        assert not _consensus_refresh_due(env.app_state, "run-other")
        env.app_state.ds_last_refresh["run-other"] = time.monotonic() - 10.0 / DS_MAX_SHARE - 1.0
        assert _consensus_refresh_due(env.app_state, "run-other")


def test_agreement_with_consensus_counts_overlap_items_only(env: ReviewEnv, run_dirs: dict[str, Path]) -> None:
    """Two reviewers who disagree on every overlap item agree with consensus 0.00 (n = the overlap items),
    not 1.00 from the single-review items where the consensus is their own answer; kappa carries its n."""
    report = env.import_run(run_dirs["other"], overlap_fraction=0.5, overlap_reviews=2, gold_fraction=0.0)
    k = report["overlap"]
    assert 0 < k < 12
    review_all(env, ["ana", "ben"], lambda name, item: edge("debris") if name == "ana" else NOT)
    m = env.client.get("/runs/run-other/metrics", headers=env.auth("lead")).json()
    rows = {r["reviewer"]: r for r in m["reviewers"]}
    for name in ("ana", "ben"):
        assert (rows[name]["agreement_with_consensus"], rows[name]["agreement_n"]) == (0.0, k)
    (pair,) = m["agreement"]["cohen_kappa_pairs"]
    assert (pair["n"], pair["kappa"]) == (k, 0.0)
    # with nothing but single reviews there is nothing to compare: null, n = 0
    env.import_run(run_dirs["small"], overlap_fraction=0.0, gold_fraction=0.0)
    review_all(env, ["ana"], lambda name, item: NOT)
    (row,) = env.client.get("/runs/run-small/metrics", headers=env.auth("lead")).json()["reviewers"]
    assert (row["agreement_with_consensus"], row["agreement_n"], row["decisions"]) == (None, 0, 24)


def test_leave_one_out_agreement_reference() -> None:
    from edgemine.review_api.storage.metrics import leave_one_out_agreement

    votes = {
        1: [(1, "debris"), (2, "debris"), (3, "not_edge_case")],  # 1 and 2 face a tie; 3 disagrees with debris
        2: [(1, "unsure"), (2, "other"), (3, "other")],  # 1's unsure disagrees; 2 and 3 agree (unsure: no vote)
        3: [(1, "debris"), (2, "unsure")],  # 2 disagrees with debris; 1 faces no vote at all
        4: [(1, "debris")],  # a single review: never compared
        5: [(1, "a"), (2, "b"), (3, "c")],  # each faces a tie among the others
    }
    assert leave_one_out_agreement(votes) == {1: (0, 1), 2: (1, 2), 3: (1, 2)}


def test_every_escalation_reason_has_words() -> None:
    from edgemine.mining.consensus import ESCALATION_REASONS
    from edgemine.review_api.storage import escalation_text

    texts = {r: escalation_text(r, confidence=0.5, min_agreement=0.6, ds_min_confidence=0.7, share=0.4)
             for r in (*ESCALATION_REASONS, "low_confidence")}
    assert "40%" in texts["low_agreement"] and "60%" in texts["low_agreement"]  # the share, not the confidence
    assert texts["no_votes"] == "every review said unsure, so there is no vote to count"
    assert "50%" in texts["low_confidence"] and "70%" in texts["low_confidence"]
    assert all(t and "_" not in t.replace("min_agreement", "").replace("ds_min_confidence", "") for t in texts.values())
    assert escalation_text(None) is None
