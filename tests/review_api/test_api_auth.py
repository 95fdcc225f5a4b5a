"""The auth matrix through HTTP: 401 without a valid token, 403 below the role, and neither leaks data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgemine.review_api import storage
from tests.support.review import ReviewEnv, make_env

DECISION = {"verdict": "not_edge_case"}
# (method, path, json body, lowest role allowed)
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("POST", "/queue/next", None, "reviewer"),
    ("POST", "/leases/{lease}/renew", None, "reviewer"),
    ("DELETE", "/leases/{lease}", None, "reviewer"),
    ("GET", "/items/{item}", None, "reviewer"),
    ("GET", "/items/{item}/images/frame/0", None, "reviewer"),
    ("POST", "/items/{item}/decisions", DECISION, "reviewer"),
    ("GET", "/me", None, "reviewer"),
    ("GET", "/items/{item}/review", None, "lead"),
    ("POST", "/items/{item}/resolve", {"verdict": "not_edge_case"}, "lead"),
    ("GET", "/escalations", None, "lead"),
    ("GET", "/runs", None, "lead"),
    ("GET", "/runs/run-small", None, "lead"),
    ("PATCH", "/runs/run-small", {"gold_rate": 0.1}, "lead"),
    ("GET", "/runs/run-small/metrics", None, "lead"),
    ("POST", "/runs/run-small/consensus", None, "lead"),
    ("GET", "/reviewers/metrics", None, "lead"),
    ("GET", "/metrics", None, "lead"),
    ("POST", "/runs/import", {"run_dir": "/nonexistent"}, "admin"),
    ("GET", "/reviewers", None, "admin"),
    ("POST", "/reviewers", {"name": "zed", "role": "reviewer"}, "admin"),
]
ROLES = ["reviewer", "lead", "admin"]
PERSON = {"reviewer": "ana", "lead": "lead", "admin": "admin"}


@pytest.fixture
def setup(env: ReviewEnv, run_dirs: dict[str, Path]) -> dict[str, Any]:
    env.import_run(run_dirs["small"], overlap_fraction=0.0)
    held = env.next("ana")
    assert held is not None
    return {"env": env, "item": held["item"]["id"], "lease": held["lease"]["id"]}


def _call(env: ReviewEnv, method: str, path: str, body: dict[str, Any] | None, headers: dict[str, str]) -> Any:
    return env.client.request(method, path, json=body, headers=headers)


def _no_data(response: Any) -> None:
    body = response.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str)


@pytest.mark.parametrize(("method", "path", "body", "role"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _, _ in ENDPOINTS])
def test_auth_matrix(setup: dict[str, Any], method: str, path: str, body: dict[str, Any] | None, role: str) -> None:
    env: ReviewEnv = setup["env"]
    path = path.format(item=setup["item"], lease=setup["lease"])
    for headers in ({}, {"Authorization": "Bearer em_not-a-real-token"}, {"Authorization": "Basic YWRtaW46YWRtaW4="}):
        r = _call(env, method, path, body, headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        _no_data(r)
    # an unauthenticated call with a bad body is still 401: nothing about the body is revealed
    if body is not None:
        r = _call(env, method, path, {"bogus": 1}, {})
        assert r.status_code == 401
    for who in ROLES:
        r = _call(env, method, path, body, env.auth(PERSON[who]))
        if ROLES.index(who) < ROLES.index(role):
            assert r.status_code == 403, (who, r.text)
            _no_data(r)
            assert "role" in r.json()["detail"]
        else:
            assert r.status_code not in (401, 403), (who, r.status_code, r.text)


def test_public_endpoints(env: ReviewEnv) -> None:
    assert env.client.get("/healthz").json() == {"ok": True}
    assert "openapi" in env.client.get("/openapi.json").json()
    page = env.client.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_reviewers_see_only_their_own_queue_items(setup: dict[str, Any]) -> None:
    env: ReviewEnv = setup["env"]
    item = setup["item"]
    assert env.client.get(f"/items/{item}", headers=env.auth("ana")).status_code == 200
    for path in (f"/items/{item}", f"/items/{item}/images/frame/0", f"/items/{item}/images/neighbor/0"):
        r = env.client.get(path, headers=env.auth("ben"))
        assert r.status_code == 404 and "not in your queue" in r.json()["detail"]
    # the same answer as for an id that does not exist: no probing
    missing = env.client.get("/items/999999", headers=env.auth("ben"))
    assert missing.status_code == 404 and missing.json()["detail"].replace("999999", str(item)) == r.json()["detail"]
    r = env.decide("ben", item, verdict="not_edge_case")
    assert r.status_code == 404
    r = env.client.post(f"/leases/{setup['lease']}/renew", headers=env.auth("ben"))
    assert r.status_code == 404
    # leads see every item
    assert env.client.get(f"/items/{item}", headers=env.auth("lead")).status_code == 200


def test_revoked_tokens_stop_working(tmp_path: Path) -> None:
    e = make_env(f"sqlite:///{tmp_path / 'r.db'}", tmp_path, auth_cache_seconds=0)
    with e.client:
        assert e.client.get("/me", headers=e.auth("ana")).json()["name"] == "ana"
        with e.app_state.db.write() as s:
            storage.deactivate_reviewer(s, name="ana")
        assert e.client.get("/me", headers=e.auth("ana")).status_code == 401


def test_tokens_are_stored_hashed(env: ReviewEnv) -> None:
    r = env.client.post("/reviewers", json={"name": "dee", "role": "lead"}, headers=env.auth("admin"))
    assert r.status_code == 201
    token = r.json()["token"]
    assert env.client.get("/me", headers={"Authorization": f"Bearer {token}"}).json()["role"] == "lead"
    with env.app_state.db.read() as s:
        (dee,) = [x for x in storage.list_reviewers(s) if x.name == "dee"]
        assert token not in dee.token_hash and len(dee.token_hash) == 64
    listed = env.client.get("/reviewers", headers=env.auth("admin")).json()
    assert all("token" not in x for x in listed)
    assert env.client.post("/reviewers", json={"name": "dee"}, headers=env.auth("admin")).status_code == 409
