"""A hostile user's requests (issue 13): huge or endless bodies, bad JSON before a token, values JSON cannot
carry back, paths and run ids that break routes. Each gets a short 4xx, never a 500 or a memory spike."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgemine.limits import MAX_BODY_BYTES, quote
from tests.support.review import ReviewEnv, make_env

MiB = 1 << 20
SECURITY_HEADERS = ("content-security-policy", "x-content-type-options", "x-frame-options", "referrer-policy")


# ---------------------------------------------------------------- driving the ASGI app with a lazy body
def call_asgi(app: Any, method: str, path: str, *, headers: dict[str, str], chunks: Iterator[bytes],
              content_length: int | None = None) -> dict[str, Any]:
    """One request straight into the ASGI app; the body comes from `chunks` only as the app asks for it.

    Returns the status, headers, body, and how many body bytes the app read (a client that never has the
    whole body in memory: a 64 MiB stream costs the test nothing)."""
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    if content_length is not None:
        raw.append((b"content-length", str(content_length).encode()))
    else:
        raw.append((b"transfer-encoding", b"chunked"))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": raw,
             "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
    consumed = {"bytes": 0, "done": False}
    answer: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        if consumed["done"]:
            await asyncio.sleep(3600)  # a client that sent everything waits for the answer
        chunk = next(chunks, None)
        if chunk is None:
            consumed["done"] = True
            return {"type": "http.request", "body": b"", "more_body": False}
        consumed["bytes"] += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
            answer["headers"] = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    asyncio.run(app(scope, receive, send))
    answer["consumed"] = consumed["bytes"]
    return answer


def stream(total: int, chunk: int = 64 * 1024, fill: bytes = b"[]") -> Iterator[bytes]:
    block = (fill * (chunk // len(fill) + 1))[:chunk]
    sent = 0
    while sent < total:
        piece = block[: min(chunk, total - sent)]
        sent += len(piece)
        yield piece


@pytest.fixture
def item(env: ReviewEnv, run_dirs: dict[str, Path]) -> int:
    env.import_run(run_dirs["small"], overlap_fraction=0.0)
    held = env.next("ana")
    assert held is not None
    return int(held["item"]["id"])


# ---------------------------------------------------------------- 1. bodies: capped, and never read before the token
@pytest.mark.parametrize("content_length", [64 * MiB, None], ids=["content-length", "chunked"])
def test_an_anonymous_huge_body_is_401_without_being_read(env: ReviewEnv, item: int,
                                                          content_length: int | None) -> None:
    for headers in ({}, {"Authorization": "Bearer em_not-a-real-token"}):
        r = call_asgi(env.client.app, "POST", f"/items/{item}/decisions", headers=headers,
                      chunks=stream(64 * MiB), content_length=content_length)
        assert r["status"] == 401, r
        assert r["headers"]["www-authenticate"] == "Bearer"
        assert r["consumed"] == 0  # not one byte of the body was read


def test_an_anonymous_malformed_body_is_401_not_422(env: ReviewEnv, item: int) -> None:
    for body in (b"{not json", b"[]" * 5000, b'{"verdict": NaN, "notes": "\\ud800"}'):
        r = env.client.post(f"/items/{item}/decisions", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 401, r.text
        assert r.json() == {"detail": "missing bearer token"}
    r = env.client.post("/runs/import", content=b"{", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json() == {"detail": "unknown or revoked token"}


@pytest.mark.parametrize("content_length", [64 * MiB, MAX_BODY_BYTES + 1, None],
                         ids=["64MiB-declared", "cap+1-declared", "chunked"])
def test_an_oversize_body_is_413_and_read_no_further_than_the_cap(env: ReviewEnv, item: int,
                                                                 content_length: int | None) -> None:
    total = content_length or 64 * MiB
    tracemalloc.start()
    try:
        r = call_asgi(env.client.app, "POST", f"/items/{item}/decisions", headers=env.auth("ana"),
                      chunks=stream(total), content_length=content_length)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r["status"] == 413, r
    detail = json.loads(r["body"])["detail"]
    assert f"{MAX_BODY_BYTES:,}" in detail
    if content_length is not None:
        assert r["consumed"] == 0  # refused by its Content-Length, before reading
    else:
        assert r["consumed"] <= MAX_BODY_BYTES + 64 * 1024  # counted while streaming, stopped at the cap
    assert peak < 16 * MiB, f"peak Python allocations {peak / MiB:.1f} MiB"
    # the lease survived: the same reviewer can still decide
    assert env.decide("ana", item, verdict="unsure").status_code == 201


def test_the_body_cap_is_a_setting(tmp_path: Path, run_dirs: dict[str, Path]) -> None:
    e = make_env(f"sqlite:///{tmp_path / 'r.db'}", tmp_path, max_body_bytes=2000)
    with e.client:
        e.import_run(run_dirs["small"], overlap_fraction=0.0)
        held = e.next("ana")
        assert held is not None
        r = e.decide("ana", held["item"]["id"], verdict="unsure", notes="x" * 2500)
        assert r.status_code == 413 and "2,000" in r.json()["detail"]
        assert e.decide("ana", held["item"]["id"], verdict="unsure", notes="x" * 500).status_code == 201


def test_max_body_bytes_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgemine.review_api.settings import load_settings

    assert load_settings().max_body_bytes == MAX_BODY_BYTES
    monkeypatch.setenv("EDGEMINE_MAX_BODY_BYTES", "4096")
    assert load_settings().max_body_bytes == 4096


def test_many_small_values_under_the_cap_stay_small(env: ReviewEnv, item: int) -> None:
    """The `[]` * 5M case: past the cap it is refused; just under it the parse is bounded (< 50 MiB)."""
    n = (MAX_BODY_BYTES - 100) // 3
    cases = [
        (b"[]" * 5_000_000, 413),
        (b'{"verdict": "unsure", "root_causes": [' + b"[]," * (n - 1) + b"[]]}", 422),  # 350,000 lists
        (b"[" * (MAX_BODY_BYTES // 2 - 10) + b"]" * (MAX_BODY_BYTES // 2 - 10), None),  # deep: any 4xx
    ]
    for body, want in cases:
        tracemalloc.start()
        try:
            r = call_asgi(env.client.app, "POST", f"/items/{item}/decisions",
                          headers=env.auth("ana") | {"content-type": "application/json"},
                          chunks=stream(len(body), fill=body[:1]) if want == 413 else iter([body]),
                          content_length=len(body))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert (r["status"] == want) if want else 400 <= r["status"] < 500, r["status"]
        assert len(r["body"]) < 4000, r["body"][:500]  # the answer names the problem, it does not echo the input
        assert peak < 50 * MiB, f"{body[:40]!r}: peak Python allocations {peak / MiB:.1f} MiB"


# ---------------------------------------------------------------- 2. values JSON cannot carry back: 422, not 500
BAD_DECISIONS = [
    (b'{"verdict": "unsure", "seconds": NaN}', "seconds"),
    (b'{"verdict": "unsure", "seconds": Infinity}', "seconds"),
    (b'{"verdict": "unsure", "seconds": -Infinity}', "seconds"),
    (b'{"verdict": "unsure", "seconds": 1e999}', "seconds"),
    (b'{"verdict": "unsure", "notes": "\\ud800"}', "notes"),
    (b'{"verdict": "unsure", "notes": "ok \\udfff then"}', "notes"),
    (b'{"verdict": "edge_case", "category": "\\ud83d"}', "category"),
    (b'{"verdict": "unsure", "root_causes": ["\\ud800"]}', "root_causes"),
    (b'{"verdict": "\\ud800"}', "verdict"),
    ('{"verdict": "unsure", "notes": "%s"}' % ("\u00e9" * 100_000), "notes"),  # noqa: UP031
    (b'{"verdict": "unsure", "colour": "\\ud800"}', "colour"),
]


@pytest.mark.parametrize(("body", "field"), BAD_DECISIONS, ids=[str(i) for i in range(len(BAD_DECISIONS))])
def test_unrepresentable_values_are_422_naming_the_field(env: ReviewEnv, item: int, body: bytes | str,
                                                         field: str) -> None:
    raw = body.encode("utf-8") if isinstance(body, str) else body
    r = env.client.post(f"/items/{item}/decisions", content=raw,
                        headers=env.auth("ana") | {"Content-Type": "application/json"})
    assert r.status_code == 422, r.text[:500]
    r.content.decode("ascii")  # short and plain: no value comes back that a client could choke on
    assert len(r.content) < 2000, r.content[:500]
    assert any(field in e["loc"] for e in r.json()["detail"]), r.json()
    assert env.decide("ana", item, verdict="unsure").status_code == 201  # the lease survived


def test_a_long_bad_value_is_quoted_not_echoed(env: ReviewEnv, item: int) -> None:
    r = env.decide("ana", item, verdict="x" * 100_000)
    assert r.status_code == 422
    assert len(r.content) < 2000 and "100,002 characters" in r.text


def test_ground_truth_that_is_not_parquet_is_422_naming_the_file(env: ReviewEnv, tmp_path: Path,
                                                                 run_dirs: dict[str, Path]) -> None:
    fake = tmp_path / "truth.parquet"
    fake.write_text("frame_id,category,is_rare\nf1,debris,true\n")
    r = env.client.post("/runs/import", json={"run_dir": str(run_dirs["other"]), "ground_truth": str(fake),
                                              "gold_fraction": 0.2}, headers=env.auth("admin"))
    assert r.status_code == 422, r.text
    assert "truth.parquet" in r.text and "Parquet" in r.text
    r = env.client.post("/runs/import", json={"run_dir": str(run_dirs["other"]), "ground_truth": str(tmp_path),
                                              "gold_fraction": 0.2}, headers=env.auth("admin"))
    assert r.status_code == 422, r.text


def test_run_json_that_is_not_text_is_422(env: ReviewEnv, tmp_path: Path, run_dirs: dict[str, Path]) -> None:
    run = tmp_path / "binary"
    run.mkdir()
    (run / "candidates.parquet").write_bytes((run_dirs["other"] / "candidates.parquet").read_bytes())
    (run / "run.json").write_bytes(b"\xff\xfe{\x00")
    r = env.client.post("/runs/import", json={"run_dir": str(run)}, headers=env.auth("admin"))
    assert r.status_code == 422 and "run.json" in r.text, r.text


# ---------------------------------------------------------------- 3. security headers on every answer
def test_every_answer_carries_the_security_headers(env: ReviewEnv, item: int) -> None:
    answers = {
        "page": env.client.get("/"),
        "script": env.client.get("/static/app.js"),
        "style": env.client.get("/static/style.css"),
        "health": env.client.get("/healthz"),
        "api": env.client.get(f"/items/{item}", headers=env.auth("ana")),
        "image": env.client.get(f"/items/{item}/images/frame/0", headers=env.auth("ana")),
        "401": env.client.get("/me"),
        "404": env.client.get("/nowhere"),
        "413": env.client.post(f"/items/{item}/decisions", content=b"x" * (MAX_BODY_BYTES + 1),
                               headers=env.auth("ana")),
        "422": env.decide("ana", item, verdict="maybe"),
    }
    for name, r in answers.items():
        missing = [h for h in SECURITY_HEADERS if h not in r.headers]
        assert not missing, (name, r.status_code, missing)
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp, csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert answers["image"].status_code == 200 and answers["413"].status_code == 413


def test_the_page_uses_no_inline_script_or_style() -> None:
    """What the CSP forbids is not in the page: inline <script>/<style>, style= or on*= attributes."""
    import re

    static = Path(__file__).resolve().parents[2] / "review_api" / "static"
    html = (static / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert "<style" not in html
    for text in (html, (static / "app.js").read_text()):
        assert not re.search(r"""\sstyle=["'$]""", text)
        assert not re.search(r"""\son[a-z]+=["']""", text)


