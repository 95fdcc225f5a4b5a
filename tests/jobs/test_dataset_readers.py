"""What publish writes, other real readers read back: a pinned version's rows and types through pyarrow,
deltalake, polars, duckdb (over the version's Arrow dataset, and README's recipe: its Parquet reader over the
version's files; its delta extension would need a download) and Ray."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgemine.contracts import TIMESTAMP, canonical_schema
from edgemine.jobs.datasets import DatasetRef, _open, arrow_dataset, read_dataset, version_files
from edgemine.jobs.publish import SplitPolicy, publish, training_rows
from tests.support.datasets import confirmed, write_frames

COLUMNS = ["frame_id", "uri", "category", "split", "n_reviews", "confidence", "timestamp", "triggers_fired",
           "trigger_raw", "frame_index", "lidar_ok"]


def _meta(i: int) -> dict[str, object]:
    return {"triggers_fired": ["hard_brake"] if i % 2 else [], "trigger_raw": 0.25 * i if i % 3 else None,
            "frame_index": i * 10, "lidar_ok": i % 2 == 0}


@pytest.fixture
def dataset(tmp_path: Path) -> str:
    """Two versions: v0 = f0000..f0006, v1 adds f0007..f0011; frames copied in (uri relative to the root)."""
    write_frames(tmp_path / "src", list(range(12)))
    ds = str(tmp_path / "edge_cases")
    for ids in (list(range(7)), list(range(7, 12))):
        rows = confirmed(ids, uri_dir=tmp_path / "src", meta=[_meta(i) for i in ids])
        publish(training_rows(rows, policy=SplitPolicy()), ds, lineage={}, frames="copy")
    return ds


def _want(ds: str) -> pa.Table:
    """Our reader's v0, with the stored (relative) uris: what every other reader must return."""
    return read_dataset(f"{ds}@v0", resolve_uris=False).select(COLUMNS)


def _same(got: pa.Table, want: pa.Table) -> None:
    got = got.select(COLUMNS)
    got = got.cast(canonical_schema(got.schema)).sort_by("frame_id")
    ts = got.schema.field("timestamp").type
    if ts.tz == "Etc/UTC":  # duckdb's name for UTC
        got = got.set_column(got.column_names.index("timestamp"), "timestamp", got.column("timestamp").cast(TIMESTAMP))
    assert [(f.name, f.type) for f in got.schema] == [(f.name, f.type) for f in want.schema]
    assert got.to_pylist() == want.to_pylist()


def test_our_reader_returns_v0_in_frame_id_order_at_the_contract_types(dataset: str) -> None:
    want = _want(dataset)
    assert want.column("frame_id").to_pylist() == [f"f{i:04d}" for i in range(7)]
    types = {f.name: f.type for f in want.schema}
    assert types["triggers_fired"] == pa.list_(pa.string()) and types["frame_index"] == pa.int64()
    assert types["trigger_raw"] == pa.float64() and types["lidar_ok"] == pa.bool_()
    assert types["n_reviews"] == pa.int32() and types["timestamp"] == pa.timestamp("us", tz="UTC")


def test_pyarrow_reads_the_version_files(dataset: str) -> None:
    _same(pq.ParquetDataset(version_files(f"{dataset}@v0")).read(), _want(dataset))


def test_deltalake_reads_the_pinned_version(dataset: str) -> None:
    from deltalake import DeltaTable, QueryBuilder

    dt = DeltaTable(dataset, version=0)
    got = pa.table(QueryBuilder().register("t", dt).execute("select * from t").read_all())
    _same(got, _want(dataset))


def test_polars_reads_the_pinned_version(dataset: str) -> None:
    import polars as pl

    _same(pl.read_delta(dataset, version=0).to_arrow(), _want(dataset))
    lazy = pl.scan_delta(dataset, version=0).filter(pl.col("split") == "train").collect().to_arrow()
    assert sorted(lazy.column("frame_id").to_pylist()) == [
        r["frame_id"] for r in _want(dataset).to_pylist() if r["split"] == "train"]


def test_duckdb_reads_the_pinned_version_over_its_arrow_dataset(dataset: str) -> None:
    import duckdb

    pinned = arrow_dataset(_open(DatasetRef(dataset, 0)))
    con = duckdb.connect()
    con.register("v0", pinned)
    got = con.sql("select * from v0 order by frame_id").to_arrow_table()
    _same(got, _want(dataset))
    fired = con.execute("select frame_id from v0 where list_contains(triggers_fired, 'hard_brake') "
                        "and frame_index >= 30 order by frame_id").fetchall()
    assert fired == [("f0003",), ("f0005",)]  # lists and ints are queryable as lists and ints


