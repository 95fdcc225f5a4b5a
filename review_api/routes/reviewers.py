"""People: who am I, my decisions and progress, and (admin) list and add reviewers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from edgemine.review_api import schemas, storage, views
from edgemine.review_api.deps import Admin, AnyReviewer, Db, Now

router = APIRouter(tags=["reviewers"])


@router.get("/me", response_model=schemas.ReviewerPublic, summary="The person this token belongs to")
def me(me: AnyReviewer, db: Db) -> schemas.ReviewerPublic:
    with db.read() as s:
        reviewer = storage.get_reviewer(s, reviewer_id=me.id)
        return views.reviewer_public(reviewer)


@router.get("/me/decisions", response_model=list[schemas.MyDecision],
            summary="Your latest decisions, newest first, and whether (until when, or why not) each may change")
def my_decisions(
    me: AnyReviewer,
    db: Db,
    now: Now,
    run_id: Annotated[str | None, Query(max_length=200, description="Only decisions in this run.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> list[dict[str, Any]]:
    with db.read() as s:
        if run_id is not None:
            storage.get_run(s, run_id=run_id)
        return storage.my_decisions(s, reviewer_id=me.id, now=now(), run_id=run_id, limit=limit)


@router.get("/me/progress", response_model=schemas.ProgressPublic,
            summary="Where you stand in a run: item k of N, your count and pace, and what still waits and why")
def my_progress(
    me: AnyReviewer,
    db: Db,
    now: Now,
    run_id: Annotated[str | None, Query(max_length=200, description="Default: your current lease's run, else "
                                                                     "your last decision's.")] = None,
) -> dict[str, Any]:
    with db.read() as s:
        return storage.progress(s, reviewer_id=me.id, now=now(), run_id=run_id)


@router.get("/reviewers", response_model=list[schemas.ReviewerPublic], summary="Admin: everyone")
def list_reviewers(me: Admin, db: Db) -> list[schemas.ReviewerPublic]:
    with db.read() as s:
        return [views.reviewer_public(r) for r in storage.list_reviewers(s)]


@router.post("/reviewers", response_model=schemas.ReviewerCreated, status_code=status.HTTP_201_CREATED,
             summary="Admin: add a person; the token is in this answer only")
def add_reviewer(body: schemas.ReviewerCreate, me: Admin, db: Db, now: Now) -> schemas.ReviewerCreated:
    with db.write() as s:
        reviewer, token = storage.create_reviewer(s, name=body.name, role=body.role, now=now())
        return schemas.ReviewerCreated(**views.reviewer_public(reviewer).model_dump(), token=token)
