"""Reviewers: the people of the review service, their roles and bearer tokens.

A token is shown once, when its reviewer is created; only its hash is stored. A deactivated reviewer's
token stops working, but their decisions stay.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from edgemine.errors import InvalidFieldError, NotFoundError, ReviewError
from edgemine.review_api.auth import check_role, hash_token, new_token
from edgemine.review_api.db import Reviewer


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


def reviewer_names(session: Session, reviewer_ids: Sequence[int]) -> dict[int, str]:
    rows = session.execute(select(Reviewer.id, Reviewer.name).where(Reviewer.id.in_(list(reviewer_ids)))).all()
    return {int(i): str(n) for i, n in rows}
