"""Rows to response bodies. A reviewer's view of an item is built here, in one place, so it stays blind."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy.orm import Session

from edgemine.contracts import SIGNAL_COLUMNS
from edgemine.review_api import schemas, storage
from edgemine.review_api.db import Assignment, Decision, Item, Reviewer, Run


def image_url(item_id: int, kind: str, index: int) -> str:
    return f"/items/{item_id}/images/{kind}/{index}"


def item_public(session: Session, item: Any, run: Any) -> schemas.ItemPublic:
    """`item`: an Item or a Core row of items; `run`: anything with `categories` and `root_causes`."""
    ev = item.evidence or {}
    n_ids, n_uris = ev.get("neighbor_ids") or [], ev.get("neighbor_uris") or []
    n_dist = ev.get("neighbor_distances") or []
    neighbors = [
        schemas.ImageRef(index=k, url=image_url(item.id, "neighbor", k),
                         frame_id=n_ids[k] if k < len(n_ids) else None,
                         distance=n_dist[k] if k < len(n_dist) else None)
        for k in range(len(n_uris)) if n_uris[k]
    ]
    context_uris = ev.get("context_uris") or []
    context = [schemas.ImageRef(index=k, url=image_url(item.id, "context", k))
               for k, u in enumerate(context_uris) if u]
    offsets = ev.get("context_offsets_s")
    context_offsets = ([offsets[k] if k < len(offsets) else None for k, u in enumerate(context_uris) if u]
                       if isinstance(offsets, list) else None)
    peers = storage.scenario_peers(session, item=item)
    scenario = [schemas.ImageRef(index=k, url=image_url(item.id, "scenario", k), frame_id=p.frame_id)
                for k, p in enumerate(peers)]
    return schemas.ItemPublic(
        id=item.id, run_id=item.run_id, frame_id=item.frame_id, rank=item.rank, score=item.score,
        signals={s: getattr(item, s) for s in SIGNAL_COLUMNS}, novelty_calibration=storage.novelty_calibration_of(ev),
        reasons=list(item.reasons or []),
        scenario_id=item.scenario_id, event_id=item.event_id, drive_id=item.drive_id, timestamp=item.timestamp,
        label=item.label, metadata=dict(item.meta or {}),
        frame=schemas.ImageRef(index=0, url=image_url(item.id, "frame", 0), frame_id=item.frame_id),
        neighbors=neighbors, context=context, context_offsets_s=context_offsets, scenario=scenario,
        taxonomy=schemas.Taxonomy(categories=list(run.categories), root_causes=list(run.root_causes)),
    )


def lease_public(lease: Assignment | storage.Lease) -> schemas.LeasePublic:
    return schemas.LeasePublic(id=lease.id, item_id=lease.item_id, leased_at=lease.leased_at,
                               expires_at=lease.expires_at)


def decision_public(d: Decision | storage.DecisionRecord, version: int = 1) -> schemas.DecisionPublic:
    return schemas.DecisionPublic(id=d.id, item_id=d.item_id, verdict=d.verdict, category=d.category,  # type: ignore[arg-type]
                                  root_causes=list(d.root_causes or []), notes=d.notes, seconds=d.seconds,
                                  decided_at=d.decided_at, version=version)


def item_lead(session: Session, item: Item, run: Run) -> schemas.ItemLead:
    base = item_public(session, item, run)
    decisions = storage.decisions_of(session, item_id=item.id)
    names = {r.id: r.name for r in session.query(Reviewer).filter(Reviewer.id.in_([d.reviewer_id for d in decisions]))}
    versions = storage.decision_versions(session, [d.id for d in decisions])
    return schemas.ItemLead(
        **base.model_dump(),
        is_gold=item.is_gold, gold_verdict=item.gold_verdict, gold_category=item.gold_category,
        required_reviews=item.required_reviews, n_decisions=item.n_decisions,
        consensus=consensus_public(item),
        decisions=[schemas.DecisionLead(**decision_public(d, versions[d.id]).model_dump(),
                                        reviewer=names.get(d.reviewer_id, "?"),
                                        is_gold=d.is_gold, gold_correct=d.gold_correct) for d in decisions],
    )


def consensus_public(item: Item) -> schemas.Consensus:
    return schemas.Consensus(status=item.status, verdict=item.consensus_verdict, category=item.consensus_category,
                             root_cause=item.consensus_root_cause, confidence=item.confidence,
                             method=item.consensus_method, escalation_reason=item.escalation_reason,
                             decided_at=item.consensus_at)


def escalation_public(session: Session, item: Item, run: Run) -> schemas.EscalationPublic:
    decisions = storage.decisions_of(session, item_id=item.id)
    labels = [storage.decision_label(d.verdict, d.category) for d in decisions]
    votes = Counter(labels)
    text = storage.escalation_text(item.escalation_reason, confidence=item.confidence,
                                   min_agreement=run.min_agreement, ds_min_confidence=run.ds_min_confidence,
                                   share=storage.top_share(labels))
    return schemas.EscalationPublic(item_id=item.id, run_id=item.run_id, frame_id=item.frame_id, rank=item.rank,
                                    reason=item.escalation_reason, reason_text=text, n_decisions=item.n_decisions,
                                    escalated_at=item.consensus_at, votes=dict(votes))


def run_public(run: Run, warnings: list[str] | None = None) -> schemas.RunPublic:
    return schemas.RunPublic(
        run_id=run.run_id, source=run.source, imported_at=run.imported_at, active=run.active, n_items=run.n_items,
        n_gold=run.n_gold, categories=list(run.categories), root_causes=list(run.root_causes),
        overlap_fraction=run.overlap_fraction, overlap_reviews=run.overlap_reviews, gold_rate=run.gold_rate,
        lease_seconds=run.lease_seconds, min_agreement=run.min_agreement, ds_min_confidence=run.ds_min_confidence,
        amend_window_seconds=run.amend_window_seconds, warnings=list(warnings or []),
    )


def reviewer_public(r: Reviewer) -> schemas.ReviewerPublic:
    return schemas.ReviewerPublic(id=r.id, name=r.name, role=r.role, active=r.active, created_at=r.created_at)  # type: ignore[arg-type]
