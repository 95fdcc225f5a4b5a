"""Annotated dependencies: the store, the clock, the settings and the authenticated person.

Auth: `Authorization: Bearer <token>`. No or an unknown token -> 401 (with `WWW-Authenticate`), a known
token without the role -> 403. Neither answer carries data. Verified tokens are cached for
`settings.auth_cache_seconds`, so most requests do not touch the database to authenticate.
A request that may carry a body (POST, PUT, PATCH, DELETE) is authenticated from its headers by
`AuthenticateFirst` before anything reads the body: an anonymous 300 MB or malformed body gets its 401
unread. The role check stays in `BearerRole`, which reuses that person.
The dependencies are `async` on purpose: FastAPI runs plain functions in a worker thread, which costs
a thread hop per dependency per request.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.concurrency import run_in_threadpool

from edgemine.review_api import storage
from edgemine.review_api.auth import hash_token, role_allows
from edgemine.review_api.db import Database
from edgemine.review_api.observability import Metrics
from edgemine.review_api.settings import Settings
from edgemine.review_api.thumbnails import Thumbnails

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Principal:
    id: int
    name: str
    role: str


@dataclass
class AppState:
    settings: Settings
    db: Database
    clock: Clock
    thumbnails: Thumbnails
    metrics: Metrics
    ds_last_refresh: dict[str, float] = field(default_factory=dict)  # run -> when its last refresh started
    ds_last_seconds: dict[str, float] = field(default_factory=dict)  # run -> how long that refresh took
    auth_cache: dict[str, tuple[Principal, float]] = field(default_factory=dict)  # touched on the event loop only
    auth_lock: threading.Lock = field(default_factory=threading.Lock)
    last_reclaim: datetime | None = None
    _pool: ProcessPoolExecutor | None = None

    def consensus_pool(self) -> ProcessPoolExecutor:
        """One worker process for Dawid-Skene refreshes, started on first use (spawned: no inherited threads)."""
        with self.auth_lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)  # no orphaned worker after os._exit
            self._pool = None

    def reclaim_due(self, now: datetime) -> bool:
        """Return expired leases to the queue at most once a second (on the event loop: no lock needed)."""
        if self.last_reclaim is None or abs((now - self.last_reclaim).total_seconds()) >= 1.0:
            self.last_reclaim = now
            return True
        return False


async def get_state(request: Request) -> AppState:
    return request.app.state.review  # type: ignore[no-any-return]


State = Annotated[AppState, Depends(get_state)]


async def get_db(state: State) -> Database:
    return state.db


async def get_clock(state: State) -> Clock:
    return state.clock


async def get_settings(state: State) -> Settings:
    return state.settings


Db = Annotated[Database, Depends(get_db)]
Now = Annotated[Clock, Depends(get_clock)]
Config = Annotated[Settings, Depends(get_settings)]

def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def _lookup(state: AppState, token: str) -> Principal | None:
    with state.db.read() as s:
        reviewer = storage.reviewer_by_token(s, token=token)
        return Principal(reviewer.id, reviewer.name, reviewer.role) if reviewer else None


async def authenticate(state: AppState, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    """The person behind a bearer token, from the cache or the store; 401 when there is none."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise _unauthorized("missing bearer token")
    token = credentials.credentials
    key = hash_token(token)
    ttl = state.settings.auth_cache_seconds
    now = time.monotonic()
    cached = state.auth_cache.get(key)
    if cached is not None and cached[1] > now:
        return cached[0]
    principal = await run_in_threadpool(_lookup, state, token)
    if principal is None:
        state.auth_cache.pop(key, None)
        raise _unauthorized("unknown or revoked token")
    if ttl > 0:
        if len(state.auth_cache) > 10_000:
            state.auth_cache.clear()
        state.auth_cache[key] = (principal, now + ttl)
    return principal


PRINCIPAL = "edgemine.principal"  # the ASGI scope key where AuthenticateFirst leaves the person
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class AuthenticateFirst:
    """Pure ASGI middleware: a request that may carry a body needs a valid bearer token before it is read.

    FastAPI reads and parses a body before it resolves dependencies, so without this an anonymous client
    could make the service read (up to the body cap) and parse JSON it will never accept. Every route taking
    such methods needs a token; which role it needs is still checked by `BearerRole` after routing.
    """

    def __init__(self, app: Any, state: AppState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"").decode("latin-1")
        scheme, token = get_authorization_scheme_param(header)
        credentials = HTTPAuthorizationCredentials(scheme=scheme, credentials=token) if header else None
        try:
            scope[PRINCIPAL] = await authenticate(self.state, credentials)
        except HTTPException as exc:  # answered with the body unread: the server closes, not drains
            headers = {**(exc.headers or {}), "Connection": "close"}
            await JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)(
                scope, receive, send)
            return
        await self.app(scope, receive, send)


class BearerRole(HTTPBearer):
    """The security scheme and the role check in one dependency: an authenticated person with `role` or above.

    One dependency instead of a chain (scheme -> state -> principal -> role) because FastAPI's dependency
    resolution costs tens of microseconds per node on every request. OpenAPI still shows the bearer scheme.
    """

    def __init__(self, role: str) -> None:
        super().__init__(auto_error=False, scheme_name="HTTPBearer",
                         description="A per-person token from `edgemine reviewers add`.")
        self.role = role

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        principal = request.scope.get(PRINCIPAL)
        if principal is None:
            principal = await authenticate(request.app.state.review, await super().__call__(request))
        if not role_allows(principal.role, self.role):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"this needs the {self.role} role")
        return principal


AnyReviewer = Annotated[Principal, Depends(BearerRole("reviewer"))]
Lead = Annotated[Principal, Depends(BearerRole("lead"))]
Admin = Annotated[Principal, Depends(BearerRole("admin"))]
