"""Keyword-only storage functions of the review service: queue, leases, decisions, consensus, metrics.

Every function takes an open SQLAlchemy session (from `Database.write()` or `.read()`) and the current
time `now` where time matters, so tests drive expiry with a fake clock. Functions raise the typed errors
of `edgemine.errors`; only the routes turn them into HTTP answers.

Labels: a decision's label is its category when the verdict is `edge_case`, else the verdict itself.
A run's label space is `["not_edge_case", *categories, "unsure"]`; "unsure" counts as a review but is
no vote (majority), is left out of Dawid-Skene, and is its own class in the agreement coefficients.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import numpy as np
import pyarrow as pa
from sqlalchemy import (
    Integer,
    Table,
    bindparam,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from edgemine.contracts import CONFIRMED_ITEMS_SCHEMA, DECISIONS_SCHEMA, SIGNAL_COLUMNS, VERDICTS
from edgemine.errors import ConfigError, InvalidFieldError, LeaseExpiredError, NotFoundError, ReviewError
from edgemine.mining.agreement import category_counts, fleiss_kappa, krippendorff_alpha, pairwise_cohen_kappa
from edgemine.mining.consensus import dawid_skene, majority_vote
from edgemine.review_api.auth import check_role, hash_token, new_token
from edgemine.review_api.db import Assignment, Decision, Item, Reviewer, Run
from edgemine.review_api.hotsql import hot

NOT_EDGE, UNSURE, EDGE = "not_edge_case", "unsure", "edge_case"
CONFIRMED_STATUSES = ("complete", "resolved", "gold")  # statuses whose consensus is final (not escalated)
# Literal SQL (not bound parameters) so SQLite's planner can match the partial indexes' WHERE clauses.
OPEN_ITEMS = text("items.slots_free > 0 AND NOT items.is_gold")  # ix_items_open
LEASED: ColumnElement[str] = literal_column("'leased'")  # state = 'leased': uq_assignments_live, ix_assignments_expiry
# Core tables for the hot paths
ITEMS, ASSIGNMENTS = cast(Table, Item.__table__), cast(Table, Assignment.__table__)
DECISIONS, RUNS = cast(Table, Decision.__table__), cast(Table, Run.__table__)
MAX_NOTES = 2000



# ================================================================ reviewers
def create_reviewer(session: Session, *, name: str, role: str, now: datetime) -> tuple[Reviewer, str]:
    """Add a person; returns the row and the bearer token, which is not stored and cannot be shown again."""
    check_role(role)
    name = name.strip()
    if not name or len(name) > 128:
        raise InvalidFieldError("name", f"reviewer name {name!r} must be 1-128 characters")
    if session.scalar(select(Reviewer.id).where(Reviewer.name == name)) is not None:
        raise ReviewError(f"reviewer {name!r} already exists")
    token = new_token()
    reviewer = Reviewer(name=name, role=role, token_hash=hash_token(token), active=True, created_at=now)
    session.add(reviewer)
    session.flush()
    return reviewer, token


def ensure_reviewer_with_token(session: Session, *, name: str, role: str, token: str, now: datetime) -> Reviewer:
    """Create (or re-key) a named reviewer with a given token: the development admin only."""
    check_role(role)
    reviewer = session.scalar(select(Reviewer).where(Reviewer.name == name))
    if reviewer is None:
        reviewer = Reviewer(name=name, role=role, token_hash=hash_token(token), active=True, created_at=now)
        session.add(reviewer)
    else:
        reviewer.role, reviewer.token_hash, reviewer.active = role, hash_token(token), True
    session.flush()
    return reviewer


def reviewer_by_token(session: Session, *, token: str) -> Reviewer | None:
    return session.scalar(select(Reviewer).where(Reviewer.token_hash == hash_token(token), Reviewer.active))


def get_reviewer(session: Session, *, reviewer_id: int) -> Reviewer:
    reviewer = session.get(Reviewer, reviewer_id)
    if reviewer is None:
        raise NotFoundError(f"reviewer {reviewer_id} does not exist")
    return reviewer


def list_reviewers(session: Session) -> list[Reviewer]:
    return list(session.scalars(select(Reviewer).order_by(Reviewer.id)))


def deactivate_reviewer(session: Session, *, name: str) -> Reviewer:
    reviewer = session.scalar(select(Reviewer).where(Reviewer.name == name))
    if reviewer is None:
        raise NotFoundError(f"reviewer {name!r} does not exist")
    reviewer.active = False
    return reviewer


# ================================================================ runs
def get_run(session: Session, *, run_id: str) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFoundError(f"run {run_id!r} does not exist")
    return run


def list_runs(session: Session) -> list[Run]:
    return list(session.scalars(select(Run).order_by(Run.imported_at, Run.run_id)))


def update_run_policy(
    session: Session,
    *,
    run_id: str,
    active: bool | None = None,
    gold_rate: float | None = None,
    lease_seconds: int | None = None,
    min_agreement: float | None = None,
    ds_min_confidence: float | None = None,
) -> Run:
    """Change the parts of a run's policy that may change after import (overlap is fixed at import)."""
    run = get_run(session, run_id=run_id)
    checks: dict[str, tuple[Any, float, float]] = {
        "gold_rate": (gold_rate, 0.0, 0.5),
        "lease_seconds": (lease_seconds, 10, 86_400),
        "min_agreement": (min_agreement, 0.0, 1.0),
        "ds_min_confidence": (ds_min_confidence, 0.0, 1.0),
    }
    for name, (value, lo, hi) in checks.items():
        if value is None:
            continue
        if not lo <= value <= hi:
            raise InvalidFieldError(name, f"{name}={value} must be between {lo} and {hi}")
        setattr(run, name, value)
    if active is not None:
        run.active = active
    return run


