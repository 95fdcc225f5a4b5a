"""Consensus from several reviews of the same item: majority vote with escalation, and Dawid-Skene EM.

Pure numpy. Votes are class indices; a missing vote is `missing` (-1). An `abstain` class (the review
verdict "unsure") counts as a review but not as a vote for any class.

- `majority_vote` decides one item at a time and says why an item must go to a lead instead: a tie, too
  little agreement (`min_agreement` of all reviews), or no vote at all.
- `vote_posteriors` is the naive-Bayes posterior of each class given an item's votes and each voter's
  accuracy (a wrong voter picks any other class alike; uniform class prior): one vote at accuracy 0.8 is
  0.8, never 1.0 however many agree.
- `dawid_skene` estimates each reviewer's confusion matrix and the class priors by EM over a whole run
  (Dawid & Skene 1979) and returns per-item posteriors: a careful reviewer outweighs two careless ones.
  Items whose answer is known (gold) are clamped to it, which anchors the confusion estimates.

Both `MajorityResult.confidence` and `DawidSkeneResult.confidence` are a posterior probability that the
item's label is right; the majority vote's share of the reviews (what `min_agreement` is compared with) is
`MajorityResult.share`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgemine.errors import ConfigError, SchemaError

ESCALATION_REASONS = ("tie", "low_agreement", "no_votes")


@dataclass(frozen=True)
class MajorityResult:
    labels: np.ndarray  # winning class per item, -1 where the item is escalated
    share: np.ndarray  # winner's share of all reviews of the item (abstentions included), 0 if none
    reasons: np.ndarray  # "" when decided, else one of ESCALATION_REASONS
    # vote_posteriors' probability of the winner (escalated: of the most likely class; no votes: the prior)
    confidence: np.ndarray

    @property
    def escalated(self) -> np.ndarray:
        return self.reasons != ""


def _votes_2d(votes: np.ndarray, *, n_classes: int, missing: int) -> np.ndarray:
    v = np.asarray(votes)
    if v.ndim != 2:
        raise SchemaError(f"votes must be 2-D (items x reviews), got shape {v.shape}")
    if v.size and not np.issubdtype(v.dtype, np.integer):
        raise SchemaError(f"votes must hold integer class indices, got dtype {v.dtype}")
    present = v != missing
    if present.any() and (v[present].min() < 0 or v[present].max() >= n_classes):
        bad = v[present][(v[present] < 0) | (v[present] >= n_classes)][0]
        raise SchemaError(f"vote {int(bad)} is outside 0..{n_classes - 1} (missing={missing})")
    return v.astype(np.int64, copy=False)


def vote_posteriors(
    votes: np.ndarray,
    *,
    n_classes: int,
    accuracy: float | np.ndarray = 0.8,
    abstain: int | None = None,
    missing: int = -1,
) -> np.ndarray:
    """P(true class | votes) per row of `votes` (items x reviews) under a naive-Bayes model of the voters.

    The voter of `votes[i, j]` is right with probability `accuracy` (a number, or an array shaped like
    `votes`) and otherwise names any other class alike; votes are independent given the truth and the
    classes equally likely before any vote. `abstain` and `missing` carry no evidence and get probability 0.
    Accuracies are clipped to [1/c, 0.999] (c the voteable classes): a vote never counts against its class,
    and no voter is infallible (though in floating point enough agreeing votes still round to 1.0).
    """
    v = _votes_2d(votes, n_classes=n_classes, missing=missing)
    acc = np.broadcast_to(np.asarray(accuracy, float), v.shape)
    if acc.size and not np.isfinite(acc).all():
        raise ConfigError(f"accuracy must be finite, got {acc[~np.isfinite(acc)][0]}")
    voteable = np.ones(n_classes, bool)
    if abstain is not None:
        voteable[abstain] = False
    c = int(voteable.sum())
    if c <= 1:
        return np.where(voteable, 1.0, 0.0) * np.ones((v.shape[0], 1))
    acc = np.clip(acc, 1.0 / c, 0.999)
    counts = v != missing
    if abstain is not None:
        counts &= v != abstain
    log_right, log_wrong = np.log(acc), np.log((1.0 - acc) / (c - 1))
    # every vote adds log_wrong to every class, and (log_right - log_wrong) to its own
    log_post = np.zeros((v.shape[0], n_classes))
    rows, cols = np.nonzero(counts)
    np.add.at(log_post, (rows, v[rows, cols]), (log_right - log_wrong)[rows, cols])
    log_post[:, ~voteable] = -np.inf
    log_post -= log_post.max(axis=1, keepdims=True)
    post = np.exp(log_post)
    return post / post.sum(axis=1, keepdims=True)


def majority_vote(
    votes: np.ndarray,
    *,
    n_classes: int,
    abstain: int | None = None,
    min_agreement: float = 0.6,
    missing: int = -1,
    accuracy: float | np.ndarray = 0.8,
) -> MajorityResult:
    """Majority label per row of `votes` (items x reviews), escalating ties and low agreement.

    An item is decided when one class has strictly more votes than any other and its share of all the
    item's reviews (abstentions included) is at least `min_agreement`; with the default 0.6, 2 of 3 and
    1 of 1 decide, 1 of 2 does not. `confidence` is `vote_posteriors` with the voters' `accuracy`.
    """
    if n_classes < 1:
        raise ConfigError(f"n_classes={n_classes} must be >= 1")
    if not 0.0 <= min_agreement <= 1.0:
        raise ConfigError(f"min_agreement={min_agreement} must be between 0 and 1")
    if abstain is not None and not 0 <= abstain < n_classes:
        raise ConfigError(f"abstain={abstain} must be a class index in 0..{n_classes - 1}")
    v = _votes_2d(votes, n_classes=n_classes, missing=missing)
    n_items = v.shape[0]
    rows, cols = np.nonzero(v != missing)
    counts = np.bincount(rows * n_classes + v[rows, cols], minlength=n_items * n_classes).reshape(n_items, n_classes)
    total = counts.sum(axis=1)
    if abstain is not None:
        counts[:, abstain] = 0
    top = counts.max(axis=1) if n_classes else np.zeros(n_items, np.int64)
    winners = counts.argmax(axis=1)
    n_top = (counts == top[:, None]).sum(axis=1)
    share = np.divide(top, total, out=np.zeros(n_items), where=total > 0)
    reasons = np.full(n_items, "", dtype=object)
    reasons[(top > 0) & (share < min_agreement)] = "low_agreement"
    reasons[(top > 0) & (n_top > 1)] = "tie"
    reasons[top == 0] = "no_votes"
    labels = np.where(reasons == "", winners, -1)
    post = vote_posteriors(v, n_classes=n_classes, accuracy=accuracy, abstain=abstain, missing=missing)
    best = np.where(labels >= 0, labels, post.argmax(axis=1))
    confidence = post[np.arange(n_items), best]
    return MajorityResult(labels.astype(np.int64), share, reasons.astype(str), confidence)


@dataclass(frozen=True)
class DawidSkeneResult:
    posteriors: np.ndarray  # items x classes, rows sum to 1
    confusion: np.ndarray  # raters x true class x given class: P(rater says l | truth k)
    priors: np.ndarray  # classes
    n_iter: int
    converged: bool

    @property
    def labels(self) -> np.ndarray:
        return self.posteriors.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        return self.posteriors.max(axis=1)


def votes_to_triples(votes: np.ndarray, *, missing: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item, rater, label) index arrays of the present votes of an items x raters matrix."""
    v = np.asarray(votes)
    if v.ndim != 2:
        raise SchemaError(f"votes must be 2-D (items x raters), got shape {v.shape}")
    items, raters = np.nonzero(v != missing)
    return items.astype(np.int64), raters.astype(np.int64), v[items, raters].astype(np.int64)


