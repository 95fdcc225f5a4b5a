"""Dawid-Skene consensus over a whole run: each reviewer's confusion matrix, and the items' answers from it.

Planning reads a snapshot and computes (`plan_consensus`, in a process of its own on a server:
`plan_consensus_job`); applying writes the changed answers (`apply_consensus`), guarded so that an item
which got another review, an amended or withdrawn review, or a lead's answer since the snapshot is left
alone. Gold and lead-resolved items anchor the estimate and never change; answers below the run's
`ds_min_confidence` are escalated. Each reviewer's confusion matrix has a prior (`VOTER_ACCURACY`,
`DS_PRIOR_STRENGTH` pseudo-votes a row, _common.py), so a posterior is a probability that majority's
confidence can be compared with.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session

from edgemine.mining.consensus import dawid_skene
from edgemine.review_api.db import Decision, Item
from edgemine.review_api.hotsql import hot
from edgemine.review_api.storage._common import (
    DS_PRIOR_STRENGTH,
    ITEMS,
    NOT_EDGE,
    UNSURE,
    VOTER_ACCURACY,
    consensus_outcome,
    consensus_values,
    decision_label,
    in_batches,
    top_tag,
)
from edgemine.review_api.storage.reviewers import reviewer_names
from edgemine.review_api.storage.runs import get_run


@dataclass
class ConsensusReport:
    run_id: str
    method: str
    items_considered: int
    items_updated: int
    escalated: int
    converged: bool
    n_iter: int
    reviewer_accuracy: dict[str, float] = field(default_factory=dict)  # estimated P(correct), by name


@dataclass(frozen=True, slots=True)
class ItemAnswer:
    """Dawid-Skene's answer for one item (one per reviewed item of a run: slots keep a big plan small)."""

    item_id: int
    n_seen: int  # the item's review count in the snapshot; the answer is written only if it is still that
    seen_at: datetime | None  # and only if its consensus is still the one of the snapshot (no amend/undo since)
    label: str
    confidence: float  # the posterior of `label`
    root_cause: str | None
    changed: bool  # differs from what is stored


@dataclass
class ConsensusPlan:
    """Dawid-Skene's answers for a run, computed from a snapshot; `apply_consensus` writes them."""

    run_id: str
    ds_min_confidence: float
    answers: list[ItemAnswer]
    converged: bool
    n_iter: int
    reviewer_accuracy: dict[str, float]

    def chunks(self, size: int) -> Iterator[ConsensusPlan]:
        """The plan in parts of at most `size` changed answers (short write transactions for a busy server)."""
        changed = [a for a in self.answers if a.changed]
        for start in range(0, len(changed), size):
            yield replace(self, answers=changed[start:start + size])


