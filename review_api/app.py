"""`create_app(settings) -> FastAPI`: the review service.

Routes live in `routes/<resource>.py`; storage in `storage/`; this module wires them, maps the typed
errors of `edgemine.errors` to HTTP answers, serves the reviewer page at `/`, and exposes `/metrics`.
"""

from __future__ import annotations

import gc
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
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
from edgemine.review_api import storage
from edgemine.review_api.db import Database
from edgemine.review_api.deps import AppState, Clock, utc_now
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


def _error(status: int, detail: Any) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InvalidFieldError)
    async def invalid_field(_: Request, exc: InvalidFieldError) -> JSONResponse:
        where = "header" if exc.field[:1].isupper() else "body"
        return _error(422, [{"loc": [where, exc.field], "msg": str(exc), "type": "value_error"}])

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
        return _error(422, [{"loc": ["body"], "msg": str(exc), "type": "value_error"}])

    @app.exception_handler(EdgemineError)
    async def other(_: Request, exc: EdgemineError) -> JSONResponse:
        return _error(400, str(exc))


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

    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
