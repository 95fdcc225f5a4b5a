"""The queue and its leases: who reviews which item next, and for how long they hold it.

A lease is a row of `assignments` in state `leased` until its `expires_at`; it ends `decided` (see
decisions.py), `released` (a skip) or `expired`. Invariants, kept by the statements below and the tables'
constraints: a reviewer holds at most one live lease (uq_assignments_live) and never gets the same item twice
(uq_assignments_item_reviewer); a regular item's `slots_free` counts the reviews it still needs that nobody
holds: a lease takes one, a release or an expiry gives it back, so no item gets more reviews than it needs
(gold items have no slots: each reviewer may get each once, at the run's gold rate). Expiry needs no timer:
`lease_next` returns expired leases to the queue (`reclaim_expired`) and treats a reviewer's own expired
lease as gone.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import bindparam, exists, func, insert, select, update
from sqlalchemy.orm import Session

from edgemine.errors import LeaseExpiredError, NotFoundError, ReviewError
from edgemine.review_api.db import Assignment
from edgemine.review_api.hotsql import hot
from edgemine.review_api.storage._common import ASSIGNMENTS, ITEMS, LEASED, NOT_FINAL, OPEN_ITEMS, RUNS, unit_hash
from edgemine.review_api.storage.runs import get_run


def reclaim_expired(session: Session, *, now: datetime) -> int:
    """Expire leases whose time ran out and give their review slots back to the queue."""
    rows = session.execute(
        update(ASSIGNMENTS)
        .where(ASSIGNMENTS.c.state == LEASED, ASSIGNMENTS.c.expires_at <= now)
        .values(state="expired", closed_at=now)
        .returning(ASSIGNMENTS.c.item_id, ASSIGNMENTS.c.is_gold)
    ).all()
    freed = Counter(item_id for item_id, is_gold in rows if not is_gold)
    if freed:
        session.execute(
            update(ITEMS).where(ITEMS.c.id == bindparam("iid"), *NOT_FINAL)
            .values(slots_free=ITEMS.c.slots_free + bindparam("n")),
            [{"iid": i, "n": n} for i, n in freed.items()],
        )
    return len(rows)


@dataclass(frozen=True)
class Lease:
    """A reviewer's hold on an item (a row of `assignments` while its state is `leased`)."""

    id: int
    item_id: int
    reviewer_id: int
    run_id: str
    is_gold: bool
    leased_at: datetime
    expires_at: datetime


_LEASE_COLUMNS = ("id", "item_id", "reviewer_id", "run_id", "is_gold", "leased_at", "expires_at")
# The hot path's statements, built once: building and cache-keying a statement costs more than running it.
_HELD = (select(*(ASSIGNMENTS.c[c] for c in _LEASE_COLUMNS))
         .where(ASSIGNMENTS.c.reviewer_id == bindparam("rid"), ASSIGNMENTS.c.state == LEASED))
_EXPIRE_ONE = update(ASSIGNMENTS).where(ASSIGNMENTS.c.id == bindparam("lid")).values(
    state="expired", closed_at=bindparam("now"))
_FREE_SLOT = update(ITEMS).where(ITEMS.c.id == bindparam("iid"), *NOT_FINAL).values(
    slots_free=ITEMS.c.slots_free + 1)
_TAKE_SLOT = update(ITEMS).where(ITEMS.c.id == bindparam("iid"), ITEMS.c.slots_free > 0).values(
    slots_free=ITEMS.c.slots_free - 1)
_RUN_POLICIES = select(RUNS.c.run_id, RUNS.c.active, RUNS.c.gold_rate, RUNS.c.n_gold, RUNS.c.lease_seconds)
_NOT_SEEN = ~exists().where(ASSIGNMENTS.c.item_id == ITEMS.c.id, ASSIGNMENTS.c.reviewer_id == bindparam("rid"))
_CANDIDATES = 8  # open items looked at per `next`; more than one only matters when others take them first
_OPEN = select(ITEMS.c.id, ITEMS.c.run_id).where(OPEN_ITEMS, _NOT_SEEN).order_by(ITEMS.c.id).limit(_CANDIDATES)
_OPEN_IN_RUN = (select(ITEMS.c.id, ITEMS.c.run_id).where(OPEN_ITEMS, _NOT_SEEN, ITEMS.c.run_id == bindparam("run"))
                .order_by(ITEMS.c.id).limit(_CANDIDATES))
_INSERT_LEASE = insert(ASSIGNMENTS).returning(ASSIGNMENTS.c.id)
_SERVED = (select(func.count()).select_from(ASSIGNMENTS)
           .where(ASSIGNMENTS.c.reviewer_id == bindparam("rid"), ASSIGNMENTS.c.run_id == bindparam("run")))
_GOLD_UNSEEN = (select(ITEMS.c.id).where(ITEMS.c.run_id == bindparam("run"), ITEMS.c.is_gold, _NOT_SEEN)
                .order_by(ITEMS.c.id).limit(1))


def _held_lease(session: Session, *, reviewer_id: int) -> Lease | None:
    row = hot(session).first(_HELD, {"rid": reviewer_id})
    return Lease(*row) if row is not None else None


def _expire(session: Session, lease: Lease, *, now: datetime) -> None:
    q = hot(session)
    q.rowcount(_EXPIRE_ONE, {"lid": lease.id, "now": now})
    if not lease.is_gold:
        q.rowcount(_FREE_SLOT, {"iid": lease.item_id})


