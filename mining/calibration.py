"""Percentile calibration: turn a raw signal value into "p99.7 of a calibration distribution".

A calibration distribution is a sorted 1-D array (the reference's own leave-one-out kNN distances for
novelty, a sample of the mined frames for the other signals). `Reservoir` keeps a bounded uniform sample
while batches stream past, so calibration never needs every frame in memory.
"""

from __future__ import annotations

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


def format_percentile(p: float) -> str:
    """0.9973 -> "p99.7"; the top of the scale keeps a decimal so p99.9 and p99.0 read differently."""
    if not np.isfinite(p):
        return "p?"
    return f"p{min(p * 100.0, 100.0):.1f}"


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
