from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from edgemine.contracts import TIMESTAMP
from edgemine.errors import ConfigError, NotFoundError, SchemaError
from edgemine.jobs.datasets import (
    EdgeCaseDataset,
    dataset_diff,
    dataset_log,
    dataset_show,
    parse_ref,
    read_dataset,
    version_files,
)
from edgemine.jobs.publish import SplitPolicy, assign_split, publish, training_rows
from tests.support.datasets import CATS, confirmed


def test_publish_then_read_each_version_returns_exactly_the_confirmed_rows(tmp_path: Path) -> None:
    ds = str(tmp_path / "edge_cases")
    policy = SplitPolicy()
    r0 = publish(training_rows(confirmed(list(range(10))), policy=policy), ds, frames="reference",
                 lineage={"mining_runs": ["run-1"]})
    r1 = publish(training_rows(confirmed(list(range(5, 18)), run="run-2"), policy=policy), ds,
                 frames="reference", lineage={"mining_runs": ["run-2"], "encoder": "builtin"})
    assert (r0.version, r0.added) == (0, 10)
    assert (r1.version, r1.added, r1.already_present) == (1, 8, 5)
    v0 = read_dataset(f"{ds}@v0")
    v1 = read_dataset(ds, version=1)
    assert sorted(v0.column("frame_id").to_pylist()) == [f"f{i:04d}" for i in range(10)]
    assert sorted(v1.column("frame_id").to_pylist()) == [f"f{i:04d}" for i in range(18)]
    # rows keep their first publication's lineage (run-1 for f0005..f0009)
    runs = dict(zip(v1.column("frame_id").to_pylist(), v1.column("run_id").to_pylist(), strict=True))
    assert runs["f0007"] == "run-1" and runs["f0012"] == "run-2"
    assert v1.column("weather").to_pylist().count("rain") == 9


def test_republishing_adds_no_rows_and_no_version(tmp_path: Path) -> None:
    ds = str(tmp_path / "edge_cases")
    rows = training_rows(confirmed(list(range(6))), policy=SplitPolicy())
    publish(rows, ds, frames="reference", lineage={})
    again = publish(rows, ds, frames="reference", lineage={})
    assert again.version is None and again.added == 0 and again.already_present == 6
    assert [e["version"] for e in dataset_log(ds)] == [0]


def test_commit_metadata_carries_the_lineage(tmp_path: Path) -> None:
    ds = str(tmp_path / "edge_cases")
    lineage = {"mining_runs": ["run-1"], "encoder_id": "torchscript:abc", "review_policy": {"overlap": 0.2},
               "reviewers": 3, "agreement": {"fleiss_kappa": 0.71}, "code_version": "0.1.0+g1234"}
    publish(training_rows(confirmed([1, 2]), policy=SplitPolicy()), ds, frames="reference", lineage=lineage)
    entry = dataset_log(ds)[0]
    assert entry["lineage"]["mining_runs"] == ["run-1"]
    assert entry["lineage"]["agreement"] == {"fleiss_kappa": 0.71}
    assert entry["lineage"]["edgemine.added"] == 2 and entry["rows_added"] == 2
    shown = dataset_show(ds)
    assert shown["rows"] == 2 and shown["lineage"]["encoder_id"] == "torchscript:abc"


def test_time_travel_after_a_schema_change(tmp_path: Path) -> None:
    ds = str(tmp_path / "edge_cases")
    publish(training_rows(confirmed([1, 2, 3]), policy=SplitPolicy()), ds, frames="reference", lineage={})
    publish(training_rows(confirmed([4, 5], extra_meta={"lidar_ok": True}), policy=SplitPolicy()), ds,
            frames="reference", lineage={})
    v0, v1 = read_dataset(ds, version=0), read_dataset(ds, version=1)
    assert "lidar_ok" not in v0.column_names and v0.num_rows == 3
    assert v1.num_rows == 5
    lidar = dict(zip(v1.column("frame_id").to_pylist(), v1.column("lidar_ok").to_pylist(), strict=True))
    assert lidar["f0004"] is True and lidar["f0001"] is None
    diff = dataset_diff(ds, 0, 1)
    assert diff["rows_added"] == 2 and diff["columns_added"] == ["lidar_ok"] and diff["rows_removed"] == 0


