"""Runs: import (admin), policy, metrics and consensus (lead)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status

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
        return [views.run_public(r) for r in storage.list_runs(s)]


@router.get("/runs/{run_id}", response_model=schemas.RunPublic, summary="Lead: one run and its policy")
def get_run(run_id: RunId, me: Lead, db: Db) -> schemas.RunPublic:
    with db.read() as s:
        return views.run_public(storage.get_run(s, run_id=run_id))


@router.patch("/runs/{run_id}", response_model=schemas.RunPublic,
              summary="Lead: pause/resume a run or change its gold rate, lease length, escalation thresholds")
def update_run(run_id: RunId, body: schemas.RunUpdate, me: Lead, db: Db) -> schemas.RunPublic:
    with db.write() as s:
        return views.run_public(storage.update_run_policy(s, run_id=run_id, **body.model_dump()))


@router.get("/runs/{run_id}/metrics", response_model=schemas.MetricsPublic,
            summary="Lead: agreement (Cohen, Fleiss, Krippendorff), reviewers, queue depth and age, cost")
def run_metrics(run_id: RunId, me: Lead, state: State, now: Now) -> schemas.MetricsPublic:
    with state.db.read() as s:
        m = storage.run_metrics(s, run_id=run_id, now=now(), cost_per_hour=state.settings.reviewer_cost_per_hour)
    return schemas.MetricsPublic(**m)


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
