"""Runs: import (admin), policy, metrics and consensus (lead)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Response, status

from edgemine.errors import InvalidFieldError
from edgemine.review_api import schemas, storage, views
from edgemine.review_api.deps import Admin, Db, Lead, Now, State
from edgemine.review_api.importer import Policy, import_run

router = APIRouter(tags=["runs"])
RunId = Annotated[str, Path(min_length=1, max_length=200)]


@router.post("/runs/import", response_model=schemas.ImportPublic, status_code=status.HTTP_201_CREATED,
             responses={200: {"model": schemas.ImportPublic, "description": "Already imported: nothing changed."}},
             summary="Admin: import a mining run's candidates (idempotent per run)")
def import_(body: schemas.RunImport, me: Admin, state: State, response: Response) -> schemas.ImportPublic:
    overrides = body.model_dump(exclude={"run_dir", "ground_truth"})
    for key in ("categories", "root_causes"):
        if overrides[key] is not None:
            overrides[key] = tuple(overrides[key])
    policy = Policy.from_settings(state.settings, **overrides)
    report = import_run(state.db, body.run_dir, policy=policy, now=state.clock(), ground_truth=body.ground_truth)
    if report.inserted == 0 and report.skipped == 0:
        response.status_code = status.HTTP_200_OK
    return schemas.ImportPublic(**report.__dict__)


@router.get("/runs", response_model=list[schemas.RunPublic], summary="Lead: all runs")
def list_runs(me: Lead, db: Db) -> list[schemas.RunPublic]:
    with db.read() as s:
        return [views.run_public(r, storage.run_warnings(s, run=r)) for r in storage.list_runs(s)]


@router.get("/runs/{run_id}", response_model=schemas.RunPublic, summary="Lead: one run and its policy")
def get_run(run_id: RunId, me: Lead, db: Db) -> schemas.RunPublic:
    with db.read() as s:
        run = storage.get_run(s, run_id=run_id)
        return views.run_public(run, storage.run_warnings(s, run=run))


@router.patch("/runs/{run_id}", response_model=schemas.RunPublic,
              summary="Lead: pause/resume a run or change its gold rate, lease length, escalation thresholds")
def update_run(run_id: RunId, body: schemas.RunUpdate, me: Lead, db: Db) -> schemas.RunPublic:
    with db.write() as s:
        run = storage.update_run_policy(s, run_id=run_id, **body.model_dump())
        return views.run_public(run, storage.run_warnings(s, run=run))


@router.get("/runs/{run_id}/metrics", response_model=schemas.MetricsPublic,
            summary="Lead: agreement (Cohen, Fleiss, Krippendorff), reviewers, queue depth and age, cost")
def run_metrics(run_id: RunId, me: Lead, state: State, now: Now) -> schemas.MetricsPublic:
    with state.db.read() as s:
        m = storage.run_metrics(s, run_id=run_id, now=now(), cost_per_hour=state.settings.reviewer_cost_per_hour)
        m["warnings"] = storage.run_warnings(s, run=storage.get_run(s, run_id=run_id))
    return schemas.MetricsPublic(**m)


@router.get("/runs/{run_id}/items", response_model=schemas.ItemPage,
            summary="Lead: the run's items with their reviews side by side, filtered, in item id order")
def browse(
    run_id: RunId,
    me: Lead,
    db: Db,
    status_: Annotated[Literal["queued", "complete", "escalated", "resolved", "gold"] | None,
                       Query(alias="status")] = None,
    category: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    reviewer_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    disagreement: Annotated[bool | None, Query(description="Only items whose reviews differ (true) or agree "
                                                           "(false).")] = None,
    gold: Annotated[bool | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after_id: Annotated[int | None, Query(ge=0, le=2**62, description="The previous page's next_after_id.")] = None,
) -> dict[str, Any]:
    with db.read() as s:
        try:
            return storage.browse_items(s, run_id=run_id, status=status_, category=category,
                                        reviewer_id=reviewer_id, disagreement=disagreement, gold=gold, limit=limit,
                                        after_id=after_id)
        except InvalidFieldError as exc:  # a query parameter: say so, in FastAPI's own 422 shape
            detail = [{"loc": ["query", exc.field], "msg": str(exc), "type": "value_error"}]
            raise HTTPException(422, detail=detail) from None


@router.post("/runs/{run_id}/consensus", response_model=schemas.ConsensusRefresh,
             summary="Lead: re-run Dawid-Skene over the run; items with >= 3 reviews take its answer")
def refresh(run_id: RunId, me: Lead, db: Db, now: Now) -> schemas.ConsensusRefresh:
    with db.write() as s:
        report = storage.refresh_consensus(s, run_id=run_id, now=now())
    return schemas.ConsensusRefresh(**report.__dict__)


@router.get("/reviewers/metrics", summary="Lead: per-reviewer pace, gold accuracy and agreement (all runs or one)")
def reviewers_metrics(
    me: Lead, state: State, run_id: Annotated[str | None, Query(max_length=200)] = None
) -> list[dict[str, Any]]:
    with state.db.read() as s:
        return storage.reviewer_metrics(s, run_id=run_id, cost_per_hour=state.settings.reviewer_cost_per_hour)
