from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from edgemine.contracts import read_manifest
from edgemine.errors import ConfigError
from edgemine.jobs.synth import LABELS, RARE_CATEGORIES, generate
from edgemine.jobs.synth.render import render_frame
from edgemine.jobs.synth.schedule import (
    MAX_EVENT_FRAMES,
    MIN_EVENT_FRAMES,
    MIN_GAP_FRAMES,
    Event,
    group_sizes,
    plan_events,
)
from edgemine.jobs.synth.world import CONDITIONS, condition_probs, make_drive_config, simulate_drive


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
    ({"event_seconds": (0.05, 1.0)}, r"event_seconds=\(0.05, 1.0\)"),
    ({"event_seconds": (2.0, 1.0)}, r"event_seconds=\(2.0, 1.0\)"),
    ({"event_seconds": (1.0, float("nan"))}, r"event_seconds=\(1.0, nan\)"),
    ({"event_seconds": 1.0}, "event_seconds=1.0"),
    ({"recurrence": (0, 2)}, r"recurrence=\(0, 2\)"),
    ({"recurrence": (3, 2)}, r"recurrence=\(3, 2\)"),
    ({"recurrence": (1.5, 2)}, r"recurrence=\(1.5, 2\)"),
    ({"recurrence": (2, 3)}, r"recurrence=\(2, 3\) needs at least 2 drives"),
    ({"conditions": {"season": ["summer"]}}, "'season'.*valid: road_type, time_of_day, weather, traffic"),
    ({"conditions": {"weather": ["snow"]}}, "'snow'.*valid: clear, rain, fog"),
    ({"conditions": {"weather": "rain"}}, "conditions\\['weather'\\]='rain' must be a list"),
    ({"conditions": {"weather": []}}, "allows no value"),
    ({"conditions": {"time_of_day": {"night": -1}}}, "\\['night'\\]=-1 must be a finite weight"),
])
def test_bad_arguments_name_the_value(tmp_path: Path, kw: dict, message: str) -> None:
    args = {"drives": 1, "frames_per_drive": 10, **kw}
    with pytest.raises(ConfigError, match=message):
        generate(tmp_path, **args)


def test_contact_sheet_has_a_row_per_category(synth_logs: Path, tmp_path: Path) -> None:
    from edgemine.jobs.synth.sheet import contact_sheet

    gt = pq.read_table(synth_logs / "ground_truth.parquet")
    n_cats = len(set(gt.column("category").to_pylist()))
    out = contact_sheet(synth_logs, tmp_path / "sheet.png", per_row=3, scale=1)
    with Image.open(out) as im:
        assert im.height == n_cats * 64 and im.width == 150 + 3 * 64
        rows = np.asarray(im.convert("RGB"), np.float32)[:, 150:]
    # every row holds real frames, and rows differ from one another
    means = [rows[r * 64 : (r + 1) * 64].mean() for r in range(n_cats)]
    assert len({round(m, 1) for m in means}) == n_cats


# ------------------------------------------------------------------ robustness knobs
def _table_digest(path: Path, columns: list[str] | None = None) -> str:
    t = pq.read_table(path, columns=columns)
    return hashlib.sha256(json.dumps(t.to_pydict(), default=str).encode()).hexdigest()[:16]


def test_default_output_is_pinned(tmp_path: Path) -> None:
    """Default arguments give the bytes the demo and tests were built on (digests from before the knobs)."""
    generate(tmp_path, drives=4, frames_per_drive=100, rare_rate=0.2, size=32, seed=5, workers=1)
    assert _table_digest(tmp_path / "ground_truth.parquet") == "6879a9fed575c023"
    cols = ["frame_id", "timestamp", "label", "road_type", "time_of_day", "weather", "traffic_density",
            "speed_mps", "lat"]
    assert _table_digest(tmp_path / "manifest.parquet", cols) == "7fbd81e5ce850e79"
    h = hashlib.sha256()  # decoded pixels, not PNG bytes, so a zlib upgrade does not count (Pillow's drawing does)
    for uri in ["frames/drv-005-0000/00000.png", "frames/drv-005-0001/00040.png", "frames/drv-005-0003/00099.png"]:
        h.update(np.asarray(Image.open(tmp_path / uri)).tobytes())
    assert h.hexdigest()[:16] == "711c4e895062ca6d"


