"""The audit trail, and a reviewer's second thoughts: amend or undo their own decision while it may change.

Every decision, amendment, undo and lead resolution adds a row to `decision_events` (who, when, before and
after); the `decisions` table keeps only the latest version of each reviewer's decision, so consensus,
metrics, Dawid-Skene and `confirmed_items` read the latest without knowing about versions. An undo deletes
the decision (the trail keeps it) and leases the item back to its reviewer for a new decision.

The window: a reviewer may amend or undo only their own decision, within the run's `amend_window_seconds`
of making it, and never once the item is beyond a reviewer's reach — resolved by a lead (also: made gold by a
lead after the review) or published into a dataset version (`mark_published`). While a publisher is putting the
item into a dataset (`reserve_for_publish`, until `settle_reservations` after its Delta commit) a change is
refused for a moment ("try again"): it would come too late for that version, which the publish's snapshot has
already fixed, and after it the item is published and final.

A decision on an item served as gold follows the window alone, like any other: refusing it, or saying it is
published (gold answers are confirmed from the start), would tell the reviewer the item was gold, and gold items
must look exactly like the others. Its change touches only the reviewer's score (`gold_correct` is scored
again); the item's known answer never moves. Nothing here commits: the caller's write transaction does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.orm import Session

from edgemine.errors import ConfigError, NotFoundError, ReviewError
from edgemine.review_api.db import Publication, PublishReservation, Reviewer
from edgemine.review_api.storage._common import (
    ASSIGNMENTS,
    CONFIRMED_STATUSES,
    DECISIONS,
    EDGE,
    FINAL_STATUSES,
    ITEMS,
    NOT_FINAL,
    RUNS,
    in_batches,
)
from edgemine.review_api.storage.decisions import (
    DecisionInput,
    DecisionRecord,
    majority_consensus,
    validate_decision,
)
from edgemine.review_api.storage.events import EVENTS, record_event, snapshot
from edgemine.review_api.storage.items import item_for_reviewer
from edgemine.review_api.storage.leases import Lease
from edgemine.review_api.storage.runs import run_rules

PUBLICATIONS = cast(Table, Publication.__table__)
RESERVATIONS = cast(Table, PublishReservation.__table__)
# How long a publish's reservation holds off amends and undos. A publisher reserves just before its Delta commit
# and settles right after it, so a reservation older than this was left by a publisher that died in between: it
# holds off nobody, and the next publish into its dataset settles it (jobs/publish.py: the item's row is in the
# dataset -> published at the version that added it; not there -> removed). A publish must commit within this
# time of reserving; placing its frames (a copy to slow storage) comes in between.
RESERVATION_STALE_SECONDS = 300


def describe_seconds(seconds: float) -> str:
    """600 -> "10 min", 90 -> "90 s", 7200 -> "2 h": how long a window or a wait is, in words."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    if seconds >= 120 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{seconds:g} s"


def change_blocker(*, item_id: int, status: str, gold_decision: bool, published: tuple[str, int] | None,
                   decided_at: datetime, window_seconds: int, now: datetime,
                   publishing: str | None = None) -> str | None:
    """Why a reviewer may no longer amend or undo their decision on an item, in words; None when they may.

    `gold_decision`: the decision was made on the item served as gold (only the window applies; see above).
    `publishing`: the dataset a publish under way has reserved the item for (`publishing_into`: stale
    reservations are left out), which holds a change off for a moment."""
    if not gold_decision and status in FINAL_STATUSES:
        return f"a lead resolved item {item_id}; their answer is final"
    if not gold_decision and published is not None:
        return f"item {item_id} is already published in dataset {published[0]!r} version {published[1]}"
    until = decided_at + timedelta(seconds=window_seconds)
    if now >= until:
        return (f"the {describe_seconds(window_seconds)} window to change your decision on item {item_id} ended at "
                f"{until:%Y-%m-%d %H:%M:%S} UTC")
    if not gold_decision and publishing is not None:
        return f"item {item_id} is being published into {publishing!r}; try again in a moment"
    return None


