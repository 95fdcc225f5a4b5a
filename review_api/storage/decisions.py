"""Decisions: a reviewer's verdict on an item they hold a live lease for, and the item's majority consensus.

Nothing here commits: the caller's transaction does (`Database.write()` / `run_write`, which on SQLite
commits in groups with `synchronous=FULL`), and the API answers only after that commit, so every decision
it acknowledged survives a kill of the server (tests/review_api/test_crash.py). Submitting closes the lease
(`decided`) in the same transaction; a retried request with the same Idempotency-Key returns the first
decision instead of recording a second. A reviewer decides an item at most once
(uq_decisions_item_reviewer); each decision adds its "decide" event to the audit trail (events.py), and its
reviewer may amend or undo it for a while (audit.py). The decision that completes an item's reviews writes
its majority consensus (escalated when agreement is below the run's `min_agreement`), with a confidence that
is a posterior probability (see _common.py: every voter taken as `VOTER_ACCURACY` accurate, nothing read on
the hot path); Dawid-Skene may revise it later (consensus.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from edgemine.contracts import VERDICTS
from edgemine.errors import InvalidFieldError, LeaseExpiredError, NotFoundError, ReviewError
from edgemine.mining.consensus import majority_vote
from edgemine.review_api.db import Run
from edgemine.review_api.hotsql import hot
from edgemine.review_api.storage._common import (
    ASSIGNMENTS,
    DECISIONS,
    EDGE,
    FINAL_STATUSES,
    ITEMS,
    NOT_EDGE,
    UNSURE,
    VOTER_ACCURACY,
    consensus_values,
    decision_label,
    top_tag,
)
from edgemine.review_api.storage.events import record_event, snapshot
from edgemine.review_api.storage.runs import RunRules, run_rules

MAX_NOTES = 2000


@dataclass(frozen=True)
class DecisionInput:
    verdict: str
    category: str | None = None
    root_causes: tuple[str, ...] = ()
    notes: str | None = None
    seconds: float | None = None


def validate_decision(run: Run | RunRules, d: DecisionInput) -> None:
    if d.verdict not in VERDICTS:
        raise InvalidFieldError("verdict", f"verdict={d.verdict!r} is not one of {list(VERDICTS)}")
    if d.verdict == EDGE:
        if not d.category:
            raise InvalidFieldError("category", f"category is required when verdict is {EDGE!r}; "
                                                f"one of {run.categories}")
        if d.category not in run.categories:
            raise InvalidFieldError("category", f"category={d.category!r} is not in run {run.run_id!r}'s "
                                                f"taxonomy {run.categories}")
    elif d.category:
        raise InvalidFieldError("category", f"category={d.category!r} is only allowed with verdict {EDGE!r}, "
                                            f"not {d.verdict!r}")
    unknown = [t for t in d.root_causes if t not in run.root_causes]
    if unknown:
        raise InvalidFieldError("root_causes", f"root cause(s) {unknown} not in run {run.run_id!r}'s tags "
                                               f"{run.root_causes}")
    if len(set(d.root_causes)) != len(d.root_causes):
        raise InvalidFieldError("root_causes", f"root_causes {list(d.root_causes)} repeat a tag")
    if d.notes is not None and len(d.notes) > MAX_NOTES:
        raise InvalidFieldError("notes", f"notes are {len(d.notes)} characters; at most {MAX_NOTES}")
    if d.seconds is not None and not (math.isfinite(d.seconds) and 0 <= d.seconds <= 86_400):
        raise InvalidFieldError("seconds", f"seconds={d.seconds} must be between 0 and 86400")


def _same_decision(row: Any, item_id: int, d: DecisionInput) -> bool:
    return (row.item_id == item_id and row.verdict == d.verdict and row.category == d.category
            and list(row.root_causes) == list(d.root_causes) and row.notes == d.notes
            and row.seconds == d.seconds)


@dataclass(frozen=True)
class DecisionRecord:
    """One stored decision, as the hot path hands it back (no ORM object)."""

    id: int
    item_id: int
    reviewer_id: int
    run_id: str
    verdict: str
    category: str | None
    root_causes: list[str]
    notes: str | None
    seconds: float | None
    decided_at: datetime
    idempotency_key: str | None
    is_gold: bool
    gold_correct: bool | None


_DECISION_COLUMNS = tuple(f.name for f in fields(DecisionRecord))
_PRIOR = (select(*(DECISIONS.c[c] for c in _DECISION_COLUMNS))
          .where(DECISIONS.c.reviewer_id == bindparam("rid"), DECISIONS.c.idempotency_key == bindparam("key")))
_REQUIRED = select(ITEMS.c.required_reviews).where(ITEMS.c.id == bindparam("iid"))
_LEASE_OF = (select(ASSIGNMENTS.c.id, ASSIGNMENTS.c.state, ASSIGNMENTS.c.expires_at, ASSIGNMENTS.c.leased_at,
                    ASSIGNMENTS.c.run_id)
             .where(ASSIGNMENTS.c.item_id == bindparam("iid"), ASSIGNMENTS.c.reviewer_id == bindparam("rid")))
_BUMP = (update(ITEMS).where(ITEMS.c.id == bindparam("iid")).values(n_decisions=ITEMS.c.n_decisions + 1)
         .returning(ITEMS.c.n_decisions, ITEMS.c.required_reviews, ITEMS.c.is_gold, ITEMS.c.gold_verdict,
                    ITEMS.c.gold_category))
_INSERT_DECISION = insert(DECISIONS).returning(DECISIONS.c.id)
_CLOSE_LEASE = update(ASSIGNMENTS).where(ASSIGNMENTS.c.id == bindparam("lid")).values(
    state="decided", closed_at=bindparam("now"))
_DECISIONS_OF = (select(*(DECISIONS.c[c] for c in _DECISION_COLUMNS)).where(DECISIONS.c.item_id == bindparam("iid"))
                 .order_by(DECISIONS.c.id))
# never over a lead's answer: a lead may resolve an item while a review of it is still out (an undone one too)
_SET_CONSENSUS = update(ITEMS).where(ITEMS.c.id == bindparam("iid"), *(ITEMS.c.status != s for s in FINAL_STATUSES))


@dataclass(frozen=True)
class SubmitResult:
    decision: DecisionRecord
    created: bool  # False: a retry of an earlier request with the same idempotency key
    completed: bool  # this decision completed the item's reviews (consensus was computed)
    run_id: str
    required_reviews: int

def submit_decision(
    session: Session,
    *,
    item_id: int,
    reviewer_id: int,
    decision: DecisionInput,
    now: datetime,
    idempotency_key: str | None = None,
) -> SubmitResult:
    """Record a reviewer's decision on an item they hold a live lease for.

    With an idempotency key, repeating the same request returns the first decision unchanged; the same
    key with a different body is refused. When the item has all its reviews, its consensus is computed.
    Core statements only (see lease_next).
    """
    q = hot(session)
    if idempotency_key is not None:
        if not 1 <= len(idempotency_key) <= 128:
            raise InvalidFieldError("Idempotency-Key", "Idempotency-Key must be 1-128 characters")
        prior = q.first(_PRIOR, {"rid": reviewer_id, "key": idempotency_key})
        if prior is not None:
            record = DecisionRecord(*prior)
            if not _same_decision(record, item_id, decision):
                raise InvalidFieldError("Idempotency-Key", f"Idempotency-Key {idempotency_key!r} was already used "
                                                           f"for decision {record.id} with a different body")
            required = q.scalar(_REQUIRED, {"iid": record.item_id})
            return SubmitResult(record, False, False, record.run_id, int(required or 0))
    lease = q.first(_LEASE_OF, {"iid": item_id, "rid": reviewer_id})
    if lease is None:
        raise NotFoundError(f"item {item_id} does not exist or is not in your queue")
    lease_id, state, expires_at, leased_at, lease_run = lease
    if state == "decided":
        raise ReviewError(f"you already decided item {item_id}; send the same Idempotency-Key to retry safely")
    if state != "leased" or expires_at <= now:
        what = "been released" if state == "released" else "expired"
        raise LeaseExpiredError(f"your lease on item {item_id} has {what}; the item went back to the queue")
    run = run_rules(session, run_id=lease_run)
    validate_decision(run, decision)
    # lock the item row first (PostgreSQL): the decision that completes it then sees all the others
    n_done, required, is_gold, gold_verdict, gold_category = q.one(_BUMP, {"iid": item_id})
    gold_correct = None
    if is_gold:
        gold_correct = decision.verdict == gold_verdict and (
            decision.verdict != EDGE or decision.category == gold_category)
    values: dict[str, Any] = {
        "item_id": item_id, "reviewer_id": reviewer_id, "run_id": run.run_id, "verdict": decision.verdict,
        "category": decision.category, "root_causes": list(decision.root_causes), "notes": decision.notes,
        "seconds": decision.seconds, "decided_at": now, "idempotency_key": idempotency_key,
        "is_gold": bool(is_gold), "gold_correct": gold_correct,
    }
    decision_id = q.one(_INSERT_DECISION, {
        **values, "assignment_id": lease_id, "handling_seconds": max(0.0, (now - leased_at).total_seconds()),
    })[0]
    record = DecisionRecord(id=int(decision_id), **values)
    q.rowcount(_CLOSE_LEASE, {"lid": lease_id, "now": now})
    record_event(session, item_id=item_id, run_id=run.run_id, reviewer_id=reviewer_id, decision_id=record.id,
                 action="decide", at=now, before=None,
                 after=snapshot(decision.verdict, decision.category, decision.root_causes, decision.notes))
    completed = not is_gold and n_done >= required
    if completed:  # a single review is its own consensus: no need to read it back
        majority_consensus(session, item_id=item_id, run=run, now=now,
                            decisions=[record] if n_done == 1 else None)
    return SubmitResult(record, True, completed, run.run_id, int(required))


def decisions_of(session: Session, *, item_id: int) -> list[DecisionRecord]:
    rows = hot(session).all(_DECISIONS_OF, {"iid": item_id})
    return [DecisionRecord(*r) for r in rows]


def _root_cause(decisions: Sequence[Any], label: str) -> str | None:
    return top_tag([d.root_causes for d in decisions if decision_label(d.verdict, d.category) == label])


def majority_consensus(session: Session, *, item_id: int, run: RunRules, now: datetime,
                        decisions: Sequence[DecisionRecord] | None = None) -> None:
    if decisions is None:
        decisions = decisions_of(session, item_id=item_id)
    labels = [NOT_EDGE, *run.categories, UNSURE]
    index = {lab: i for i, lab in enumerate(labels)}
    votes = np.array([[index[decision_label(d.verdict, d.category)] for d in decisions]], np.int64)
    res = majority_vote(votes, n_classes=len(labels), abstain=index[UNSURE], min_agreement=run.min_agreement,
                        accuracy=VOTER_ACCURACY)
    winner = labels[int(res.labels[0])] if res.labels[0] >= 0 else None
    root = _root_cause(decisions, winner) if winner else None
    values = consensus_values(label=winner, confidence=float(res.confidence[0]), method="majority",
                              reason=str(res.reasons[0]), root_cause=root, now=now)
    hot(session).rowcount(_SET_CONSENSUS, {"iid": item_id, **values})