def _configs(conditions: dict | None, n: int = 300) -> list:
    probs = condition_probs(conditions)
    return [make_drive_config(f"d{i}", i, np.random.default_rng([9, i]), base_us=0, conditions=probs)
            for i in range(n)]


def test_conditions_restrict_the_drawn_values_and_weights_set_their_shares() -> None:
    no_night = _configs({"time_of_day": ["day", "dusk"], "weather": ["clear", "fog"]})
    assert {c.time_of_day for c in no_night} == {"day", "dusk"}
    assert {c.weather for c in no_night} == {"clear", "fog"}
    # renormalised default probabilities: day 0.55 / (0.55 + 0.2) ~= 0.73
    assert 0.63 < sum(c.time_of_day == "day" for c in no_night) / len(no_night) < 0.83
    assert {c.road_type for c in no_night} == set(CONDITIONS["road_type"])  # unnamed fields stay free
    half = _configs({"time_of_day": {"day": 1, "night": 1}})
    assert {c.time_of_day for c in half} == {"day", "night"}
    assert 0.4 < sum(c.time_of_day == "night" for c in half) / len(half) < 0.6
    assert {c.road_type for c in _configs({"road_type": ["urban"]}, 20)} == {"urban"}
    # naming every value without weights is no restriction: the very same drives
    assert _configs({k: list(v) for k, v in CONDITIONS.items()}, 30) == _configs(None, 30)