def publications_of(session: Session, item_ids: Sequence[int]) -> dict[int, tuple[str, int]]:
    """The first dataset version each item was published in (items never published are absent)."""
    out: dict[int, tuple[str, int]] = {}
    ids = sorted(set(item_ids))
    for part in in_batches(ids):
        rows = session.execute(
            select(PUBLICATIONS.c.item_id, PUBLICATIONS.c.dataset, PUBLICATIONS.c.version)
            .where(PUBLICATIONS.c.item_id.in_(part)).order_by(PUBLICATIONS.c.id)).all()
        for item_id, dataset, version in rows:
            out.setdefault(int(item_id), (str(dataset), int(version)))
    return out


def decision_versions(session: Session, decision_ids: Sequence[int]) -> dict[int, int]:
    """Each decision's version: 1, plus one per amendment."""
    ids = sorted(set(decision_ids))
    out = dict.fromkeys(ids, 1)
    for part in in_batches(ids):
        rows = session.execute(
            select(EVENTS.c.decision_id, func.count()).where(EVENTS.c.decision_id.in_(part),
                                                             EVENTS.c.action == "amend")
            .group_by(EVENTS.c.decision_id)).all()
        out.update((int(d), 1 + int(n)) for d, n in rows)
    return out


def mark_published(session: Session, *, item_ids: Iterable[int], dataset: str, version: int, now: datetime) -> int:
    """Record that these items are in `dataset` at `version` (after that version's commit): their reviewers can
    no longer amend or undo their decisions. Recording the same (item, dataset, version) twice keeps one row.
    Returns how many rows were added."""
    if not dataset or not isinstance(dataset, str):
        raise ConfigError(f"dataset={dataset!r} must be a non-empty string")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ConfigError(f"version={version!r} must be an integer >= 0")
    ids = sorted({int(i) for i in item_ids})
    added = 0
    for part in in_batches(ids):
        known = set(session.scalars(select(ITEMS.c.id).where(ITEMS.c.id.in_(part))))
        missing = [i for i in part if i not in known]
        if missing:
            raise NotFoundError(f"item(s) {missing[:5]}{' ...' if len(missing) > 5 else ''} do not exist")
        already = set(session.scalars(select(PUBLICATIONS.c.item_id).where(
            PUBLICATIONS.c.item_id.in_(part), PUBLICATIONS.c.dataset == dataset, PUBLICATIONS.c.version == version)))
        rows = [{"item_id": i, "dataset": dataset, "version": version, "published_at": now}
                for i in part if i not in already]
        if rows:
            session.execute(insert(PUBLICATIONS), rows)
            added += len(rows)
    return added


# ---------------------------------------------------------------- reservations of a publish under way
SeenConsensus = tuple[datetime | None, str | None, str | None]  # consensus_at, category, root cause


@dataclass(frozen=True)
class Reservation:
    """What `reserve_for_publish` made of a publish's snapshot: only `reserved` items may go into its version."""

    reserved: tuple[int, ...]
    changed: tuple[int, ...]  # consensus no longer the snapshot's (amended, undone, answered again): left out
    elsewhere: tuple[int, ...]  # already reserved for the dataset by another publish: left out, that one has them
    published: tuple[int, ...] = ()  # already published in the dataset (final, their frames there): nothing to do


