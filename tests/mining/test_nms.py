from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgemine.errors import ConfigError
from edgemine.mining.select.nms import temporal_nms


def test_temporal_nms_keeps_one_frame_per_drive_per_window() -> None:
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, np.nan])
    drive = np.array(["A", "A", "A", "B", "A", "B", "B"])
    ts = np.array([0, 500_000, 1_000_000, 0, -999_999, 2_000_000, 5_000_000])
    assert temporal_nms(score, drive, ts, n=10).tolist() == [0, 2, 3, 5, 6]  # 1 and 4 are within 1 s of 0
    assert temporal_nms(score, drive, ts, n=2).tolist() == [0, 2]
    assert temporal_nms(score, drive, ts, n=10, window_s=0).tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert temporal_nms(score, drive, ts, n=10, window_s=3).tolist() == [0, 3, 6]
    # frames chosen before (the run's event candidates) suppress their neighbourhood too
    assert temporal_nms(score, drive, ts, n=10, taken=(np.array(["A"]), np.array([1_200_000]))).tolist() == [0, 3, 5, 6]
    with pytest.raises(ConfigError, match="window_s=-1"):
        temporal_nms(score, drive, ts, n=1, window_s=-1)
    with pytest.raises(ConfigError, match="ts_us has NaN"):
        temporal_nms(score, drive, np.where(ts > 0, ts, np.nan), n=1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 40), st.floats(0, 1)), min_size=1, max_size=40),
       st.integers(0, 50), st.lists(st.tuples(st.integers(0, 2), st.integers(0, 40)), max_size=4))
def test_temporal_nms_properties(rows: list[tuple[int, int, float]], n: int, before: list[tuple[int, int]]) -> None:
    drive = np.array([r[0] for r in rows])
    ts = np.array([r[1] * 250_000 for r in rows])  # a 0.25 s grid
    score = np.array([r[2] for r in rows])
    tk = (np.array([b[0] for b in before], dtype=np.int64), np.array([b[1] * 250_000 for b in before], dtype=np.int64))
    picked = temporal_nms(score, drive, ts, n=n, taken=tk)
    assert len(picked) <= n and len(set(picked.tolist())) == len(picked)
    for i in picked:  # no two picks of one drive within 1 s, none within 1 s of a frame taken before
        same = picked[(drive[picked] == drive[i]) & (picked != i)]
        assert np.all(np.abs(ts[same] - ts[i]) >= 1_000_000)
        assert np.all(np.abs(tk[1][tk[0] == drive[i]] - ts[i]) >= 1_000_000)
    if len(picked) < n:  # it stopped early only because every other frame is suppressed
        for j in set(range(len(rows))) - set(picked.tolist()):
            near = np.r_[ts[picked[drive[picked] == drive[j]]], tk[1][tk[0] == drive[j]]]
            assert np.any(np.abs(near - ts[j]) < 1_000_000)
