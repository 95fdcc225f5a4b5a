"""What leaves the store as Arrow tables: confirmed edge cases (the publish step) and decisions (the export).

The iterators stream in batches (`yield_per`), so a run of any size is read in bounded memory;
`confirmed_items` is their one-table form for small runs. An item is confirmed when its consensus is
`edge_case` and final (`complete`, `resolved` by a lead, or `gold`), never while it is escalated.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pyarrow as pa
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edgemine.contracts import CONFIRMED_ITEMS_SCHEMA, DECISIONS_SCHEMA, NOVELTY_CALIBRATION, SIGNAL_COLUMNS
from edgemine.errors import ConfigError
from edgemine.review_api.db import Decision, Item, Reviewer
from edgemine.review_api.storage._common import CONFIRMED_STATUSES, EDGE, novelty_calibration_of


def _confirmed_query(run_id: str | None, since: datetime | None) -> Any:
    query = select(Item).where(Item.consensus_verdict == EDGE, Item.status.in_(CONFIRMED_STATUSES))
    if run_id is not None:
        query = query.where(Item.run_id == run_id)
    if since is not None:
        query = query.where(Item.consensus_at > since)
    return query.order_by(Item.consensus_at, Item.id)


def iter_confirmed_items(
    session: Session, *, run_id: str | None = None, since: datetime | None = None, batch_size: int = 10_000
) -> Iterator[pa.Table]:
    """Confirmed edge cases (consensus `edge_case`, not escalated) in CONFIRMED_ITEMS_SCHEMA batches.

    `since` keeps items whose consensus came after it (an incremental publish); `decided_at` is when
    the consensus was reached, so decision-to-dataset latency is `published_at - decided_at`.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    gold_reviews = dict(session.execute(
        select(Decision.item_id, func.count()).join(Item, Item.id == Decision.item_id)
        .where(Item.is_gold, Item.consensus_verdict == EDGE).group_by(Decision.item_id)).all())
    cols: dict[str, list[Any]] = {f.name: [] for f in CONFIRMED_ITEMS_SCHEMA}

    def flush() -> pa.Table:
        table = pa.table({k: pa.array(v, CONFIRMED_ITEMS_SCHEMA.field(k).type) for k, v in cols.items()},
                         schema=CONFIRMED_ITEMS_SCHEMA)
        for v in cols.values():
            v.clear()
        return table

    for item in session.scalars(_confirmed_query(run_id, since).execution_options(yield_per=batch_size)):
        n_reviews = gold_reviews.get(item.id, 0) if item.is_gold else item.n_decisions
        row = {
            "run_id": item.run_id, "item_id": item.id, "frame_id": item.frame_id, "uri": item.uri,
            "drive_id": item.drive_id, "timestamp": item.timestamp, "category": item.consensus_category,
            "root_cause": item.consensus_root_cause, "confidence": item.confidence,
            "n_reviews": n_reviews, "consensus_method": item.consensus_method, "decided_at": item.consensus_at,
            "rank": item.rank, "score": item.score, NOVELTY_CALIBRATION: novelty_calibration_of(item.evidence),
            "scenario_id": item.scenario_id, "event_id": item.event_id,
            "label": item.label, "metadata": json.dumps(item.meta, sort_keys=True),
        }
        row.update({s: getattr(item, s) for s in SIGNAL_COLUMNS})
        for k, v in row.items():
            cols[k].append(v)
        if len(cols["item_id"]) >= batch_size:
            yield flush()
    if cols["item_id"]:
        yield flush()


def confirmed_items(session: Session, *, run_id: str | None = None, since: datetime | None = None) -> pa.Table:
    """All confirmed edge cases as one table (see iter_confirmed_items for large runs)."""
    tables = list(iter_confirmed_items(session, run_id=run_id, since=since))
    return pa.concat_tables(tables) if tables else CONFIRMED_ITEMS_SCHEMA.empty_table()


def iter_decisions(session: Session, *, run_id: str | None = None, batch_size: int = 10_000) -> Iterator[pa.Table]:
    """Every decision in DECISIONS_SCHEMA batches (decision_id order)."""
    query = (
        select(Decision.id, Decision.run_id, Item.frame_id, Reviewer.name, Decision.verdict, Decision.category,
               Decision.root_causes, Decision.notes, Decision.seconds, Decision.decided_at)
        .join(Item, Item.id == Decision.item_id).join(Reviewer, Reviewer.id == Decision.reviewer_id)
        .order_by(Decision.id)
    )
    if run_id is not None:
        query = query.where(Decision.run_id == run_id)
    names = DECISIONS_SCHEMA.names
    result = session.execute(query.execution_options(yield_per=batch_size))
    for part in result.partitions(batch_size):
        columns = list(zip(*part, strict=True))
        yield pa.table({n: pa.array(list(c), DECISIONS_SCHEMA.field(n).type) for n, c in zip(names, columns,
                                                                                              strict=True)},
                       schema=DECISIONS_SCHEMA)

