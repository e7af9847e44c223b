"""The service's own Prometheus metrics, served on GET /metrics of each instance.

One instance is one process (uvicorn, no workers), so a plain CollectorRegistry is right: no
prometheus-client multiprocess mode is needed, and each instance is its own scrape target.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from psycopg_pool import AsyncConnectionPool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Finer than the client's defaults at the low end: cached reads on loopback answer in about a millisecond.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class PoolCollector(Collector):
    """Reads the DB pool's counters at scrape time, so the gauges are never stale."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self.pool.get_stats()
        size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
        connections = GaugeMetricFamily(
            "loadlab_app_db_pool_connections", "Connections of this instance's DB pool.", labels=["state"]
        )
        connections.add_metric(["in_use"], size - idle)
        connections.add_metric(["idle"], idle)
        yield connections
        yield GaugeMetricFamily(
            "loadlab_app_db_pool_size", "Configured DB pool connections.", value=stats.get("pool_max", 0)
        )
        yield GaugeMetricFamily(
            "loadlab_app_db_pool_requests_waiting",
            "Requests queued for a DB pool connection right now.",
            value=stats.get("requests_waiting", 0),
        )
        yield CounterMetricFamily(
            "loadlab_app_db_pool_timeouts",
            "Requests that gave up waiting for a DB pool connection (answered 503).",
            value=stats.get("requests_errors", 0),
        )


class AppMetrics:
    """The instruments of one app instance, on a registry of its own."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "loadlab_app_requests",
            "HTTP requests answered, by route template.",
            ["handler", "method", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "loadlab_app_request_duration_seconds",
            "Time from request to last response byte, by route template.",
            ["handler"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cache = Counter(
            "loadlab_app_cache_requests",
            "Single-user reads answered from Redis (hit) or from PostgreSQL (miss).",
            ["result"],
            registry=self.registry,
        )
        for result in ("hit", "miss"):
            self.cache.labels(result)
        self.registry.register(PoolCollector(pool))


class InstrumentMiddleware:
    """Counts and times every request by route template, and stamps X-Instance on every response.

    Plain ASGI rather than BaseHTTPMiddleware: it sits on every request of a load test.
    """

    def __init__(self, app: ASGIApp, metrics: AppMetrics, instance: str) -> None:
        self.app = app
        self.metrics = metrics
        self.instance_header = (b"x-instance", instance.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_header(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), self.instance_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_header)
        finally:
            route = scope.get("route")
            # Unmatched paths share one label value, so scanners cannot blow up the series count.
            handler = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(handler, scope["method"], str(status)).inc()
            self.metrics.duration.labels(handler).observe(time.perf_counter() - start)
