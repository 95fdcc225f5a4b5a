"""Prometheus metrics of one app: request latency and counts, decisions, leases, and queue gauges.

Each app has its own registry (tests build many apps in one process). Queue gauges are read from the
store when Prometheus scrapes, so they are never stale.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from edgemine.review_api import storage
from edgemine.review_api.db import Database

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class QueueCollector(Collector):
    def __init__(self, db: Database, clock: Callable[[], Any]) -> None:
        self.db, self.clock = db, clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        items = GaugeMetricFamily("edgemine_review_items", "Items by run and status", labels=["run_id", "status"])
        waiting = GaugeMetricFamily("edgemine_review_queue_waiting_reviews", "Review slots waiting for a reviewer",
                                    labels=["run_id"])
        leased = GaugeMetricFamily("edgemine_review_leases_live", "Live leases", labels=["run_id"])
        age = GaugeMetricFamily("edgemine_review_queue_oldest_age_seconds", "Age of the oldest waiting item",
                                labels=["run_id"])
        esc = GaugeMetricFamily("edgemine_review_escalation_oldest_age_seconds", "Age of the oldest escalation",
                                labels=["run_id"])
        with self.db.read() as s:
            stats = storage.queue_stats(s, now=self.clock())
        for q in stats:
            for st, n in q["by_status"].items():
                items.add_metric([q["run_id"], st], n)
            waiting.add_metric([q["run_id"]], q["waiting_reviews"])
            leased.add_metric([q["run_id"]], q["leased"])
            age.add_metric([q["run_id"]], q["oldest_waiting_seconds"] or 0.0)
            esc.add_metric([q["run_id"]], q["oldest_escalation_seconds"] or 0.0)
        yield from (items, waiting, leased, age, esc)


class Metrics:
    def __init__(self, db: Database, clock: Callable[[], Any]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("edgemine_review_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("edgemine_review_http_request_seconds", "HTTP request latency", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.decisions = Counter("edgemine_review_decisions", "Decisions recorded", ["verdict"],
                                 registry=self.registry)
        self.leases = Counter("edgemine_review_leases", "Leases handed out", ["kind"], registry=self.registry)
        self.registry.register(QueueCollector(db, clock))


class MetricsMiddleware:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware): latency per route template, not per URL."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.latency.labels(template).observe(time.perf_counter() - start)
            self.metrics.requests.labels(scope["method"], template, str(status["code"])).inc()