def reserve_for_publish(session: Session, *, seen: Mapping[int, SeenConsensus], dataset: str, token: str,
                        now: datetime) -> Reservation:
    """Reserve a publish's snapshot of confirmed items for `dataset`, before its Delta commit (one transaction).

    `seen`: item id -> its consensus as the snapshot read it (`consensus_at`, category, root cause). An item
    whose consensus is no longer that one (an amend or undo came between the snapshot and now) is not
    reserved: the caller leaves it out of this version, and a later publish takes its new answer. Items are
    locked in id order (FOR UPDATE on PostgreSQL; SQLite's writers take turns), as an amend or undo locks its
    item first, so each change either came before (and is seen here) or comes after (and meets the
    reservation: `change_blocker`). Items already published in `dataset` are final and need no reservation
    (a full publish re-reads every confirmed item). `token` names this publish's reservations for
    `settle_reservations`."""
    if not dataset or not isinstance(dataset, str):
        raise ConfigError(f"dataset={dataset!r} must be a non-empty string")
    if not token or not isinstance(token, str) or len(token) > 64:
        raise ConfigError(f"token={token!r} must be a non-empty string of at most 64 characters")
    reserved: list[int] = []
    changed: list[int] = []
    elsewhere: list[int] = []
    published: list[int] = []
    ids = sorted({int(i) for i in seen})
    for part in in_batches(ids):
        done = set(session.scalars(select(PUBLICATIONS.c.item_id).where(PUBLICATIONS.c.item_id.in_(part),
                                                                        PUBLICATIONS.c.dataset == dataset)))
        published += sorted(done)
        part = [i for i in part if i not in done]
        if not part:
            continue
        now_state = {r[0]: r[1:] for r in session.execute(
            select(ITEMS.c.id, ITEMS.c.status, ITEMS.c.consensus_verdict, ITEMS.c.consensus_at,
                   ITEMS.c.consensus_category, ITEMS.c.consensus_root_cause)
            .where(ITEMS.c.id.in_(part)).order_by(ITEMS.c.id).with_for_update())}
        # a reservation by another publish, even a stale one, is theirs to settle (the next publish settles
        # stale ones before reserving; see RESERVATION_STALE_SECONDS)
        held = set(session.scalars(select(RESERVATIONS.c.item_id).where(RESERVATIONS.c.item_id.in_(part),
                                                                        RESERVATIONS.c.dataset == dataset)))
        rows = []
        for i in part:
            state = now_state.get(i)
            if (state is None or state[0] not in CONFIRMED_STATUSES or state[1] != EDGE
                    or tuple(state[2:]) != tuple(seen[i])):
                changed.append(i)
            elif i in held:
                elsewhere.append(i)
            else:
                reserved.append(i)
                rows.append({"item_id": i, "dataset": dataset, "token": token, "reserved_at": now})
        if rows:
            session.execute(insert(RESERVATIONS), rows)
    return Reservation(tuple(reserved), tuple(changed), tuple(elsewhere), tuple(published))


def publishing_into(session: Session, item_ids: Sequence[int], *, now: datetime) -> dict[int, str]:
    """The dataset a publish under way has reserved each item for; stale reservations (older than
    RESERVATION_STALE_SECONDS: their publisher died) are left out, and so are items no publish holds."""
    fresh_after = now - timedelta(seconds=RESERVATION_STALE_SECONDS)
    out: dict[int, str] = {}
    ids = sorted(set(item_ids))
    for part in in_batches(ids):
        rows = session.execute(select(RESERVATIONS.c.item_id, RESERVATIONS.c.dataset).where(
            RESERVATIONS.c.item_id.in_(part), RESERVATIONS.c.reserved_at > fresh_after)
            .order_by(RESERVATIONS.c.id)).all()
        for item_id, dataset in rows:
            out.setdefault(int(item_id), str(dataset))
    return out


def stale_reservations(session: Session, *, dataset: str, now: datetime) -> dict[int, tuple[str, str]]:
    """Reservations for `dataset` left by a publisher that died before settling them (older than
    RESERVATION_STALE_SECONDS): item id -> (frame_id, run_id), what the next publish checks the dataset for."""
    stale_at = now - timedelta(seconds=RESERVATION_STALE_SECONDS)
    rows = session.execute(
        select(RESERVATIONS.c.item_id, ITEMS.c.frame_id, ITEMS.c.run_id)
        .join(ITEMS, ITEMS.c.id == RESERVATIONS.c.item_id)
        .where(RESERVATIONS.c.dataset == dataset, RESERVATIONS.c.reserved_at <= stale_at)).all()
    return {int(i): (str(f), str(r)) for i, f, r in rows}


