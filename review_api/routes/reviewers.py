"""People: who am I, and (admin) list and add reviewers."""

from __future__ import annotations

from fastapi import APIRouter, status

from edgemine.review_api import schemas, storage, views
from edgemine.review_api.deps import Admin, AnyReviewer, Db, Now

router = APIRouter(tags=["reviewers"])


@router.get("/me", response_model=schemas.ReviewerPublic, summary="The person this token belongs to")
def me(me: AnyReviewer, db: Db) -> schemas.ReviewerPublic:
    with db.read() as s:
        reviewer = storage.get_reviewer(s, reviewer_id=me.id)
        return views.reviewer_public(reviewer)


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
