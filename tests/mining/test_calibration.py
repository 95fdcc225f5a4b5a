from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgemine.mining.calibration import Reservoir, calibrated, format_percentile, percentile_of, tail_pvalue


def test_percentile_of_counts_calibration_values_at_or_below() -> None:
    cal = np.arange(1, 1001, dtype=float)
    p = percentile_of(np.array([0.5, 1.0, 500.0, 997.0, 5000.0, np.nan]), cal)
    np.testing.assert_allclose(p[:5], [0.0, 0.001, 0.5, 0.997, 1.0])
    assert np.isnan(p[5])
    assert format_percentile(p[3]) == "p99.7"
    assert np.isnan(percentile_of(np.array([1.0]), np.array([]))).all()


def test_format_percentile_shows_how_deep_into_the_tail() -> None:
    assert [format_percentile(p) for p in (0.5, 0.9973, 0.9995, 0.99997, 0.9999999, 1.0)] == [
        "p50.0", "p99.7", "p99.95", "p99.997", "p99.9999", "p100.0"]


def test_tail_pvalue_is_empirical_then_an_exponential_tail() -> None:
    cal = np.random.default_rng(0).exponential(size=20_000)
    v = np.array([0.0, 1.0, 3.0, 8.0, 15.0, np.nan])
    p = tail_pvalue(v, cal)
    np.testing.assert_allclose(np.log(p[:5]), -v[:5], atol=0.3)  # the true tail of an exponential
    assert p[0] == 1.0 and np.isnan(p[5]) and (np.diff(p[:5]) < 0).all()
    # past every calibration value, ranks keep going instead of tying at 1 / (n + 1)
    assert p[4] < 1 / 20_001 and p[3] > p[4]
    flat = tail_pvalue(np.array([15.0, 20.0]), cal, extrapolate=False)
    assert flat[0] == flat[1] == 1 / 20_001
    np.testing.assert_allclose(calibrated(v[:5], cal), 1 - p[:5])


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
