"""Novelty: how far a frame is from everything in the reference (known) data.

The raw value is a kNN distance to the reference index; it is calibrated against the reference frames' kNN
distances to the reference's *other* drives (`edgemine.jobs.score.reference_calibration_knn`: a fleet frame's
nearest reference frames are always of other drives), so "novelty p99.7" means the frame is farther from the known
data than 99.7% of known frames are from the rest of it. Leave-one-out is the fallback where drives are unknown.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from edgemine.mining.calibration import calibrated, format_percentile
from edgemine.mining.signals.base import Need, Reduce, Signal, SignalInputs, SignalOutput, check_choice, knn_reduce


def novelty(
    distances: np.ndarray, *, reference_distances: np.ndarray, k: int = 10, reduce: Reduce = "kth"
) -> np.ndarray:
    """Calibrated novelty in [0, 1] for each frame.

    `distances` (n, >=k): each frame's sorted distances to its nearest reference frames.
    `reference_distances` (m, >=k): kNN distances of (a sample of) the reference frames to the rest of the
    reference (other drives; see the module docstring).
    """
    raw = knn_reduce(distances, k=k, reduce=reduce)
    cal = knn_reduce(reference_distances, k=k, reduce=reduce)
    return calibrated(raw, cal)


class Novelty(Signal):
    name: ClassVar[str] = "novelty"
    calibration = "reference"
    needs: ClassVar[frozenset[Need]] = frozenset({"reference_knn"})
    guards_coverage: ClassVar[bool] = True

    def __init__(self, *, k: int = 10, reduce: Reduce = "kth") -> None:
        check_choice("signals.novelty.reduce", reduce, Reduce)
        if k < 1:
            from edgemine.errors import ConfigError

            raise ConfigError(f"signals.novelty.k={k} must be >= 1")
        self.k = k
        self.reduce = reduce
        self.neighbours = k

    def compute(self, inputs: SignalInputs) -> SignalOutput:
        if inputs.reference_distances is None:
            return SignalOutput(np.full(inputs.n, np.nan))
        return SignalOutput(knn_reduce(inputs.reference_distances, k=self.k, reduce=self.reduce))

    def reason(self, raw: float, pct: float, detail: dict[str, float]) -> str:
        if self.condition is not None:
            return (f"novelty {format_percentile(pct)} among this fleet's {self.condition} frames (the reference "
                    f"lacks {self.condition}; kNN distance {raw:.3g} to it)")
        return f"novelty {format_percentile(pct)} (kNN distance {raw:.3g} to the reference)"
