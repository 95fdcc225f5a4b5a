"""More like this across drives and events (checked against a brute-force numpy search over the run's
embeddings), its contact sheet, and selection.per_drive_cap in a real run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from edgemine.jobs.mine import RunResult, run_mine
from edgemine.jobs.similar import similar_frames
from tests.support.mine_spec import make_spec

pytestmark = [pytest.mark.integration, pytest.mark.spark]


@pytest.fixture(scope="module")
def run(byo: dict[str, Path], spark: Any, tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    spec = make_spec(byo, tmp_path_factory.mktemp("similar"), selection={"per_event_cap": 3, "per_drive_cap": 4})
    return run_mine(spec, spark=spark)


@pytest.fixture(scope="module")
def frames(run: RunResult, byo: dict[str, Path]) -> dict[str, np.ndarray]:
    """The run's scored frames: ids, drives, events and embeddings, for the brute-force search."""
    scores = pq.read_table(run.run_dir / "scores.parquet", columns=["frame_id", "event_id"]).to_pydict()
    event_of = dict(zip(scores["frame_id"], scores["event_id"], strict=True))
    t = pq.read_table(byo["frames"], columns=["frame_id", "drive_id", "embedding"]).to_pydict()
    keep = [i for i, f in enumerate(t["frame_id"]) if f in event_of]
    return {"ids": np.array([t["frame_id"][i] for i in keep]), "drive": np.array([t["drive_id"][i] for i in keep]),
            "event": np.array([event_of[t["frame_id"][i]] for i in keep], dtype=object),
            "x": np.array([t["embedding"][i] for i in keep], dtype=np.float64)}


def brute_force(f: dict[str, np.ndarray], query: str, k: int, *, same: str | None) -> tuple[list[str], np.ndarray]:
    q = int(np.flatnonzero(f["ids"] == query)[0])
    d = np.sqrt(((f["x"] - f["x"][q]) ** 2).sum(axis=1))
    ok = np.arange(len(d)) != q
    if same == "drive":
        ok &= f["drive"] != f["drive"][q]
    elif same == "event" and f["event"][q] is not None:
        ok &= f["event"] != f["event"][q]
    rows = np.flatnonzero(ok)[np.argsort(d[ok], kind="stable")[:k]]
    return f["ids"][rows].tolist(), d[rows]


def event_queries(f: dict[str, np.ndarray]) -> list[str]:
    """The middle frame of each event (the mined moments a reviewer confirms)."""
    events: dict[str, list[str]] = {}
    for fid, ev in zip(f["ids"], f["event"], strict=True):
        if ev is not None:
            events.setdefault(ev, []).append(str(fid))
    assert len(events) >= 2
    return [ids[len(ids) // 2] for ids in events.values()]


def test_exclude_same_drive_gives_the_nearest_frames_of_other_drives(run: RunResult,
                                                                     frames: dict[str, np.ndarray]) -> None:
    queries = event_queries(frames)
    plain = similar_frames(run.run_dir, queries, k=20).to_pylist()
    assert sum(r["drive_id"] == r["query_drive_id"] for r in plain) > 20  # today's complaint: its own drive
    t = similar_frames(run.run_dir, queries, k=20, exclude_same_drive=True).to_pylist()
    for q in queries:
        rows = [r for r in t if r["query_frame_id"] == q]
        want_ids, want_d = brute_force(frames, q, 20, same="drive")
        assert [r["frame_id"] for r in rows] == want_ids
        np.testing.assert_allclose([r["distance"] for r in rows], want_d, rtol=1e-4, atol=1e-5)
        assert [r["rank"] for r in rows] == list(range(1, 21))
        assert all(r["drive_id"] != r["query_drive_id"] for r in rows)


def test_exclude_same_event_removes_only_that_events_frames(run: RunResult, frames: dict[str, np.ndarray]) -> None:
    queries = event_queries(frames)
    outside = str(frames["ids"][[e is None for e in frames["event"]]][0])  # outside every event: only itself
    t = similar_frames(run.run_dir, [*queries, outside], k=15, exclude_same_event=True).to_pylist()
    event_of = dict(zip(frames["ids"].tolist(), frames["event"].tolist(), strict=True))
    for q in [*queries, outside]:
        rows = [r for r in t if r["query_frame_id"] == q]
        assert [r["frame_id"] for r in rows] == brute_force(frames, q, 15, same="event")[0]
        assert all(r["event_id"] is None or r["event_id"] != event_of[q] for r in rows)
    assert any(r["drive_id"] == r["query_drive_id"] for r in t)  # the rest of the drive is still there
    plain = similar_frames(run.run_dir, [outside], k=15).column("frame_id").to_pylist()
    assert plain == brute_force(frames, outside, 15, same=None)[0]


def test_similar_cli_draws_a_contact_sheet(run: RunResult, frames: dict[str, np.ndarray], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from edgemine.jobs.cli import main

    q = event_queries(frames)[:2]
    sheet = tmp_path / "near.png"
    assert main(["similar", str(run.run_dir), *q, "--k", "5", "--exclude-same-drive", "--sheet", str(sheet)]) == 0
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    header = "query_frame_id\trank\tframe_id\tdistance\tscore\turi\tdrive_id"  # old columns keep their places
    assert lines[0] == header and len(lines) == 1 + 2 * 5
    query_drive = {r[0]: r for r in (ln.split("\t") for ln in lines[1:])}
    assert all(len(r) == 7 for r in query_drive.values())
    assert f"contact sheet: {sheet}" in out.err
    with Image.open(sheet) as im:
        assert im.size == (6 * 128, 2 * (128 + 28))
        assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 50  # frames, not placeholders
    assert main(["similar", str(run.run_dir), "--k", "2"]) == 1
    assert "give at least one frame id" in capsys.readouterr().err


def test_per_drive_cap_holds_in_a_run_and_the_budget_is_still_spent(run: RunResult) -> None:
    c = pq.read_table(run.run_dir / "candidates.parquet", columns=["drive_id", "selected_by"]).to_pylist()
    per_drive = Counter(r["drive_id"] for r in c)
    assert len(c) == 24 and max(per_drive.values()) <= 4 and len(per_drive) == 6  # 6 drives x 4
