from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from jobs.contracts import read_manifest
from jobs.errors import ConfigError
from jobs.synth import LABELS, RARE_CATEGORIES, generate
from jobs.synth.render import render_frame
from jobs.synth.schedule import MAX_EVENT_FRAMES, MIN_EVENT_FRAMES, MIN_GAP_FRAMES, Event, plan_events
from jobs.synth.world import make_drive_config, simulate_drive


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != "synth.json":
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_manifest_follows_the_contract_and_ground_truth_lines_up(synth_logs: Path) -> None:
    man = read_manifest(synth_logs / "manifest.parquet")
    gt = pq.read_table(synth_logs / "ground_truth.parquet")
    assert man.num_rows == gt.num_rows == 6 * 60
    assert man.column("frame_id").to_pylist() == gt.column("frame_id").to_pylist()
    for col in ("speed_mps", "weather", "time_of_day", "road_type", "traffic_density", "label"):
        assert col in man.column_names
    assert set(man.column("label").to_pylist()) <= set(LABELS)
    # 10 Hz: consecutive frames of a drive are 100 ms apart
    ts = man.filter(pc.equal(man.column("drive_id"), man.column("drive_id")[0])).column("timestamp").to_pylist()
    assert {(b - a).total_seconds() for a, b in zip(ts, ts[1:], strict=False)} == {0.1}
    rare = gt.filter(gt.column("is_rare"))
    assert set(rare.column("category").to_pylist()) <= set(RARE_CATEGORIES)
    assert rare.column("event_id").null_count == 0
    normal = gt.filter(pc.invert(gt.column("is_rare")))
    assert normal.column("event_id").null_count == normal.num_rows


def test_frames_are_decodable_pngs_of_the_requested_size(synth_logs: Path) -> None:
    man = read_manifest(synth_logs / "manifest.parquet")
    for uri in man.column("uri").to_pylist()[::37]:
        with Image.open(uri) as im:
            assert im.format == "PNG" and im.size == (64, 64) and im.mode == "RGB"


def test_consecutive_frames_are_near_duplicates_but_not_identical(synth_logs: Path) -> None:
    man = read_manifest(synth_logs / "manifest.parquet")
    uris = man.column("uri").to_pylist()[:20]
    imgs = [np.asarray(Image.open(u), np.float32) for u in uris]
    steps = [np.abs(a - b).mean() for a, b in zip(imgs, imgs[1:], strict=False)]
    far = np.abs(imgs[0] - np.asarray(Image.open(man.column("uri")[-1].as_py()), np.float32)).mean()
    assert all(s > 0 for s in steps)
    assert np.median(steps) < far


def test_generation_is_deterministic_and_independent_of_worker_count(tmp_path: Path) -> None:
    kw = dict(drives=3, frames_per_drive=150, rare_rate=0.1, size=48, seed=42)
    generate(tmp_path / "a", workers=1, **kw)
    generate(tmp_path / "b", workers=2, **kw)
    generate(tmp_path / "c", workers=1, **{**kw, "seed": 43})
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_reference_mode_has_no_rare_events(reference_logs: Path) -> None:
    gt = pq.read_table(reference_logs / "ground_truth.parquet")
    assert not any(gt.column("is_rare").to_pylist())
    assert all(d.startswith("ref-") for d in pq.read_table(reference_logs / "manifest.parquet")["drive_id"].to_pylist())


def test_the_rare_rate_is_honoured_in_the_written_files(tmp_path: Path) -> None:
    s = generate(tmp_path, drives=5, frames_per_drive=200, rare_rate=0.05, size=32, seed=1, workers=1)
    gt = pq.read_table(tmp_path / "ground_truth.parquet")
    assert sum(gt.column("is_rare").to_pylist()) == s.rare_frames == 50