def test_knobs_reach_the_files_and_synth_json_records_them(tmp_path: Path) -> None:
    kw = dict(drives=8, frames_per_drive=60, rare_rate=0.1, size=32, seed=2, event_seconds=(0.3, 1.0),
              recurrence=(2, 3), conditions={"time_of_day": ["night"], "weather": {"clear": 3, "rain": 1}})
    s = generate(tmp_path / "a", workers=1, **kw)
    man = read_manifest(tmp_path / "a" / "manifest.parquet")
    assert set(man.column("time_of_day").to_pylist()) == {"night"}
    assert set(man.column("weather").to_pylist()) <= {"clear", "rain"}
    gt = pq.read_table(tmp_path / "a" / "ground_truth.parquet")
    assert s.rare_frames == sum(gt.column("is_rare").to_pylist()) == 48
    params = json.loads((tmp_path / "a" / "synth.json").read_text())["params"]
    assert params["recurrence"] == [2, 3] and params["event_seconds"] == [0.3, 1.0]
    assert params["conditions"] == {"time_of_day": {"day": 0.0, "dusk": 0.0, "night": 1.0},
                                    "weather": {"clear": 0.75, "rain": 0.25, "fog": 0.0}}
    assert sum(s.events_per_category.values()) == s.events
    generate(tmp_path / "b", workers=2, **kw)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def _check_recurrence(events: list[Event], lo: int, hi: int) -> None:
    by_cat: dict[str, list[Event]] = {}
    for e in events:
        by_cat.setdefault(e.category, []).append(e)
    n = len(events)
    for evs in by_cat.values():
        assert len({e.drive for e in evs}) == len(evs)  # a category's events are in different drives
        assert len(evs) <= hi
    if -(-n // hi) <= min(len(RARE_CATEGORIES), n // lo):  # an exact split exists: it is used
        assert all(lo <= len(evs) <= hi for evs in by_cat.values())
        assert len(by_cat) == min(len(RARE_CATEGORIES), n // lo)  # as many categories as possible


def test_recurrence_puts_each_category_in_lo_to_hi_events_in_distinct_drives(tmp_path: Path) -> None:
    generate(tmp_path, drives=10, frames_per_drive=100, rare_rate=0.1, size=32, seed=4, workers=1,
             event_seconds=(0.5, 1.5), recurrence=(3, 5))
    gt = pq.read_table(tmp_path / "ground_truth.parquet").filter(pc.field("is_rare"))
    events = {(eid, fid.rsplit("-", 1)[0], cat) for eid, fid, cat in zip(
        gt["event_id"].to_pylist(), gt["frame_id"].to_pylist(), gt["category"].to_pylist(), strict=True)}
    per_cat = Counter(cat for _, _, cat in events)
    assert len(per_cat) >= 2 and all(3 <= n <= 5 for n in per_cat.values())
    for cat in per_cat:
        drives = [d for _, d, c in events if c == cat]
        assert len(drives) == len(set(drives))


@settings(max_examples=60, deadline=None)
@given(
    drives=st.integers(5, 60),
    frames=st.integers(40, 300),
    rate=st.floats(0.0, 0.1),
    lo=st.integers(1, 4),
    extra=st.integers(0, 3),
    seed=st.integers(0, 2**31),
)
def test_recurrence_plan_properties(drives: int, frames: int, rate: float, lo: int, extra: int, seed: int) -> None:
    hi = min(lo + extra, drives)
    try:
        events = plan_events(drives, frames, rate, rng=np.random.default_rng(seed), recurrence=(lo, hi),
                             event_seconds=(0.3, 2.0))
    except ConfigError as e:
        assert "cannot be placed" in str(e)
        return
    if len(events) <= len(RARE_CATEGORIES) * hi:
        _check_recurrence(events, lo, hi)
    assert len({e.event_id for e in events}) == len(events)


@pytest.mark.parametrize(("n", "rec", "n_groups"), [
    (0, (3, 5), 0), (2, (3, 5), 1), (10, (3, 5), 3), (30, (3, 5), 9), (50, (3, 5), 10), (12, (1, 1), 12),
    (7, (1, 3), 7), (20, (1, 3), 9), (10, (3, 3), 4),
])
def test_group_sizes_use_as_many_categories_as_possible(n: int, rec: tuple[int, int], n_groups: int) -> None:
    sizes = group_sizes(n, rec, rng=np.random.default_rng(0))
    assert sum(sizes) == n and len(sizes) == n_groups
    assert all(s <= max(rec[1], n if n < rec[0] else 0) for s in sizes)


@settings(max_examples=80, deadline=None)
@given(
    drives=st.integers(1, 30),
    frames=st.integers(20, 300),
    rate=st.floats(0.0, 0.1),
    lo_s=st.sampled_from([0.1, 0.3, 0.5, 1.0, 2.0]),
    span=st.sampled_from([0.0, 0.7, 1.0, 3.0]),
    seed=st.integers(0, 2**31),
)
def test_event_seconds_bound_event_lengths_and_keep_the_rare_frame_target(
    drives: int, frames: int, rate: float, lo_s: float, span: float, seed: int
) -> None:
    hi_s = lo_s + span
    try:
        events = plan_events(drives, frames, rate, rng=np.random.default_rng(seed), event_seconds=(lo_s, hi_s))
    except ConfigError:
        return
    lo, hi = min(round(lo_s * 10), frames), min(round(hi_s * 10), frames)
    assert all(lo <= e.length <= hi and e.stop <= frames for e in events)
    target = round(rate * drives * frames)
    total = sum(e.length for e in events)
    if target >= lo and hi >= 2 * lo - 1:  # every such target is a sum of lo..hi lengths
        assert total == target
    else:
        assert target <= total < target + lo and (total == 0) == (target == 0)


def test_the_synth_command_passes_the_knobs(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgemine.jobs.cli import app

    args = ["synth", "--out", str(tmp_path), "--drives", "4", "--frames-per-drive", "40", "--rare-rate", "0.1",
            "--size", "32", "--workers", "1", "--recurrence", "2", "3", "--event-seconds", "0.3", "1",
            "--condition", "time_of_day=day,dusk", "--condition", "weather=clear:1,fog:3"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    params = json.loads((tmp_path / "synth.json").read_text())["params"]
    assert params["recurrence"] == [2, 3] and params["event_seconds"] == [0.3, 1.0]
    assert params["conditions"]["time_of_day"]["night"] == 0.0
    assert params["conditions"]["weather"] == {"clear": 0.25, "rain": 0.0, "fog": 0.75}


def test_condition_strings_parse_to_values_or_weights() -> None:
    from edgemine.jobs.commands.synth import parse_conditions

    assert parse_conditions(["weather=clear, fog", "time_of_day=day:2,night:1"]) == {
        "weather": ["clear", "fog"], "time_of_day": {"day": 2.0, "night": 1.0}}
    with pytest.raises(ConfigError, match="'weather'"):
        parse_conditions(["weather"])
    with pytest.raises(ConfigError, match="weight 'x' of 'day'"):
        parse_conditions(["time_of_day=day:x"])


def test_the_generators_rare_categories_are_the_review_taxonomy() -> None:
    from edgemine.review_api.settings import DEFAULT_CATEGORIES

    assert set(RARE_CATEGORIES) <= set(DEFAULT_CATEGORIES) and "other" in DEFAULT_CATEGORIES
