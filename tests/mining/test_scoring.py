"""The pure scoring function: small numpy inputs, no index, Parquet, Spark or Ray."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgemine.contracts import SIGNAL_COLUMNS
from edgemine.errors import ConfigError
from edgemine.mining.fusion import surprise
from edgemine.mining.scoring import (
    FusionOptions,
    carried_columns,
    needs,
    raw_columns,
    reference_calibration,
    score,
    score_batch,
    score_batch_by_group,
)
from edgemine.mining.signals import SignalInputs, make_signal

N = 24
RNG = np.random.default_rng(7)
REF_CAL = RNG.uniform(0.0, 1.0, size=(400, 1))  # the reference's own kNN distances, k=1


def _inputs(*, distances: np.ndarray | None = None, logits: np.ndarray | None = None,
            accel: np.ndarray | None = None) -> SignalInputs:
    rng = np.random.default_rng(1)
    d = rng.uniform(0.0, 1.0, size=(N, 1)) if distances is None else distances
    lg = rng.normal(0.0, 1.0, size=(N, 3)) if logits is None else logits
    acc = np.zeros(N) if accel is None else accel
    return SignalInputs(n=len(d), table=pa.table({"accel_mps2": acc}), reference_distances=d, logits=[lg])


def _signals() -> list:
    return [make_signal("novelty", k=1), make_signal("uncertainty"),
            make_signal("trigger", rules=[{"name": "hard_brake", "expr": "accel_mps2 < -4"}])]


def _novelty_cal() -> dict[str, np.ndarray]:
    return {"novelty": reference_calibration(make_signal("novelty", k=1), REF_CAL)}


def test_the_far_frame_scores_highest_and_its_first_reason_names_novelty() -> None:
    d = np.random.default_rng(2).uniform(0.0, 1.0, size=(N, 1))
    d[7] = 5.0  # far beyond every reference distance
    s = score(_inputs(distances=d), signals=_signals(), weights={"novelty": 1, "uncertainty": 1, "trigger": 1},
              calibration=_novelty_cal())
    assert int(np.argmax(s.score)) == 7
    assert s.reasons[7][0].startswith("novelty p")
    assert s.percentiles["novelty"][7] == s.percentiles["novelty"].max()


@pytest.mark.filterwarnings("ignore:All-NaN slice")  # softmax of a model's missing (NaN) row
def test_a_missing_uncertainty_is_left_out_of_the_score() -> None:
    lg = np.random.default_rng(3).normal(size=(N, 3))
    lg[4] = np.nan  # the model had no output for frame 4
    sigs = [make_signal("novelty", k=1), make_signal("uncertainty")]
    s = score(_inputs(logits=lg), signals=sigs, weights={"novelty": 1, "uncertainty": 1}, calibration=_novelty_cal())
    assert np.isnan(s.percentiles["uncertainty"][4]) and np.isnan(s.raw["uncertainty"][4])
    # fisher: the weighted mean over the signals present, so frame 4's score is its novelty surprise alone
    assert s.score[4] == pytest.approx(surprise(s.percentiles["novelty"][4:5])[0])
    assert s.contributions["uncertainty"][4] == 0.0
    others = np.arange(N) != 4
    both = (surprise(s.percentiles["novelty"]) + surprise(s.percentiles["uncertainty"])) / 2
    np.testing.assert_allclose(s.score[others], both[others])
    cols = s.columns()
    assert cols["uncertainty"][4].as_py() is None and cols["uncertainty"].null_count == 1
    assert cols["rarity"].null_count == N  # a contract signal that was not computed is null throughout
    assert not any("entropy" in r for r in s.reasons[4])


def test_weights_change_the_ranking() -> None:
    d = np.full((N, 1), 0.5)
    lg = np.tile([[4.0, 0.0, 0.0]], (N, 1))  # confident
    d[0] = 3.0  # frame 0: novel but confident
    lg[1] = [0.0, 0.0, 0.0]  # frame 1: ordinary but unsure
    inputs, cal, sigs = _inputs(distances=d, logits=lg), _novelty_cal(), _signals()[:2]
    by_novelty = score(inputs, signals=sigs, weights={"novelty": 1, "uncertainty": 0.01}, calibration=cal)
    by_uncertainty = score(inputs, signals=sigs, weights={"novelty": 0.01, "uncertainty": 1}, calibration=cal)
    assert by_novelty.score[0] > by_novelty.score[1]
    assert by_uncertainty.score[1] > by_uncertainty.score[0]
    for mode in ("weighted_mean", "weighted_max"):
        only = score(inputs, signals=sigs, weights={"novelty": 0, "uncertainty": 1}, calibration=cal,
                     fusion=FusionOptions(mode=mode))  # type: ignore[arg-type]
        assert int(np.argmax(only.score)) == 1


def test_a_fired_rule_is_a_reason_and_the_trigger_never_explains_by_percentile() -> None:
    acc = np.zeros(N)
    acc[5] = -6.0
    s = score(_inputs(accel=acc), signals=_signals(), weights={"novelty": 1, "uncertainty": 1, "trigger": 1},
              calibration=_novelty_cal())
    assert "trigger hard_brake" in s.reasons[5]
    assert s.percentiles["trigger"][5] > s.percentiles["trigger"][0]
    assert not any(r.startswith("trigger score") for rs in s.reasons for r in rs)
    assert all(rs for rs in s.reasons)  # every frame explains itself


def test_two_steps_through_a_table_equal_one_step() -> None:
    """raw_columns -> table -> score_batch (what the job does through Parquet) gives what score gives."""
    inputs, sigs = _inputs(accel=np.linspace(-8, 0, N)), _signals()
    cols = raw_columns(inputs, signals=sigs)
    assert {"novelty_raw", "uncertainty_raw", "uncertainty__entropy", "uncertainty__margin", "trigger_raw",
            "triggers_fired"} <= set(cols)
    cal = {**_novelty_cal(), "uncertainty": np.linspace(0.0, 1.2, 50), "trigger": np.zeros(50)}
    weights = {"novelty": 1.0, "uncertainty": 0.5, "trigger": 1.0}
    one = score(inputs, signals=sigs, weights=weights, calibration=cal)
    two = score_batch(pa.table(cols), signals=sigs, weights=weights, calibration=cal)
    np.testing.assert_allclose(two.score, one.score)
    assert two.reasons == one.reasons
    for name in ("novelty", "uncertainty", "trigger"):
        np.testing.assert_allclose(two.percentiles[name], one.percentiles[name])
    assert carried_columns(sigs) == ["novelty_raw", "uncertainty_raw", "trigger_raw", "triggers_fired"]


def test_a_group_scored_within_its_own_calibration_ranks_among_itself_and_keeps_row_order() -> None:
    """Rows of an uncovered condition (group 1) are all far from the reference; calibrated among themselves
    only the farthest of them stays novel, and the other rows score exactly as score_batch scores them."""
    rng = np.random.default_rng(5)
    d = rng.uniform(0.0, 1.0, size=(N, 1))
    night = np.arange(N) % 2 == 1
    d[night] = 3.0 + rng.uniform(0.0, 0.5, size=(int(night.sum()), 1))  # all beyond the reference
    d[5] = 6.0  # one night frame far beyond the other night frames
    sigs = [make_signal("novelty", k=1)]
    cols = pa.table(raw_columns(SignalInputs(n=N, reference_distances=d), signals=sigs))
    cal = _novelty_cal()
    within = {"novelty": d[night, 0]}
    groups = night.astype(np.int16)
    by = score_batch_by_group(cols, groups=groups, weights={"novelty": 1.0},
                              variants=[(sigs, cal), ([sigs[0].within("time_of_day=night")], within)])
    plain = score_batch(cols, signals=sigs, weights={"novelty": 1.0}, calibration=cal)
    assert (plain.percentiles["novelty"][night] > 0.99).all()  # against the reference: every night frame novel
    np.testing.assert_allclose(by.score[~night], plain.score[~night])
    assert [r for r, n in zip(by.reasons, night, strict=True) if not n] == \
        [r for r, n in zip(plain.reasons, night, strict=True) if not n]
    p = by.percentiles["novelty"]
    assert int(np.argmax(np.where(night, p, -1))) == 5 and (p[night] < 0.99).sum() >= night.sum() - 2
    assert "novelty p" in by.reasons[5][0] and "among this fleet's time_of_day=night frames" in by.reasons[5][0]
    np.testing.assert_allclose(by.raw["novelty"], d[:, 0])
    # which calibration each row got, as a column: the condition exactly on group 1's rows
    col = by.columns()["novelty_calibration"].to_pylist()
    assert col == ["time_of_day=night" if n else "reference" for n in night]
    assert by.calibrated_on["novelty"].tolist() == col
    assert plain.columns()["novelty_calibration"].to_pylist() == ["reference"] * N
    only_day = score_batch_by_group(cols, groups=np.zeros(N, np.int16), weights={"novelty": 1.0},
                                    variants=[(sigs, cal), ([sigs[0].within("time_of_day=night")], within)])
    assert set(only_day.columns()["novelty_calibration"].to_pylist()) == {"reference"}
    with pytest.raises(ConfigError, match="group codes"):
        score_batch_by_group(cols, groups=groups + 1, variants=[(sigs, cal)], weights={"novelty": 1.0})


def test_novelty_calibration_is_null_exactly_where_novelty_is() -> None:
    """Three groups (reference, night, rain), a frame without a novelty value, and a run without novelty."""
    d = np.linspace(0.1, 4.0, N)[:, None]
    d[3] = np.nan  # no reference neighbour: no novelty value
    sigs = [make_signal("novelty", k=1), make_signal("rarity", k=1)]
    inputs = SignalInputs(n=N, reference_distances=d, batch_distances=RNG.uniform(0, 1, (N, 1)))
    cols = pa.table(raw_columns(inputs, signals=sigs))
    cal = {**_novelty_cal(), "rarity": np.linspace(0, 1, 50)}
    groups = (np.arange(N) % 3).astype(np.int16)
    variants = [(sigs, cal)] + [([sigs[0].within(c), sigs[1]], {**cal, "novelty": d[groups == g, 0]})
                                for g, c in ((1, "time_of_day=night"), (2, "weather=rain"))]
    by = score_batch_by_group(cols, groups=groups, variants=variants, weights={"novelty": 1.0, "rarity": 1.0})
    want = [None if i == 3 else ("reference", "time_of_day=night", "weather=rain")[g] for i, g in enumerate(groups)]
    assert by.columns()["novelty_calibration"].to_pylist() == want
    assert by.calibrated_on["rarity"].tolist() == ["mined"] * N  # other signals keep their own calibration
    no_novelty = score_batch(cols, signals=sigs[1:], weights={"rarity": 1.0}, calibration=cal).columns()
    assert no_novelty["novelty_calibration"].null_count == N and no_novelty["novelty"].null_count == N


def test_mined_signals_rank_among_the_batch_when_no_calibration_is_given() -> None:
    lg = np.zeros((N, 3))
    lg[:, 0] = np.linspace(6.0, 0.0, N)  # ever less confident down the batch
    s = score(_inputs(logits=lg), signals=[make_signal("uncertainty")], weights={"uncertainty": 1})
    assert np.all(np.diff(s.percentiles["uncertainty"]) >= 0)
    assert np.all(np.diff(s.score) >= 0)


def test_a_reference_signal_without_calibration_and_bad_options_fail_naming_them() -> None:
    with pytest.raises(ConfigError, match="signal 'novelty' is calibrated on 'reference' values"):
        score(_inputs(), signals=_signals(), weights={"novelty": 1})
    with pytest.raises(ConfigError, match="unknown signal 'rarity' in weights"):
        score(_inputs(), signals=_signals()[:1], weights={"rarity": 1}, calibration=_novelty_cal())
    with pytest.raises(ConfigError, match="fusion.mode='sum'"):
        FusionOptions(mode="sum")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="reason_percentile=1.5"):
        FusionOptions(reason_percentile=1.5)


def test_needs_says_which_searches_the_signals_read() -> None:
    n = needs([make_signal("novelty", k=3), make_signal("rarity", k=5), make_signal("uncertainty")])
    assert (n.reference_k, n.batch_k, n.exclude_same_drive) == (3, 5, True)
    assert (n.reference_signal, n.batch_signal) == ("novelty", "rarity")
    assert needs([make_signal("rarity", k=2, exclude_same_drive=False)]).exclude_same_drive is False
    assert needs([make_signal("uncertainty")]).reference_k == 0


@pytest.mark.filterwarnings("ignore:All-NaN slice")
@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 10.0), min_size=2, max_size=30),
       st.sampled_from(["fisher", "weighted_mean", "weighted_max"]), st.integers(0, 2**16))
def test_percentiles_are_in_0_1_and_every_frame_has_a_score_and_reasons(dist: list[float], mode: str,
                                                                        seed: int) -> None:
    n = len(dist)
    rng = np.random.default_rng(seed)
    lg = rng.normal(0.0, 3.0, size=(n, 4))
    lg[rng.random(n) < 0.2] = np.nan
    inputs = SignalInputs(n=n, table=pa.table({"accel_mps2": rng.uniform(-8, 0, n)}),
                          reference_distances=np.asarray(dist)[:, None], logits=[lg])
    s = score(inputs, signals=_signals(), weights={"novelty": 1, "uncertainty": 0.5, "trigger": 0.5},
              calibration=_novelty_cal(), fusion=FusionOptions(mode=mode))  # type: ignore[arg-type]
    for name, p in s.percentiles.items():
        ok = p[~np.isnan(p)]
        assert np.all((ok >= 0.0) & (ok <= 1.0)), name
    assert np.isfinite(s.score).all() and len(s.reasons) == n and all(s.reasons)
    if mode != "fisher":
        assert np.all((s.score >= 0.0) & (s.score <= 1.0))
    cols = s.columns()
    assert set(SIGNAL_COLUMNS) <= set(cols) and all(len(c) == n for c in cols.values())
