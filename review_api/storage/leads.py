"""A lead's actions: the escalated items waiting for them, and their final answer for an item.

A lead's answer is final: Dawid-Skene never changes a resolved or gold item, and a gold item's known answer
anchors the reviewers' accuracy. An item becomes gold only while nobody holds a lease on it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edgemine.errors import InvalidFieldError, ReviewError
from edgemine.review_api.db import Assignment, Item, Run
from edgemine.review_api.storage._common import EDGE, LEASED, NOT_EDGE, UNSURE
from edgemine.review_api.storage.decisions import DecisionInput, validate_decision
from edgemine.review_api.storage.items import get_item
from edgemine.review_api.storage.runs import get_run


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
    item.status, item.escalation_reason = ("gold" if make_gold or item.is_gold else "resolved"), None
    item.consensus_verdict, item.consensus_category, item.consensus_root_cause = verdict, category, root_cause
    item.confidence, item.consensus_method, item.consensus_at = 1.0, "lead", now
    item.resolved_by, item.resolution_notes = lead_id, notes
    if make_gold and not item.is_gold:
        _make_gold(session, item=item, run=run, verdict=verdict, category=category)
    return item


def _make_gold(session: Session, *, item: Item, run: Run, verdict: str, category: str | None) -> None:
    live = session.scalar(select(func.count()).where(Assignment.item_id == item.id, Assignment.state == LEASED))
    if live:
        raise ReviewError(f"item {item.id} is leased right now; make it gold after its review")
    item.is_gold, item.gold_verdict, item.gold_category = True, verdict, category
    item.slots_free = 0
    run.n_gold += 1

