"""Prometheus metrics (prometheus-client): request counts and latency by route template, events, refusals.

Labels come only from closed sets: route templates of the app (`unmatched` for any other path), the standard
HTTP methods (`other` for anything else), status codes, and names chosen in code. Each app has its own
registry; with PROMETHEUS_MULTIPROC_DIR set (several worker processes), /metrics aggregates every process's
values through prometheus-client's multiprocess collector.
"""

from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
CONTENT_TYPE = CONTENT_TYPE_LATEST
REFUSALS = ("overload", "queue_timeout", "rate_limit", "body_too_large", "body_timeout")


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


class Metrics:
    def __init__(self) -> None:
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("reportqa_requests", "HTTP requests by method, route and status.",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("reportqa_request_seconds", "Request latency by route.", ["route"],
                                 buckets=BUCKETS, registry=r)
        self.events = Counter("reportqa_events", "Searches by mode and answers by outcome.", ["event", "label"],
                              registry=r)
        self.refusals = Counter("reportqa_refusals", "Requests refused before the work, by reason: " +
                                ", ".join(REFUSALS) + ".", ["reason"], registry=r)
        self.ready = Gauge("reportqa_ready", "1 once the model and index are loaded.", registry=r,
                           multiprocess_mode="livemax")
        self.index_chunks = Gauge("reportqa_index_chunks", "Chunks in the index being served.", registry=r,
                                  multiprocess_mode="livemax")
        self.in_flight = Gauge("reportqa_search_in_flight", "Search/ask requests encoding or scoring now.",
                               registry=r, multiprocess_mode="livesum")
        self.queued = Gauge("reportqa_search_queued", "Search/ask requests waiting for a slot.", registry=r,
                            multiprocess_mode="livesum")
        self.response_cache = Counter("reportqa_response_cache", "/v1/search answers from the response cache "
                                      "(hit) and computed then kept (miss).", ["result"], registry=r)
        self._cache_hit, self._cache_miss = self.response_cache.labels("hit"), self.response_cache.labels("miss")
        for reason in REFUSALS:
            self.refusals.labels(reason)  # every reason shows from the start, at 0

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method_label(method), route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def count(self, name: str, label: str) -> None:
        self.events.labels(name, label).inc()

    def response_cache_hit(self) -> None:
        self._cache_hit.inc()

    def response_cache_miss(self) -> None:
        self._cache_miss.inc()

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason if reason in REFUSALS else "other").inc()

    def render(self) -> bytes:
        if self.multiprocess_dir:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
            return generate_latest(registry)
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Times every HTTP request; labels it by route template, not raw path (bounded cardinality)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 500}

        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope["method"], path, status["code"], time.perf_counter() - t0)
