"""random: a seeded uniform sample (a baseline), still honouring the caps."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from edgemine.mining.select.base import Caps, CapTracker, Pool, Strategy


class RandomPick(Strategy):
    name: ClassVar[str] = "random"

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = int(seed)

    def order(self, pool: Pool, *, budget: int, caps: Caps) -> np.ndarray:
        tracker = CapTracker(pool, caps)
        picked: list[int] = []
        for i in np.random.default_rng(self.seed).permutation(pool.n):
            if len(picked) >= budget:
                break
            if tracker.allowed[i]:
                picked.append(int(i))
                tracker.take(int(i))
        return np.asarray(picked, dtype=np.int64)