def test_an_independent_reader_agrees(tmp_path: Path) -> None:
    import duckdb

    ds = str(tmp_path / "edge_cases")
    publish(training_rows(confirmed(list(range(7))), policy=SplitPolicy()), ds, frames="reference", lineage={})
    publish(training_rows(confirmed(list(range(7, 12))), policy=SplitPolicy()), ds, frames="reference", lineage={})
    for v in (0, 1):
        files = version_files(f"{ds}@v{v}")
        con = duckdb.connect()
        got = con.execute(
            "select frame_id, category, split from read_parquet(?, union_by_name=true) order by frame_id", [files]
        ).fetchall()
        ours = read_dataset(ds, version=v).sort_by("frame_id")
        want = list(zip(*(ours.column(c).to_pylist() for c in ("frame_id", "category", "split")), strict=True))
        assert got == want


def _publisher(args: tuple[str, list[int], int]) -> int:
    ds, ids, seed = args
    rng = np.random.default_rng(seed)
    added = 0
    for chunk in np.array_split(rng.permutation(ids), 4):
        r = publish(training_rows(confirmed(sorted(int(i) for i in chunk)), policy=SplitPolicy()), ds,
                    frames="reference", lineage={"publisher": str(seed)})
        added += r.added
    return added


@pytest.mark.integration
def test_concurrent_publishers_neither_lose_nor_duplicate_rows(tmp_path: Path) -> None:
    ds = str(tmp_path / "edge_cases")
    publish(training_rows(confirmed([0]), policy=SplitPolicy()), ds, frames="reference", lineage={})
    jobs = [(ds, list(range(1, 41)), 1), (ds, list(range(20, 61)), 2), (ds, list(range(30, 71)), 3)]
    with mp.get_context("spawn").Pool(3) as pool:
        added = pool.map(_publisher, jobs)
    table = read_dataset(ds)
    ids = table.column("frame_id").to_pylist()
    assert len(ids) == len(set(ids)) == 71
    assert sum(added) == 70  # every row added exactly once, by exactly one publisher


def _first_publisher(args: tuple[str, float]) -> int | None:
    import time

    ds, start_at = args
    rows = training_rows(confirmed(list(range(14))), policy=SplitPolicy())
    time.sleep(max(0.0, start_at - time.time()))  # the three start their create at the same moment
    return publish(rows, ds, frames="reference", lineage={}).version


@pytest.mark.integration
def test_racing_publishers_create_a_new_table_exactly_once(tmp_path: Path) -> None:
    import time

    from deltalake import DeltaTable

    with mp.get_context("spawn").Pool(3) as pool:
        pool.map(len, [[0]] * 3)  # warm the workers (imports) before the races
        for trial in range(10):
            ds = str(tmp_path / f"edge_cases_{trial}")
            versions = pool.map(_first_publisher, [(ds, time.time() + 0.3)] * 3)
            ids = read_dataset(ds).column("frame_id").to_pylist()
            assert len(ids) == len(set(ids)) == 14, (trial, versions)
            assert sorted(versions, key=lambda v: v is None) == [0, None, None]  # one create, two no-ops
            assert DeltaTable(ds).version() == 0


def test_show_and_diff_name_duplicate_frame_ids(tmp_path: Path) -> None:
    from deltalake import write_deltalake

    ds = str(tmp_path / "edge_cases")
    publish(training_rows(confirmed([1, 2, 3]), policy=SplitPolicy()), ds, frames="reference", lineage={})
    assert dataset_show(ds)["duplicate_frame_ids"] == []
    # a table written by something other than publish (or a publisher before the race fix)
    write_deltalake(ds, read_dataset(ds).filter(pa.compute.equal(read_dataset(ds).column("frame_id"), "f0002")),
                    mode="append")
    assert dataset_show(ds)["duplicate_frame_ids"] == ["f0002"]
    d = dataset_diff(ds, 0, 1)
    assert d["rows_added"] == 0 and d["rows"] == {"from": 3, "to": 4}
    assert d["duplicate_frame_ids"] == {"from": [], "to": ["f0002"]}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=60), st.floats(0.05, 0.95))
