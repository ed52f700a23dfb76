"""A small Prometheus registry (text exposition format 0.0.4): request counts and latency histograms."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

from starlette.types import ASGIApp, Receive, Scope, Send

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self.hist: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self.hist_sum: dict[str, float] = defaultdict(float)
        self.events: dict[tuple[str, str], int] = defaultdict(int)

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, path, str(status))] += 1
            h = self.hist[path]
            for i, b in enumerate(BUCKETS):
                if seconds <= b:
                    h[i] += 1
            h[-1] += 1
            self.hist_sum[path] += seconds

    def count(self, name: str, label: str) -> None:
        with self._lock:
            self.events[(name, label)] += 1

    def render(self, gauges: dict[str, float]) -> str:
        lines = ["# HELP reportqa_requests_total HTTP requests by method, route and status.",
                 "# TYPE reportqa_requests_total counter"]
        with self._lock:
            for (m, p, s), n in sorted(self.requests.items()):
                lines.append(f'reportqa_requests_total{{method="{m}",route="{p}",status="{s}"}} {n}')
            lines += ["# HELP reportqa_request_seconds Request latency by route.",
                      "# TYPE reportqa_request_seconds histogram"]
            for p, h in sorted(self.hist.items()):
                for i, b in enumerate(BUCKETS):
                    lines.append(f'reportqa_request_seconds_bucket{{route="{p}",le="{b}"}} {h[i]}')
                lines.append(f'reportqa_request_seconds_bucket{{route="{p}",le="+Inf"}} {h[-1]}')
                lines.append(f'reportqa_request_seconds_sum{{route="{p}"}} {self.hist_sum[p]:.6f}')
                lines.append(f'reportqa_request_seconds_count{{route="{p}"}} {h[-1]}')
            lines += ["# HELP reportqa_events_total Searches by mode and answers by outcome.",
                      "# TYPE reportqa_events_total counter"]
            for (name, label), n in sorted(self.events.items()):
                lines.append(f'reportqa_events_total{{event="{name}",label="{label}"}} {n}')
        for name, value in gauges.items():
            lines += [f"# TYPE reportqa_{name} gauge", f"reportqa_{name} {value}"]
        return "\n".join(lines) + "\n"


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

        async def _send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope["method"], path, status["code"], time.perf_counter() - t0)
