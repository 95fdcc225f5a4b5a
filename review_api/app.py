"""`create_app(settings) -> FastAPI`: the review service.

Routes live in `routes/<resource>.py`; storage in `storage/`; this module wires them, maps the typed
errors of `edgemine.errors` to HTTP answers, serves the reviewer page at `/`, and exposes `/metrics`.

Untrusted requests meet, outermost first: the security headers (`SecurityHeaders`: every answer, with a
Content-Security-Policy the page works under), the token (`deps.AuthenticateFirst`: before any body is read),
the body cap (`BodyLimit`: `settings.max_body_bytes`, before or while reading), then FastAPI's parsing,
whose 422s are short and always encodable (`_validation_errors`).
"""

from __future__ import annotations

import gc
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from edgemine.errors import (
    ConfigError,
    EdgemineError,
    InputNotFoundError,
    InvalidFieldError,
    NotFoundError,
    ReviewError,
    SchemaError,
)
from edgemine.limits import quote
from edgemine.review_api import storage
from edgemine.review_api.db import Database
from edgemine.review_api.deps import AppState, AuthenticateFirst, Clock, utc_now
from edgemine.review_api.observability import Metrics, MetricsMiddleware
from edgemine.review_api.routes import items, ops, queue, reviewers, runs
from edgemine.review_api.settings import Settings
from edgemine.review_api.thumbnails import Thumbnails

STATIC = Path(__file__).parent / "static"
DEV_ADMIN = "dev-admin"


def _thumbnail_dir(settings: Settings, db: Database) -> Path:
    if settings.thumbnail_dir is not None:
        return settings.thumbnail_dir
    if db.is_sqlite and db.url.startswith("sqlite:///") and len(db.url) > len("sqlite:///"):
        return Path(db.url[len("sqlite:///"):]).resolve().parent / "thumbnails"
    return Path(tempfile.gettempdir()) / "edgemine-thumbnails"


# The page loads its own script, style and images (blob: URLs made from fetched thumbnails); nothing
# inline, nothing from elsewhere, never framed. /docs and /redoc load Swagger UI / ReDoc from their CDN
# with an inline bootstrap script, so they get their own, looser policy (they show only the OpenAPI schema).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
DOCS_CSP = ("default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
            "font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
            "https://cdn.redoc.ly; connect-src 'self'; worker-src blob:; base-uri 'none'; frame-ancestors 'none'")
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
_COMMON_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                   (b"referrer-policy", b"no-referrer"), (b"cross-origin-opener-policy", b"same-origin")]
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()), *_COMMON_HEADERS]
DOCS_SECURITY_HEADERS = [(b"content-security-policy", DOCS_CSP.encode()), *_COMMON_HEADERS]


class SecurityHeaders:
    """Pure ASGI middleware: every answer (page, static files, API, images, errors) gets the security headers."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = DOCS_SECURITY_HEADERS if scope["path"] in DOCS_PATHS else SECURITY_HEADERS

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, detail=f"the request body is more than {limit:,} bytes, the most this service "
                                     "reads (max_body_bytes)", headers={"Connection": "close"})


class BodyLimit:
    """Pure ASGI middleware: at most `max_bytes` of a request body are read, none of one declared bigger.

    A Content-Length over the cap is refused before reading; a chunked body is counted as it arrives and
    refused once it passes the cap (FastAPI turns the HTTPException raised in `receive` into the 413; the
    except below answers for readers that do not). Nothing is buffered here.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None:
            if not declared.isdigit():
                await _error(400, "Content-Length must be a number of bytes", close=True)(scope, receive, send)
                return
            if int(declared) > self.max_bytes:
                await _error(413, BodyTooLarge(self.max_bytes).detail, close=True)(scope, receive, send)
                return
        received = 0
        started = False

        async def counted_receive() -> dict[str, Any]:
            nonlocal received
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def send_started(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, send_started)
        except BodyTooLarge as exc:
            if started:
                raise
            await _error(413, exc.detail, close=True)(scope, receive, send)


MAX_LISTED_ERRORS = 20


def _encodable(text: str, limit: int = 2000, *, ascii_only: bool = False) -> str:
    """`text` cut to `limit` characters and made encodable: lone surrogates (and, if asked, all non-ASCII)
    become backslash escapes, so an answer about a bad value can always be sent."""
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text):,} characters)"
    codec = "ascii" if ascii_only else "utf-8"
    return text.encode(codec, "backslashreplace").decode(codec)


