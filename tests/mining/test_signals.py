from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from edgemine.errors import ConfigError
from edgemine.mining.signals import (
    SIGNALS,
    SignalInputs,
    knn_reduce,
    make_signal,
    novelty,
    rarity,
    signal_names,
    triggers,
    uncertainty,
)
from edgemine.mining.signals.triggers import TriggerRule
from edgemine.mining.signals.uncertainty import entropy, softmax


def test_registry_lists_the_four_signals_and_refuses_unknown_names() -> None:
    assert signal_names() == ["novelty", "rarity", "trigger", "uncertainty"]
    with pytest.raises(ConfigError, match="unknown signal 'novlety'; known signals: novelty, rarity, trigger"):
        make_signal("novlety")
    with pytest.raises(ConfigError, match=r"signals.novelty: bad option\(s\) \['kk'\]"):
        make_signal("novelty", kk=3)
    with pytest.raises(ConfigError, match="reduce='median'"):
        make_signal("rarity", reduce="median")
    assert make_signal("triggers").name == "trigger"  # the spelling works too
    assert set(SIGNALS) == set(signal_names())


def test_knn_reduce_kth_and_mean_with_missing_neighbours() -> None:
    d = np.array([[1.0, 2.0, 3.0], [1.0, np.inf, np.inf], [np.inf, np.inf, np.inf]])
    np.testing.assert_allclose(knn_reduce(d, k=3, reduce="kth")[:2], [3.0, 1.0])
    np.testing.assert_allclose(knn_reduce(d, k=2, reduce="mean")[:2], [1.5, 1.0])
    assert np.isnan(knn_reduce(d, k=3)[2])
    with pytest.raises(ConfigError, match="k=4 but only 3"):
        knn_reduce(d, k=4)


def test_novelty_is_calibrated_against_the_references_own_distances() -> None:
    ref = np.sort(np.random.default_rng(0).uniform(0, 1, size=(1000, 5)), axis=1)
    kth = ref[:, 4]
    frames = np.array([[0, 0, 0, 0, float(np.quantile(kth, 0.5))], [0, 0, 0, 0, 10.0], [0, 0, 0, 0, 0.0]])
    p = novelty(frames, reference_distances=ref, k=5)
    assert abs(p[0] - 0.5) < 0.01 and p[1] == 1.0 and p[2] == 0.0
    sig = make_signal("novelty", k=5)
    assert sig.reason(2.5, 0.9973, {}).startswith("novelty p99.7")


def test_uncertainty_measures_match_their_definitions() -> None:
    logits = np.array([[10.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, 1.9, -5.0]])
    p = softmax(logits)
    np.testing.assert_allclose(uncertainty(logits, measure="entropy"), -(p * np.log(p)).sum(1))
    np.testing.assert_allclose(uncertainty(logits, measure="least_confidence"), 1 - p.max(1))
    s = -np.sort(-p, axis=1)
    np.testing.assert_allclose(uncertainty(logits, measure="margin"), 1 - (s[:, 0] - s[:, 1]))
    assert uncertainty(logits, measure="entropy")[1] == pytest.approx(np.log(3))
    probs = np.array([[0.5, 0.5], [0.9, 0.1]])
    np.testing.assert_allclose(uncertainty(probs, measure="entropy", from_logits=False), entropy(probs))


def test_ensemble_disagreement_is_mutual_information() -> None:
    a = np.array([[5.0, -5.0], [5.0, -5.0]])
    b = np.array([[5.0, -5.0], [-5.0, 5.0]])  # models agree on frame 0, disagree on frame 1
    mi = uncertainty([a, b], measure="disagreement")
    assert mi[0] == pytest.approx(0.0, abs=1e-6) and mi[1] > 0.6
    with pytest.raises(ConfigError, match="needs at least two models"):
        uncertainty([a], measure="disagreement")
    sig = make_signal("uncertainty", measure="disagreement")
    with pytest.raises(ConfigError, match="needs at least two models"):
        sig.compute(SignalInputs(n=2, logits=[a]))
    out = sig.compute(SignalInputs(n=2, logits=[a, b]))
    assert set(out.detail) == {"entropy", "margin", "least_confidence", "disagreement"}


def test_uncertainty_uses_logits_then_probs_and_is_nan_without_either() -> None:
    sig = make_signal("uncertainty")
    assert np.isnan(sig.compute(SignalInputs(n=3)).raw).all()
    probs = np.array([[0.5, 0.5], [1.0, 0.0], [np.nan, np.nan]])
    raw = sig.compute(SignalInputs(n=3, probs=probs)).raw
    assert raw[0] == pytest.approx(np.log(2)) and raw[1] == pytest.approx(0.0) and np.isnan(raw[2])


def test_rarity_ranks_sparse_frames_high() -> None:
    d = np.array([[0.1, 0.2], [0.1, 0.3], [2.0, 3.0], [0.2, 0.2]])
    r = rarity(d, k=2)
    assert int(np.argmax(r)) == 2 and r[2] == pytest.approx(1 - 2 / 5)  # smoothed: (1 at or above + 1) / (4 + 1)


def test_triggers_fire_rules_with_weights_and_name_them() -> None:
    t = pa.table({"accel_mps2": [-5.0, -1.0, -6.0], "label": ["pedestrian", "car", "car"]})
    rules = [TriggerRule("hard_brake", "accel_mps2 < -4", 0.5),
             TriggerRule("hard_brake_ped", 'accel_mps2 < -4 and label == "pedestrian"')]
    score, fired = triggers(t, rules=rules)
    np.testing.assert_allclose(score, [1.0, 0.0, 0.5])
    assert fired == [["hard_brake", "hard_brake_ped"], [], ["hard_brake"]]
    with pytest.raises(ConfigError, match="trigger 'x'.*malformed"):
        make_signal("trigger", rules=[{"name": "x", "expr": "accel_mps2 <"}])
    with pytest.raises(ConfigError, match="weight=2"):
        make_signal("trigger", rules=[{"name": "x", "expr": "accel_mps2 < 1", "weight": 2}])
    with pytest.raises(ConfigError, match="duplicate rule name"):
        make_signal("trigger", rules=[{"name": "x", "expr": "accel_mps2 < 1"}, {"name": "x", "expr": "label == 'a'"}])
