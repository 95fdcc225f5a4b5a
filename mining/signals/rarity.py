"""Rarity: how few look-alikes a frame has among the mined frames themselves (local density).

The raw value is the kNN distance to other mined frames. The engine adapter excludes the frame's own drive
from its neighbours (consecutive frames of one drive are near-duplicates and would make every event look
dense). Calibrated against the mined frames' own distribution: "rarity p99.5" means only 0.5% of the
mined frames sit in sparser regions.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from edgemine.errors import ConfigError
from edgemine.mining.calibration import calibrated, format_percentile
from edgemine.mining.signals.base import Need, Reduce, Signal, SignalInputs, SignalOutput, check_choice, knn_reduce


def rarity(distances: np.ndarray, *, calibration: np.ndarray | None = None, k: int = 10,
           reduce: Reduce = "kth") -> np.ndarray:
    """Rarity in [0, 1]: each frame's kNN distance among the mined frames as a percentile.

    `distances` (n, >=k) are distances to other mined frames (self excluded). Without `calibration` the
    frames are ranked among themselves.
    """
    raw = knn_reduce(distances, k=k, reduce=reduce)
    return calibrated(raw, raw if calibration is None else calibration)


class Rarity(Signal):
    name: ClassVar[str] = "rarity"
    calibration = "mined"
    needs: ClassVar[frozenset[Need]] = frozenset({"batch_knn"})

    def __init__(self, *, k: int = 10, reduce: Reduce = "kth", exclude_same_drive: bool = True) -> None:
        check_choice("signals.rarity.reduce", reduce, Reduce)
        if k < 1:
            raise ConfigError(f"signals.rarity.k={k} must be >= 1")
        self.k = k
        self.reduce = reduce
        self.exclude_same_drive = bool(exclude_same_drive)
        self.neighbours = k

    def compute(self, inputs: SignalInputs) -> SignalOutput:
        if inputs.batch_distances is None:
            return SignalOutput(np.full(inputs.n, np.nan))
        return SignalOutput(knn_reduce(inputs.batch_distances, k=self.k, reduce=self.reduce))

    def reason(self, raw: float, pct: float, detail: dict[str, float]) -> str:
        where = "other drives" if self.exclude_same_drive else "this run"
        return f"rarity {format_percentile(pct)} (kNN distance {raw:.3g} among {where})"
