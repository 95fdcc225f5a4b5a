"""Runs: one imported mining run each, with its review policy (taxonomy, overlap, gold rate, lease length, how long
a reviewer may amend or undo a decision).

The taxonomy (categories, root-cause tags) and the overlap are fixed at import (`importer.py`);
`update_run_policy` changes the rest. `run_rules` is the hot path's read of what validating
a decision and deciding its consensus need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from edgemine.errors import InvalidFieldError, NotFoundError
from edgemine.review_api.db import Run
from edgemine.review_api.hotsql import hot
from edgemine.review_api.storage._common import RUNS

_RUN_RULES = (select(RUNS.c.run_id, RUNS.c.categories, RUNS.c.root_causes, RUNS.c.min_agreement)
              .where(RUNS.c.run_id == bindparam("run")))


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
    amend_window_seconds: int | None = None,
) -> Run:
    """Change the parts of a run's policy that may change after import (overlap is fixed at import)."""
    run = get_run(session, run_id=run_id)
    checks: dict[str, tuple[Any, float, float]] = {
        "gold_rate": (gold_rate, 0.0, 0.5),
        "lease_seconds": (lease_seconds, 10, 86_400),
        "min_agreement": (min_agreement, 0.0, 1.0),
        "ds_min_confidence": (ds_min_confidence, 0.0, 1.0),
        "amend_window_seconds": (amend_window_seconds, 0, 86_400),
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

