"""Agreement coefficients equal the reference libraries' values (scikit-learn, statsmodels, krippendorff)."""

from __future__ import annotations

import math

import krippendorff
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from edgemine.errors import ConfigError, SchemaError
from edgemine.mining.agreement import (
    category_counts,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    pairwise_cohen_kappa,
)


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.filterwarnings("ignore::UserWarning")  # sklearn warns on single-label inputs; the value is NaN
@settings(max_examples=200, deadline=None)
@given(st.integers(2, 5).flatmap(lambda k: st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)),
                                                    min_size=1, max_size=40)))
def test_cohen_kappa_equals_sklearn(pairs: list[tuple[int, int]]) -> None:
    a, b = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    with np.errstate(all="ignore"):
        ref = float(cohen_kappa_score(a, b))
    assert _close(cohen_kappa(a, b), ref)


def test_cohen_kappa_known_values() -> None:
    assert cohen_kappa([0, 1, 0, 1], [0, 1, 0, 1]) == 1.0
    assert cohen_kappa([0, 1, 0, 1], [1, 0, 1, 0]) == -1.0
    assert math.isnan(cohen_kappa([2, 2, 2], [2, 2, 2]))  # chance agreement is 1: undefined


def test_pairwise_kappa_uses_only_shared_items() -> None:
    rng = np.random.default_rng(0)
    ratings = rng.integers(0, 3, size=(60, 4))
    ratings[rng.random((60, 4)) < 0.3] = -1
    pk = pairwise_cohen_kappa(ratings, n_classes=3)
    assert len(pk.kappa) == 6
    for i, j, k, n in zip(pk.rater_a, pk.rater_b, pk.kappa, pk.n_items, strict=True):
        both = (ratings[:, i] >= 0) & (ratings[:, j] >= 0)
        assert n == both.sum()
        assert _close(k, float(cohen_kappa_score(ratings[both, i], ratings[both, j], labels=[0, 1, 2])))
    assert _close(pk.mean(), float(np.nanmean(pk.kappa)))


def test_pairwise_kappa_skips_pairs_below_min_items() -> None:
    ratings = np.array([[0, 0, -1], [1, 1, -1], [0, -1, 1]])
    pk = pairwise_cohen_kappa(ratings, min_items=2)
    assert list(zip(pk.rater_a, pk.rater_b, strict=True)) == [(0, 1)]


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 5), st.integers(2, 4), st.integers(1, 30), st.integers(0, 2**31 - 1))
def test_fleiss_kappa_equals_statsmodels(n_raters: int, k: int, n_items: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ratings = rng.integers(0, k, size=(n_items, n_raters))
    counts = category_counts(ratings, n_classes=k)
    assert (counts.sum(axis=1) == n_raters).all()
    with np.errstate(all="ignore"):
        ref = float(sm_fleiss_kappa(counts, method="fleiss"))
    assert _close(fleiss_kappa(counts), ref)


def test_fleiss_kappa_rejects_unequal_rating_counts() -> None:
    with pytest.raises(SchemaError, match="same number of ratings per item"):
        fleiss_kappa(np.array([[2, 0], [1, 2]]))
    with pytest.raises(SchemaError, match=">= 2 ratings"):
        fleiss_kappa(np.array([[1, 0], [0, 1]]))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the library divides 0/0 where alpha is undefined
@settings(max_examples=150, deadline=None)
@given(st.integers(2, 6), st.integers(2, 5), st.integers(2, 30), st.floats(0.0, 0.6), st.integers(0, 2**31 - 1))
def test_krippendorff_alpha_equals_reference(n_raters: int, k: int, n_units: int, p_missing: float,
                                             seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, k, size=(n_raters, n_units)).astype(float)
    data[rng.random(data.shape) < p_missing] = np.nan
    for level in ("nominal", "interval"):
        ours = krippendorff_alpha(data, level=level)
        try:
            ref = float(krippendorff.alpha(reliability_data=data, level_of_measurement=level))
        except ValueError:  # the library refuses a single-valued domain; we return NaN there
            assert math.isnan(ours)
            continue
        assert _close(ours, ref) or (math.isnan(ours) and math.isnan(ref)), (level, ours, ref)


def test_krippendorff_alpha_known_values() -> None:
    perfect = np.array([[0, 1, 2, 1], [0, 1, 2, 1]], dtype=float)
    assert krippendorff_alpha(perfect) == 1.0
    assert math.isnan(krippendorff_alpha(np.array([[1.0, np.nan], [np.nan, 2.0]])))  # nothing pairable


def test_bad_inputs_name_the_value() -> None:
    with pytest.raises(ConfigError, match="level='ordinal'.*nominal"):
        krippendorff_alpha(np.zeros((2, 2)), level="ordinal")  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="negative class index -3"):
        cohen_kappa([0, -3], [0, 1])
    with pytest.raises(SchemaError, match="same items"):
        cohen_kappa([0, 1], [0])
