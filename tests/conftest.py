"""Shared fixtures: tiny synthetic drive logs, generated once per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Engines started by tests run locally and quietly.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


@pytest.fixture(scope="session")
def synth_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 drives x 60 frames with 25% rare frames: every rare category can appear in a few events."""
    from edgemine.jobs.synth import generate

    out = tmp_path_factory.mktemp("synth_logs")
    generate(out, drives=6, frames_per_drive=60, rare_rate=0.25, size=64, seed=11, workers=1)
    return out


@pytest.fixture(scope="session")
def reference_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Known drives (no rare events), 4 x 60 frames."""
    from edgemine.jobs.synth import generate

    out = tmp_path_factory.mktemp("reference_logs")
    generate(out, drives=4, frames_per_drive=60, size=64, seed=5, reference=True, workers=1)
    return out


# ---------------------------------------------------------------- PostgreSQL, started by the project's script
@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server for this test session (scripts/postgres.sh), stopped afterwards: the review
    store's tests and the publish tests that read it run on both stores."""
    import subprocess
    import tempfile

    from tests.support.review import ROOT, free_port

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


@pytest.fixture(scope="session")
def ray_local() -> Iterator[str]:
    """One local Ray runtime shared by every in-process Ray test of the session; yields its GCS address.

    Tests never shut it down themselves: a test that did would pull Ray from under the next one."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def spark() -> Any:
    """One local Spark session for the whole test session (starting one takes seconds)."""
    from tests.support.frames import shared_spark

    return shared_spark()


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Debian chromium binary for Playwright (installed by scripts/chromium.sh when missing)."""
    from tests.support.browser import chromium_path

    return chromium_path()
