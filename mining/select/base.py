"""What every selection strategy shares: the pool it picks from, the caps, and the greedy bookkeeping.

A strategy returns pool indices in rank order (rank 1 first). Every strategy respects the budget and the
per-event / per-scenario / per-drive caps; when the caps or the pool run out first, fewer frames are selected.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from edgemine.errors import ConfigError


@dataclass(frozen=True)
class Pool:
    """Frames eligible for selection, aligned by row."""

    scores: np.ndarray  # (n,) fused scores
    embeddings: np.ndarray | None = None  # (n, d), needed by diversity strategies
    event_ids: np.ndarray | None = None  # (n,) object; None entries are uncapped
    scenario_ids: np.ndarray | None = None
    drive_ids: np.ndarray | None = None  # (n,) any hashable (drive codes or ids); None entries are uncapped

    def __post_init__(self) -> None:
        n = len(self.scores)
        for name in ("embeddings", "event_ids", "scenario_ids", "drive_ids"):
            v = getattr(self, name)
            if v is not None and len(v) != n:
                raise ConfigError(f"pool.{name} has {len(v)} rows but there are {n} scores")
        if n and not np.isfinite(np.asarray(self.scores, dtype=np.float64)).all():
            raise ConfigError("pool scores must be finite")

    @property
    def n(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class Caps:
    per_event: int | None = None
    per_scenario: int | None = None
    per_drive: int | None = None  # one drive's near-identical minutes must not take a whole budget

    def __post_init__(self) -> None:
        for name in ("per_event", "per_scenario", "per_drive"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"selection.{name}_cap={v} must be >= 1 (or unset for no cap)")


def capped_columns(pool: Pool, caps: Caps) -> list[tuple[str, np.ndarray, int]]:
    """(kind, ids, cap) for every cap that is set on a column the pool has."""
    cols = (("event", pool.event_ids, caps.per_event), ("scenario", pool.scenario_ids, caps.per_scenario),
            ("drive", pool.drive_ids, caps.per_drive))
    return [(kind, np.asarray(ids), cap) for kind, ids, cap in cols if ids is not None and cap is not None]


class CapTracker:
    """Counts picks per event, scenario and drive; `allowed` is a boolean mask over the pool."""

    def __init__(self, pool: Pool, caps: Caps) -> None:
        self.pool, self.caps = pool, caps
        self.allowed = np.ones(pool.n, dtype=bool)
        self._capped = capped_columns(pool, caps)
        self._counts: dict[str, Counter[object]] = {kind: Counter() for kind, _, _ in self._capped}

    def take(self, i: int) -> None:
        self.allowed[i] = False
        for kind, ids, cap in self._capped:
            key = ids[i]
            if key is None:
                continue
            self._counts[kind][key] += 1
            if self._counts[kind][key] >= cap:
                self.allowed &= ids != key


def check_budget(budget: int) -> None:
    if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool) or budget < 1:
        raise ConfigError(f"budget={budget!r} must be an integer >= 1")


class Strategy(ABC):
    name: ClassVar[str]

    @abstractmethod
    def order(self, pool: Pool, *, budget: int, caps: Caps) -> np.ndarray:
        """Pool indices in rank order, at most `budget`, respecting `caps`."""

    def select(self, pool: Pool, *, budget: int, caps: Caps = Caps()) -> np.ndarray:
        check_budget(budget)
        if pool.n == 0:
            return np.zeros(0, dtype=np.int64)
        out = np.asarray(self.order(pool, budget=int(budget), caps=caps), dtype=np.int64)
        return out
