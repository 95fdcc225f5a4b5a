"""Percentile calibration: turn a raw signal value into "p99.7 of a calibration distribution".

A calibration distribution is a 1-D array of the same signal on frames taken as ordinary: the reference's
kNN distances to its other drives for novelty (leave-one-out where drives are unknown), a sample of the
mined frames for the other signals.
`tail_pvalue` gives each value its upper-tail p-value against it (the percentile is 1 - p); beyond the
calibration's top few percent an exponential tail is fitted, so values past everything seen keep ranking
instead of all tying at p100. `Reservoir` keeps a bounded uniform sample while batches stream past, so
calibration never needs every frame in memory.
"""

from __future__ import annotations

import math

import numpy as np


def percentile_of(values: np.ndarray, calibration: np.ndarray) -> np.ndarray:
    """Fraction of the calibration values <= each value, in [0, 1]; NaN stays NaN.

    `calibration` need not be sorted; an empty calibration gives NaN everywhere.
    """
    v = np.asarray(values, dtype=np.float64)
    cal = np.sort(np.asarray(calibration, dtype=np.float64)[np.isfinite(calibration)])
    out = np.full(v.shape, np.nan)
    if cal.size == 0:
        return out
    ok = ~np.isnan(v)
    out[ok] = np.searchsorted(cal, v[ok], side="right") / cal.size
    return out


def tail_pvalue(
    values: np.ndarray, calibration: np.ndarray, *, tail: float = 0.05, extrapolate: bool = True,
    min_exceedances: int = 20,
) -> np.ndarray:
    """Upper-tail p-value of each value: about P(calibration value >= value), never 0; NaN stays NaN.

    Empirical (smoothed): ((#calibration >= v) + 1) / (n + 1). With `extrapolate`, values above the
    calibration's (1 - tail) quantile u use the peaks-over-threshold exponential fit
    p(v) = P(X > u) * exp(-(v - u) / mean excess), when at least `min_exceedances` values lie above u.
    Discrete signals (a rule fired or not) should pass extrapolate=False.
    """
    v = np.asarray(values, dtype=np.float64)
    cal = np.sort(np.asarray(calibration, dtype=np.float64)[np.isfinite(calibration)])
    out = np.full(v.shape, np.nan)
    n = cal.size
    if n == 0:
        return out
    ok = ~np.isnan(v)
    ge = n - np.searchsorted(cal, v[ok], side="left")
    p = (ge + 1.0) / (n + 1.0)
    if extrapolate:
        u = cal[min(n - 1, int(np.floor((1.0 - tail) * n)))]
        exceed = cal[cal > u] - u
        if exceed.size >= min_exceedances and exceed.mean() > 0:
            beta = float(exceed.mean())
            q_u = exceed.size / n
            above = v[ok] > u
            p = np.where(above, q_u * np.exp(-(v[ok] - u) / beta), p)
    out[ok] = p
    return out


def calibrated(values: np.ndarray, calibration: np.ndarray, *, extrapolate: bool = True) -> np.ndarray:
    """Percentile in [0, 1] (1 - tail_pvalue): the calibrated score every signal reports."""
    return 1.0 - tail_pvalue(values, calibration, extrapolate=extrapolate)


def format_percentile(p: float) -> str:
    """0.9973 -> "p99.7"; 0.99997 -> "p99.997": enough decimals to show how far into the tail a value is.

    Digits are truncated, never rounded up, so nothing short of certainty reads "p100".
    """
    if not np.isfinite(p):
        return "p?"
    q = min(max(p, 0.0), 1.0)
    pct, tail = q * 100.0, (1.0 - q) * 100.0
    if tail <= 0.0:
        return "p100.0"
    decimals = 1 if tail >= 0.1 else min(4, math.ceil(-math.log10(tail) - 1e-9))
    scale = 10.0**decimals
    return f"p{math.floor(pct * scale) / scale:.{decimals}f}"


class Reservoir:
    """A uniform random sample of at most `capacity` values from a stream (Algorithm R, vectorised)."""

    def __init__(self, capacity: int, *, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity={capacity} must be >= 1")
        self.capacity = capacity
        self.seen = 0
        self._values = np.empty(capacity, dtype=np.float64)
        self._rng = np.random.default_rng(seed)

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.float64).ravel()
        v = v[~np.isnan(v)]
        free = max(0, self.capacity - self.seen)
        head, tail = v[:free], v[free:]
        self._values[self.seen : self.seen + head.size] = head
        self.seen += head.size
        if tail.size:
            # item t (0-based, overall) replaces a random slot with probability capacity/(t+1)
            t = self.seen + np.arange(tail.size)
            j = (self._rng.random(tail.size) * (t + 1)).astype(np.int64)
            hit = j < self.capacity
            for slot, val in zip(j[hit], tail[hit], strict=True):
                self._values[slot] = val
            self.seen += tail.size

    @property
    def values(self) -> np.ndarray:
        return self._values[: min(self.seen, self.capacity)].copy()