def settle_reservations(session: Session, *, dataset: str, published: Mapping[int, int], now: datetime,
                        token: str | None = None, item_ids: Iterable[int] = ()) -> int:
    """End reservations for `dataset`: record the `published` items (item id -> the version they are in, via
    `mark_published`) and remove the reservations. `token` given: that publish's reservations (after its
    commit, or after it failed); None: the stale ones among `item_ids` (a dead publisher's). Returns how many
    reservations were removed (fewer than made: some went stale and another publish settled them)."""
    if token is not None:
        gone = delete(RESERVATIONS).where(RESERVATIONS.c.dataset == dataset, RESERVATIONS.c.token == token)
        removed = int(session.execute(gone).rowcount or 0)  # type: ignore[attr-defined]
    else:
        stale_at = now - timedelta(seconds=RESERVATION_STALE_SECONDS)
        ids = sorted({int(i) for i in item_ids} | {int(i) for i in published})
        removed = 0
        for part in in_batches(ids):
            gone = delete(RESERVATIONS).where(RESERVATIONS.c.dataset == dataset, RESERVATIONS.c.reserved_at <= stale_at,
                                              RESERVATIONS.c.item_id.in_(part))
            removed += int(session.execute(gone).rowcount or 0)  # type: ignore[attr-defined]
    by_version: dict[int, list[int]] = {}
    for item_id, version in published.items():
        by_version.setdefault(int(version), []).append(int(item_id))
    for version, items in sorted(by_version.items()):
        mark_published(session, item_ids=items, dataset=dataset, version=version, now=now)
    return removed


# ---------------------------------------------------------------- amend and undo
@dataclass(frozen=True)
class _Own:
    """A reviewer's decision on an item, with what deciding whether it may change needs."""

    decision: DecisionRecord
    assignment_id: int
    status: str
    is_gold: bool
    n_decisions: int
    required_reviews: int
    window_seconds: int
    lease_seconds: int


_OWN_COLUMNS = ("id", "item_id", "reviewer_id", "run_id", "verdict", "category", "root_causes", "notes", "seconds",
                "decided_at", "idempotency_key", "is_gold", "gold_correct")


def _own_decision(session: Session, *, item_id: int, reviewer_id: int, now: datetime) -> _Own:
    """The reviewer's decision on the item, if it may still change; 404 when there is none, 409 (why) if not."""
    # Lock the item row first, as submit_decision does (PostgreSQL; SQLite's writers already take turns): a
    # decision completing the item, or a second amend/undo of this one, then waits and reads this change - a
    # completing decision would otherwise count the old answer, a second undo withdraw the review twice.
    session.execute(select(ITEMS.c.id).where(ITEMS.c.id == item_id).with_for_update())
    row = session.execute(
        select(*(DECISIONS.c[c] for c in _OWN_COLUMNS), DECISIONS.c.assignment_id, ITEMS.c.status, ITEMS.c.is_gold,
               ITEMS.c.n_decisions, ITEMS.c.required_reviews, RUNS.c.amend_window_seconds, RUNS.c.lease_seconds)
        .join(ITEMS, ITEMS.c.id == DECISIONS.c.item_id).join(RUNS, RUNS.c.run_id == DECISIONS.c.run_id)
        .where(DECISIONS.c.item_id == item_id, DECISIONS.c.reviewer_id == reviewer_id)).first()
    if row is None:
        raise NotFoundError(f"you have no decision on item {item_id}")
    record = DecisionRecord(*row[:len(_OWN_COLUMNS)])
    own = _Own(record, *row[len(_OWN_COLUMNS):])
    why = change_blocker(item_id=item_id, status=own.status, gold_decision=record.is_gold,
                         published=publications_of(session, [item_id]).get(item_id), decided_at=record.decided_at,
                         window_seconds=own.window_seconds, now=now,
                         publishing=publishing_into(session, [item_id], now=now).get(item_id))
    if why is not None:
        raise ReviewError(why)
    return own


