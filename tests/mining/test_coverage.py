from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from edgemine.errors import ConfigError
from edgemine.mining.coverage import CoverageCheck, metadata_columns


def batches(n_day: int, n_night: int, night_novel: float, *, seed: int = 0) -> list[tuple[np.ndarray, dict]]:
    """Two batches of frames: day frames novel at the 1% a covering reference gives, night at `night_novel`."""
    rng = np.random.default_rng(seed)
    tod = np.array(["day"] * n_day + ["night"] * n_night, dtype=object)
    rng.shuffle(tod)
    share = np.where(tod == "night", night_novel, 0.01)
    pct = np.where(rng.random(len(tod)) < share, 0.95, rng.random(len(tod)) * 0.89)
    weather = np.array(["clear", "rain"], dtype=object)[rng.integers(0, 2, len(tod))]
    half = len(tod) // 2
    return [(pct[s], {"time_of_day": pa.array(tod[s], pa.string()), "weather": pa.array(weather[s], pa.string())})
            for s in (slice(0, half), slice(half, None))]


def test_a_value_whose_frames_are_almost_all_novel_is_named() -> None:
    check = CoverageCheck()
    for pct, cols in batches(3000, 600, 0.95):
        check.add(pct, cols)
    w = check.warnings()
    assert len(w) == 1 and w[0].startswith("the reference does not cover time_of_day=night: 9")
    assert "of its 600 frames are above the reference's novelty p90 (expected 10%)" in w[0]
    assert check.to_dict()["frames"] == 3600


def test_a_fleet_mostly_unlike_the_reference_is_flagged_as_a_whole() -> None:
    check = CoverageCheck()
    for pct, cols in batches(1000, 1000, 0.9):
        check.add(np.where(pct > 0.9, 0.995, pct), cols)
    w = check.warnings()
    assert w[0].startswith("the reference does not cover this fleet: 4") and "time_of_day=night" in w[1]


def test_a_covering_reference_gives_no_warning_and_nan_frames_do_not_count() -> None:
    check = CoverageCheck()
    for pct, cols in batches(3000, 600, 0.3):
        pct = pct.copy()
        pct[:10] = np.nan
        check.add(pct, cols)
    assert check.warnings() == [] and check.frames == 3600 - 20


def test_rare_values_and_wide_columns_are_not_reported() -> None:
    check = CoverageCheck(min_frames=50, max_values=5)
    ids = pa.array([f"f{i}" for i in range(200)])
    pct = np.r_[np.full(40, 0.999), np.full(160, 0.5)]
    rare = pa.array(["odd"] * 40 + ["usual"] * 160)  # 40 frames: below min_frames, however novel
    check.add(pct, {"camera": rare, "frame_label": ids})
    assert check.warnings() == [] and "frame_label" in check.wide


def test_metadata_columns_are_the_string_conditions() -> None:
    schema = pa.schema([("frame_id", pa.string()), ("drive_id", pa.string()), ("uri", pa.string()),
                        ("weather", pa.string()), ("road", pa.dictionary(pa.int8(), pa.string())),
                        ("speed", pa.float32())])
    assert metadata_columns(schema) == ["weather", "road"]


def test_bad_settings_name_the_value() -> None:
    with pytest.raises(ConfigError, match="value_share=1.5"):
        CoverageCheck(value_share=1.5)


def test_a_value_seen_in_few_drives_names_a_drive_not_a_condition() -> None:
    check = CoverageCheck(min_drives=5)
    n = 400
    drives = np.repeat(np.arange(8), n // 8)  # 8 drives of 50 frames
    vehicle = np.where(drives < 2, "veh-1", "veh-2").astype(object)  # veh-1 drove drives 0 and 1 only
    tod = np.where(drives < 6, "night", "day").astype(object)  # six night drives
    pct = np.where(tod == "night", 0.95, 0.2)
    check.add(pct, {"vehicle_id": pa.array(vehicle), "time_of_day": pa.array(tod)}, drives=drives)
    w = check.warnings()
    assert len(w) == 2 and "time_of_day=night" in w[0] and "vehicle_id=veh-2" in w[1]  # most novel frames first
    assert not any("veh-1" in x for x in w)