# ---------------------------------------------------------------- 4. run ids that routes can address
UNSAFE_RUN_IDS = ["a/b", "../up", ".hidden", "sp ace", "x" * 129, "ok\u00e9", "semi;colon", "", "\ud800", None, 7]


@pytest.mark.parametrize("run_id", UNSAFE_RUN_IDS)
def test_unsafe_run_ids_are_refused_at_import_naming_the_id(env: ReviewEnv, tmp_path: Path,
                                                            run_dirs: dict[str, Path], run_id: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "candidates.parquet").write_bytes((run_dirs["other"] / "candidates.parquet").read_bytes())
    (run / "run.json").write_text(json.dumps({"run_id": run_id}))
    r = env.client.post("/runs/import", json={"run_dir": str(run)}, headers=env.auth("admin"))
    assert r.status_code == 422, r.text
    msg = r.json()["detail"][0]["msg"]
    assert f"run_id={quote(run_id)}" in msg, msg
    assert env.client.get("/runs", headers=env.auth("lead")).json() == []


def test_a_safe_run_id_is_reachable_by_every_run_route(env: ReviewEnv, tmp_path: Path,
                                                       run_dirs: dict[str, Path]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "candidates.parquet").write_bytes((run_dirs["other"] / "candidates.parquet").read_bytes())
    (run / "run.json").write_text(json.dumps({"run_id": "Run_2026.03-01"}))
    env.import_run(run)
    lead = env.auth("lead")
    assert env.client.get("/runs/Run_2026.03-01", headers=lead).status_code == 200
    assert env.client.get("/runs/Run_2026.03-01/metrics", headers=lead).status_code == 200
    assert env.client.patch("/runs/Run_2026.03-01", json={"gold_rate": 0.2}, headers=lead).status_code == 200


def test_an_unexpected_error_is_a_bare_500_with_the_security_headers(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from edgemine.review_api.app import create_app
    from edgemine.review_api.settings import load_settings

    app = create_app(load_settings(database_url=f"sqlite:///{tmp_path / 'r.db'}", environment="test",
                                   thumbnail_dir=tmp_path / "thumbs"))

    def broken() -> None:
        raise RuntimeError("secret detail /etc/passwd")

    app.add_api_route("/boom", broken)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom")
    assert r.status_code == 500 and r.json() == {"detail": "internal error"}
    assert "default-src" in r.headers["content-security-policy"] and r.headers["x-content-type-options"] == "nosniff"
