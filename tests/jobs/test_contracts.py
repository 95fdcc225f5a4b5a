from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgemine.contracts import (
    TIMESTAMP,
    embeddings_schema,
    iter_manifest,
    read_manifest,
    validate_manifest,
)
from edgemine.errors import InputNotFoundError, SchemaError


def _manifest(n: int = 4, **overrides: object) -> pa.Table:
    cols: dict[str, object] = {
        "frame_id": [f"f{i}" for i in range(n)],
        "drive_id": ["d0"] * n,
        "timestamp": pa.array([1_700_000_000_000_000 + i * 100_000 for i in range(n)], pa.int64()).cast(TIMESTAMP),
        "uri": [f"frames/{i}.png" for i in range(n)],
        "speed_mps": [10.0 + i for i in range(n)],
    }
    cols.update(overrides)
    return pa.table(cols)


def test_valid_manifest_keeps_metadata_and_resolves_relative_uris(tmp_path: Path) -> None:
    out = validate_manifest(_manifest(), base_dir=str(tmp_path))
    assert out.column("speed_mps").to_pylist() == [10.0, 11.0, 12.0, 13.0]
    assert out.column("uri")[0].as_py() == str(tmp_path / "frames" / "0.png")
    assert out.schema.field("timestamp").type == TIMESTAMP


def test_absolute_paths_and_uris_are_left_alone(tmp_path: Path) -> None:
    t = _manifest(2, uri=["/data/a.png", "s3://bucket/b.png"])
    out = validate_manifest(t, base_dir=str(tmp_path))
    assert out.column("uri").to_pylist() == ["/data/a.png", "s3://bucket/b.png"]


def test_int64_microsecond_timestamps_are_accepted() -> None:
    t = _manifest(2, timestamp=pa.array([1, 2], pa.int64()))
    out = validate_manifest(t)
    assert out.column("timestamp").type == TIMESTAMP
    assert out.column("timestamp")[1].value == 2


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (_manifest().drop(["uri"]), "missing required column(s) ['uri']"),
        (_manifest(timestamp=["yesterday"] * 4), "column 'timestamp' has type string"),
        (_manifest(frame_id=[1, 2, 3, 4]), "column 'frame_id' has type int64, expected string"),
        (_manifest(frame_id=["a", "b", "a", "c"]), "duplicate frame_id 'a'"),
        (_manifest(uri=["x.png", None, "y.png", "z.png"]), "column 'uri' has 1 null value(s), first at frame_id='f1'"),
        (_manifest(uri=["x.png", "", "y.png", "z.png"]), "column 'uri' is empty for frame_id='f1'"),
        (_manifest(0), "the manifest is empty (0 rows)"),
        (_manifest(probs=[["a"]] * 4), "column 'probs' has type list<item: string>"),
    ],
)
def test_bad_manifests_are_rejected_with_a_message_naming_the_problem(table: pa.Table, message: str) -> None:
    with pytest.raises(SchemaError) as err:
        validate_manifest(table)
    assert message in str(err.value)


def test_iter_manifest_streams_a_folder_and_catches_duplicates_across_files(tmp_path: Path) -> None:
    pq.write_table(_manifest(3), tmp_path / "a.parquet")
    pq.write_table(_manifest(3, frame_id=["g0", "g1", "f2"]), tmp_path / "b.parquet")
    with pytest.raises(SchemaError, match="duplicate frame_id 'f2'"):
        list(iter_manifest(tmp_path, batch_size=2))


def test_read_manifest_reads_a_folder_of_files(tmp_path: Path) -> None:
    pq.write_table(_manifest(3), tmp_path / "a.parquet")
    pq.write_table(_manifest(2, frame_id=["g0", "g1"]), tmp_path / "b.parquet")
    out = read_manifest(tmp_path)
    assert sorted(out.column("frame_id").to_pylist()) == ["f0", "f1", "f2", "g0", "g1"]
    assert out.column("uri")[0].as_py().startswith(str(tmp_path))


def test_missing_manifest_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="nope.parquet"):
        list(iter_manifest(tmp_path / "nope.parquet"))


def test_embeddings_schema_is_fixed_size() -> None:
    schema = embeddings_schema(8)
    assert schema.field("embedding").type == pa.list_(pa.float32(), 8)
    with pytest.raises(SchemaError, match="dim=0"):
        embeddings_schema(0)
