"""Quality metrics a lead reads: agreement between reviewers, each reviewer's pace and accuracy, the queue.

Read only. Agreement is computed over multiply-reviewed regular items, with "unsure" as a class of its own
(each Cohen's kappa with its `n`, the items both reviewers reviewed); gold accuracy over gold items. A
reviewer's agreement with consensus is leave-one-out over those same overlap items: their label against the
plurality of the OTHER reviewers' votes ("unsure" is no vote; a tie or no vote leaves the item out), with its
`agreement_n`. Comparing against a consensus the reviewer formed alone would flatter everyone: on a
single-review item the consensus is their own answer.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edgemine.mining.agreement import category_counts, fleiss_kappa, krippendorff_alpha, pairwise_cohen_kappa
from edgemine.review_api.db import Assignment, Decision, Item, Reviewer
from edgemine.review_api.storage._common import (
    CONFIRMED_STATUSES,
    EDGE,
    LEASED,
    OPEN_ITEMS,
    UNSURE,
    decision_label,
    label_space,
)
from edgemine.review_api.storage.reviewers import reviewer_names
from edgemine.review_api.storage.runs import get_run, list_runs


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
    names = reviewer_names(session, reviewer_ids)
    pk = pairwise_cohen_kappa(ratings, n_classes=len(labels), min_items=2)
    out["items"] = len(item_ids)
    out["cohen_kappa_mean"] = _nan_to_none(pk.mean())
    out["cohen_kappa_pairs"] = [
        {"a": names[reviewer_ids[a]], "b": names[reviewer_ids[b]], "kappa": _nan_to_none(k), "items": int(n),
         "n": int(n)}
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


def leave_one_out_agreement(votes: dict[Any, list[tuple[int, str]]]) -> dict[int, tuple[int, int]]:
    """Per reviewer (agreeing, compared): on each item with >= 2 reviews, does their label equal the plurality
    label of the other reviewers' votes? "unsure" is no vote (but is a label of its own for the one compared);
    an item whose other votes tie, or are all unsure, is not compared for that reviewer."""
    out: dict[int, list[int]] = {}
    for reviews in votes.values():
        if len(reviews) < 2:
            continue
        for k, (rid, label) in enumerate(reviews):
            others = Counter(lab for j, (_, lab) in enumerate(reviews) if j != k and lab != UNSURE)
            if not others:
                continue
            (top, n_top), *rest = others.most_common(2)
            if rest and rest[0][1] == n_top:
                continue
            tally = out.setdefault(rid, [0, 0])
            tally[0] += label == top
            tally[1] += 1
    return {rid: (a, n) for rid, (a, n) in out.items()}


def reviewer_metrics(
    session: Session, *, run_id: str | None = None, cost_per_hour: float = 0.0
) -> list[dict[str, Any]]:
    """Per reviewer: decisions, items per hour, median seconds per item, gold accuracy, agreement with consensus.

    Time per item is what the page reported (`seconds`) or else the server's lease-to-decision time;
    items per hour is 3600 / mean time per item (the pace while reviewing, breaks excluded). Agreement with
    consensus is `leave_one_out_agreement` over the regular items with >= 2 reviews (`agreement_n` of them;
    `consensus_compared` is the same number, kept for older clients).
    """
    query = (
        select(Decision.reviewer_id, Decision.verdict, Decision.category, Decision.seconds,
               Decision.handling_seconds, Decision.is_gold, Decision.gold_correct, Decision.item_id,
               Item.n_decisions, Item.is_gold)
        .join(Item, Item.id == Decision.item_id)
    )
    if run_id is not None:
        get_run(session, run_id=run_id)
        query = query.where(Decision.run_id == run_id)
    stats: dict[int, dict[str, Any]] = {}
    overlap: dict[int, list[tuple[int, str]]] = {}
    for row in session.execute(query):
        rid, verdict, category, seconds, handling, is_gold, correct, item_id, n_decisions, item_gold = row
        s = stats.setdefault(rid, {"times": [], "gold": 0, "gold_ok": 0, "unsure": 0})
        s["times"].append(seconds if seconds is not None else handling)
        s["unsure"] += verdict == UNSURE
        if is_gold:
            s["gold"] += 1
            s["gold_ok"] += bool(correct)
        elif n_decisions >= 2 and not item_gold:
            overlap.setdefault(item_id, []).append((rid, decision_label(verdict, category)))
    agreement = leave_one_out_agreement(overlap)
    reviewers = {r.id: r for r in session.scalars(select(Reviewer).where(Reviewer.id.in_(list(stats))))}
    out = []
    for rid, s in sorted(stats.items(), key=lambda kv: reviewers[kv[0]].name):
        times = np.array(s["times"], float)
        total = float(times.sum())
        agree, compared = agreement.get(rid, (0, 0))
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
            "agreement_with_consensus": round(agree / compared, 4) if compared else None,
            "agreement_n": compared,
            "consensus_compared": compared,
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

