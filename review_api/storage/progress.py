"""Where a reviewer stands in a run, what still waits and why, and a run's warnings — read only.

`progress` answers "item k of N", your counts and pace, and, when nothing is left for you, why the run is not
finished (`waiting`: each reason with a count and a line of words). Its counts read the items' status index
(done, escalated, paused), the reviewer's own decisions and leases, and the live leases; they never walk the
run's items, except where the run needs more distinct reviewers than it has (`short_of_reviewers`), the
misconfiguration it exists to report. Not the hot path: the page asks on load and at the end of the queue.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, time
from statistics import median
from typing import Any

from sqlalchemy import and_, exists, func, not_, select
from sqlalchemy.orm import Session

from edgemine.errors import NotFoundError
from edgemine.review_api.db import Reviewer, Run
from edgemine.review_api.storage._common import ASSIGNMENTS, DECISIONS, ITEMS, RUNS, in_batches
from edgemine.review_api.storage.runs import get_run

DONE_STATUSES = ("complete", "resolved")  # a regular item whose consensus is reached or settled by a lead
PACE_DECISIONS = 20  # pace_s: the median over this many of your latest decisions in the run


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _ordinal(n: int) -> str:
    return f"{n}{'tsnrhtdd'[(n // 10 % 10 != 1) * (n % 10 < 4) * n % 10::4]}"


def active_reviewers(session: Session, *, run_id: str) -> int:
    """People who can review the run: active accounts with the reviewer role, and active leads or admins who
    have reviewed in it (they choose to; nothing leases them items otherwise)."""
    n = session.scalar(select(func.count()).where(Reviewer.active, Reviewer.role == "reviewer")) or 0
    leads = session.scalars(select(Reviewer.id).where(Reviewer.active, Reviewer.role != "reviewer")).all()
    for lead_id in leads:  # a few people; each lookup walks only their own leases (ix_assignments_reviewer)
        n += bool(session.scalar(select(exists().where(ASSIGNMENTS.c.reviewer_id == lead_id,
                                                       ASSIGNMENTS.c.run_id == run_id))))
    return int(n)


def short_of_reviewers(session: Session, *, run: Run, n_active: int) -> int:
    """Unfinished regular items that need more distinct reviewers than the run has: they can never complete."""
    if n_active >= run.overlap_reviews:
        return 0
    return int(session.scalar(select(func.count()).where(
        ITEMS.c.run_id == run.run_id, ITEMS.c.status == "queued", not_(ITEMS.c.is_gold),
        ITEMS.c.required_reviews > n_active)) or 0)


def run_warnings(session: Session, *, run: Run) -> list[str]:
    """What keeps a run from finishing, in words: today, a run that needs more reviewers than are active."""
    n_active = active_reviewers(session, run_id=run.run_id)
    short = short_of_reviewers(session, run=run, n_active=n_active)
    if not short:
        return []
    if n_active == 0:
        return [f"no reviewers are active: {_plural(short, 'item', 'items')} can never be reviewed"]
    return [f"overlap_reviews={run.overlap_reviews} but only {_plural(n_active, 'reviewer is', 'reviewers are')} "
            f"active: {_plural(short, 'item', 'items')} can never get {run.overlap_reviews} reviews"]


def _default_run(session: Session, *, reviewer_id: int, now: datetime) -> str:
    """Your live lease's run, else your last decision's, else the first active run."""
    held = session.scalar(select(ASSIGNMENTS.c.run_id).where(
        ASSIGNMENTS.c.reviewer_id == reviewer_id, ASSIGNMENTS.c.state == "leased", ASSIGNMENTS.c.expires_at > now))
    if held is not None:
        return str(held)
    last = session.scalar(select(DECISIONS.c.run_id).where(DECISIONS.c.reviewer_id == reviewer_id)
                          .order_by(DECISIONS.c.decided_at.desc(), DECISIONS.c.id.desc()).limit(1))
    if last is not None:
        return str(last)
    first = session.scalar(select(RUNS.c.run_id).where(RUNS.c.active).order_by(RUNS.c.imported_at, RUNS.c.run_id)
                           .limit(1))
    if first is None:
        raise NotFoundError("there is no run to review yet")
    return str(first)


def progress(session: Session, *, reviewer_id: int, now: datetime, run_id: str | None = None) -> dict[str, Any]:
    """One reviewer's progress in a run (their live lease's, else their last decision's, else the first one).

    total_items / done_items: the run's regular (non-gold) items, and those whose consensus is reached or that a
    lead resolved; position = done_items + 1, at most total_items. mine_in_run / mine_today: your decisions in
    the run / since 00:00 UTC today in any run. pace_s: the median server-measured seconds (lease to decision)
    of your last 20 decisions in the run. queue_empty: nothing is yours to review in the run now. waiting: why
    the rest is not yours to take (reasons with a count > 0).
    """
    run = get_run(session, run_id=run_id if run_id is not None else _default_run(session, reviewer_id=reviewer_id,
                                                                                 now=now))
    rid, mine = run.run_id, DECISIONS.c.reviewer_id == reviewer_id
    total = max(0, run.n_items - run.n_gold)
    # never a gold item: gold items keep the status "gold" (so this is a count over ix_items_status alone)
    done = int(session.scalar(select(func.count()).where(ITEMS.c.run_id == rid,
                                                         ITEMS.c.status.in_(DONE_STATUSES))) or 0)
    mine_in_run = int(session.scalar(select(func.count()).where(mine, DECISIONS.c.run_id == rid)) or 0)
    today = datetime.combine(now.date(), time(0), tzinfo=now.tzinfo)
    mine_today = int(session.scalar(select(func.count()).where(mine, DECISIONS.c.decided_at >= today)) or 0)
    recent = session.scalars(select(DECISIONS.c.handling_seconds).where(mine, DECISIONS.c.run_id == rid)
                             .order_by(DECISIONS.c.decided_at.desc(), DECISIONS.c.id.desc())
                             .limit(PACE_DECISIONS)).all()
    held = session.scalar(select(exists().where(
        ASSIGNMENTS.c.reviewer_id == reviewer_id, ASSIGNMENTS.c.run_id == rid, ASSIGNMENTS.c.state == "leased",
        ASSIGNMENTS.c.expires_at > now)))
    mine_a = ASSIGNMENTS.alias("mine")
    seen_by_me = exists().where(mine_a.c.item_id == ITEMS.c.id, mine_a.c.reviewer_id == reviewer_id)
    open_for_me = session.scalar(select(exists().where(
        ITEMS.c.run_id == rid, ITEMS.c.slots_free > 0, not_(ITEMS.c.is_gold), ~seen_by_me)))
    lapsed = session.scalar(select(exists().where(  # others' leases that ran out: back in the queue at next `next`
        ASSIGNMENTS.c.run_id == rid, ASSIGNMENTS.c.state == "leased", ASSIGNMENTS.c.expires_at <= now,
        not_(ASSIGNMENTS.c.is_gold),
        ~exists().where(mine_a.c.item_id == ASSIGNMENTS.c.item_id, mine_a.c.reviewer_id == reviewer_id))))
    return {
        "run_id": rid, "total_items": total, "done_items": done, "position": min(done + 1, total),
        "mine_in_run": mine_in_run, "mine_today": mine_today,
        "pace_s": round(float(median(recent)), 2) if recent else None,
        "queue_empty": not run.active or not (held or open_for_me or lapsed),
        "waiting": waiting(session, run=run, reviewer_id=reviewer_id, now=now),
    }


def waiting(session: Session, *, run: Run, reviewer_id: int, now: datetime) -> list[dict[str, Any]]:
    """The run's unfinished items that are not yours to take, by reason (each item counted once, in this
    order: needs_more_reviewers, decided_by_you, skipped_by_you, leased_by_others; escalated items apart)."""
    rid = run.run_id
    queued = and_(ITEMS.c.run_id == rid, ITEMS.c.status == "queued", not_(ITEMS.c.is_gold))
    out: list[dict[str, Any]] = []
    escalated = int(session.scalar(select(func.count()).where(ITEMS.c.run_id == rid,
                                                              ITEMS.c.status == "escalated")) or 0)
    if not run.active:
        paused = int(session.scalar(select(func.count()).where(queued)) or 0)
        if paused:
            out.append({"reason": "paused", "count": paused,
                        "text": f"the run is paused: {_plural(paused, 'item waits', 'items wait')} until a lead "
                                "resumes it"})
    else:
        n_active = active_reviewers(session, run_id=rid)
        short = short_of_reviewers(session, run=run, n_active=n_active)
        reachable = queued if not short else and_(queued, ITEMS.c.required_reviews <= n_active)
        if short:
            who = (f"only {_plural(n_active, 'reviewer is', 'reviewers are')} active" if n_active
                   else "no reviewers are active")
            out.append({"reason": "needs_more_reviewers", "count": short,
                        "text": f"{_plural(short, 'item waits', 'items wait')} for a {_ordinal(run.overlap_reviews)} "
                                f"reviewer; {who}"})
        # each count starts from the reviewer's own rows (or the few live leases) and looks their items up by
        # id; filtering on the items' side would let the planner walk every queued item of the run instead
        def waiting_ids(item_ids: Sequence[int]) -> set[int]:
            found: set[int] = set()
            ids = sorted(set(item_ids))
            for part in in_batches(ids):
                found.update(session.scalars(select(ITEMS.c.id).where(ITEMS.c.id.in_(part),
                                                                      reachable)))
            return found

        decided = len(waiting_ids(session.scalars(select(DECISIONS.c.item_id).where(
            DECISIONS.c.reviewer_id == reviewer_id, DECISIONS.c.run_id == rid)).all()))
        mine = session.execute(select(ASSIGNMENTS.c.item_id, ASSIGNMENTS.c.state).where(
            ASSIGNMENTS.c.reviewer_id == reviewer_id, ASSIGNMENTS.c.run_id == rid)).all()
        skipped = len(waiting_ids([i for i, state in mine if state in ("released", "expired")]))
        held_by_me = {i for i, _ in mine}
        live = session.execute(select(ASSIGNMENTS.c.item_id, ASSIGNMENTS.c.expires_at).where(
            ASSIGNMENTS.c.state == "leased", ASSIGNMENTS.c.expires_at > now, ASSIGNMENTS.c.run_id == rid,
            ASSIGNMENTS.c.reviewer_id != reviewer_id)).all()
        full = set(session.scalars(select(ITEMS.c.id).where(
            ITEMS.c.id.in_(sorted({i for i, _ in live} - held_by_me)), ITEMS.c.slots_free <= 0, reachable)))
        others = (len(full), max((t for i, t in live if i in full), default=None))
        if decided:
            out.append({"reason": "decided_by_you", "count": decided,
                        "text": f"{_plural(decided, 'item you decided waits', 'items you decided wait')} for "
                                "reviews from others"})
        if skipped:
            out.append({"reason": "skipped_by_you", "count": skipped,
                        "text": f"{_plural(skipped, 'item you skipped waits', 'items you skipped wait')} for other "
                                "reviewers"})
        if others[0] and others[1] is not None:  # a count of leased items comes with their latest expiry
            minutes = max(1, math.ceil((others[1] - now).total_seconds() / 60))
            out.append({"reason": "leased_by_others", "count": int(others[0]),
                        "text": f"{_plural(int(others[0]), 'item is', 'items are')} being reviewed by others; "
                                f"{'it returns' if others[0] == 1 else 'they return'} within {minutes} min if not "
                                "decided"})
    if escalated:
        out.append({"reason": "escalated", "count": escalated,
                    "text": f"{_plural(escalated, 'item waits', 'items wait')} for a lead"})
    return out