def test_duckdb_reads_the_pinned_version_files_offline_and_filters_on_strings(dataset: str) -> None:
    """README's DuckDB recipe: its own Parquet reader over version_files (no delta extension download). A string
    predicate works there; over the Arrow dataset it would fail (delta-rs writes strings as string_view, and the
    pushed-down comparison has no string vs string_view kernel)."""
    import duckdb

    v0 = duckdb.read_parquet(version_files(f"{dataset}@v0"), union_by_name=True)
    _same(v0.to_arrow_table(), _want(dataset))
    rows = duckdb.sql("select frame_id, frame_index from v0 where split = 'train' and "
                      "list_contains(triggers_fired, 'hard_brake') order by frame_id").fetchall()
    assert rows == [(r["frame_id"], r["frame_index"]) for r in _want(dataset).to_pylist()
                    if r["split"] == "train" and "hard_brake" in r["triggers_fired"]]
    assert duckdb.read_parquet(version_files(f"{dataset}@v1"), union_by_name=True).count("*").fetchall() == [(12,)]
    agg = duckdb.sql("select category, count(*) as n, max(frame_index) from v0 "  # README's query, typed columns
                     "where split = 'train' and trigger_raw > 0.5 group by category order by category").fetchall()
    train = [r for r in _want(dataset).to_pylist() if r["split"] == "train" and (r["trigger_raw"] or 0) > 0.5]
    cats = sorted({r["category"] for r in train})
    by_cat = {c: [r["frame_index"] for r in train if r["category"] == c] for c in cats}
    assert agg and agg == [(c, len(ix), max(ix)) for c, ix in by_cat.items()]


@pytest.mark.ray
def test_ray_reads_the_pinned_version(dataset: str, ray_local: str) -> None:
    import ray

    rows = ray.data.read_delta(dataset, version=0).take_all()
    want = _want(dataset).to_pylist()
    got = sorted(rows, key=lambda r: r["frame_id"])
    assert [r["frame_id"] for r in got] == [r["frame_id"] for r in want]
    for g, w in zip(got, want, strict=True):
        assert list(g["triggers_fired"]) == w["triggers_fired"] and g["frame_index"] == w["frame_index"]
        assert g["trigger_raw"] == w["trigger_raw"] or (g["trigger_raw"] != g["trigger_raw"] and w["trigger_raw"]
                                                        is None)
    assert ray.data.read_delta(dataset, version=1).count() == 12


OPTIONS = {"timeout": "30s"}  # a real object-store option; a local table ignores it


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str] | None]:
    """The storage_options every DeltaTable was opened with (the real class underneath: it really opens)."""
    import deltalake

    seen: list[dict[str, str] | None] = []

    class Recording(deltalake.DeltaTable):
        def __init__(self, table_uri: str, version: int | None = None,
                     storage_options: dict[str, str] | None = None, **kw: object) -> None:
            seen.append(storage_options)
            super().__init__(table_uri, version=version, storage_options=storage_options, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(deltalake, "DeltaTable", Recording)
    return seen


def test_every_reader_passes_storage_options_to_deltalake(dataset: str, opened: list) -> None:
    from edgemine.jobs.datasets import (
        EdgeCaseDataset,
        dataset_classes,
        dataset_diff,
        dataset_log,
        dataset_show,
        latest_version,
    )

    plain, files = read_dataset(f"{dataset}@v0"), version_files(f"{dataset}@v0")
    opened.clear()
    assert read_dataset(f"{dataset}@v0", storage_options=OPTIONS).equals(plain)
    assert latest_version(dataset, storage_options=OPTIONS) == 1
    assert version_files(f"{dataset}@v0", storage_options=OPTIONS) == files
    assert dataset_classes(f"{dataset}@v1", storage_options=OPTIONS)  # reopens the latest for the history
    assert [e["version"] for e in dataset_log(dataset, storage_options=OPTIONS)] == [1, 0]
    assert dataset_show(f"{dataset}@v0", storage_options=OPTIONS)["rows"] == 7
    assert dataset_diff(f"{dataset}@v0", f"{dataset}@v1", storage_options=OPTIONS)["rows_added"] == 5
    assert len(EdgeCaseDataset(dataset, split=None, storage_options=OPTIONS)) == 12
    assert len(opened) > 10 and all(o == OPTIONS for o in opened), opened


def test_publish_reopens_the_table_with_its_storage_options(tmp_path: Path, opened: list) -> None:
    ds = str(tmp_path / "edge_cases")
    for ids in ([0, 1], [2, 3]):
        publish(training_rows(confirmed(ids), policy=SplitPolicy()), ds, lineage={}, frames="reference",
                storage_options=OPTIONS)
    assert opened and all(o == OPTIONS for o in opened), opened  # the class-list history read included
    assert read_dataset(ds).num_rows == 4


def test_a_table_opened_with_storage_options_reads_through_deltalakes_filesystem(dataset: str) -> None:
    """What a table on an object store opened with options is read through, checked on a local table."""
    from edgemine.jobs.datasets import _store_dataset

    for version in (0, 1):
        dt = _open(DatasetRef(dataset, version), OPTIONS)
        via_store = _store_dataset(dt, OPTIONS, pa.schema(dt.schema().to_arrow())).to_table()
        assert via_store.sort_by("frame_id").equals(arrow_dataset(dt).to_table().sort_by("frame_id"))
