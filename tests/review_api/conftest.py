"""Review service fixtures (helpers in tests/support/review.py): run dirs, SQLite and a real PostgreSQL, an app."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.review import ROOT, ReviewEnv, free_port, fresh_postgres_db, make_env, make_run_dir


@pytest.fixture(scope="session")
def run_dirs(tmp_path_factory: pytest.TempPathFactory, synth_logs: Path, reference_logs: Path) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("runs")
    return {
        "small": make_run_dir(base / "small", synth_logs, reference_logs, run_id="run-small", n=24),
        "other": make_run_dir(base / "other", synth_logs, reference_logs, run_id="run-other", n=12, seed=1),
        "bad": make_run_dir(base / "bad", synth_logs, reference_logs, run_id="run-bad", n=8, bad_rows=2, seed=2),
    }


# ---------------------------------------------------------------- PostgreSQL, started by the project's script
@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server for this test session (scripts/postgres.sh), stopped afterwards."""
    data = tempfile.mkdtemp(prefix="edgemine-pg-")
    script = str(ROOT / "scripts" / "postgres.sh")
    port = str(free_port())
    out = subprocess.run([script, "start", data, port], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"scripts/postgres.sh start failed: {out.stderr.strip()}")
    try:
        yield out.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([script, "stop", data], capture_output=True, text=True, timeout=120)
        subprocess.run(["rm", "-rf", data, f"{data}.initdb.log"], check=False)


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
