"""Health and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from edgemine.review_api.deps import Lead, State

router = APIRouter(tags=["ops"])


@router.get("/healthz", summary="Liveness: the process answers and the store is reachable")
def healthz(state: State) -> dict[str, bool]:
    with state.db.read() as s:
        s.execute(text("SELECT 1"))
    return {"ok": True}


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}},
            summary="Prometheus metrics (lead token; scrape with `authorization: credentials`)")
def metrics(me: Lead, state: State) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
