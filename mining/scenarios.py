"""Scenarios: clusters of candidate frames (FAISS k-means over their embeddings).

Done outside Spark on the small set of kept event frames; the (frame_id, scenario_id) assignments are
joined back in Spark for the per-scenario statistics. Scenario ids are "s000", "s001", … ordered by the
highest fused score in each cluster, so s000 is the scenario with the strongest frame.
"""

from __future__ import annotations

import math

import numpy as np

from edgemine.errors import ConfigError
from edgemine.vectors import l2_normalize


def auto_k(n: int, *, max_k: int = 50) -> int:
    """A default number of scenarios for n frames: about sqrt(n/2), between 1 and max_k."""
    return max(1, min(max_k, n, int(round(math.sqrt(n / 2.0)))))


def cluster(
    embeddings: np.ndarray,
    scores: np.ndarray,
    *,
    k: int | None = None,
    seed: int = 0,
    niter: int = 25,
    normalize: bool = False,
) -> np.ndarray:
    """Scenario id per frame (strings "sNNN"). `k=None` chooses `auto_k(n)`; k is capped at n.

    `normalize=True` clusters directions (use it when the index metric is cosine).
    """
    import faiss

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n = len(x)
    if n == 0:
        return np.array([], dtype=object)
    if k is not None and k < 1:
        raise ConfigError(f"scenarios.k={k} must be >= 1")
    kk = min(n, k if k is not None else auto_k(n))
    if normalize:
        x = l2_normalize(x)
    if kk == 1:
        labels = np.zeros(n, dtype=np.int64)
    else:
        km = faiss.Kmeans(x.shape[1], kk, niter=niter, seed=seed, verbose=False, min_points_per_centroid=1)
        km.train(x)
        _, assign = km.index.search(x, 1)
        labels = assign[:, 0].astype(np.int64)
    # relabel clusters by their best score (desc), then by first appearance for stability
    s = np.asarray(scores, dtype=np.float64)
    uniq = np.unique(labels)
    peak = {int(c): float(s[labels == c].max()) for c in uniq}
    order = sorted(peak, key=lambda c: (-peak[c], c))
    rename = {c: i for i, c in enumerate(order)}
    return np.array([f"s{rename[int(c)]:03d}" for c in labels], dtype=object)
