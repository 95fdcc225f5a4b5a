"""Publish from a real review store: decisions made through the HTTP API become Delta rows."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from edgemine.jobs.datasets import dataset_log, read_dataset
from edgemine.jobs.publish import SplitPolicy, publish_from_review, watch_and_publish
from tests.support.review import ReviewEnv, make_env, make_run_dir


@pytest.fixture
def review(tmp_path: Path, synth_logs: Path, reference_logs: Path) -> Iterator[tuple[ReviewEnv, Path, str]]:
    run = make_run_dir(tmp_path / "run", synth_logs, reference_logs, run_id="run-pub", n=16)
    env = make_env(f"sqlite:///{tmp_path / 'review.db'}", tmp_path)
    with env.client:
        env.import_run(run, overlap_fraction=0.0, gold_fraction=0.0, gold_rate=0.0)
        yield env, synth_logs, f"sqlite:///{tmp_path / 'review.db'}"


def _truth(logs: Path) -> dict[str, dict]:
    return {r["frame_id"]: r for r in pq.read_table(logs / "ground_truth.parquet").to_pylist()}


def _triage(env: ReviewEnv, truth: dict[str, dict], *, limit: int | None = None) -> dict[str, float]:
    """Reviewers answer from ground truth; returns frame_id -> wall time of the decision's 2xx."""
    acked: dict[str, float] = {}
    names = ["ana", "ben", "cho"]
    k = 0
    while limit is None or len(acked) < limit:
        env.clock.now = datetime.now(UTC)  # decisions carry wall-clock time, so latency is real
        got = env.next(names[k % 3])
        if got is None:
            k += 1
            if k > 6:
                break
            continue
        item = got["item"]
        g = truth[item["frame_id"]]
        body = {"verdict": "edge_case", "category": g["category"]} if g["is_rare"] else {"verdict": "not_edge_case"}
        r = env.decide(names[k % 3], item["id"], **body)
        assert r.status_code == 201, r.text
        acked[item["frame_id"]] = time.time()
        k += 1
    return acked


def test_confirmed_decisions_become_exactly_the_published_rows(review: tuple[ReviewEnv, Path, str],
                                                               tmp_path: Path) -> None:
    env, logs, url = review
    truth = _truth(logs)
    _triage(env, truth)
    ds = str(tmp_path / "edge_cases")
    out = publish_from_review(env.app_state.db, ds, policy=SplitPolicy())
    table = read_dataset(f"{ds}@v{out.result.version}")
    rare_ids = {f for f in pq.read_table(tmp_path / "run" / "candidates.parquet").column("frame_id").to_pylist()
                if truth[f]["is_rare"]}
    assert set(table.column("frame_id").to_pylist()) == rare_ids
    cats = dict(zip(table.column("frame_id").to_pylist(), table.column("category").to_pylist(), strict=True))
    assert all(cats[f] == truth[f]["category"] for f in cats)
    assert set(table.column("n_reviews").to_pylist()) == {1}
    assert "weather" in table.column_names and "speed_mps" in table.column_names  # manifest metadata carried
    lineage = dataset_log(ds)[0]["lineage"]
    assert lineage["mining_runs"] == ["run-pub"] and lineage["reviewers"] == 3
    assert lineage["review_policy"]["run-pub"]["overlap_fraction"] == 0.0
    again = publish_from_review(url, ds, policy=SplitPolicy())
    assert again.result.version is None and again.result.added == 0


def test_continuous_publishing_makes_decisions_readable_within_seconds(review: tuple[ReviewEnv, Path, str],
                                                                       tmp_path: Path) -> None:
    env, logs, url = review
    ds = str(tmp_path / "edge_cases")
    stop = threading.Event()
    published = []
    worker = threading.Thread(target=lambda: published.extend(
        watch_and_publish(url, ds, interval_s=1.0, min_new=3, stop=stop, poll_s=0.2)))
    worker.start()
    try:
        acked = _triage(env, _truth(logs))
        deadline = time.time() + 30
        rare = {f for f, r in _truth(logs).items() if r["is_rare"] and f in acked}
        while time.time() < deadline:
            try:
                if set(read_dataset(ds, columns=["frame_id"]).column("frame_id").to_pylist()) == rare:
                    break
            except Exception:  # the table does not exist until the first publish
                pass
            time.sleep(0.2)
    finally:
        stop.set()
        worker.join(timeout=60)
    latencies = [x for p in published for x in p.latencies_s]
    assert len(latencies) == len(rare) > 0
    assert max(latencies) < 10.0, latencies
    assert len(dataset_log(ds)) >= 1