def _validation_errors(errors: Any) -> list[dict[str, Any]]:
    """FastAPI's 422 shape (loc, msg, type), short and ASCII: the bad value is quoted (limits.quote), never echoed."""
    out: list[dict[str, Any]] = []
    for err in errors[:MAX_LISTED_ERRORS]:
        loc = [p if isinstance(p, int) else _encodable(str(p), 100, ascii_only=True) for p in err.get("loc", ())]
        msg = str(err.get("msg", ""))
        if err.get("type") == "json_invalid" and isinstance(err.get("ctx"), dict):
            msg = f"{msg}: {err['ctx'].get('error', '')}"
        elif err.get("type") != "missing" and "input" in err:
            msg = f"{msg} (got {quote(err['input'])})"
        out.append({"loc": loc, "msg": _encodable(msg, 600, ascii_only=True),
                    "type": _encodable(str(err.get("type", "value_error")), 100, ascii_only=True)})
    if len(errors) > MAX_LISTED_ERRORS:
        out.append({"loc": ["body"], "msg": f"... and {len(errors) - MAX_LISTED_ERRORS:,} more errors",
                    "type": "value_error"})
    return out


def _error(status: int, detail: Any, *, close: bool = False) -> JSONResponse:
    """`close`: the body was not read; the server closes the connection instead of draining what is left."""
    if isinstance(detail, str):
        detail = _encodable(detail)
    return JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"} if close else None)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_errors(exc.errors()))

    @app.exception_handler(InvalidFieldError)
    async def invalid_field(_: Request, exc: InvalidFieldError) -> JSONResponse:
        where = "header" if exc.field[:1].isupper() else "body"
        return _error(422, [{"loc": [where, exc.field], "msg": _encodable(str(exc)), "type": "value_error"}])

    @app.exception_handler(NotFoundError)
    async def not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(InputNotFoundError)
    async def input_not_found(_: Request, exc: InputNotFoundError) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(ReviewError)
    async def conflict(_: Request, exc: ReviewError) -> JSONResponse:
        return _error(409, str(exc))

    @app.exception_handler(ConfigError)
    @app.exception_handler(SchemaError)
    async def bad_input(_: Request, exc: EdgemineError) -> JSONResponse:
        # the same shape as FastAPI's own 422s, so clients read one format
        return _error(422, [{"loc": ["body"], "msg": _encodable(str(exc)), "type": "value_error"}])

    @app.exception_handler(EdgemineError)
    async def other(_: Request, exc: EdgemineError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, _: Exception) -> JSONResponse:
        # Starlette answers an unhandled exception from its outermost layer, outside SecurityHeaders: add them
        # here. The exception is still re-raised and logged by the server; the client sees no traceback.
        extra = DOCS_SECURITY_HEADERS if request.url.path in DOCS_PATHS else SECURITY_HEADERS
        return JSONResponse({"detail": "internal error"}, status_code=500,
                            headers={k.decode(): v.decode() for k, v in extra})


def quiet_gc() -> None:
    """Keep the cyclic GC off the request path's tail; `edgemine serve` calls it once the app is built.

    Everything alive at startup (FastAPI, SQLAlchemy, pydantic: ~hundreds of thousands of objects) moves to
    the permanent generation, and young collections run less often; requests allocate few cycles, so memory
    stays flat. Measured with benchmarks/review_load.py (1M candidates, 32 clients, tight loop): p99 207 →
    80 ms, 510 → 663 requests/s — full collections over the startup heap were the stalls. Not for processes
    that build many apps (tests): frozen objects are never collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)


def create_app(settings: Settings, *, clock: Clock | None = None) -> FastAPI:
    """Build the app on the store named by `settings.database_url` (tables are created if missing).

    `clock` returns the current UTC time; tests pass a fake one to move leases past their expiry.
    """
    db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous,
                  pool_size=settings.pool_size)
    db.create_all()
    now = clock or utc_now
    if settings.dev_admin_token is not None:  # development only (Settings refuses it elsewhere)
        with db.write() as s:
            storage.ensure_reviewer_with_token(s, name=DEV_ADMIN, role="admin",
                                               token=settings.dev_admin_token.get_secret_value(), now=now())
    metrics = Metrics(db, now)
    state = AppState(settings=settings, db=db, clock=now, thumbnails=Thumbnails(_thumbnail_dir(settings, db)),
                     metrics=metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.close()
        db.dispose()

    app = FastAPI(
        title="edgemine review",
        version="0.1.0",
        summary="Reviewers triage mined edge-case candidates; leads watch quality and settle escalations.",
        lifespan=lifespan,
    )
    app.state.review = state
    _install_error_handlers(app)
    for module in (queue, items, runs, reviewers, ops):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    # outermost last: metrics see every answer, then headers on every answer, the token before the body cap
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(AuthenticateFirst, state=state)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