def label_space(run: Run) -> list[str]:
    return [NOT_EDGE, *run.categories, UNSURE]


def decision_label(verdict: str, category: str | None) -> str:
    return category if verdict == EDGE and category else verdict


# ================================================================ queue and leases
def _unit_hash(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) from the parts (gold draws, overlap sampling)."""
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


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
            update(ITEMS).where(ITEMS.c.id == bindparam("iid")).values(slots_free=ITEMS.c.slots_free + bindparam("n")),
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
_FREE_SLOT = update(ITEMS).where(ITEMS.c.id == bindparam("iid")).values(slots_free=ITEMS.c.slots_free + 1)
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


def live_lease(session: Session, *, reviewer_id: int, now: datetime) -> Lease | None:
    held = _held_lease(session, reviewer_id=reviewer_id)
    return held if held is not None and held.expires_at > now else None


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
    if _unit_hash("gold", run.run_id, reviewer_id, served) >= run.gold_rate:
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
        session.execute(update(ITEMS).where(ITEMS.c.id == lease.item_id).values(slots_free=ITEMS.c.slots_free + 1))
    return lease


# ================================================================ items
_ITEM_BY_ID = select(ITEMS).where(ITEMS.c.id == bindparam("iid"))
_PEERS = (select(ITEMS.c.id, ITEMS.c.frame_id, ITEMS.c.uri)
          .where(ITEMS.c.run_id == bindparam("run"), ITEMS.c.scenario_id == bindparam("scn"),
                 ITEMS.c.id != bindparam("iid"))
          .order_by(ITEMS.c.rank, ITEMS.c.id).limit(bindparam("n", type_=Integer())))


def item_row(session: Session, *, item_id: int) -> Any:
    """An item's columns as a Core row (attribute access like the ORM object, without its bookkeeping)."""
    row = hot(session).first(_ITEM_BY_ID, {"iid": item_id})
    if row is None:
        raise NotFoundError(f"item {item_id} does not exist")
    return row


def get_item(session: Session, *, item_id: int) -> Item:
    item = session.get(Item, item_id)
    if item is None:
        raise NotFoundError(f"item {item_id} does not exist")
    return item


def item_for_reviewer(session: Session, *, item_id: int, reviewer_id: int, role: str) -> Item:
    """The item if this person may see it: leads and admins see all, a reviewer only items they were given."""
    item = session.get(Item, item_id)
    if item is not None and role == "reviewer":
        held = session.scalar(select(Assignment.id).where(Assignment.item_id == item_id,
                                                          Assignment.reviewer_id == reviewer_id))
        if held is None:
            item = None
    if item is None:  # the same answer for "missing" and "not yours": no probing for ids
        raise NotFoundError(f"item {item_id} does not exist or is not in your queue")
    return item


