"""The lead's item browser: a run's items filtered by status, category, reviewer, disagreement and gold, each
with its current reviews side by side. Read only; pages by item id (keyset: `after_id`), so a late page costs
what the first does; `total`, and the category and disagreement filters, read the run's items and decisions (a
lead's query, not the reviewers' hot path).

A review's label is its category for `edge_case`, else its verdict ("unsure" included); an item is in
disagreement when two of its reviews have different labels. `category` matches an item whose consensus or any
review chose that category.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from edgemine.errors import InvalidFieldError
from edgemine.review_api.db import ITEM_STATUSES, Reviewer
from edgemine.review_api.storage._common import DECISIONS, EDGE, ITEMS, decision_label, top_share
from edgemine.review_api.storage.audit import decision_versions
from edgemine.review_api.storage.leads import escalation_text
from edgemine.review_api.storage.runs import get_run

MAX_PAGE = 500


def _label() -> Any:
    return case((and_(DECISIONS.c.verdict == EDGE, DECISIONS.c.category.is_not(None)), DECISIONS.c.category),
                else_=DECISIONS.c.verdict)


def browse_items(
    session: Session,
    *,
    run_id: str,
    status: str | None = None,
    category: str | None = None,
    reviewer_id: int | None = None,
    disagreement: bool | None = None,
    gold: bool | None = None,
    limit: int = 50,
    after_id: int | None = None,
) -> dict[str, Any]:
    """One page of a run's items, in item id order, after `after_id`; `total` counts every match."""
    run = get_run(session, run_id=run_id)
    if status is not None and status not in ITEM_STATUSES:
        raise InvalidFieldError("status", f"status={status!r} is not one of {list(ITEM_STATUSES)}")
    if category is not None and category not in run.categories:
        raise InvalidFieldError("category", f"category={category!r} is not in run {run_id!r}'s taxonomy "
                                            f"{list(run.categories)}")
    if reviewer_id is not None and session.get(Reviewer, reviewer_id) is None:
        raise InvalidFieldError("reviewer_id", f"reviewer_id={reviewer_id} is not a reviewer")
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidFieldError("limit", f"limit={limit} must be between 1 and {MAX_PAGE}")
    where = [ITEMS.c.run_id == run_id]
    if status is not None:
        where.append(ITEMS.c.status == status)
    if gold is not None:
        where.append(ITEMS.c.is_gold == gold)
    if reviewer_id is not None:
        where.append(ITEMS.c.id.in_(select(DECISIONS.c.item_id).where(DECISIONS.c.run_id == run_id,
                                                                       DECISIONS.c.reviewer_id == reviewer_id)))
    if category is not None:
        where.append(or_(ITEMS.c.consensus_category == category,
                         ITEMS.c.id.in_(select(DECISIONS.c.item_id).where(DECISIONS.c.run_id == run_id,
                                                                          DECISIONS.c.category == category))))
    if disagreement is not None:
        split = (select(DECISIONS.c.item_id).where(DECISIONS.c.run_id == run_id).group_by(DECISIONS.c.item_id)
                 .having(func.count(func.distinct(_label())) > 1))
        where.append(ITEMS.c.id.in_(split) if disagreement else ITEMS.c.id.not_in(split))
    total = int(session.scalar(select(func.count()).select_from(ITEMS).where(*where)) or 0)
    if after_id is not None:
        where.append(ITEMS.c.id > after_id)
    rows = session.execute(
        select(ITEMS.c.id, ITEMS.c.frame_id, ITEMS.c.rank, ITEMS.c.status, ITEMS.c.required_reviews,
               ITEMS.c.n_decisions, ITEMS.c.consensus_verdict, ITEMS.c.consensus_category, ITEMS.c.confidence,
               ITEMS.c.consensus_method, ITEMS.c.escalation_reason, ITEMS.c.is_gold)
        .where(*where).order_by(ITEMS.c.id).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    reviews = _reviews(session, [int(r.id) for r in rows])
    items = []
    for r in rows:
        mine = reviews.get(int(r.id), [])
        labels = {decision_label(v["verdict"], v["category"]) for v in mine}
        items.append({
            "item_id": r.id, "frame_id": r.frame_id, "rank": r.rank, "status": r.status,
            "required_reviews": r.required_reviews, "n_decisions": r.n_decisions,
            "consensus_verdict": r.consensus_verdict, "consensus_category": r.consensus_category,
            "confidence": r.confidence, "consensus_method": r.consensus_method,
            "escalation_reason": r.escalation_reason,
            "escalation_text": escalation_text(
                r.escalation_reason, confidence=r.confidence, min_agreement=run.min_agreement,
                ds_min_confidence=run.ds_min_confidence,
                share=top_share([decision_label(v["verdict"], v["category"]) for v in mine])),
            "is_gold": bool(r.is_gold), "disagreement": len(labels) > 1, "reviews": mine,
        })
    return {"total": total, "next_after_id": int(rows[-1].id) if more else None, "items": items}


def _reviews(session: Session, item_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Each item's current reviews, oldest first, with their reviewer's name and version."""
    if not item_ids:
        return {}
    rows = session.execute(
        select(DECISIONS.c.id, DECISIONS.c.item_id, DECISIONS.c.reviewer_id, Reviewer.name, DECISIONS.c.verdict,
               DECISIONS.c.category, DECISIONS.c.root_causes, DECISIONS.c.notes, DECISIONS.c.decided_at)
        .join(Reviewer, Reviewer.id == DECISIONS.c.reviewer_id)
        .where(DECISIONS.c.item_id.in_(item_ids)).order_by(DECISIONS.c.item_id, DECISIONS.c.id)).all()
    versions = decision_versions(session, [int(r.id) for r in rows])
    out: dict[int, list[dict[str, Any]]] = {}
    for did, item_id, rid, name, verdict, category, tags, notes, decided_at in rows:
        out.setdefault(int(item_id), []).append({
            "reviewer_id": rid, "reviewer_name": name, "verdict": verdict, "category": category,
            "root_causes": list(tags or []), "notes": notes, "decided_at": decided_at, "version": versions[did]})
    return out
