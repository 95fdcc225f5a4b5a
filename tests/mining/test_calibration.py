from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mining.calibration import Reservoir, format_percentile, percentile_of


def test_percentile_of_counts_calibration_values_at_or_below() -> None:
    cal = np.arange(1, 1001, dtype=float)
    p = percentile_of(np.array([0.5, 1.0, 500.0, 997.0, 5000.0, np.nan]), cal)
    np.testing.assert_allclose(p[:5], [0.0, 0.001, 0.5, 0.997, 1.0])
    assert np.isnan(p[5])
    assert format_percentile(p[3]) == "p99.7"
    assert np.isnan(percentile_of(np.array([1.0]), np.array([]))).all()


@settings(max_examples=30, deadline=None)
@given(cap=st.integers(1, 50), sizes=st.lists(st.integers(0, 40), max_size=8))
def test_reservoir_keeps_at_most_capacity_values_from_the_stream(cap: int, sizes: list[int]) -> None:
    r = Reservoir(cap, seed=1)
    seen: list[float] = []
    start = 0
    for n in sizes:
        batch = np.arange(start, start + n, dtype=float)
        r.add(batch)
        seen += batch.tolist()
        start += n
    v = r.values
    assert len(v) == min(cap, len(seen)) and set(v) <= set(seen) and len(set(v)) == len(v)


def test_reservoir_is_roughly_uniform() -> None:
    hits = np.zeros(10)
    for seed in range(200):
        r = Reservoir(10, seed=seed)
        for s in range(0, 100, 7):
            r.add(np.arange(s, min(s + 7, 100), dtype=float))
        hits += np.histogram(r.values, bins=10, range=(0, 100))[0]
    assert hits.min() > 0.7 * hits.mean()  # each decile gets its share (expected 200 per bin)