@dataclass(frozen=True)
class Peer:
    id: int
    frame_id: str
    uri: str


def scenario_peers(session: Session, *, item: Any, limit: int = 8) -> list[Peer]:
    """Other candidates of the item's scenario in the same run, best rank first."""
    if item.scenario_id is None:
        return []
    rows = hot(session).all(_PEERS, {"run": item.run_id, "scn": item.scenario_id, "iid": item.id, "n": limit})
    return [Peer(int(r[0]), str(r[1]), str(r[2])) for r in rows]


def image_uri(session: Session, *, item: Item, kind: str, index: int) -> str:
    """The stored uri behind an item's image slot: its frame, k-th reference neighbour, context or peer."""
    if kind == "frame":
        if index != 0:
            raise NotFoundError(f"item {item.id} has one frame (index 0), not index {index}")
        return item.uri
    if kind in ("neighbor", "context"):
        uris = item.evidence.get("neighbor_uris" if kind == "neighbor" else "context_uris") or []
        if not 0 <= index < len(uris) or not uris[index]:
            raise NotFoundError(f"item {item.id} has no {kind} image {index} (it has {len(uris)})")
        return str(uris[index])
    if kind == "scenario":
        peers = scenario_peers(session, item=item)
        if not 0 <= index < len(peers):
            raise NotFoundError(f"item {item.id} has no scenario peer {index} (it has {len(peers)})")
        return peers[index].uri
    raise NotFoundError(f"image kind {kind!r} is not one of ['frame', 'neighbor', 'context', 'scenario']")


# ================================================================ decisions
@dataclass(frozen=True)
class DecisionInput:
    verdict: str
    category: str | None = None
    root_causes: tuple[str, ...] = ()
    notes: str | None = None
    seconds: float | None = None


def _validate_decision(run: Run | RunRules, d: DecisionInput) -> None:
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
_RUN_RULES = (select(RUNS.c.run_id, RUNS.c.categories, RUNS.c.root_causes, RUNS.c.min_agreement)
              .where(RUNS.c.run_id == bindparam("run")))
_BUMP = (update(ITEMS).where(ITEMS.c.id == bindparam("iid")).values(n_decisions=ITEMS.c.n_decisions + 1)
         .returning(ITEMS.c.n_decisions, ITEMS.c.required_reviews, ITEMS.c.is_gold, ITEMS.c.gold_verdict,
                    ITEMS.c.gold_category))
_INSERT_DECISION = insert(DECISIONS).returning(DECISIONS.c.id)
_CLOSE_LEASE = update(ASSIGNMENTS).where(ASSIGNMENTS.c.id == bindparam("lid")).values(
    state="decided", closed_at=bindparam("now"))
_DECISIONS_OF = (select(*(DECISIONS.c[c] for c in _DECISION_COLUMNS)).where(DECISIONS.c.item_id == bindparam("iid"))
                 .order_by(DECISIONS.c.id))
_SET_CONSENSUS = update(ITEMS).where(ITEMS.c.id == bindparam("iid"))


@dataclass(frozen=True)
class SubmitResult:
    decision: DecisionRecord
    created: bool  # False: a retry of an earlier request with the same idempotency key
    completed: bool  # this decision completed the item's reviews (consensus was computed)
    run_id: str
    required_reviews: int


@dataclass(frozen=True)
class RunRules:
    """What validating a decision and deciding consensus need from a run."""

    run_id: str
    categories: list[str]
    root_causes: list[str]
    min_agreement: float


def run_rules(session: Session, *, run_id: str) -> RunRules:
    row = hot(session).first(_RUN_RULES, {"run": run_id})
    if row is None:
        raise NotFoundError(f"run {run_id!r} does not exist")
    return RunRules(row[0], list(row[1]), list(row[2]), float(row[3]))


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
    _validate_decision(run, decision)
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
    completed = not is_gold and n_done >= required
    if completed:  # a single review is its own consensus: no need to read it back
        _majority_consensus(session, item_id=item_id, run=run, now=now,
                            decisions=[record] if n_done == 1 else None)
    return SubmitResult(record, True, completed, run.run_id, int(required))


