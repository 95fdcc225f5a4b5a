"""Rarity: in how few other drives of the run a frame has look-alikes.

Two modes (`mode`):

- `drives` (default): the distance to the k-th nearest *other drive* — each drive counted once, at its
  frame nearest to this one. A scene seen in fewer than k other drives is far from its k-th drive however
  many frames those few drives hold, so a rare category that recurs in 3-5 drives stays rare (counted by
  frames, its other occurrences fill the k nearest neighbours and it looked common). The engine adapter
  searches an index of one frame per drive per second (`drive_bucket_s`), so one drive's consecutive
  frames don't crowd the neighbour list, and gets `distinct_drive_distance` below.
- `frames`: the k-th nearest other frame, the frame's own drive excluded (`exclude_same_drive`).

Calibrated against the mined frames' own distribution: "rarity p99.5" means only 0.5% of the mined frames
sit in sparser regions.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from jobs.errors import ConfigError
from mining.calibration import calibrated, format_percentile
from mining.signals.base import Need, Reduce, Signal, SignalInputs, SignalOutput, check_choice, knn_reduce

Mode = Literal["drives", "frames"]


def distinct_drive_distance(distances: np.ndarray, neighbour_groups: np.ndarray, query_groups: np.ndarray, *,
                            k: int) -> np.ndarray:
    """Distance to the k-th nearest other group (drive), each group at its nearest neighbour.

    `distances` (n, K) sorted ascending and `neighbour_groups` (n, K) the group of each neighbour (-1: none);
    the query's own group is skipped. A row whose K neighbours hold fewer than k other groups gets its K-th
    distance: the k-th group lies at least that far, so it is a lower bound (raise K to tighten it).
    """
    if k < 1:
        raise ConfigError(f"k={k} must be >= 1")
    d = np.asarray(distances, dtype=np.float64)
    g = np.asarray(neighbour_groups, dtype=np.int64)
    q = np.asarray(query_groups, dtype=np.int64)
    if d.shape != g.shape or d.ndim != 2 or len(q) != len(d):
        raise ConfigError(f"distances {d.shape}, neighbour_groups {g.shape} and query_groups ({len(q)},) disagree")
    n, kk = d.shape
    if kk == 0:
        return np.full(n, np.nan)
    valid = (g >= 0) & (g != q[:, None]) & np.isfinite(d)
    key = np.where(valid, g, np.iinfo(np.int64).max // (kk + 1) - 1) * (kk + 1) + np.arange(kk)[None, :]
    order = np.argsort(key, axis=1, kind="stable")  # by group, then by rank: a group's first hit is its nearest
    gs = np.take_along_axis(np.where(valid, g, -1), order, axis=1)
    first_sorted = (gs >= 0) & np.r_["1", np.ones((n, 1), bool), gs[:, 1:] != gs[:, :-1]]
    first = np.zeros((n, kk), dtype=bool)
    np.put_along_axis(first, order, first_sorted, axis=1)
    seen = np.cumsum(first, axis=1)
    has = seen[:, -1] >= k
    col = np.argmax(seen >= k, axis=1)
    n_finite = np.isfinite(d).sum(axis=1)  # sorted ascending: the finite ones come first
    bound = np.where(n_finite > 0, d[np.arange(n), np.maximum(n_finite - 1, 0)], np.nan)
    return np.where(has, d[np.arange(n), col], bound)


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

    def __init__(self, *, k: int = 10, reduce: Reduce = "kth", exclude_same_drive: bool = True,
                 mode: Mode = "drives", drive_bucket_s: float = 1.0, search_factor: int = 8) -> None:
        check_choice("signals.rarity.reduce", reduce, Reduce)
        check_choice("signals.rarity.mode", mode, Mode)
        if k < 1:
            raise ConfigError(f"signals.rarity.k={k} must be >= 1")
        if not drive_bucket_s > 0:
            raise ConfigError(f"signals.rarity.drive_bucket_s={drive_bucket_s} must be > 0")
        if search_factor < 1:
            raise ConfigError(f"signals.rarity.search_factor={search_factor} must be >= 1")
        self.k = k
        self.reduce = reduce
        self.exclude_same_drive = bool(exclude_same_drive)
        self.mode: Mode = mode
        self.drive_bucket_s = float(drive_bucket_s)
        self.search_factor = int(search_factor)  # drives mode: search k * this many neighbours
        self.neighbours = k

    def compute(self, inputs: SignalInputs) -> SignalOutput:
        if self.mode == "drives":
            if inputs.batch_drive_distances is None:
                return SignalOutput(np.full(inputs.n, np.nan))
            return SignalOutput(np.asarray(inputs.batch_drive_distances, dtype=np.float64))
        if inputs.batch_distances is None:
            return SignalOutput(np.full(inputs.n, np.nan))
        return SignalOutput(knn_reduce(inputs.batch_distances, k=self.k, reduce=self.reduce))

    def reason(self, raw: float, pct: float, detail: dict[str, float]) -> str:
        if self.mode == "drives":
            return f"rarity {format_percentile(pct)} (look-alikes in few drives: distance {raw:.3g} to the " \
                   f"{self.k}th other drive)"
        where = "other drives" if self.exclude_same_drive else "this run"
        return f"rarity {format_percentile(pct)} (kNN distance {raw:.3g} among {where})"
