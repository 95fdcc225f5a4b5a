"""Consensus from several reviews of the same item: majority vote with escalation, and Dawid-Skene EM.

Pure numpy. Votes are class indices; a missing vote is `missing` (-1). An `abstain` class (the review
verdict "unsure") counts as a review but not as a vote for any class.

- `majority_vote` decides one item at a time and says why an item must go to a lead instead: a tie, too
  little agreement (`min_agreement` of all reviews), or no vote at all.
- `dawid_skene` estimates each reviewer's confusion matrix and the class priors by EM over a whole run
  (Dawid & Skene 1979) and returns per-item posteriors: a careful reviewer outweighs two careless ones.
  Items whose answer is known (gold) are clamped to it, which anchors the confusion estimates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgemine.errors import ConfigError, SchemaError

ESCALATION_REASONS = ("tie", "low_agreement", "no_votes")


@dataclass(frozen=True)
class MajorityResult:
    labels: np.ndarray  # winning class per item, -1 where the item is escalated
    confidence: np.ndarray  # winner's share of all reviews of the item (abstentions included), 0 if none
    reasons: np.ndarray  # "" when decided, else one of ESCALATION_REASONS

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


def majority_vote(
    votes: np.ndarray,
    *,
    n_classes: int,
    abstain: int | None = None,
    min_agreement: float = 0.6,
    missing: int = -1,
) -> MajorityResult:
    """Majority label per row of `votes` (items x reviews), escalating ties and low agreement.

    An item is decided when one class has strictly more votes than any other and its share of all the
    item's reviews (abstentions included) is at least `min_agreement`; with the default 0.6, 2 of 3 and
    1 of 1 decide, 1 of 2 does not.
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
    return MajorityResult(labels.astype(np.int64), share, reasons.astype(str))


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
) -> DawidSkeneResult:
    """Dawid-Skene EM over sparse votes: vote v says rater `raters[v]` gave item `items[v]` class `labels[v]`.

    `fixed` (length n_items, -1 where unknown) clamps items with a known answer. Starts from the vote
    shares, alternates confusion/prior estimates (with `smoothing` pseudo-counts, so an unseen cell is
    not impossible) and posteriors until the votes' log-likelihood improves by less than `tol` (relative).
    Items without votes keep the prior (or their fixed answer).
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
        confusion += smoothing
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
