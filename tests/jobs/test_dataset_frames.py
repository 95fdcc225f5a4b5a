"""Portable frames: a dataset published with --frames copy|link carries its images and works after a move."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from edgemine.errors import ConfigError, IncompatibleArtifactError, SchemaError
from edgemine.jobs.dataset_frames import frame_path, resolve_frame_uri, segment
from edgemine.jobs.datasets import EdgeCaseDataset, read_dataset
from edgemine.jobs.publish import SplitPolicy, publish, training_rows
from tests.support.datasets import CATS, confirmed, write_frames

ALL_TRAIN = SplitPolicy(ratios={"train": 1.0})
IDS = [0, 1, 2, 3, 4, 5]

READ_ELSEWHERE = """
import sys
from PIL import Image
from edgemine.jobs.datasets import read_dataset
t = read_dataset(sys.argv[1])
for u in t.column("uri").to_pylist():
    with Image.open(u) as im:
        print(u, im.getpixel((0, 0)))
"""


def _pixels(data: EdgeCaseDataset) -> dict[str, float]:
    return {f: float(data[i][0][0].mean()) for i, f in enumerate(data.table.column("frame_id").to_pylist())}


@pytest.mark.parametrize("mode", ["copy", "link"])
def test_a_dataset_carries_its_frames_and_works_after_moving_its_root(tmp_path: Path, mode: str) -> None:
    colours = write_frames(tmp_path / "mining" / "frames", IDS)
    ds = tmp_path / "datasets" / "edge_cases"
    r = publish(training_rows(confirmed(IDS, uri_dir=tmp_path / "mining" / "frames"), policy=ALL_TRAIN), str(ds),
                lineage={}, frames=mode)  # type: ignore[arg-type]
    assert r.frames == {"mode": mode, "placed": 6, "kept": 0}
    stored = read_dataset(str(ds), resolve_uris=False)
    assert stored.column("uri").to_pylist() == [f"frames/d{i // 5}/f{i:04d}.png" for i in IDS]
    assert stored.column("source_uri").to_pylist() == [str(tmp_path / "mining" / "frames" / f"{i}.png") for i in IDS]
    placed = ds / "frames" / "d0" / "f0001.png"
    if mode == "link":
        assert os.stat(placed).st_ino == os.stat(tmp_path / "mining" / "frames" / "1.png").st_ino
    else:
        assert os.stat(placed).st_ino != os.stat(tmp_path / "mining" / "frames" / "1.png").st_ino
    # The mining machine's frames go away, and the dataset moves to another place.
    shutil.rmtree(tmp_path / "mining")
    moved = tmp_path / "elsewhere" / "edge_cases_v0"
    moved.parent.mkdir()
    shutil.move(str(ds), str(moved))
    data = EdgeCaseDataset(f"{moved}@v0", split="train", size=8, classes=list(CATS))
    assert all(Path(u).is_relative_to(moved) for u in data.uris)
    got = _pixels(data)
    assert got == pytest.approx({f"f{i:04d}": colours[i][0] / 255 for i in IDS}, abs=0.01)  # red channel
    # Another process, another working directory, the dataset named by a relative path from there.
    other = tmp_path / "elsewhere" / "work"
    other.mkdir()
    out = subprocess.run([sys.executable, "-c", READ_ELSEWHERE, "../edge_cases_v0@v0"], cwd=other,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(out) == 6 and all(line.startswith(str(moved)) for line in out)
    assert [ast.literal_eval(line.split(" ", 1)[1]) for line in out] == [colours[i] for i in IDS]


def test_reference_keeps_absolute_uris_and_refuses_relative_ones(tmp_path: Path) -> None:
    write_frames(tmp_path / "src", IDS)
    ds = str(tmp_path / "edge_cases")
    r = publish(training_rows(confirmed(IDS, uri_dir=tmp_path / "src"), policy=ALL_TRAIN), ds, lineage={},
                frames="reference")
    assert r.frames["mode"] == "reference" and not (tmp_path / "edge_cases" / "frames").exists()
    stored = read_dataset(ds, resolve_uris=False).column("uri").to_pylist()
    assert stored == [str(tmp_path / "src" / f"{i}.png") for i in IDS] == read_dataset(ds).column("uri").to_pylist()
    rows = training_rows(confirmed([7]), policy=ALL_TRAIN)
    rows = rows.set_column(rows.column_names.index("uri"), "uri", pa.array(["frames/7.png"]))
    with pytest.raises(SchemaError, match=r"frame_id='f0007' has uri 'frames/7.png', which is not absolute"):
        publish(rows, ds, lineage={}, frames="reference")


def test_a_frame_is_never_overwritten_by_a_different_file(tmp_path: Path) -> None:
    write_frames(tmp_path / "src", [1, 2])
    ds = tmp_path / "edge_cases"
    stray = ds / "frames" / "d0" / "f0001.png"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"not the frame")
    rows = training_rows(confirmed([1, 2], uri_dir=tmp_path / "src"), policy=ALL_TRAIN)
    with pytest.raises(IncompatibleArtifactError, match=r"f0001.png already holds a different file than .*1.png"):
        publish(rows, str(ds), lineage={}, frames="copy")
    assert stray.read_bytes() == b"not the frame" and not (ds / "_delta_log").exists()
    shutil.copy(tmp_path / "src" / "1.png", stray)  # the same bytes (e.g. a publish that failed after copying)
    r = publish(rows, str(ds), lineage={}, frames="copy")
    assert r.frames == {"mode": "copy", "placed": 1, "kept": 1} and r.added == 2


def test_a_missing_frame_is_named(tmp_path: Path) -> None:
    rows = training_rows(confirmed([3], uri_dir=tmp_path / "nowhere"), policy=ALL_TRAIN)
    with pytest.raises(FileNotFoundError, match=r"nowhere/3.png"):
        publish(rows, str(tmp_path / "edge_cases"), lineage={}, frames="copy")


def test_ids_that_are_not_path_segments_get_distinct_safe_names() -> None:
    assert segment("d01") == "d01" and frame_path("d01", "f1", "/x/a.JPG") == "frames/d01/f1.jpg"
    a, b = segment("drive/1"), segment("drive:1")
    assert a != b and "/" not in a and ":" not in b and a.startswith("drive_1-")
    parts = frame_path("../up", "../../etc", "s3://b/k.png").split("/")
    assert segment("..") != ".." and segment("") and len(parts) == 3 and ".." not in parts


def test_a_file_uri_root_reads_a_pinned_version_after_moving_the_dataset(tmp_path: Path) -> None:
    """`file:///data/edge_cases` is a local root: frames go under the directory it names (percent-escapes
    decoded, as deltalake decodes them) and readers hand PIL local paths, not file URIs."""
    colours = write_frames(tmp_path / "mining", IDS)
    ds = tmp_path / "data root" / "edge_cases"  # the space is %20 in the URI
    rows = training_rows(confirmed(IDS, uri_dir=tmp_path / "mining"), policy=ALL_TRAIN)
    publish(rows.slice(0, 3), ds.as_uri(), lineage={}, frames="copy")
    publish(rows.slice(3), ds.as_uri(), lineage={}, frames="copy")
    assert sorted(p.name for p in (ds / "frames" / "d0").iterdir()) == [f"f{i:04d}.png" for i in range(5)]
    assert not (tmp_path / "data%20root").exists()
    shutil.rmtree(tmp_path / "mining")
    moved = tmp_path / "moved root" / "edge_cases"
    moved.parent.mkdir()
    shutil.move(str(ds), str(moved))
    for root in (moved.as_uri(), "file://localhost" + moved.as_uri().removeprefix("file://")):
        v0 = read_dataset(f"{root}@v0")
        assert v0.column("uri").to_pylist() == [str(moved / "frames" / "d0" / f"f{i:04d}.png") for i in range(3)]
        data = EdgeCaseDataset(f"{root}@v0", split="train", size=8, classes=list(CATS))
        assert _pixels(data) == pytest.approx({f"f{i:04d}": colours[i][0] / 255 for i in range(3)}, abs=0.01)
    assert read_dataset(moved.as_uri(), resolve_uris=False).column("uri").to_pylist()[0] == "frames/d0/f0000.png"


def test_file_uris_of_referenced_frames_resolve_to_local_paths(tmp_path: Path) -> None:
    write_frames(tmp_path / "src", [1, 2])
    rows = training_rows(confirmed([1, 2], uri_dir=tmp_path / "src"), policy=ALL_TRAIN)
    uris = [(tmp_path / "src" / f"{i}.png").as_uri() for i in (1, 2)]
    rows = rows.set_column(rows.column_names.index("uri"), "uri", pa.array(uris))
    ds = str(tmp_path / "edge_cases")
    publish(rows, ds, lineage={}, frames="reference")
    assert read_dataset(ds, resolve_uris=False).column("uri").to_pylist() == uris  # stored as given
    local = read_dataset(ds).column("uri").to_pylist()
    assert local == [str(tmp_path / "src" / f"{i}.png") for i in (1, 2)]
    assert len(EdgeCaseDataset(ds, size=4, classes=list(CATS))[0][0]) == 3
    with pytest.raises(ConfigError, match=r"'file://nas/data/ec' names the host 'nas'"):
        resolve_frame_uri("file://nas/data/ec", "frames/d0/f0001.png")
    assert resolve_frame_uri("s3://b/ec", "frames/x.png") == "s3://b/ec/frames/x.png"  # object stores stay URIs
