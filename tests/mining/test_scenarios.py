from __future__ import annotations

import numpy as np
import pytest

from edgemine.errors import ConfigError
from edgemine.mining.scenarios import auto_k, cluster


def test_clusters_follow_the_blobs_and_s000_holds_the_best_frame() -> None:
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(c, 0.05, size=(30, 6)) for c in (0.0, 3.0, -3.0)])
    scores = np.r_[np.full(30, 0.5), np.full(30, 0.6), np.full(30, 0.4)]
    scores[45] = 0.99
    ids = cluster(x, scores, k=3, seed=1)
    assert len(set(ids[:30])) == len(set(ids[30:60])) == len(set(ids[60:])) == 1
    assert ids[45] == "s000" and ids[0] == "s001" and ids[60] == "s002"


def test_k_is_capped_and_validated() -> None:
    x = np.random.default_rng(1).normal(size=(3, 4))
    assert len(set(cluster(x, np.ones(3), k=10))) <= 3
    assert cluster(np.zeros((0, 4)), np.zeros(0)).size == 0
    assert auto_k(1) == 1 and auto_k(200) == 10 and auto_k(10**7) == 50
    with pytest.raises(ConfigError, match="scenarios.k=0"):
        cluster(x, np.ones(3), k=0)
