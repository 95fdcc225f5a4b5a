"""top_score: highest fused score first, skipping frames whose event or scenario is at its cap."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from edgemine.mining.select.base import Caps, CapTracker, Pool, Strategy


class TopScore(Strategy):
    name: ClassVar[str] = "top_score"

    def order(self, pool: Pool, *, budget: int, caps: Caps) -> np.ndarray:
        tracker = CapTracker(pool, caps)
        picked: list[int] = []
        for i in np.argsort(-np.asarray(pool.scores, dtype=np.float64), kind="stable"):
            if len(picked) >= budget:
                break
            if tracker.allowed[i]:
                picked.append(int(i))
                tracker.take(int(i))
        return np.asarray(picked, dtype=np.int64)