def decisions_of(session: Session, *, item_id: int) -> list[DecisionRecord]:
    rows = hot(session).all(_DECISIONS_OF, {"iid": item_id})
    return [DecisionRecord(*r) for r in rows]


def _root_cause(decisions: Sequence[Any], label: str) -> str | None:
    return _top_tag([d.root_causes for d in decisions if decision_label(d.verdict, d.category) == label])


def _consensus_values(*, label: str | None, confidence: float, method: str, reason: str, root_cause: str | None,
                      now: datetime) -> dict[str, Any]:
    """An item's consensus columns: decided (`reason` empty) or escalated to a lead (`reason` says why)."""
    if reason:
        out: dict[str, Any] = {"status": "escalated", "escalation_reason": reason, "consensus_verdict": None,
                               "consensus_category": None, "consensus_root_cause": None}
    else:
        out = {"status": "complete", "escalation_reason": None,
               "consensus_verdict": NOT_EDGE if label == NOT_EDGE else EDGE,
               "consensus_category": None if label == NOT_EDGE else label, "consensus_root_cause": root_cause}
    out.update(confidence=float(confidence), consensus_method=method, consensus_at=now)
    return out


def _set_consensus(item: Item, **kwargs: Any) -> None:
    for key, value in _consensus_values(**kwargs).items():
        setattr(item, key, value)


def _majority_consensus(session: Session, *, item_id: int, run: RunRules, now: datetime,
                        decisions: Sequence[DecisionRecord] | None = None) -> None:
    if decisions is None:
        decisions = decisions_of(session, item_id=item_id)
    labels = [NOT_EDGE, *run.categories, UNSURE]
    index = {lab: i for i, lab in enumerate(labels)}
    votes = np.array([[index[decision_label(d.verdict, d.category)] for d in decisions]], np.int64)
    res = majority_vote(votes, n_classes=len(labels), abstain=index[UNSURE], min_agreement=run.min_agreement)
    winner = labels[int(res.labels[0])] if res.labels[0] >= 0 else None
    root = _root_cause(decisions, winner) if winner else None
    values = _consensus_values(label=winner, confidence=float(res.confidence[0]), method="majority",
                               reason=str(res.reasons[0]), root_cause=root, now=now)
    hot(session).rowcount(_SET_CONSENSUS, {"iid": item_id, **values})


