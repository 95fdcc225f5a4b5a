"""Publish from a real review store: decisions made through the HTTP API become Delta rows; amends and undos
racing a publish (on SQLite and PostgreSQL) are refused or left for the next version, never lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from edgemine.jobs.datasets import dataset_log, read_dataset
from edgemine.jobs.publish import PublishGates, SplitPolicy
from edgemine.jobs.publish_review import publish_from_review, watch_and_publish
from tests.support.review import ReviewEnv, env_on_both_stores, make_env, make_run_dir


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
    assert set(table.column("novelty_calibration").to_pylist()) == {"reference"}  # beside the novelty it explains
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


def test_manifest_metadata_keeps_its_types_through_the_review_store(tmp_path: Path, synth_logs: Path,
                                                                     reference_logs: Path) -> None:
    import pyarrow as pa

    run = make_run_dir(tmp_path / "run", synth_logs, reference_logs, run_id="run-typed", n=12)
    cand = pq.read_table(run / "candidates.parquet")
    n = cand.num_rows
    extra = {  # what a mining run's candidates carry besides the manifest's columns
        "triggers_fired": pa.array([["hard_brake"] if i % 2 else [] for i in range(n)], pa.list_(pa.string())),
        "trigger_raw": pa.array([0.5 * i if i % 3 else None for i in range(n)], pa.float64()),
        "uncertainty_raw": pa.array([1.0 + i for i in range(n)], pa.float32()),
    }
    for k, v in extra.items():
        cand = cand.append_column(k, v)
    pq.write_table(cand, run / "candidates.parquet")
    url = f"sqlite:///{tmp_path / 'review.db'}"
    env = make_env(url, tmp_path)
    with env.client:
        env.import_run(run, overlap_fraction=0.0, gold_fraction=0.0, gold_rate=0.0)
        _triage(env, _truth(synth_logs))
        ds = str(tmp_path / "edge_cases")
        out = publish_from_review(env.app_state.db, ds, gates=PublishGates(empty_split="off"))
    assert out.result.added > 0
    t = read_dataset(f"{ds}@v0")
    types = {f.name: f.type for f in t.schema}
    assert types["triggers_fired"] == pa.list_(pa.string())
    assert types["trigger_raw"] == types["uncertainty_raw"] == pa.float64()
    assert types["frame_index"] == pa.int64()  # the manifest's int32 stays an integer
    by_id = {r["frame_id"]: r for r in cand.to_pylist()}
    for row in t.to_pylist():
        src = by_id[row["frame_id"]]
        assert row["triggers_fired"] == src["triggers_fired"] and row["trigger_raw"] == src["trigger_raw"]
        assert row["frame_index"] == src["frame_index"]


def test_publish_seeds_classes_from_the_run_taxonomy_copies_frames_and_marks_items_published(
        review: tuple[ReviewEnv, Path, str], tmp_path: Path) -> None:
    import os

    from edgemine.review_api import storage

    env, logs, _ = review
    _triage(env, _truth(logs))
    ds = str(tmp_path / "edge_cases")
    out = publish_from_review(env.app_state.db, ds)  # library default: gates warn (every row here is train)
    assert out.result.warnings and "split 'val' would have 0 rows" in out.result.warnings[0]
    with env.app_state.db.read() as s:
        taxonomy = list(storage.get_run(s, run_id="run-pub").categories)
        item_ids = storage.confirmed_items(s).column("item_id").to_pylist()
        published = storage.publications_of(s, item_ids)
    assert list(out.result.classes[: len(taxonomy)]) == taxonomy  # the run's taxonomy, in its order
    assert published == {i: (os.path.abspath(ds), 0) for i in item_ids}
    t = read_dataset(ds, resolve_uris=False)
    assert all(u.startswith("frames/") for u in t.column("uri").to_pylist())
    assert all(Path(ds, u).is_file() for u in t.column("uri").to_pylist())


def test_a_watcher_refused_by_a_gate_keeps_waiting_and_loses_nothing(review: tuple[ReviewEnv, Path, str],
                                                                     tmp_path: Path) -> None:
    from edgemine.jobs.publish import assign_split

    env, logs, url = review
    policy = SplitPolicy(ratios={"train": 0.99, "test": 0.01})
    drives = sorted({r["drive_id"] for r in pq.read_table(tmp_path / "run" / "candidates.parquet").to_pylist()})
    assert "test" not in assign_split(drives, policy).to_pylist()  # so 'test' stays empty: every try is refused
    ds = str(tmp_path / "edge_cases")
    stop = threading.Event()
    refusals: list[str] = []
    worker = threading.Thread(target=lambda: watch_and_publish(
        url, ds, interval_s=0.5, min_new=2, stop=stop, poll_s=0.1, policy=policy, gates=PublishGates(),
        on_refused=refusals.append))
    worker.start()
    try:
        acked = _triage(env, _truth(logs))
        time.sleep(1.0)
    finally:
        stop.set()
        worker.join(timeout=60)
    assert not worker.is_alive() and refusals  # refused, logged, and the watcher did not crash
    assert all("split 'test' would have 0 rows" in m and "--empty-split warn" in m for m in refusals)
    assert not Path(ds).exists()
    # nothing refused was lost: a publish that allows the empty split takes every confirmation
    out = publish_from_review(url, ds, policy=policy, gates=PublishGates(empty_split="warn"))
    rare = {f for f in acked if _truth(logs)[f]["is_rare"]}
    assert set(read_dataset(ds).column("frame_id").to_pylist()) == rare and out.result.added == len(rare)


def test_publish_cli_reads_the_database_url_from_the_environment_and_refuses_by_default(
        review: tuple[ReviewEnv, Path, str], tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env, logs, url = review
    _triage(env, _truth(logs))
    ds = str(tmp_path / "edge_cases")
    cmd = [sys.executable, "-m", "edgemine", "publish", "--dataset", ds]
    environ = {**os.environ, "EDGEMINE_DATABASE_URL": url}
    refused = subprocess.run(cmd, capture_output=True, text=True, env=environ)
    assert refused.returncode == 1 and "Missing option" not in refused.stderr
    assert "publish refused: split 'val' would have 0 rows" in refused.stderr and not Path(ds).exists()
    ok = subprocess.run([*cmd, "--empty-split", "warn"], capture_output=True, text=True, env=environ)
    assert ok.returncode == 0, ok.stderr
    assert f"published {ds}@v0" in ok.stdout and "warning: split 'val' would have 0 rows" in ok.stderr
    missing = subprocess.run(cmd, capture_output=True, text=True,
                             env={**environ, "EDGEMINE_DATABASE_URL": f"sqlite:///{tmp_path / 'nope.db'}"})
    assert missing.returncode == 1 and "no review store at" in missing.stderr


def test_publish_cli_names_an_unknown_run_and_never_says_already_in_of_a_missing_dataset(
        review: tuple[ReviewEnv, Path, str], tmp_path: Path) -> None:
    import subprocess
    import sys

    from edgemine.errors import NotFoundError

    env, logs, url = review
    ds = str(tmp_path / "edge_cases")
    cmd = [sys.executable, "-m", "edgemine", "publish", "--db", url, "--dataset", ds]
    typo = subprocess.run([*cmd, "--run", "nosuchrun"], capture_output=True, text=True)
    assert typo.returncode == 1 and "nothing new" not in typo.stdout, typo.stdout
    assert "run 'nosuchrun' is not in the review store; it has 1 run(s), newest first: run-pub" in typo.stderr
    with pytest.raises(NotFoundError, match="run 'nosuchrun' is not in the review store"):
        watch_and_publish(url, ds, run_id="nosuchrun", stop=threading.Event())
    empty = subprocess.run([*cmd, "--run", "run-pub"], capture_output=True, text=True)  # nothing confirmed yet
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.strip() == (f"nothing to publish: run 'run-pub' has no confirmed edge cases yet; "
                                    f"{ds} was not created") and not Path(ds).exists()


def test_publish_cli_without_run_says_which_runs_went_into_the_version(review: tuple[ReviewEnv, Path, str],
                                                                      tmp_path: Path, reference_logs: Path) -> None:
    """Without --run every run in the store goes into one version (the documented behaviour): the CLI lists
    them, with the rows each added, so a random control published alongside is never a surprise."""
    import subprocess
    import sys

    env, logs, url = review
    env.import_run(make_run_dir(tmp_path / "control", logs, reference_logs, run_id="run-control", n=8, seed=1),
                   overlap_fraction=0.0, gold_fraction=0.0, gold_rate=0.0)
    _triage(env, _truth(logs))
    ds = str(tmp_path / "edge_cases")
    cmd = [sys.executable, "-m", "edgemine", "publish", "--db", url, "--dataset", ds, "--empty-split", "warn"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    runs = read_dataset(ds).column("run_id").to_pylist()
    assert set(runs) == {"run-control", "run-pub"}
    line = (f"  runs (2, every run in the store; --run RUN_ID publishes one): "
            f"run-control +{runs.count('run-control')}, run-pub +{runs.count('run-pub')}")
    assert line in out.stdout.splitlines(), out.stdout
    again = subprocess.run([*cmd, "--run", "run-pub"], capture_output=True, text=True)
    assert again.returncode == 0 and "nothing new" in again.stdout, again.stdout


def test_a_refused_watcher_tries_again_after_the_interval(review: tuple[ReviewEnv, Path, str],
                                                          tmp_path: Path) -> None:
    """What a gate lacked can arrive without a new confirmation (here another publisher's 'test' row): the
    watcher tries again every interval while refused, not only when more confirmations come."""
    from edgemine.jobs.publish import publish, training_rows
    from tests.support.datasets import confirmed

    env, logs, url = review
    policy = SplitPolicy(ratios={"train": 0.99, "test": 0.01})
    ds = str(tmp_path / "edge_cases")
    rare = {f for f in _triage(env, _truth(logs)) if _truth(logs)[f]["is_rare"]}
    assert rare
    stop = threading.Event()
    refusals: list[str] = []
    worker = threading.Thread(target=lambda: watch_and_publish(
        url, ds, interval_s=0.5, min_new=1, stop=stop, poll_s=0.1, policy=policy, gates=PublishGates(),
        on_refused=refusals.append))
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while not refusals and time.monotonic() < deadline:
            time.sleep(0.1)
        assert refusals and "split 'test' would have 0 rows" in refusals[0]
        other = training_rows(confirmed([900]), policy=policy)
        other = other.set_column(other.column_names.index("split"), "split", [["test"]])
        publish(other, ds, lineage={}, frames="reference")
        while time.monotonic() < deadline and read_dataset(ds).num_rows == 1:
            time.sleep(0.2)
    finally:
        stop.set()
        worker.join(timeout=60)
    assert not worker.is_alive()
    assert set(read_dataset(ds).column("frame_id").to_pylist()) == rare | {"f0900"}


# ---------------------------------------------------------------- amends and undos racing a publish
env = env_on_both_stores()  # the tests below run on SQLite and on PostgreSQL


@pytest.fixture
def triaged(env: ReviewEnv, tmp_path: Path, synth_logs: Path, reference_logs: Path) -> ReviewEnv:
    run = make_run_dir(tmp_path / "run", synth_logs, reference_logs, run_id="run-pub", n=16)
    env.import_run(run, overlap_fraction=0.0, gold_fraction=0.0, gold_rate=0.0)
    _triage(env, _truth(synth_logs))
    return env


def _confirmed(env: ReviewEnv) -> list[dict]:
    """Confirmed items, with the name of the reviewer who decided each (one review each here)."""
    from edgemine.review_api import storage
    from edgemine.review_api.db import Decision, Reviewer

    with env.app_state.db.read() as s:
        rows = storage.confirmed_items(s).select(["item_id", "frame_id", "category"]).to_pylist()
        names = dict(s.execute(select(Decision.item_id, Reviewer.name).join(Reviewer,
                                                                            Reviewer.id == Decision.reviewer_id)).all())
    assert len(rows) >= 3
    return [{**r, "reviewer": names[r["item_id"]]} for r in rows]


def _change(env: ReviewEnv, item: dict, *, undo: bool = False) -> Any:
    """The item's reviewer amends it to another category (or undoes it), now (the publisher's clock)."""
    env.clock.now = datetime.now(UTC)
    path, auth = f"/items/{item['item_id']}/decisions/mine", env.auth(item["reviewer"])
    if undo:
        return env.client.delete(path, headers=auth)
    other = "animal_on_road" if item["category"] != "animal_on_road" else "debris"
    return env.client.put(path, json={"verdict": "edge_case", "category": other}, headers=auth)


def _store_state(env: ReviewEnv, ds: str, item_ids: list[int]) -> tuple[dict[int, tuple[str, int]], int]:
    from edgemine.review_api import storage
    from edgemine.review_api.db import PublishReservation

    with env.app_state.db.read() as s:
        published = storage.publications_of(s, item_ids)
        left = s.scalar(select(func.count()).select_from(PublishReservation))
    return {i: (Path(d).name, v) for i, (d, v) in published.items()}, int(left or 0)


def test_an_amend_after_the_snapshot_is_left_out_of_the_version_and_published_next(
        triaged: ReviewEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The publish read its snapshot, then the reviewer amended (and another undid) before the items were
    reserved: the version leaves both out, its lineage says so, and the next publish takes the new answer."""
    from edgemine.jobs import publish_review as publish_mod

    env = triaged
    amended, undone, *rest = _confirmed(env)
    ds = str(tmp_path / "edge_cases")
    real = publish_mod.latest_per_frame
    answers = []

    def change_after_the_snapshot(confirmed: Any) -> Any:
        answers.extend([_change(env, amended), _change(env, undone, undo=True)])
        return real(confirmed)

    monkeypatch.setattr(publish_mod, "latest_per_frame", change_after_the_snapshot)
    first = publish_from_review(env.app_state.db, ds)
    monkeypatch.undo()
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    v0 = read_dataset(f"{ds}@v{first.result.version}")
    assert set(v0.column("frame_id").to_pylist()) == {r["frame_id"] for r in rest}
    lineage = dataset_log(ds)[0]["lineage"]
    assert lineage["changed_during_publish"] == sorted([amended["frame_id"], undone["frame_id"]])
    assert _store_state(env, ds, [amended["item_id"], undone["item_id"]]) == ({}, 0)  # not final: not published
    second = publish_from_review(env.app_state.db, ds)
    assert second.result.added_ids == (amended["frame_id"],)  # the undone item waits for a new review
    row = read_dataset(ds).filter(pc.equal(read_dataset(ds).column("frame_id"), amended["frame_id"])).to_pylist()[0]
    assert row["category"] == answers[0].json()["category"] != amended["category"]
    assert _store_state(env, ds, [amended["item_id"]]) == ({amended["item_id"]: ("edge_cases", 1)}, 0)