def amend_decision(session: Session, *, item_id: int, reviewer_id: int, decision: DecisionInput,
                   now: datetime) -> tuple[DecisionRecord, int]:
    """Change your decision on an item (see the module docstring for the window); returns it and its version.

    The decision keeps its `decided_at` (the window runs from the first answer); `seconds` adds the time spent
    amending. A regular item that had all its reviews gets its majority consensus again; a gold decision is
    scored again against the known answer."""
    own = _own_decision(session, item_id=item_id, reviewer_id=reviewer_id, now=now)
    rules = run_rules(session, run_id=own.decision.run_id)
    validate_decision(rules, decision)
    old = own.decision
    seconds = old.seconds if decision.seconds is None else (old.seconds or 0.0) + decision.seconds
    values: dict[str, Any] = {"verdict": decision.verdict, "category": decision.category,
                              "root_causes": list(decision.root_causes), "notes": decision.notes, "seconds": seconds}
    if old.is_gold:
        gold = session.execute(select(ITEMS.c.gold_verdict, ITEMS.c.gold_category).where(ITEMS.c.id == item_id)).one()
        values["gold_correct"] = decision.verdict == gold[0] and (decision.verdict != EDGE or
                                                                  decision.category == gold[1])
    session.execute(update(DECISIONS).where(DECISIONS.c.id == old.id).values(**values))
    record_event(session, item_id=item_id, run_id=old.run_id, reviewer_id=reviewer_id, decision_id=old.id,
                 action="amend", at=now, before=snapshot(old.verdict, old.category, old.root_causes, old.notes),
                 after=snapshot(decision.verdict, decision.category, decision.root_causes, decision.notes))
    if not own.is_gold and own.n_decisions >= own.required_reviews:
        majority_consensus(session, item_id=item_id, run=rules, now=now)
    fields = {**old.__dict__, **values}
    return DecisionRecord(**fields), decision_versions(session, [old.id])[old.id]


_UNDONE_CONSENSUS = {"status": "queued", "consensus_verdict": None, "consensus_category": None,
                     "consensus_root_cause": None, "confidence": None, "consensus_method": None,
                     "escalation_reason": None, "consensus_at": None}


def undo_decision(session: Session, *, item_id: int, reviewer_id: int, now: datetime) -> Lease:
    """Withdraw your decision on an item (the trail keeps it) and get the item leased back for a new decision.

    The item loses that review: it is queued again, without a consensus, until it has all its reviews. A lease
    you held on another item is dropped as if never taken (that item goes back to the queue, and may come to you
    again), since a reviewer holds one lease at a time."""
    own = _own_decision(session, item_id=item_id, reviewer_id=reviewer_id, now=now)
    old = own.decision
    session.execute(delete(DECISIONS).where(DECISIONS.c.id == old.id))
    record_event(session, item_id=item_id, run_id=old.run_id, reviewer_id=reviewer_id, decision_id=old.id,
                 action="undo", at=now, before=snapshot(old.verdict, old.category, old.root_causes, old.notes),
                 after=None)
    session.execute(update(ITEMS).where(ITEMS.c.id == item_id)  # a gold item keeps its known answer
                    .values(n_decisions=ITEMS.c.n_decisions - 1, **({} if own.is_gold else _UNDONE_CONSENSUS)))
    held = session.execute(select(ASSIGNMENTS.c.id, ASSIGNMENTS.c.item_id, ASSIGNMENTS.c.is_gold).where(
        ASSIGNMENTS.c.reviewer_id == reviewer_id, ASSIGNMENTS.c.state == "leased")).first()
    if held is not None:
        session.execute(delete(ASSIGNMENTS).where(ASSIGNMENTS.c.id == held.id))
        if not held.is_gold:
            session.execute(update(ITEMS).where(ITEMS.c.id == held.item_id, *NOT_FINAL)
                            .values(slots_free=ITEMS.c.slots_free + 1))
    expires = now + timedelta(seconds=own.lease_seconds)
    session.execute(update(ASSIGNMENTS).where(ASSIGNMENTS.c.id == own.assignment_id).values(
        state="leased", leased_at=now, expires_at=expires, closed_at=None))
    return Lease(own.assignment_id, item_id, reviewer_id, old.run_id, bool(old.is_gold), now, expires)


