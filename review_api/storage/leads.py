"""A lead's actions: the escalated items waiting for them, and their final answer for an item.

A lead's answer is final: Dawid-Skene never changes a resolved or gold item, no reviewer may amend or undo a
decision on it afterwards (audit.py), and a gold item's known answer anchors the reviewers' accuracy. Each
resolution is a "resolve" entry of the item's audit trail. An item becomes gold only while nobody holds a lease
on it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edgemine.errors import InvalidFieldError, ReviewError
from edgemine.review_api.db import Assignment, Item, Run
from edgemine.review_api.storage._common import EDGE, LEASED, NOT_EDGE, UNSURE
from edgemine.review_api.storage.decisions import DecisionInput, validate_decision
from edgemine.review_api.storage.events import record_event, snapshot
from edgemine.review_api.storage.items import get_item
from edgemine.review_api.storage.runs import get_run


def escalation_text(reason: str | None, *, confidence: float | None = None, min_agreement: float | None = None,
                    ds_min_confidence: float | None = None, share: float | None = None) -> str | None:
    """Why an item waits for a lead, in words; one line for every reason majority or Dawid-Skene can set
    (mining.consensus.ESCALATION_REASONS and "low_confidence"). `share` is the most chosen answer's share of the
    reviews (`top_share`; low_agreement), `confidence` the item's stored probability (low_confidence)."""
    if not reason:
        return None
    share_text = f"{share:.0%}" if share is not None else "too small a share"
    if reason == "tie":
        return "the reviews tie: two or more answers got the same number of votes"
    if reason == "low_agreement":
        floor = f" the run's min_agreement of {min_agreement:.0%}" if min_agreement is not None else " min_agreement"
        return f"the reviewers disagree: the most chosen answer got {share_text} of the votes, below{floor}"
    if reason == "no_votes":
        return "every review said unsure, so there is no vote to count"
    if reason == "low_confidence":
        floor = (f" the run's ds_min_confidence of {ds_min_confidence:.0%}" if ds_min_confidence is not None
                 else " ds_min_confidence")
        likely = f"only {confidence:.0%} likely" if confidence is not None else "too uncertain"
        return (f"weighing each reviewer's track record (Dawid-Skene), the best answer is {likely}, below{floor}")
    return f"escalated ({reason})"


def escalations(session: Session, *, run_id: str | None = None, limit: int = 100, offset: int = 0) -> list[Item]:
    query = select(Item).where(Item.status == "escalated")
    if run_id is not None:
        query = query.where(Item.run_id == run_id)
    return list(session.scalars(query.order_by(Item.consensus_at, Item.id).limit(limit).offset(offset)))


def resolve_item(
    session: Session,
    *,
    item_id: int,
    lead_id: int,
    verdict: str,
    category: str | None,
    root_cause: str | None,
    notes: str | None,
    make_gold: bool,
    now: datetime,
) -> Item:
    """A lead's final answer for an item (escalated or not); `make_gold` also makes it a gold item."""
    item = get_item(session, item_id=item_id)
    run = get_run(session, run_id=item.run_id)
    if verdict == UNSURE:
        raise InvalidFieldError("verdict", f"a lead resolves with {EDGE!r} or {NOT_EDGE!r}, not {UNSURE!r}")
    validate_decision(run, DecisionInput(verdict=verdict, category=category,
                                         root_causes=(root_cause,) if root_cause else (), notes=notes))
    before = (snapshot(item.consensus_verdict, item.consensus_category,
                       [item.consensus_root_cause] if item.consensus_root_cause else [], item.resolution_notes)
              if item.consensus_verdict else None)
    item.status, item.escalation_reason = ("gold" if make_gold or item.is_gold else "resolved"), None
    item.consensus_verdict, item.consensus_category, item.consensus_root_cause = verdict, category, root_cause
    item.confidence, item.consensus_method, item.consensus_at = 1.0, "lead", now
    item.resolved_by, item.resolution_notes = lead_id, notes
    item.slots_free = 0  # settled: the queue never serves it again (reviews out on it may still land)
    if make_gold and not item.is_gold:
        _make_gold(session, item=item, run=run, verdict=verdict, category=category)
    record_event(session, item_id=item.id, run_id=item.run_id, reviewer_id=lead_id, decision_id=None,
                 action="resolve", at=now, before=before,
                 after=snapshot(verdict, category, [root_cause] if root_cause else [], notes))
    return item


def _make_gold(session: Session, *, item: Item, run: Run, verdict: str, category: str | None) -> None:
    live = session.scalar(select(func.count()).where(Assignment.item_id == item.id, Assignment.state == LEASED))
    if live:
        raise ReviewError(f"item {item.id} is leased right now; make it gold after its review")
    item.is_gold, item.gold_verdict, item.gold_category = True, verdict, category
    item.slots_free = 0
    run.n_gold += 1