def _check_index(name: str, arr: np.ndarray, size: int) -> None:
    if arr.size and (arr.min() < 0 or arr.max() >= size):
        bad = arr[(arr < 0) | (arr >= size)][0]
        raise SchemaError(f"{name} index {int(bad)} is outside 0..{size - 1}")


def dawid_skene(
    items: np.ndarray,
    raters: np.ndarray,
    labels: np.ndarray,
    *,
    n_items: int,
    n_raters: int,
    n_classes: int,
    fixed: np.ndarray | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
    smoothing: float = 0.01,
    prior_accuracy: float | None = None,
    prior_strength: float = 0.0,
) -> DawidSkeneResult:
    """Dawid-Skene EM over sparse votes: vote v says rater `raters[v]` gave item `items[v]` class `labels[v]`.

    `fixed` (length n_items, -1 where unknown) clamps items with a known answer. Starts from the vote
    shares, alternates confusion/prior estimates (with `smoothing` pseudo-counts, so an unseen cell is
    not impossible) and posteriors until the votes' log-likelihood improves by less than `tol` (relative).
    Items without votes keep the prior (or their fixed answer).

    `prior_accuracy` with `prior_strength` > 0 adds a Dirichlet prior to each row of every confusion matrix:
    `prior_strength` pseudo-votes, `prior_accuracy` of them on the true class and the rest spread over the
    others. Without it a reviewer seen on a few items gets near-zero cells, and a single earlier slip then
    swings an item's posterior a hundredfold: three reviewers who name three classes could come out 99% sure.
    """
    it, rt, lb = (np.asarray(a, dtype=np.int64) for a in (items, raters, labels))
    if not it.shape == rt.shape == lb.shape or it.ndim != 1:
        raise SchemaError(f"items, raters, labels must be 1-D of one length, got {it.shape}, {rt.shape}, {lb.shape}")
    for name, value in (("n_items", n_items), ("n_raters", n_raters), ("n_classes", n_classes)):
        if value < 1:
            raise ConfigError(f"{name}={value} must be >= 1")
    if max_iter < 1:
        raise ConfigError(f"max_iter={max_iter} must be >= 1")
    if smoothing <= 0:
        raise ConfigError(f"smoothing={smoothing} must be > 0 (a zero cell would make a class impossible)")
    if prior_strength < 0 or not np.isfinite(prior_strength):
        raise ConfigError(f"prior_strength={prior_strength} must be >= 0")
    if prior_strength > 0 and (prior_accuracy is None or not 0.0 < prior_accuracy < 1.0):
        raise ConfigError(f"prior_accuracy={prior_accuracy} must be between 0 and 1 (exclusive) "
                          f"with prior_strength={prior_strength}")
    _check_index("item", it, n_items)
    _check_index("rater", rt, n_raters)
    _check_index("label", lb, n_classes)
    known = np.full(n_items, -1, np.int64) if fixed is None else np.asarray(fixed, dtype=np.int64)
    if known.shape != (n_items,):
        raise SchemaError(f"fixed must have length n_items={n_items}, got shape {known.shape}")
    _check_index("fixed label", known[known >= 0], n_classes)
    is_known = known >= 0

    def clamp(post: np.ndarray) -> np.ndarray:
        post[is_known] = 0.0
        post[is_known, known[is_known]] = 1.0
        return post

    # start from each item's vote shares (uniform for items without votes)
    post = np.zeros((n_items, n_classes))
    np.add.at(post, (it, lb), 1.0)
    empty = post.sum(axis=1) == 0
    post[empty] = 1.0
    post = clamp(post / post.sum(axis=1, keepdims=True))
    cell = rt * n_classes + lb  # (rater, given label) per vote
    pseudo = np.full((n_classes, n_classes), smoothing)
    if prior_strength > 0 and prior_accuracy is not None:
        off = (1.0 - prior_accuracy) / (n_classes - 1) if n_classes > 1 else 0.0
        pseudo += prior_strength * np.where(np.eye(n_classes, dtype=bool), prior_accuracy, off)
    converged, n_iter = False, 0
    confusion = np.full((n_raters, n_classes, n_classes), 1.0 / n_classes)
    priors = np.full(n_classes, 1.0 / n_classes)
    log_lik = -np.inf
    for n_iter in range(1, max_iter + 1):  # noqa: B007 - n_iter is reported
        # M-step: priors and each rater's confusion matrix from the current posteriors
        priors = post.sum(axis=0) + smoothing
        priors /= priors.sum()
        for k in range(n_classes):
            confusion[:, k, :] = np.bincount(cell, weights=post[it, k], minlength=n_raters * n_classes).reshape(
                n_raters, n_classes
            )
        confusion += pseudo
        confusion /= confusion.sum(axis=2, keepdims=True)
        # E-step: posteriors from priors and confusion
        log_conf = np.log(confusion)
        log_joint = np.tile(np.log(priors), (n_items, 1))
        for k in range(n_classes):
            log_joint[:, k] += np.bincount(it, weights=log_conf[rt, k, lb], minlength=n_items)
        top = log_joint.max(axis=1, keepdims=True)
        joint = np.exp(log_joint - top)
        norm = joint.sum(axis=1, keepdims=True)
        post = clamp(joint / norm)
        # the marginal log-likelihood of the votes; EM never decreases it
        new_log_lik = float((top + np.log(norm)).sum())
        if abs(new_log_lik - log_lik) <= tol * max(1.0, abs(new_log_lik)):
            converged = True
            break
        log_lik = new_log_lik
    return DawidSkeneResult(post, confusion, priors, n_iter, converged)