# ---------------------------------------------------------------- reading the trail
def item_history(session: Session, *, item_id: int, reviewer_id: int, role: str) -> list[dict[str, Any]]:
    """An item's audit trail, oldest first: a reviewer sees their own entries (404 if the item was never theirs),
    leads and admins see everyone's. Decisions made before the trail existed appear as a "decide" at their time."""
    item_for_reviewer(session, item_id=item_id, reviewer_id=reviewer_id, role=role)
    mine_only = role == "reviewer"
    query = (select(EVENTS.c.at, EVENTS.c.reviewer_id, Reviewer.name, EVENTS.c.action, EVENTS.c.before,
                    EVENTS.c.after, EVENTS.c.decision_id)
             .join(Reviewer, Reviewer.id == EVENTS.c.reviewer_id).where(EVENTS.c.item_id == item_id))
    if mine_only:
        query = query.where(EVENTS.c.reviewer_id == reviewer_id)
    entries = [{"at": at, "reviewer_id": rid, "reviewer_name": name, "action": action, "before": before,
                "after": after, "_decision": did}
               for at, rid, name, action, before, after, did in session.execute(query.order_by(EVENTS.c.id))]
    traced = {e["_decision"] for e in entries}
    legacy = select(DECISIONS.c.id, DECISIONS.c.decided_at, DECISIONS.c.reviewer_id, Reviewer.name,
                    DECISIONS.c.verdict, DECISIONS.c.category, DECISIONS.c.root_causes, DECISIONS.c.notes).join(
        Reviewer, Reviewer.id == DECISIONS.c.reviewer_id).where(DECISIONS.c.item_id == item_id)
    if mine_only:
        legacy = legacy.where(DECISIONS.c.reviewer_id == reviewer_id)
    for did, at, rid, name, verdict, category, tags, notes in session.execute(legacy):
        if did not in traced:
            entries.append({"at": at, "reviewer_id": rid, "reviewer_name": name, "action": "decide", "before": None,
                            "after": snapshot(verdict, category, tags, notes), "_decision": did})
    entries.sort(key=lambda e: e["at"])  # stable: events keep their order among equal times
    for e in entries:
        del e["_decision"]
    return entries


def my_decisions(session: Session, *, reviewer_id: int, now: datetime, run_id: str | None = None,
                 limit: int = 20) -> list[dict[str, Any]]:
    """A reviewer's latest decisions, newest first, each with whether (until when, or why not) it may change."""
    query = (select(DECISIONS.c.id, DECISIONS.c.item_id, DECISIONS.c.run_id, ITEMS.c.frame_id, DECISIONS.c.verdict,
                    DECISIONS.c.category, DECISIONS.c.root_causes, DECISIONS.c.notes, DECISIONS.c.decided_at,
                    DECISIONS.c.is_gold, ITEMS.c.status, RUNS.c.amend_window_seconds)
             .join(ITEMS, ITEMS.c.id == DECISIONS.c.item_id).join(RUNS, RUNS.c.run_id == DECISIONS.c.run_id)
             .where(DECISIONS.c.reviewer_id == reviewer_id))
    if run_id is not None:
        query = query.where(DECISIONS.c.run_id == run_id)
    rows = session.execute(query.order_by(DECISIONS.c.decided_at.desc(), DECISIONS.c.id.desc()).limit(limit)).all()
    published = publications_of(session, [r[1] for r in rows])
    publishing = publishing_into(session, [r[1] for r in rows], now=now)
    versions = decision_versions(session, [r[0] for r in rows])
    out = []
    for (did, item_id, run, frame_id, verdict, category, tags, notes, decided_at, gold_decision, status,
         window) in rows:
        why = change_blocker(item_id=item_id, status=status, gold_decision=bool(gold_decision),
                             published=published.get(item_id), decided_at=decided_at, window_seconds=window,
                             now=now, publishing=publishing.get(item_id))
        timed = bool(gold_decision) or not (status in FINAL_STATUSES or item_id in published)
        out.append({
            "decision_id": did, "item_id": item_id, "run_id": run, "frame_id": frame_id, "verdict": verdict,
            "category": category, "root_causes": list(tags or []), "notes": notes, "decided_at": decided_at,
            "version": versions[did], "can_change": why is None,
            "change_until": decided_at + timedelta(seconds=window) if timed else None, "why_not": why,
        })
    return out

