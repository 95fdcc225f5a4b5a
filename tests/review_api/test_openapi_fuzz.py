"""Property-based run against /openapi.json (schemathesis + Hypothesis): generated requests never get a 500.

Every operation is exercised as an admin (who may call all of them) on a store holding a run, a live
lease and a few decisions, so generated ids and bodies reach real code paths, not only 404s; 2xx
answers must also match their documented schema.

Schemathesis only draws finite numbers and valid Unicode, and JSON parsers accept more: NaN, Infinity,
1e999 (inf) and lone surrogates ("\\ud800"). Every JSON-body operation also gets those, in every field
(explicit cases) and in generated bodies (a poisoned field each); none may answer >= 500.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.support.review import ReviewEnv, make_env

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


# ---------------------------------------------------------------- what JSON carries and Python cannot send back
RAW_1E999 = "__raw_1e999__"  # json.dumps writes inf as Infinity; this placeholder becomes the literal 1e999
POISONS: dict[str, Any] = {
    "NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf"), "1e999": RAW_1E999,
    "lone-surrogate": "\ud800", "surrogate-inside": "ok \udfff ok", "surrogate-list": ["\ud800"],
    "surrogate-key": {"\ud800": 1}, "nan-list": [float("nan")],
}
# the lowest valid body of every JSON-body operation; each hostile case poisons one field of it
BASES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/items/{item_id}/decisions"): {"verdict": "unsure"},
    ("PUT", "/items/{item_id}/decisions/mine"): {"verdict": "unsure"},
    ("POST", "/items/{item_id}/resolve"): {"verdict": "not_edge_case"},
    ("POST", "/runs/import"): {"run_dir": "/nonexistent"},
    ("PATCH", "/runs/{run_id}"): {"gold_rate": 0.1},
    ("POST", "/reviewers"): {"name": "zed"},
}


def dumps(body: Any) -> bytes:
    """JSON as a hostile client writes it: NaN/Infinity literals, 1e999, surrogates as \\u escapes."""
    text = json.dumps(body, allow_nan=True, ensure_ascii=True)
    return text.replace(json.dumps(RAW_1E999), "1e999").replace(json.dumps(f"-{RAW_1E999}"), "-1e999").encode()


@pytest.fixture(scope="module")
def hostile_env(tmp_path_factory: pytest.TempPathFactory, run_dirs: dict[str, Path]) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("hostile")
    env = make_env(f"sqlite:///{tmp / 'r.db'}", tmp)
    with env.client:
        env.import_run(run_dirs["small"], overlap_fraction=0.0)
        held = env.next("admin")
        assert held is not None
        spec = env.client.get("/openapi.json").json()
        yield {"env": env, "spec": spec, "params": {"item_id": held["item"]["id"], "run_id": "run-small"}}


def json_operations(spec: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    """(method, path) -> the body's field names, for every operation taking a JSON body."""
    out = {}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                name = body["schema"]["$ref"].rsplit("/", 1)[-1]
                out[(method.upper(), path)] = sorted(spec["components"]["schemas"][name]["properties"])
    return out


def send(env: ReviewEnv, method: str, path: str, raw: bytes, query: dict[str, Any] | None = None) -> Any:
    return env.client.request(method, path, content=raw, params=query,
                              headers=env.auth("admin") | {"Content-Type": "application/json"})


def test_every_json_body_operation_has_hostile_cases(hostile_env: dict[str, Any]) -> None:
    assert set(json_operations(hostile_env["spec"])) == set(BASES)  # a new body endpoint needs a base here


@pytest.mark.parametrize("operation", list(BASES), ids=[f"{m} {p}" for m, p in BASES])
@pytest.mark.parametrize("poison", list(POISONS))
def test_hostile_values_in_every_field_are_422(hostile_env: dict[str, Any], operation: tuple[str, str],
                                               poison: str) -> None:
    env: ReviewEnv = hostile_env["env"]
    method, template = operation
    path = template.format(**hostile_env["params"])
    fields = json_operations(hostile_env["spec"])[operation]
    answers = {}
    for name in [*fields, "\ud800"]:  # every field, and a key that is itself a lone surrogate
        r = send(env, method, path, dumps({**BASES[operation], name: POISONS[poison]}))
        answers[name] = r.status_code
        assert r.status_code < 500, (name, r.status_code, r.text[:300])
        r.content.decode("ascii")  # the 422 quotes the value in ASCII: always encodable
        assert len(r.content) < 4000
        if name in fields:  # a surrogate key is refused as a whole body (pydantic cannot read it as a name)
            assert any(name in e["loc"] for e in r.json()["detail"]), r.json()
    assert set(answers.values()) == {422}, answers


def test_poisoned_generated_bodies_never_get_a_server_error(hostile_env: dict[str, Any]) -> None:
    """Schemathesis draws a valid-looking body; one field (known or not) is replaced by a hostile value."""
    env: ReviewEnv = hostile_env["env"]
    schema = schemathesis.openapi.from_asgi("/openapi.json", env.client.app)
    wanted = json_operations(hostile_env["spec"])
    server_errors: list[str] = []
    sent: dict[str, int] = {}
    def fuzz(operation: Any, key: tuple[str, str]) -> None:
        @given(case=operation.as_strategy(), field=st.sampled_from([*wanted[key], "\ud800"]),
               poison=st.sampled_from(sorted(POISONS)), nest=st.booleans())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        def run(case: Any, field: str, poison: str, nest: bool) -> None:
            body = dict(case.body) if isinstance(case.body, dict) else {}
            value = POISONS[poison]
            body[field] = [value] if nest else value
            path = key[1].format(**hostile_env["params"])  # ids that exist: the body reaches validation
            r = send(env, key[0], path, dumps(body), query=case.query)
            sent[key[1]] = sent.get(key[1], 0) + 1
            if r.status_code >= 500:
                server_errors.append(f"{key} {dumps(body)[:200]!r} -> {r.status_code}")

        run()

    for result in schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        if key in wanted:
            fuzz(operation, key)
    assert len(sent) == len(wanted)
    assert server_errors == [], server_errors[:10]