# ================================================================ lead actions
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
    _validate_decision(run, DecisionInput(verdict=verdict, category=category,
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


# ================================================================ Dawid-Skene
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


@dataclass
class ConsensusPlan:
    """Dawid-Skene's answers for a run, computed from a snapshot; `apply_consensus` writes them."""

    run_id: str
    ds_min_confidence: float
    # item id, its review count in the snapshot, label, posterior, root cause, differs from what is stored
    answers: list[tuple[int, int, str, float, str | None, bool]]
    converged: bool
    n_iter: int
    reviewer_accuracy: dict[str, float]

    def chunks(self, size: int) -> Iterator[ConsensusPlan]:
        """The plan in parts of at most `size` changed answers (short write transactions for a busy server)."""
        changed = [a for a in self.answers if a[5]]
        for start in range(0, len(changed), size):
            yield replace(self, answers=changed[start:start + size])


def _top_tag(tag_lists: Sequence[Sequence[str]]) -> str | None:
    tags = Counter(t for tags in tag_lists for t in tags)
    if not tags:
        return None
    top = max(tags.values())
    return sorted(t for t, c in tags.items() if c == top)[0]


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
    for start in range(0, len(ids), 500):  # by primary key: a run may hold millions of items
        state.update((r[0], r[1:]) for r in session.execute(
            select(Item.id, Item.is_gold, Item.gold_verdict, Item.gold_category, Item.status,
                   Item.consensus_verdict, Item.consensus_category, Item.n_decisions, Item.consensus_method,
                   Item.consensus_root_cause, Item.confidence)
            .where(Item.id.in_(ids[start:start + 500]))
        ).all())
    fixed = np.full(len(item_ids), -1, np.int64)
    for pos, iid in enumerate(item_ids.tolist()):
        is_gold, gold_verdict, gold_category, status, c_verdict, c_category = state[iid][:6]
        if is_gold and gold_verdict:
            fixed[pos] = cls[decision_label(gold_verdict, gold_category)]
        elif status == "resolved" and c_verdict:
            fixed[pos] = cls[decision_label(c_verdict, c_category)]
    ds = dawid_skene(it, rt, lb, n_items=len(item_ids), n_raters=len(reviewer_ids), n_classes=len(classes),
                     fixed=fixed)
    tags_by_item: dict[int, list[tuple[str, list[str]]]] = {}
    for r, lab in zip(rows, labels, strict=True):
        tags_by_item.setdefault(r[0], []).append((lab, list(r[4] or [])))
    answers = []
    best, confidence = ds.labels, ds.confidence  # computed once: they are properties over all items
    for pos, iid in enumerate(item_ids.tolist()):
        is_gold, _, _, status, *stored, n_decisions, method, stored_root, stored_conf = state[iid]
        if fixed[pos] >= 0 or is_gold or n_decisions < min_reviews or status not in ("complete", "escalated"):
            continue
        label, conf = classes[int(best[pos])], float(confidence[pos])
        root = _top_tag([tags for lab, tags in tags_by_item[iid] if lab == label])
        new = _consensus_values(label=label, confidence=conf, method="dawid_skene", root_cause=root,
                                now=datetime.now(UTC), reason="low_confidence" if conf < run.ds_min_confidence else "")
        changed = (new["status"], new["consensus_verdict"], new["consensus_category"], "dawid_skene",
                   new["consensus_root_cause"]) != (status, *stored, method, stored_root) or abs(
                       conf - (stored_conf or 0.0)) > 1e-3
        answers.append((iid, int(n_decisions), label, conf, root, changed))
    names = _names(session, reviewer_ids.tolist())
    accuracy = {names[int(r)]: float(np.diagonal(ds.confusion[k]) @ ds.priors) for k, r in enumerate(reviewer_ids)}
    return ConsensusPlan(run_id, run.ds_min_confidence, answers, ds.converged, ds.n_iter, accuracy)


_APPLY_ANSWER = update(ITEMS).where(
    ITEMS.c.id == bindparam("iid"), ITEMS.c.n_decisions == bindparam("n_seen"),
    or_(ITEMS.c.status == "complete", ITEMS.c.status == "escalated"))


def apply_consensus(session: Session, *, plan: ConsensusPlan, now: datetime) -> ConsensusReport:
    """Write a plan's changed answers; items that got another review or a lead's answer since are left alone.

    Each answer stands alone, so a big plan may be applied in several transactions (`plan.chunks`)."""
    updated = 0
    q = hot(session)
    for iid, n_seen, label, conf, root, changed in plan.answers:
        if not changed:
            continue
        values = _consensus_values(label=label, confidence=conf, method="dawid_skene", root_cause=root, now=now,
                                   reason="low_confidence" if conf < plan.ds_min_confidence else "")
        updated += q.rowcount(_APPLY_ANSWER, {"iid": iid, "n_seen": n_seen, **values})
    escalated_n = sum(a[3] < plan.ds_min_confidence for a in plan.answers)
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


# ================================================================ quality metrics
def _names(session: Session, reviewer_ids: Sequence[int]) -> dict[int, str]:
    rows = session.execute(select(Reviewer.id, Reviewer.name).where(Reviewer.id.in_(list(reviewer_ids)))).all()
    return {int(i): str(n) for i, n in rows}


def _nan_to_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def agreement_metrics(session: Session, *, run_id: str) -> dict[str, Any]:
    """Cohen's kappa (pairwise), Fleiss' kappa and Krippendorff's alpha over a run's multiply-reviewed items."""
    run = get_run(session, run_id=run_id)
    labels = label_space(run)
    index = {lab: i for i, lab in enumerate(labels)}
    rows = session.execute(
        select(Decision.item_id, Decision.reviewer_id, Decision.verdict, Decision.category)
        .join(Item, Item.id == Decision.item_id)
        .where(Decision.run_id == run_id, Item.n_decisions >= 2, ~Item.is_gold)
    ).all()
    out: dict[str, Any] = {"labels": labels, "items": 0, "cohen_kappa_mean": None, "cohen_kappa_pairs": [],
                           "fleiss_kappa": None, "fleiss_items": 0, "fleiss_raters": 0,
                           "krippendorff_alpha": None}
    by_item: dict[int, list[tuple[int, int]]] = {}
    for item_id, reviewer_id, verdict, category in rows:
        by_item.setdefault(item_id, []).append((reviewer_id, index[decision_label(verdict, category)]))
    by_item = {k: v for k, v in by_item.items() if len(v) >= 2}
    if not by_item:
        return out
    item_ids = sorted(by_item)
    reviewer_ids = sorted({r for v in by_item.values() for r, _ in v})
    col = {r: j for j, r in enumerate(reviewer_ids)}
    ratings = np.full((len(item_ids), len(reviewer_ids)), -1, np.int64)
    for i, iid in enumerate(item_ids):
        for r, lab in by_item[iid]:
            ratings[i, col[r]] = lab
    names = _names(session, reviewer_ids)
    pk = pairwise_cohen_kappa(ratings, n_classes=len(labels), min_items=2)
    out["items"] = len(item_ids)
    out["cohen_kappa_mean"] = _nan_to_none(pk.mean())
    out["cohen_kappa_pairs"] = [
        {"a": names[reviewer_ids[a]], "b": names[reviewer_ids[b]], "kappa": _nan_to_none(k), "items": int(n)}
        for a, b, k, n in zip(pk.rater_a, pk.rater_b, pk.kappa, pk.n_items, strict=True)
    ]
    per_item = (ratings >= 0).sum(axis=1)
    modal = int(np.bincount(per_item).argmax())
    same = per_item == modal
    out["fleiss_kappa"] = _nan_to_none(fleiss_kappa(category_counts(ratings[same], n_classes=len(labels))))
    out["fleiss_items"], out["fleiss_raters"] = int(same.sum()), modal
    reliability = np.where(ratings >= 0, ratings, np.nan).T.astype(float)
    out["krippendorff_alpha"] = _nan_to_none(krippendorff_alpha(reliability, level="nominal"))
    return out


def reviewer_metrics(
    session: Session, *, run_id: str | None = None, cost_per_hour: float = 0.0
) -> list[dict[str, Any]]:
    """Per reviewer: decisions, items per hour, median seconds per item, gold accuracy, agreement with consensus.

    Time per item is what the page reported (`seconds`) or else the server's lease-to-decision time;
    items per hour is 3600 / mean time per item (the pace while reviewing, breaks excluded).
    """
    query = (
        select(Decision.reviewer_id, Decision.verdict, Decision.category, Decision.seconds,
               Decision.handling_seconds, Decision.is_gold, Decision.gold_correct, Item.status,
               Item.consensus_verdict, Item.consensus_category)
        .join(Item, Item.id == Decision.item_id)
    )
    if run_id is not None:
        get_run(session, run_id=run_id)
        query = query.where(Decision.run_id == run_id)
    stats: dict[int, dict[str, Any]] = {}
    for row in session.execute(query):
        rid, verdict, category, seconds, handling, is_gold, correct, status, c_verdict, c_category = row
        s = stats.setdefault(rid, {"times": [], "gold": 0, "gold_ok": 0, "cons": 0, "cons_ok": 0, "unsure": 0})
        s["times"].append(seconds if seconds is not None else handling)
        s["unsure"] += verdict == UNSURE
        if is_gold:
            s["gold"] += 1
            s["gold_ok"] += bool(correct)
        elif status in ("complete", "resolved") and c_verdict:
            s["cons"] += 1
            s["cons_ok"] += decision_label(verdict, category) == decision_label(c_verdict, c_category)
    reviewers = {r.id: r for r in session.scalars(select(Reviewer).where(Reviewer.id.in_(list(stats))))}
    out = []
    for rid, s in sorted(stats.items(), key=lambda kv: reviewers[kv[0]].name):
        times = np.array(s["times"], float)
        total = float(times.sum())
        out.append({
            "reviewer": reviewers[rid].name,
            "role": reviewers[rid].role,
            "decisions": int(times.size),
            "items_per_hour": round(3600.0 * times.size / total, 2) if total > 0 else None,
            "median_seconds": round(float(np.median(times)), 2),
            "review_hours": round(total / 3600.0, 4),
            "cost": round(total / 3600.0 * cost_per_hour, 2) if cost_per_hour else None,
            "unsure_rate": round(s["unsure"] / times.size, 4),
            "gold_reviewed": s["gold"],
            "gold_accuracy": round(s["gold_ok"] / s["gold"], 4) if s["gold"] else None,
            "consensus_compared": s["cons"],
            "agreement_with_consensus": round(s["cons_ok"] / s["cons"], 4) if s["cons"] else None,
        })
    return out


def queue_stats(session: Session, *, now: datetime, run_id: str | None = None) -> list[dict[str, Any]]:
    """Per run: items by status, review slots waiting, live leases, and the age of the oldest waiting work."""
    runs = [get_run(session, run_id=run_id)] if run_id is not None else list_runs(session)
    out = []
    for run in runs:
        by_status = dict(session.execute(
            select(Item.status, func.count()).where(Item.run_id == run.run_id).group_by(Item.status)).all())
        waiting_items, waiting_slots, oldest = session.execute(
            select(func.count(), func.coalesce(func.sum(Item.slots_free), 0), func.min(Item.created_at))
            .where(Item.run_id == run.run_id, OPEN_ITEMS)
        ).one()
        leased = session.scalar(select(func.count()).where(Assignment.run_id == run.run_id,
                                                           Assignment.state == LEASED, Assignment.expires_at > now))
        oldest_escalation = session.scalar(select(func.min(Item.consensus_at)).where(
            Item.run_id == run.run_id, Item.status == "escalated"))
        confirmed = session.scalar(select(func.count()).where(
            Item.run_id == run.run_id, Item.consensus_verdict == EDGE, Item.status.in_(CONFIRMED_STATUSES)))
        out.append({
            "run_id": run.run_id,
            "active": run.active,
            "items": run.n_items,
            "gold": run.n_gold,
            "by_status": {s: int(by_status.get(s, 0)) for s in ("queued", "complete", "escalated", "resolved", "gold")},
            "waiting_items": int(waiting_items),
            "waiting_reviews": int(waiting_slots),
            "leased": int(leased or 0),
            "confirmed_edge_cases": int(confirmed or 0),
            "oldest_waiting_seconds": (now - oldest).total_seconds() if oldest else None,
            "oldest_escalation_seconds": (now - oldest_escalation).total_seconds() if oldest_escalation else None,
        })
    return out


def run_metrics(session: Session, *, run_id: str, now: datetime, cost_per_hour: float = 0.0) -> dict[str, Any]:
    """Everything a lead reads about one run: queue, agreement, consensus methods, reviewers, cost."""
    queue = queue_stats(session, now=now, run_id=run_id)[0]
    reviewers = reviewer_metrics(session, run_id=run_id, cost_per_hour=cost_per_hour)
    methods = dict(session.execute(
        select(Item.consensus_method, func.count()).where(Item.run_id == run_id, Item.consensus_method.isnot(None))
        .group_by(Item.consensus_method)).all())
    hours = sum(r["review_hours"] for r in reviewers)
    cost = hours * cost_per_hour if cost_per_hour else None
    confirmed = queue["confirmed_edge_cases"]
    return {
        "run_id": run_id,
        "queue": queue,
        "agreement": agreement_metrics(session, run_id=run_id),
        "consensus_methods": {str(k): int(v) for k, v in methods.items()},
        "reviewers": reviewers,
        "review_hours": round(hours, 4),
        "cost": round(cost, 2) if cost is not None else None,
        "cost_per_confirmed_edge_case": round(cost / confirmed, 2) if cost is not None and confirmed else None,
    }


# ================================================================ what the publish step reads
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
    import json

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
            "rank": item.rank, "score": item.score, "scenario_id": item.scenario_id, "event_id": item.event_id,
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


def missing_decisions(session: Session, *, decision_ids: Sequence[int]) -> list[int]:
    """The ids in `decision_ids` that are NOT in the store (crash tests)."""
    present: set[int] = set()
    ids = list(decision_ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        present.update(session.scalars(select(Decision.id).where(Decision.id.in_(chunk))))
    return [i for i in ids if i not in present]


def retry_on_conflict(fn: Any, attempts: int = 3) -> Any:
    """Run `fn()` again when a concurrent writer won a unique-constraint race (PostgreSQL)."""
    for attempt in range(attempts):
        try:
            return fn()
        except IntegrityError:
            if attempt == attempts - 1:
                raise
    return None