def test_a_drive_never_straddles_splits(drives: list[str], train: float) -> None:
    policy = SplitPolicy(ratios={"train": train, "val": 1 - train})
    rows = drives + drives[::-1]
    splits = assign_split(rows, policy).to_pylist()
    seen: dict[str, str] = {}
    for d, s in zip(rows, splits, strict=True):
        assert seen.setdefault(d, s) == s
    assert splits[: len(drives)] == assign_split(drives, policy).to_pylist()  # pure function of the drive


def test_split_ratios_are_roughly_honoured() -> None:
    splits = assign_split([f"drive-{i}" for i in range(4000)], SplitPolicy.parse("train=0.7,val=0.2,test=0.1"))
    counts = {s: splits.to_pylist().count(s) for s in ("train", "val", "test")}
    assert abs(counts["train"] / 4000 - 0.7) < 0.03 and abs(counts["test"] / 4000 - 0.1) < 0.02


@pytest.mark.parametrize(("text", "message"), [
    ("train=0.8,val=0.3", "sum to 1.1"),
    ("train=0.8,holdout=0.2", "split name 'holdout'"),
    ("train", "split 'train' is not NAME=RATIO"),
    ("train=abc", "split 'train=abc' is not NAME=RATIO"),
])
def test_bad_split_policies_name_the_value(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SplitPolicy.parse(text)


def test_bad_refs_and_rows_are_refused(tmp_path: Path) -> None:
    ds = str(tmp_path / "edge_cases")
    publish(training_rows(confirmed([1]), policy=SplitPolicy()), ds, frames="reference", lineage={})
    with pytest.raises(NotFoundError, match="v5 does not exist"):
        read_dataset(f"{ds}@v5")
    with pytest.raises(NotFoundError, match="split 'test'"):
        read_dataset(ds, split="test")
    with pytest.raises(ConfigError, match="pinned to v0"):
        parse_ref(f"{ds}@v0", version=2)
    rows = training_rows(confirmed([1, 2]), policy=SplitPolicy())
    with pytest.raises(SchemaError, match="repeat frame_id 'f0001'"):
        publish(pa.concat_tables([rows, rows]), ds, frames="reference", lineage={})
    with pytest.raises(ConfigError, match=r"names a version \(@v0\); a publish makes the next version"):
        publish(rows, f"{ds}@v0", frames="reference", lineage={})
    with pytest.raises(SchemaError, match="lack column"):
        publish(rows.drop(["split"]), ds, frames="reference", lineage={})


def test_torch_dataset_loads_frames_and_labels(tmp_path: Path) -> None:
    for i in range(6):
        Image.new("RGB", (20, 20), (i * 40, 10, 10)).save(tmp_path / f"{i}.png")
    ds = str(tmp_path / "edge_cases")
    publish(training_rows(confirmed(list(range(6)), uri_dir=tmp_path), policy=SplitPolicy(ratios={"train": 1.0})),
            ds, frames="reference", lineage={})
    data = EdgeCaseDataset(f"{ds}@v0", split="train", size=16, classes=list(CATS))
    assert len(data) == 6
    x, y = data[0]
    fid = data.table.column("frame_id")[0].as_py()
    i = int(fid[1:])
    assert tuple(x.shape) == (3, 16, 16) and abs(float(x[0].mean()) - i * 40 / 255) < 0.01
    assert CATS[y] == CATS[i % 3]


@pytest.mark.ray
def test_ray_reads_the_pinned_version(tmp_path: Path, ray_local: str) -> None:
    import ray

    ds = str(tmp_path / "edge_cases")
    publish(training_rows(confirmed(list(range(4))), policy=SplitPolicy()), ds, frames="reference", lineage={})
    publish(training_rows(confirmed(list(range(4, 9))), policy=SplitPolicy()), ds, frames="reference", lineage={})
    rows = ray.data.read_delta(ds, version=0).take_all()
    latest = ray.data.read_delta(ds).count()
    assert sorted(r["frame_id"] for r in rows) == [f"f{i:04d}" for i in range(4)]
    assert latest == 9


def test_datasets_cli_log_show_diff(tmp_path: Path) -> None:
    import subprocess
    import sys

    ds = str(tmp_path / "edge_cases")
    publish(training_rows(confirmed([1, 2, 3]), policy=SplitPolicy()), ds, frames="reference",
            lineage={"mining_runs": ["run-1"]})
    publish(training_rows(confirmed([4, 5], extra_meta={"lidar_ok": True}), policy=SplitPolicy()), ds,
            frames="reference", lineage={"mining_runs": ["run-2"]})
    cli = [sys.executable, "-m", "edgemine", "datasets"]
    log = subprocess.run([*cli, "log", ds], capture_output=True, text=True, check=True).stdout
    assert log.index("v1") < log.index("v0") and "+2" in log and "+3" in log
    show = subprocess.run([*cli, "show", f"{ds}@v0"], capture_output=True, text=True, check=True).stdout
    assert "@v0: 3 rows" in show and "lidar_ok" not in show
    diff = json.loads(subprocess.run([*cli, "diff", ds, "0", "1", "--json"], capture_output=True, text=True,
                                     check=True).stdout)
    assert diff["rows_added"] == 2 and diff["columns_added"] == ["lidar_ok"]
    bad = subprocess.run([*cli, "show", f"{ds}@v9"], capture_output=True, text=True)
    assert bad.returncode == 1 and "v9 does not exist" in bad.stderr and bad.stderr.count("\n") == 1


def test_reading_one_split_returns_exactly_its_rows(tmp_path: Path) -> None:
    ds = str(tmp_path / "edge_cases")
    rows = training_rows(confirmed(list(range(60))), policy=SplitPolicy())
    publish(rows, ds, frames="reference", lineage={})
    want = {f for f, s in zip(rows.column("frame_id").to_pylist(), rows.column("split").to_pylist(), strict=True)
            if s == "val"}
    got = read_dataset(f"{ds}@v0", split="val", columns=["frame_id", "uri"])
    assert got.column_names == ["frame_id", "uri"] and set(got.column("frame_id").to_pylist()) == want
    assert 0 < len(want) < 60


def test_a_frame_confirmed_by_two_runs_is_published_once_from_the_latest_consensus(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from edgemine.jobs.publish import latest_per_frame

    old = confirmed([1, 2, 3], run="run-a")
    new = confirmed([2, 3, 4], run="run-b")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def with_times(t: pa.Table, when: list[datetime], cat: str) -> pa.Table:
        t = t.set_column(t.column_names.index("category"), "category", pa.array([cat] * t.num_rows))
        return t.append_column("decided_at", pa.array(when, TIMESTAMP))

    both = pa.concat_tables([with_times(old, [t0, t0 + timedelta(hours=5), t0], "debris"),
                             with_times(new, [t0 + timedelta(hours=1)] * 3, "animal_on_road")])
    kept, superseded = latest_per_frame(both)
    cats = dict(zip(kept.column("frame_id").to_pylist(), kept.column("category").to_pylist(), strict=True))
    # f0002: run-a's consensus is later (t0+5h) and wins; f0003: run-b's (t0+1h) wins over run-a's (t0)
    assert cats == {"f0001": "debris", "f0002": "debris", "f0003": "animal_on_road", "f0004": "animal_on_road"}
    assert superseded == 2
    with pytest.raises(SchemaError, match="repeat frame_id"):  # the direct API still refuses repeats
        publish(training_rows(both.drop(["decided_at"]), policy=SplitPolicy()), str(tmp_path / "d"),
                frames="reference", lineage={})
    r = publish(training_rows(kept.drop(["decided_at"]), policy=SplitPolicy()), str(tmp_path / "d"),
                frames="reference", lineage={})
    assert r.added == 4
