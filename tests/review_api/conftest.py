"""Review service fixtures (helpers in tests/support/review.py): run dirs, SQLite and a real PostgreSQL (its server:
`postgres_url` in tests/conftest.py), an app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.review import ReviewEnv, fresh_postgres_db, make_env, make_run_dir


@pytest.fixture(scope="session")
def run_dirs(tmp_path_factory: pytest.TempPathFactory, synth_logs: Path, reference_logs: Path) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("runs")
    return {
        "small": make_run_dir(base / "small", synth_logs, reference_logs, run_id="run-small", n=24),
        "other": make_run_dir(base / "other", synth_logs, reference_logs, run_id="run-other", n=12, seed=1),
        "bad": make_run_dir(base / "bad", synth_logs, reference_logs, run_id="run-bad", n=8, bad_rows=2, seed=2),
    }


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.integration])])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The storage suite runs once on SQLite and once on a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'review.db'}"
    return fresh_postgres_db(request.getfixturevalue("postgres_url"))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[ReviewEnv]:
    """An app on a fresh SQLite file with an admin, a lead and three reviewers (ana, ben, cho)."""
    e = make_env(f"sqlite:///{tmp_path / 'review.db'}", tmp_path)
    with e.client:
        yield e
