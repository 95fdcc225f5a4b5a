"""kcenter: score-weighted greedy k-center over embeddings, so the budget is not spent on one scene.

Each step picks the allowed frame maximising  score * min(1, d / scale) ** diversity,  where d is its
distance to the nearest frame already picked and `scale` the mean distance between pool frames (the mean,
not the median: a pool made mostly of one scene's near-duplicates has a near-zero median). With
diversity=0 this is top_score; with diversity=1 a frame as close as a near-duplicate is worth almost
nothing, while frames at least `scale` away compete on score alone.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from edgemine.errors import ConfigError
from edgemine.mining.select.base import Caps, CapTracker, Pool, Strategy


def mean_distance(x: np.ndarray, *, sample: int = 2000, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    s = x[rng.choice(len(x), min(sample, len(x)), replace=False)] if len(x) > sample else x
    sq = (s * s).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (s @ s.T), 0.0)
    iu = np.triu_indices(len(s), k=1)
    return float(np.mean(np.sqrt(d2[iu]))) if iu[0].size else 0.0


class KCenter(Strategy):
    name: ClassVar[str] = "kcenter"

    def __init__(self, *, diversity: float = 1.0) -> None:
        if not 0.0 <= diversity <= 4.0:
            raise ConfigError(f"selection.diversity={diversity} must be between 0 and 4")
        self.diversity = float(diversity)

    def order(self, pool: Pool, *, budget: int, caps: Caps) -> np.ndarray:
        if pool.embeddings is None:
            raise ConfigError("selection strategy 'kcenter' needs the pool's embeddings")
        x = np.asarray(pool.embeddings, dtype=np.float64)
        scores = np.asarray(pool.scores, dtype=np.float64)
        scale = mean_distance(x)
        factor = np.ones(pool.n)  # min(1, d/scale)**diversity; 1 before anything is picked
        tracker = CapTracker(pool, caps)
        sq = (x * x).sum(axis=1)
        picked: list[int] = []
        while len(picked) < budget:
            prio = np.where(tracker.allowed, scores * factor, -np.inf)
            i = int(np.argmax(prio))
            if not np.isfinite(prio[i]):
                break
            picked.append(i)
            tracker.take(i)
            if scale > 0 and self.diversity > 0:
                d = np.sqrt(np.maximum(sq + sq[i] - 2.0 * (x @ x[i]), 0.0))
                factor = np.minimum(factor, np.minimum(1.0, d / scale) ** self.diversity)
        return np.asarray(picked, dtype=np.int64)