def plan_consensus(session: Session, *, run_id: str, min_reviews: int = 3) -> ConsensusPlan:
    """Run Dawid-Skene over a run's decisions (read only); items with >= `min_reviews` reviews get answers.

    Gold and lead-resolved items are clamped to their known answers: they anchor each reviewer's
    confusion matrix, and they never change. "unsure" reviews are left out, and so are items with a single
    review that are neither: one opinion says nothing about its reviewer's accuracy (it would only flatter
    them), and in a big run those items are most of the decisions — the EM's cost.
    """
    run = get_run(session, run_id=run_id)
    classes = [NOT_EDGE, *run.categories]
    cls = {c: i for i, c in enumerate(classes)}
    rows = session.execute(
        select(Decision.item_id, Decision.reviewer_id, Decision.verdict, Decision.category, Decision.root_causes)
        .join(Item, Item.id == Decision.item_id)
        .where(Decision.run_id == run_id, Decision.verdict != UNSURE,
               or_(Item.n_decisions >= 2, Item.is_gold, Item.status == "resolved"))
    ).all()
    if not rows:
        return ConsensusPlan(run_id, run.ds_min_confidence, [], True, 0, {})
    item_ids = np.array(sorted({r[0] for r in rows}), np.int64)
    reviewer_ids = np.array(sorted({r[1] for r in rows}), np.int64)
    it = np.searchsorted(item_ids, np.array([r[0] for r in rows], np.int64))
    rt = np.searchsorted(reviewer_ids, np.array([r[1] for r in rows], np.int64))
    labels = [decision_label(r[2], r[3]) for r in rows]
    lb = np.array([cls[lab] for lab in labels], np.int64)
    state: dict[int, Any] = {}
    ids = item_ids.tolist()
    for part in in_batches(ids):  # by primary key: a run may hold millions of items
        state.update((r[0], r[1:]) for r in session.execute(
            select(Item.id, Item.is_gold, Item.gold_verdict, Item.gold_category, Item.status,
                   Item.consensus_verdict, Item.consensus_category, Item.n_decisions, Item.consensus_method,
                   Item.consensus_root_cause, Item.confidence, Item.consensus_at)
            .where(Item.id.in_(part))
        ).all())
    fixed = np.full(len(item_ids), -1, np.int64)
    for pos, iid in enumerate(item_ids.tolist()):
        is_gold, gold_verdict, gold_category, status, c_verdict, c_category = state[iid][:6]
        if is_gold and gold_verdict:
            fixed[pos] = cls[decision_label(gold_verdict, gold_category)]
        elif status == "resolved" and c_verdict:
            fixed[pos] = cls[decision_label(c_verdict, c_category)]
    ds = dawid_skene(it, rt, lb, n_items=len(item_ids), n_raters=len(reviewer_ids), n_classes=len(classes),
                     fixed=fixed, prior_accuracy=VOTER_ACCURACY, prior_strength=DS_PRIOR_STRENGTH)
    tags_by_item: dict[int, list[tuple[str, list[str]]]] = {}
    for r, lab in zip(rows, labels, strict=True):
        tags_by_item.setdefault(r[0], []).append((lab, list(r[4] or [])))
    answers: list[ItemAnswer] = []
    best, confidence = ds.labels, ds.confidence  # computed once: they are properties over all items
    for pos, iid in enumerate(item_ids.tolist()):
        is_gold, _, _, status, *stored, n_decisions, method, stored_root, stored_conf, seen_at = state[iid]
        if fixed[pos] >= 0 or is_gold or n_decisions < min_reviews or status not in ("complete", "escalated"):
            continue
        label, conf = classes[int(best[pos])], float(confidence[pos])
        root = top_tag([tags for lab, tags in tags_by_item[iid] if lab == label])
        new = consensus_outcome(label=label, root_cause=root,
                                reason="low_confidence" if conf < run.ds_min_confidence else "")
        changed = (new["status"], new["consensus_verdict"], new["consensus_category"], "dawid_skene",
                   new["consensus_root_cause"]) != (status, *stored, method, stored_root) or abs(
                       conf - (stored_conf or 0.0)) > 1e-3
        answers.append(ItemAnswer(iid, int(n_decisions), seen_at, label, conf, root, changed))
    names = reviewer_names(session, reviewer_ids.tolist())
    accuracy = {names[int(r)]: float(np.diagonal(ds.confusion[k]) @ ds.priors) for k, r in enumerate(reviewer_ids)}
    return ConsensusPlan(run_id, run.ds_min_confidence, answers, ds.converged, ds.n_iter, accuracy)


_APPLY_ANSWER = update(ITEMS).where(
    ITEMS.c.id == bindparam("iid"), ITEMS.c.n_decisions == bindparam("n_seen"),
    ITEMS.c.consensus_at == bindparam("seen_at"),
    or_(ITEMS.c.status == "complete", ITEMS.c.status == "escalated"))


def apply_consensus(session: Session, *, plan: ConsensusPlan, now: datetime) -> ConsensusReport:
    """Write a plan's changed answers; items that got another review or a lead's answer since are left alone.

    Each answer stands alone, so a big plan may be applied in several transactions (`plan.chunks`)."""
    updated = 0
    q = hot(session)
    for a in plan.answers:
        if not a.changed:
            continue
        values = consensus_values(label=a.label, confidence=a.confidence, method="dawid_skene",
                                  root_cause=a.root_cause, now=now,
                                  reason="low_confidence" if a.confidence < plan.ds_min_confidence else "")
        updated += q.rowcount(_APPLY_ANSWER, {"iid": a.item_id, "n_seen": a.n_seen, "seen_at": a.seen_at, **values})
    escalated_n = sum(a.confidence < plan.ds_min_confidence for a in plan.answers)
    return ConsensusReport(plan.run_id, "dawid_skene", len(plan.answers), updated, escalated_n, plan.converged,
                           plan.n_iter, plan.reviewer_accuracy)


def plan_consensus_job(database_url: str, run_id: str) -> ConsensusPlan:
    """`plan_consensus` in a process of its own (the server's background refresh): the EM never holds the
    server's GIL. Opens and closes its own connection."""
    from edgemine.review_api.db import Database

    db = Database(database_url)
    try:
        with db.read() as s:
            return plan_consensus(s, run_id=run_id)
    finally:
        db.dispose()


def refresh_consensus(session: Session, *, run_id: str, now: datetime, min_reviews: int = 3) -> ConsensusReport:
    """Dawid-Skene over a run, written back in the same transaction (see plan_consensus / apply_consensus).

    Items whose posterior is below the run's `ds_min_confidence` are escalated.
    """
    return apply_consensus(session, plan=plan_consensus(session, run_id=run_id, min_reviews=min_reviews), now=now)

