from __future__ import annotations

import numpy as np
import pytest

from edgemine.errors import ConfigError
from edgemine.mining.fusion import build_reasons, contributions, fuse


def test_weighted_mean_skips_missing_signals() -> None:
    p = {"novelty": np.array([1.0, 0.5, 0.2]), "uncertainty": np.array([0.0, np.nan, 0.8])}
    s = fuse(p, weights={"novelty": 3, "uncertainty": 1}, mode="weighted_mean")
    np.testing.assert_allclose(s, [0.75, 0.5, (0.6 + 0.8) / 4])
    c = contributions(p, weights={"novelty": 3, "uncertainty": 1}, mode="weighted_mean")
    np.testing.assert_allclose(c["novelty"] + c["uncertainty"], s)


def test_weighted_max_and_zero_weights() -> None:
    p = {"novelty": np.array([0.9, 0.1]), "rarity": np.array([0.2, 1.0])}
    np.testing.assert_allclose(fuse(p, weights={"novelty": 1, "rarity": 0.5}, mode="weighted_max"), [0.9, 0.5])
    np.testing.assert_allclose(fuse(p, weights={"novelty": 1, "rarity": 0}, mode="weighted_mean"), [0.9, 0.1])


def test_fisher_averages_surprises_so_one_deep_tail_signal_counts() -> None:
    p = {"novelty": np.array([0.9999, 0.9, 0.5]), "uncertainty": np.array([0.5, 0.9, np.nan])}
    s = fuse(p, weights={"novelty": 1, "uncertainty": 1})  # fisher is the default
    np.testing.assert_allclose(s, [(4 + np.log10(2)) / 2, 1.0, np.log10(2)], rtol=1e-6)
    assert s[0] > s[1]  # p99.99 on one signal beats p90 on both; a weighted mean of percentiles says otherwise
    wm = fuse(p, weights={"novelty": 1, "uncertainty": 1}, mode="weighted_mean")
    assert wm[0] < wm[1]
    c = contributions(p, weights={"novelty": 1, "uncertainty": 1})
    np.testing.assert_allclose(c["novelty"] + c["uncertainty"], s)
    assert fuse({"novelty": np.array([1.0])}, weights={"novelty": 1}, max_surprise=6)[0] == 6.0


def test_bad_weights_and_modes_name_the_value() -> None:
    p = {"novelty": np.array([0.5])}
    with pytest.raises(ConfigError, match="fusion.mode='sum'"):
        fuse(p, weights={"novelty": 1}, mode="sum")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="weight of signal 'novelty' = -1"):
        fuse(p, weights={"novelty": -1})
    with pytest.raises(ConfigError, match="at least one signal weight must be > 0"):
        fuse(p, weights={"novelty": 0})


def test_every_frame_gets_reasons() -> None:
    p = {"novelty": np.array([0.997, 0.3, np.nan]), "uncertainty": np.array([0.96, 0.5, np.nan]),
         "trigger": np.array([0.0, 1.0, 0.0])}
    raw = {"novelty": np.array([2.0, 0.5, np.nan]), "uncertainty": np.array([1.9, 0.2, np.nan]),
           "trigger": np.array([0.0, 1.0, 0.0])}
    describe = {k: (lambda name: lambda r, q, i: f"{name} p{q * 100:.1f}")(k) for k in p}
    reasons = build_reasons(p, raw, describe=describe, weights={"novelty": 1, "uncertainty": 1, "trigger": 1},
                            fired=[[], ["hard_brake"], []])
    assert reasons[0] == ["novelty p99.7", "uncertainty p96.0"]
    assert reasons[1] == ["trigger hard_brake"]
    assert reasons[2] == ["no signal available"]
    only_low = build_reasons({"novelty": np.array([0.4])}, {"novelty": np.array([1.0])},
                             describe={"novelty": lambda r, q, i: f"novelty p{q * 100:.1f}"}, weights={"novelty": 1})
    assert only_low == [["no strong signal; top: novelty p40.0"]]
