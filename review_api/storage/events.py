"""Writing the audit trail: one `decision_events` row per decision, amendment, undo and lead resolution.

Its own module because the hot path (decisions.py), the leads' resolution (leads.py) and the reviewers'
amend/undo (audit.py) all write it. Rows are only ever added.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from edgemine.review_api.db import DecisionEvent
from edgemine.review_api.hotsql import hot

EVENTS = cast(Table, DecisionEvent.__table__)
_INSERT_EVENT = insert(EVENTS)  # on the hot path: every decision adds its "decide" event


def snapshot(verdict: str | None, category: str | None, root_causes: Iterable[str] | None,
             notes: str | None) -> dict[str, Any]:
    """A decision's content as the audit trail keeps it."""
    return {"verdict": verdict, "category": category, "root_causes": list(root_causes or []), "notes": notes}


def record_event(session: Session, *, item_id: int, run_id: str, reviewer_id: int, decision_id: int | None,
                 action: str, at: datetime, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
    hot(session).rowcount(_INSERT_EVENT, {
        "item_id": item_id, "run_id": run_id, "reviewer_id": reviewer_id, "decision_id": decision_id,
        "action": action, "at": at, "before": before, "after": after,
    })
