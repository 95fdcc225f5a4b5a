"""Property-based run against /openapi.json (schemathesis + Hypothesis): generated requests never get a 500.

Every operation is exercised as an admin (who may call all of them) on a store holding a run, a live
lease and a few decisions, so generated ids and bodies reach real code paths, not only 404s; 2xx
answers must also match their documented schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.support.review import make_env

pytestmark = [pytest.mark.integration]
EXAMPLES_PER_OPERATION = 40


def test_no_server_errors(tmp_path: Path, run_dirs: dict[str, Path], synth_logs: Path) -> None:
    env = make_env(f"sqlite:///{tmp_path / 'r.db'}", tmp_path)
    with env.client:
        env.import_run(run_dirs["small"], ground_truth=str(synth_logs / "ground_truth.parquet"), gold_fraction=0.2,
                       overlap_fraction=0.5)
        for name in ("ana", "ben"):
            held = env.next(name)
            env.decide(name, held["item"]["id"], verdict="unsure")  # type: ignore[index]
        env.next("admin")  # the admin holds a live lease: lease and decision routes have something to find
        schema = schemathesis.openapi.from_asgi("/openapi.json", env.client.app)
        auth = env.auth("admin")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 20
        calls: dict[str, int] = {}

        def fuzz(operation: Any) -> None:
            @given(case=operation.as_strategy())
            @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck),
                      database=None)
            def run(case: Any) -> None:
                headers = {**(case.headers or {}), **auth}
                case.call_and_validate(headers=headers, checks=[not_a_server_error, response_schema_conformance])
                calls[operation.label] = calls.get(operation.label, 0) + 1

            run()

        for operation in operations:
            fuzz(operation)
        assert len(calls) == len(operations)  # every operation was called