@dataclass(frozen=True)
class _RunPolicy:
    run_id: str
    gold_rate: float
    n_gold: int
    lease_seconds: int


def lease_next(
    session: Session,
    *,
    reviewer_id: int,
    now: datetime,
    run_id: str | None = None,
    reclaim: bool = True,
) -> Lease | None:
    """Lease the next item for a reviewer, or return None when nothing is left for them.

    Returns the reviewer's live lease if they hold one (so a retried or repeated `next` is harmless).
    Otherwise takes the first open regular item (import order, i.e. rank order within a run) that the
    reviewer never held, and with the run's gold rate swaps it for a gold item of the same run that
    the reviewer has not seen. A reviewer never gets an item twice. `reclaim=False` skips returning
    other people's expired leases to the queue (a busy server does that about once a second).
    Core statements only: this runs for every `next`, and the ORM's bookkeeping would double its cost.
    """
    if reclaim:
        reclaim_expired(session, now=now)
    held = _held_lease(session, reviewer_id=reviewer_id)
    if held is not None:
        if held.expires_at > now:
            return held
        _expire(session, held, now=now)
    q = hot(session)
    rows = q.all(_RUN_POLICIES, {})
    runs = {r[0]: _RunPolicy(r[0], r[2], r[3], r[4]) for r in rows if r[1]}
    if run_id is not None:
        if run_id not in {r[0] for r in rows}:
            raise NotFoundError(f"run {run_id!r} does not exist")
        runs = {run_id: runs[run_id]} if run_id in runs else {}
    if not runs:
        return None
    if len(runs) == len(rows):  # every run is open: one walk of the queue index (ix_items_open) in id order
        found = q.all(_OPEN, {"rid": reviewer_id})
    else:  # one walk per run (ix_items_open_run), merged; `run_id IN (...)` would sort every open item
        found = sorted((r for rid in runs for r in q.all(_OPEN_IN_RUN, {"rid": reviewer_id, "run": rid})),
                       key=lambda r: int(r[0]))
    for item_id, item_run in found[:_CANDIDATES]:
        run = runs[item_run]
        gold_id = _maybe_gold(session, run=run, reviewer_id=reviewer_id)
        if gold_id is not None:
            return _new_lease(session, item_id=gold_id, run=run, reviewer_id=reviewer_id, is_gold=True, now=now)
        if q.rowcount(_TAKE_SLOT, {"iid": item_id}):  # another server process may have taken the last slot (PostgreSQL)
            return _new_lease(session, item_id=item_id, run=run, reviewer_id=reviewer_id, is_gold=False, now=now)
    return None


def _maybe_gold(session: Session, *, run: _RunPolicy, reviewer_id: int) -> int | None:
    if run.gold_rate <= 0 or run.n_gold == 0:
        return None
    q = hot(session)
    served = q.scalar(_SERVED, {"rid": reviewer_id, "run": run.run_id})
    if unit_hash("gold", run.run_id, reviewer_id, served) >= run.gold_rate:
        return None
    return cast(int | None, q.scalar(_GOLD_UNSEEN, {"rid": reviewer_id, "run": run.run_id}))


def _new_lease(session: Session, *, item_id: int, run: _RunPolicy, reviewer_id: int, is_gold: bool,
               now: datetime) -> Lease:
    expires = now + timedelta(seconds=run.lease_seconds)
    lease_id = hot(session).one(_INSERT_LEASE, {
        "item_id": item_id, "reviewer_id": reviewer_id, "run_id": run.run_id, "state": "leased",
        "is_gold": is_gold, "leased_at": now, "expires_at": expires, "closed_at": None,
    })[0]
    return Lease(int(lease_id), item_id, reviewer_id, run.run_id, is_gold, now, expires)


def _own_lease(session: Session, *, lease_id: int, reviewer_id: int) -> Assignment:
    lease = session.get(Assignment, lease_id)
    if lease is None or lease.reviewer_id != reviewer_id:
        raise NotFoundError(f"lease {lease_id} does not exist or is not yours")
    return lease


def renew_lease(session: Session, *, lease_id: int, reviewer_id: int, now: datetime) -> Assignment:
    """Extend a live lease by the run's lease length from now."""
    lease = _own_lease(session, lease_id=lease_id, reviewer_id=reviewer_id)
    if lease.state != "leased" or lease.expires_at <= now:
        raise LeaseExpiredError(f"lease {lease_id} is {lease.state if lease.state != 'leased' else 'expired'}; "
                                "ask for the next item")
    run = get_run(session, run_id=lease.run_id)
    lease.expires_at = now + timedelta(seconds=run.lease_seconds)
    return lease


def release_lease(session: Session, *, lease_id: int, reviewer_id: int, now: datetime) -> Assignment:
    """Give an item back without deciding (skip). The reviewer will not be offered it again."""
    lease = _own_lease(session, lease_id=lease_id, reviewer_id=reviewer_id)
    if lease.state != "leased":
        raise ReviewError(f"lease {lease_id} is already {lease.state}")
    lease.state, lease.closed_at = "released", now
    if not lease.is_gold:
        session.execute(update(ITEMS).where(ITEMS.c.id == lease.item_id, *NOT_FINAL)
                        .values(slots_free=ITEMS.c.slots_free + 1))
    return lease