def test_an_amend_while_the_version_is_committed_is_refused_and_then_the_item_is_final(
        triaged: ReviewEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgemine.jobs import publish_review as publish_mod

    env = triaged
    items = _confirmed(env)
    ds = str(tmp_path / "edge_cases")
    real = publish_mod.publish
    answers = []

    def change_before_the_commit(*args: Any, **kwargs: Any) -> Any:
        answers.extend([_change(env, items[0]), _change(env, items[1], undo=True)])
        return real(*args, **kwargs)

    monkeypatch.setattr(publish_mod, "publish", change_before_the_commit)
    out = publish_from_review(env.app_state.db, ds)
    assert [a.status_code for a in answers] == [409, 409]
    assert all(f"is being published into '{ds}'; try again in a moment" in a.json()["detail"] for a in answers)
    assert set(out.result.added_ids) == {r["frame_id"] for r in items}
    ids = [r["item_id"] for r in items]
    assert _store_state(env, ds, ids) == ({i: ("edge_cases", 0) for i in ids}, 0)
    again = _change(env, items[0])
    assert again.status_code == 409 and "already published in dataset" in again.json()["detail"]


def test_a_publish_that_fails_at_its_commit_leaves_no_reservation(triaged: ReviewEnv, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import deltalake

    env = triaged
    items = _confirmed(env)
    ds = str(tmp_path / "edge_cases")

    during = []

    def refused(*args: Any, **kwargs: Any) -> None:
        during.append(_change(env, items[0]))  # reserved until the commit
        raise OSError("the object store refused the commit")

    monkeypatch.setattr(deltalake, "write_deltalake", refused)
    with pytest.raises(OSError, match="refused the commit"):
        publish_from_review(env.app_state.db, ds)
    monkeypatch.undo()
    assert [a.status_code for a in during] == [409]
    assert _store_state(env, ds, [r["item_id"] for r in items]) == ({}, 0)
    assert _change(env, items[0]).status_code == 200  # nothing holds it off
    out = publish_from_review(env.app_state.db, ds)
    assert set(out.result.added_ids) == {r["frame_id"] for r in items}


def test_the_next_publish_settles_the_reservations_of_a_publisher_that_died(triaged: ReviewEnv,
                                                                            tmp_path: Path) -> None:
    """A publisher reserved every item, committed version 0 with some of them and died before settling. Its
    reservations hold off amends only until they are stale; the next publish records what version 0 holds as
    published there and publishes the rest (one of them amended meanwhile) itself."""
    from datetime import timedelta

    from edgemine.jobs.publish import publish, training_rows
    from edgemine.review_api import storage

    env = triaged
    items = _confirmed(env)
    ds = str(tmp_path / "edge_cases")
    died, later = items[:2], items[2:]
    with env.app_state.db.read() as s:
        snap = storage.confirmed_items(s)
    seen = {r["item_id"]: (r["decided_at"], r["category"], r["root_cause"]) for r in snap.to_pylist()}
    long_ago = datetime.now(UTC) - timedelta(seconds=storage.RESERVATION_STALE_SECONDS + 1)
    with env.app_state.db.write() as s:
        storage.reserve_for_publish(s, seen=seen, dataset=str(Path(ds).absolute()), token="dead", now=long_ago)
    mine = snap.filter(pc.is_in(snap.column("item_id"), pa.array([r["item_id"] for r in died], pa.int64())))
    publish(training_rows(mine.drop(["item_id", "consensus_method"]), policy=SplitPolicy()), ds, lineage={},
            frames="reference")
    answer = _change(env, later[0])  # stale: it holds nobody off
    assert answer.status_code == 200, answer.text
    out = publish_from_review(env.app_state.db, ds)
    assert out.result.version == 1 and set(out.result.added_ids) == {r["frame_id"] for r in later}
    ids = [r["item_id"] for r in items]
    assert _store_state(env, ds, ids) == ({**{r["item_id"]: ("edge_cases", 0) for r in died},
                                           **{r["item_id"]: ("edge_cases", 1) for r in later}}, 0)
    row = read_dataset(ds).filter(pc.equal(read_dataset(ds).column("frame_id"), later[0]["frame_id"])).to_pylist()[0]
    assert row["category"] == answer.json()["category"]


def test_publish_cli_says_the_dataset_stays_at_its_latest_version_when_nothing_is_confirmed(
        review: tuple[ReviewEnv, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgemine.jobs.cli import main
    from edgemine.jobs.publish import publish, training_rows
    from tests.support.datasets import confirmed

    _, _, url = review  # a run in the store, nothing decided yet
    ds = str(tmp_path / "edge_cases")
    for ids in ([900], [901]):  # another publisher's two versions: v0, v1
        publish(training_rows(confirmed(ids), policy=SplitPolicy()), ds, lineage={}, frames="reference")
    for args, where in ((["--run", "run-pub"], "run 'run-pub'"), ([], "the review store")):
        assert main(["publish", "--db", url, "--dataset", ds, *args]) == 0
        out = capsys.readouterr()
        assert out.out == f"nothing to publish: {where} has no confirmed edge cases yet; {ds} stays at v1\n"
        assert out.err == ""
    assert [e["version"] for e in dataset_log(ds)] == [1, 0]


def test_publish_watch_cli_publishes_a_version_then_stops_on_ctrl_c(review: tuple[ReviewEnv, Path, str],
                                                                     tmp_path: Path) -> None:
    """The real `edgemine publish --watch` against a SQLite store with confirmed items: it publishes v0 at its
    first poll (--min-new 1), says so, and Ctrl-C (its only stop) ends it with exit 0."""
    import os
    import re
    import signal
    import subprocess
    import sys

    env, logs, url = review
    rare = sorted(f for f in _triage(env, _truth(logs)) if _truth(logs)[f]["is_rare"])
    assert rare
    ds = str(tmp_path / "edge_cases")
    cmd = [sys.executable, "-m", "edgemine", "publish", "--db", url, "--dataset", ds, "--run", "run-pub",
           "--watch", "--min-new", "1", "--interval", "60", "--empty-split", "warn"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    watchdog = threading.Timer(90, p.kill)  # a watcher that never publishes must not hang the suite
    watchdog.start()
    lines: list[str] = []
    try:
        assert p.stdout is not None
        for line in p.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("  run: "):  # the publish is committed and reported
                break
        os.killpg(p.pid, signal.SIGINT)
        rest, err = p.communicate(timeout=60)
    finally:
        watchdog.cancel()
    assert p.returncode == 0, err
    assert lines[0] == f"watching {url} -> {ds} (every 60s or 1 new); Ctrl-C stops"
    assert re.fullmatch(rf"published {re.escape(ds)}@v0: \+{len(rare)} rows; "
                        r"decision->dataset median \d+\.\ds, max \d+\.\ds", lines[1]), lines
    assert lines[2:] == [f"  run: run-pub +{len(rare)}"]
    assert rest == f"stopped watching {ds}: 1 version(s) published while watching, +{len(rare)} rows\n"
    assert "warning: split 'val' would have 0 rows" in err and "Traceback" not in err
    assert "stopping (SIGINT): publishing the confirmations waiting now" in err
    assert [e["version"] for e in dataset_log(ds)] == [0]
    assert read_dataset(f"{ds}@v0").column("frame_id").to_pylist() == rare


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_publish_watch_cli_publishes_what_is_waiting_when_stopped_by_a_signal(
        review: tuple[ReviewEnv, Path, str], tmp_path: Path, signame: str) -> None:
    """Ctrl-C (or SIGTERM) while confirmations wait for --min-new / --interval: the watch publishes them (a new
    version), says so and exits 0 - the stop is the normal end of a watch, not a lost batch."""
    import os
    import signal
    import subprocess
    import sys

    env, logs, url = review
    truth = _truth(logs)
    ds = str(tmp_path / "edge_cases")
    first = _triage(env, truth, limit=4)
    publish_from_review(url, ds, gates=PublishGates(empty_split="warn"))  # v0, before the watch
    cmd = [sys.executable, "-m", "edgemine", "publish", "--db", url, "--dataset", ds, "--run", "run-pub",
           "--watch", "--min-new", "1000", "--interval", "600", "--empty-split", "warn"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    watchdog = threading.Timer(90, p.kill)
    watchdog.start()
    try:
        assert p.stdout is not None
        assert p.stdout.readline().startswith("watching ")  # the handlers are in place before this line
        later = {f for f in _triage(env, truth) if truth[f]["is_rare"]}  # confirmed while it watches
        assert later
        time.sleep(1.0)  # a few polls: it sees them waiting, and publishes nothing yet (1000 new, 600 s)
        assert [e["version"] for e in dataset_log(ds)] == [0]
        os.killpg(p.pid, getattr(signal, signame))
        out, err = p.communicate(timeout=60)
    finally:
        watchdog.cancel()
    assert p.returncode == 0, err
    assert f"stopping ({signame}): publishing the confirmations waiting now" in err and "Traceback" not in err
    assert f"published {ds}@v1: +{len(later)} rows" in out, out
    assert out.endswith(f"stopped watching {ds}: 1 version(s) published while watching, +{len(later)} rows\n")
    assert [e["version"] for e in dataset_log(ds)] == [1, 0]
    rare = {f for f in first if truth[f]["is_rare"]} | later
    assert set(read_dataset(f"{ds}@v1").column("frame_id").to_pylist()) == rare


def test_a_watch_stopped_publishes_confirmations_the_scan_has_moved_past(review: tuple[ReviewEnv, Path, str],
                                                                         tmp_path: Path) -> None:
    """A confirmation waiting (min_new not reached) while newer ones arrive more than the scan's 5 s overlap
    later is still in the version the stop publishes: the publish reads from where the oldest waiting one was
    seen, not from the moving watermark."""
    from datetime import timedelta

    env, logs, url = review
    truth = _truth(logs)

    def confirm_one(at: datetime) -> str:
        while True:
            env.clock.now = at
            got = env.next("ana")
            assert got is not None
            item = got["item"]
            g = truth[item["frame_id"]]
            body = {"verdict": "edge_case", "category": g["category"]} if g["is_rare"] else {"verdict": "not_edge_case"}
            assert env.decide("ana", item["id"], **body).status_code == 201
            if g["is_rare"]:
                return str(item["frame_id"])

    ds = str(tmp_path / "edge_cases")
    now = datetime.now(UTC)
    old = confirm_one(now - timedelta(seconds=60))
    stop = threading.Event()
    published: list[Any] = []
    worker = threading.Thread(target=lambda: published.extend(watch_and_publish(
        url, ds, interval_s=600, min_new=1000, stop=stop, poll_s=0.05, gates=PublishGates(empty_split="warn"))))
    worker.start()
    try:
        time.sleep(0.5)
        new = confirm_one(now)
        time.sleep(0.5)  # polls since: the scan starts 5 s before `now`, past `old`
        assert not Path(ds).exists()
    finally:
        stop.set()
        worker.join(timeout=60)
    assert not worker.is_alive() and len(published) == 1
    assert set(read_dataset(ds).column("frame_id").to_pylist()) == {old, new}


def test_the_watch_stop_flag_is_set_by_the_first_signal_and_the_second_interrupts(
        capfd: pytest.CaptureFixture[str]) -> None:
    import os
    import signal

    from edgemine.jobs.commands.publish import _stop_on_signals

    # Python's own Ctrl-C handler, as in a terminal: a job started in the background of a non-interactive shell
    # (CI's `make test &`) inherits SIGINT ignored, and then no second Ctrl-C could interrupt anything.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        with _stop_on_signals() as stop:
            assert not stop.is_set()
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.wait(0.5)
            assert "stopping (SIGTERM)" in capfd.readouterr().err
            assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # the next aborts
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1.0)
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_a_file_uri_dataset_is_the_same_dataset_to_the_store_and_storage_options_reach_deltalake(
        review: tuple[ReviewEnv, Path, str], tmp_path: Path, deltalake_storage_options: list) -> None:
    import os

    from edgemine.review_api import storage

    env, logs, url = review
    _triage(env, _truth(logs))
    seen = deltalake_storage_options
    ds = tmp_path / "edge cases"
    options = {"timeout": "30s"}
    out = publish_from_review(url, ds.as_uri(), storage_options=options)  # file:///.../edge%20cases
    assert out.result.version == 0 and seen and all(o == options for o in seen), seen
    with env.app_state.db.read() as s:
        item_ids = storage.confirmed_items(s).column("item_id").to_pylist()
        published = storage.publications_of(s, item_ids)
    # named as the path names it: a publisher given the plain path meets this one's reservations
    assert set(published.values()) == {(os.path.abspath(ds), 0)}
    again = publish_from_review(url, str(ds), storage_options=options)
    assert again.result.version is None and again.result.already_present == out.result.added
    from edgemine.jobs.cli import main  # the CLI's --storage-option reaches the same calls

    seen.clear()
    assert main(["publish", "--db", url, "--dataset", str(ds), "--storage-option", "timeout=30s"]) == 0
    assert seen and all(o == options for o in seen), seen
    assert main(["publish", "--db", url, "--dataset", str(ds), "--storage-option", "=30s"]) == 1


def test_publish_cli_does_not_call_confirmations_held_by_another_publish_none(
        review: tuple[ReviewEnv, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgemine.jobs.cli import main
    from edgemine.jobs.publish_review import _reserve, _store_name
    from edgemine.review_api import storage

    env, logs, url = review
    _triage(env, _truth(logs))
    ds = str(tmp_path / "edge_cases")
    with env.app_state.db.read() as s:
        held = storage.confirmed_items(s)
    _reserve(env.app_state.db, held, _store_name(ds), "another-publisher")  # it has not committed yet
    assert main(["publish", "--db", url, "--dataset", ds, "--empty-split", "warn"]) == 0
    assert capsys.readouterr().out == (f"nothing published: the review store's confirmed edge cases are "
                                       f"{held.num_rows} in another publish of {ds}; {ds} was not created\n")