@settings(max_examples=150, deadline=None)
@given(
    drives=st.integers(1, 40),
    frames=st.integers(20, 400),
    rate=st.floats(0.0, 0.2),
    seed=st.integers(0, 2**31),
)
def test_event_plan_properties(drives: int, frames: int, rate: float, seed: int) -> None:
    try:
        events = plan_events(drives, frames, rate, rng=np.random.default_rng(seed))
    except ConfigError:
        return  # only when there is no room: asserted below
    target = round(rate * drives * frames)
    total = sum(e.length for e in events)
    lo = min(MIN_EVENT_FRAMES, frames)
    if target >= lo:
        assert total == target  # the rate is honoured exactly once one event fits
    else:
        assert total in (0, lo) and (target == 0) == (total == 0)
    for e in events:
        assert lo <= e.length <= min(MAX_EVENT_FRAMES, frames)  # 1-5 s at 10 Hz
        assert e.start >= 0 and e.stop <= frames
        assert e.category in RARE_CATEGORIES
    by_drive: dict[int, list[Event]] = {}
    for e in events:
        by_drive.setdefault(e.drive, []).append(e)
    for evs in by_drive.values():
        evs.sort(key=lambda e: e.start)
        for a, b in zip(evs, evs[1:], strict=False):
            assert a.stop + MIN_GAP_FRAMES <= b.start
    assert len({e.event_id for e in events}) == len(events)
    if len(events) >= len(RARE_CATEGORIES):
        assert {e.category for e in events} == set(RARE_CATEGORIES)


def test_an_impossible_rate_is_refused_naming_the_value() -> None:
    with pytest.raises(ConfigError, match="rare_rate=0.9"):
        plan_events(2, 100, 0.9, rng=np.random.default_rng(0))


def test_each_rare_category_changes_the_pixels_and_categories_differ() -> None:
    rng = np.random.default_rng(0)
    cfg = make_drive_config("drv-test", 0, rng, base_us=0)
    cfg = replace(cfg, time_of_day="day", weather="clear")
    state = list(simulate_drive(cfg, 30, [], rng))[20]
    base = np.asarray(render_frame(cfg, state, 96), np.float32)
    images = {}
    for cat in RARE_CATEGORIES:
        ev = Event("evt-x", 0, 0, 30, cat)
        img = np.asarray(render_frame(cfg, replace(state, event=ev, event_progress=0.5), 96), np.float32)
        changed = (np.abs(img - base).max(axis=2) > 40).mean()
        assert changed > 0.005, f"{cat} changes only {changed:.3%} of the pixels"
        images[cat] = img
    cats = list(images)
    for i, a in enumerate(cats):
        for b in cats[i + 1 :]:
            differ = (np.abs(images[a] - images[b]).max(axis=2) > 40).mean()
            assert differ > 0.005, f"{a} and {b} look the same"


@pytest.mark.parametrize(("kw", "message"), [
    ({"drives": 0}, "drives=0"),
    ({"frames_per_drive": 0}, "frames_per_drive=0"),
    ({"size": 8}, "size=8"),
    ({"rare_rate": -0.1}, "rare_rate=-0.1"),
])
def test_bad_arguments_name_the_value(tmp_path: Path, kw: dict, message: str) -> None:
    args = {"drives": 1, "frames_per_drive": 10, **kw}
    with pytest.raises(ConfigError, match=message):
        generate(tmp_path, **args)


def test_contact_sheet_has_a_row_per_category(synth_logs: Path, tmp_path: Path) -> None:
    from jobs.synth.sheet import contact_sheet

    gt = pq.read_table(synth_logs / "ground_truth.parquet")
    n_cats = len(set(gt.column("category").to_pylist()))
    out = contact_sheet(synth_logs, tmp_path / "sheet.png", per_row=3, scale=1)
    with Image.open(out) as im:
        assert im.height == n_cats * 64 and im.width == 150 + 3 * 64
        rows = np.asarray(im.convert("RGB"), np.float32)[:, 150:]
    # every row holds real frames, and rows differ from one another
    means = [rows[r * 64 : (r + 1) * 64].mean() for r in range(n_cats)]
    assert len({round(m, 1) for m in means}) == n_cats
