"""Majority vote with escalation and Dawid-Skene EM on crafted data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgemine.errors import ConfigError, SchemaError
from edgemine.mining.consensus import dawid_skene, majority_vote, vote_posteriors, votes_to_triples

NOT, CAT_A, CAT_B, UNSURE = 0, 1, 2, 3


def test_majority_decides_clear_items_and_escalates_the_rest() -> None:
    votes = np.array([
        [CAT_A, CAT_A, NOT],  # 2 of 3
        [CAT_A, -1, -1],  # single review
        [CAT_A, NOT, -1],  # 1 vs 1: tie
        [CAT_A, CAT_B, NOT],  # three-way tie
        [CAT_A, UNSURE, -1],  # 1 of 2 reviews: low agreement
        [UNSURE, UNSURE, -1],  # nobody voted for a class
        [-1, -1, -1],  # no reviews
        [NOT, NOT, UNSURE],  # 2 of 3
    ])
    res = majority_vote(votes, n_classes=4, abstain=UNSURE)
    assert res.labels.tolist() == [CAT_A, CAT_A, -1, -1, -1, -1, -1, NOT]
    assert res.reasons.tolist() == ["", "", "tie", "tie", "low_agreement", "no_votes", "no_votes", ""]
    assert res.escalated.tolist() == [False, False, True, True, True, True, True, False]
    assert np.allclose(res.share, [2 / 3, 1, 0.5, 1 / 3, 0.5, 0, 0, 2 / 3])


def test_min_agreement_moves_the_bar() -> None:
    votes = np.array([[1, 1, 0]])
    assert majority_vote(votes, n_classes=2, min_agreement=0.7).reasons.tolist() == ["low_agreement"]
    assert majority_vote(votes, n_classes=2, min_agreement=0.6).labels.tolist() == [1]


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 5), st.integers(1, 5), st.integers(1, 20), st.integers(0, 2**31 - 1))
def test_majority_winner_has_strictly_most_votes(k: int, n_reviews: int, n_items: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    votes = rng.integers(-1, k, size=(n_items, n_reviews))
    res = majority_vote(votes, n_classes=k, min_agreement=0.0)
    for row, label, reason in zip(votes, res.labels, res.reasons, strict=True):
        counts = np.bincount(row[row >= 0], minlength=k)
        if reason == "":
            assert counts[label] > np.delete(counts, label).max(initial=0)
        else:
            assert reason in ("tie", "no_votes")


def test_majority_rejects_bad_input() -> None:
    with pytest.raises(SchemaError, match="vote 7 is outside 0..2"):
        majority_vote(np.array([[7]]), n_classes=3)
    with pytest.raises(ConfigError, match="min_agreement=1.5"):
        majority_vote(np.array([[0]]), n_classes=3, min_agreement=1.5)


def _crowd(seed: int, n_items: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Two careful reviewers (90% right) and three spammers who always answer class 0; 3 classes."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(3, size=n_items, p=[0.5, 0.3, 0.2])
    votes = np.zeros((n_items, 5), np.int64)
    for r in range(2):
        right = rng.random(n_items) < 0.9
        votes[:, r] = np.where(right, truth, rng.integers(0, 3, n_items))
    votes[:, 2:] = 0
    return truth, votes


def test_dawid_skene_outweighs_consistent_spammers_where_majority_fails() -> None:
    truth, votes = _crowd(3)
    it, rt, lb = votes_to_triples(votes)
    ds = dawid_skene(it, rt, lb, n_items=len(truth), n_raters=5, n_classes=3)
    maj = majority_vote(votes, n_classes=3)
    ds_acc = float((ds.labels == truth).mean())
    maj_acc = float((maj.labels == truth).mean())
    assert ds.converged
    assert maj_acc < 0.6  # the spammers carry the vote
    assert ds_acc > 0.9
    # the spammers' confusion rows put (almost) all mass on class 0 whatever the truth
    assert (ds.confusion[2:, :, 0] > 0.95).all()
    # the careful reviewers' diagonals are near their 0.9 + 0.1/3 accuracy
    assert np.allclose(np.diagonal(ds.confusion[:2], axis1=1, axis2=2), 0.93, atol=0.06)
    assert np.allclose(ds.posteriors.sum(axis=1), 1.0)


def test_dawid_skene_recovers_priors_and_perfect_raters() -> None:
    truth = np.array([0, 1, 1, 2, 0, 0, 1, 2, 2, 0] * 10)
    votes = np.stack([truth, truth, truth], axis=1)
    ds = dawid_skene(*votes_to_triples(votes), n_items=len(truth), n_raters=3, n_classes=3)
    assert (ds.labels == truth).all() and (ds.confidence > 0.99).all()
    assert np.allclose(ds.priors, np.bincount(truth) / len(truth), atol=0.01)


def test_dawid_skene_clamps_gold_items_and_keeps_prior_for_unvoted() -> None:
    votes = np.array([[0, 0], [1, 1], [-1, -1], [0, 0]])
    fixed = np.array([-1, -1, -1, 1])  # the last item's answer is known, whatever the votes say
    ds = dawid_skene(*votes_to_triples(votes), n_items=4, n_raters=2, n_classes=2, fixed=fixed)
    assert ds.posteriors[3].tolist() == [0.0, 1.0]
    assert np.allclose(ds.posteriors[2], ds.priors)


def test_dawid_skene_names_bad_indices() -> None:
    with pytest.raises(SchemaError, match="label index 5"):
        dawid_skene(np.array([0]), np.array([0]), np.array([5]), n_items=1, n_raters=1, n_classes=3)
    with pytest.raises(ConfigError, match="n_raters=0"):
        dawid_skene(np.array([0]), np.array([0]), np.array([0]), n_items=1, n_raters=0, n_classes=3)


def _brute_posterior(votes: list[int], accuracy: list[float], n_classes: int, abstain: int | None) -> np.ndarray:
    """P(truth | votes) by enumerating the truth: each vote right with its accuracy, else any other class alike."""
    classes = [k for k in range(n_classes) if k != abstain]
    joint = np.zeros(n_classes)
    for k in classes:
        p = 1.0 / len(classes)
        for v, a in zip(votes, accuracy, strict=True):
            if v == -1 or v == abstain:
                continue
            p *= a if v == k else (1 - a) / (len(classes) - 1)
        joint[k] = p
    return joint / joint.sum()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-1, 3), min_size=1, max_size=5), st.floats(0.4, 0.99), st.sampled_from([None, UNSURE]))
def test_vote_posteriors_equal_enumeration(votes: list[int], accuracy: float, abstain: int | None) -> None:
    got = vote_posteriors(np.array([votes]), n_classes=4, accuracy=accuracy, abstain=abstain)[0]
    assert np.allclose(got, _brute_posterior(votes, [accuracy] * len(votes), 4, abstain))
    assert got.max() < 1.0 and np.isclose(got.sum(), 1.0)


def test_majority_confidence_is_a_posterior_that_grows_with_agreement() -> None:
    """One review is as sure as its reviewer, never 1.0; agreeing reviews add to it, a dissent takes away."""
    votes = np.array([[CAT_A, -1, -1], [CAT_A, CAT_A, CAT_A], [CAT_A, CAT_A, NOT], [CAT_A, CAT_B, NOT]])
    res = majority_vote(votes, n_classes=4, abstain=UNSURE, accuracy=0.8)
    single, unanimous, split, three_way = res.confidence
    assert single == pytest.approx(0.8)
    assert single < unanimous < 1.0 and split < unanimous
    assert res.reasons[3] == "tie" and three_way < 0.5


def test_dawid_skene_prior_keeps_a_three_way_split_uncertain() -> None:
    """Three reviewers of about the same skill, 60 items: without a prior on the confusion matrices a few slips
    make the items on which they name three different classes look ~99% sure; with it they stay well below."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, 60)
    votes = np.empty((60, 3), np.int64)
    for r, acc in enumerate((0.85, 0.8, 0.75)):
        wrong = (truth + rng.integers(1, 4, 60)) % 4
        votes[:, r] = np.where(rng.random(60) < acc, truth, wrong)
    three_way = np.array([len(set(row)) == 3 for row in votes.tolist()])
    unanimous = np.array([len(set(row)) == 1 for row in votes.tolist()])
    assert three_way.sum() >= 2
    it, rt, lb = votes_to_triples(votes)
    bare = dawid_skene(it, rt, lb, n_items=60, n_raters=3, n_classes=4)
    held = dawid_skene(it, rt, lb, n_items=60, n_raters=3, n_classes=4, prior_accuracy=0.8, prior_strength=4.0)
    assert bare.confidence[three_way].max() > 0.99
    assert held.confidence[three_way].max() < 0.95
    assert held.confidence[three_way].max() < held.confidence[unanimous].min() < 1.0
    with pytest.raises(ConfigError, match="prior_accuracy"):
        dawid_skene(it, rt, lb, n_items=60, n_raters=3, n_classes=4, prior_strength=1.0)
