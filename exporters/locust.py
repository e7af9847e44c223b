"""Locust plugin: the master's own state as Prometheus metrics, served from inside the Locust process.

A locustfile loads it with `import loadlab.exporters.locust`; importing only registers event listeners.
On the master (or a local runner) it serves /metrics on `--loadlab-metrics-host`:`--loadlab-metrics-port`
(default 127.0.0.1:9466; port 0 turns it off). In distributed mode requests happen on the workers and reach
the master as aggregated reports, so every figure is read at scrape time from the runner's own objects:
`runner.stats` for requests, failures and response times, `runner.clients` for workers. Nothing is parsed
from the web UI's JSON.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import locust.runners
from locust import events
from locust.runners import (
    STATE_CLEANUP,
    STATE_INIT,
    STATE_MISSING,
    STATE_RUNNING,
    STATE_SPAWNING,
    STATE_STOPPED,
    STATE_STOPPING,
    LocalRunner,
    MasterRunner,
    WorkerRunner,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from loadlab.exporters import locust_open
from loadlab.sweep.samples import REPORT_INTERVAL_S

DEFAULT_PORT = 9466
DEFAULT_HOST = "127.0.0.1"
RUNNER_STATES = (
    STATE_INIT,
    STATE_SPAWNING,
    STATE_RUNNING,
    STATE_CLEANUP,
    STATE_STOPPING,
    STATE_STOPPED,
    STATE_MISSING,
)
# Histogram bucket bounds. Locust keeps response times rounded (`locust.stats.bucket_response_time`: whole
# ms below 100 ms, then 10 ms steps to 1 s, 100 ms steps to 10 s, whole seconds beyond), and its percentiles
# are those rounded values. histogram_quantile interpolates linearly inside the bucket a quantile falls in,
# so the bounds sit on Locust's own values and each bucket is narrow enough that any point of it is within
# QUANTILE_TOLERANCE of any value Locust can hold there: the dashboards' p50/p95/p99 then agree with
# Locust's within that tolerance from 1 ms to 10 s. Below 10 ms one whole millisecond is more than that, so
# each value v gets a bucket (v - tolerance*v, v] of its own and the empty bucket below it.
QUANTILE_TOLERANCE = 0.09
# Beyond 10 s a few coarse bounds keep timeouts visible without many series.
LONG_BOUNDS_MS = (15_000, 20_000, 30_000, 60_000)


def _locust_step_ms(ms: float) -> int:
    """The spacing of the values Locust keeps around `ms`."""
    return 1 if ms < 100 else 10 if ms < 1_000 else 100 if ms < 10_000 else 1_000


def bucket_bounds_ms(tolerance: float = QUANTILE_TOLERANCE) -> tuple[float, ...]:
    """Upper bounds in ms: Locust's own values, spaced so linear interpolation stays within `tolerance`."""
    bounds: list[float] = []
    for v in range(1, 10):
        bounds += [round(v * (1 - tolerance), 3), float(v)]
    low = 10
    bounds.append(float(low))
    while low < 10_000:
        # (low, high] holds the values low+step .. high; every point in it is within tolerance of each.
        limit = min(low / (1 - tolerance), (low + _locust_step_ms(low)) * (1 + tolerance))
        high = low + _locust_step_ms(low)
        while high + _locust_step_ms(high) <= limit:
            high += _locust_step_ms(high)
        bounds.append(float(high))
        low = high
    return (*bounds, *map(float, LONG_BOUNDS_MS), math.inf)


BUCKETS_MS = bucket_bounds_ms()
# Series per endpoint of the histogram: one per bucket (+Inf included), _sum and _count.
HISTOGRAM_SERIES = len(BUCKETS_MS) + 2

log = logging.getLogger("loadlab.locust")


def _le(bound_ms: float) -> str:
    return "+Inf" if math.isinf(bound_ms) else repr(round(bound_ms / 1000, 6))


def histogram_buckets(response_times_ms: dict[int, int]) -> list[tuple[str, int]]:
    """Cumulative (le, count) pairs from Locust's {rounded milliseconds: count} distribution."""
    ordered = sorted(response_times_ms.items())
    out, i, cumulative = [], 0, 0
    for bound in BUCKETS_MS:
        while i < len(ordered) and ordered[i][0] <= bound:
            cumulative += ordered[i][1]
            i += 1
        out.append((_le(bound), cumulative))
    return out


class LocustCollector:
    """Users, runner and worker states, worker CPU, per-endpoint requests, failures and response times."""

    name = "locust"

    def __init__(self, environment: Any) -> None:
        self.environment = environment

    def collect(self) -> Iterator[Metric]:
        runner = self.environment.runner
        if runner is None:
            raise RuntimeError("Locust has no runner yet")
        stats = runner.stats
        yield GaugeMetricFamily(
            "loadlab_locust_users", "Users running now, all workers.", value=runner.user_count
        )
        state = GaugeMetricFamily(
            "loadlab_locust_runner_state",
            "1 on the runner's current state, 0 on the others.",
            labels=["state"],
        )
        for name in RUNNER_STATES:
            state.add_metric([name], 1 if runner.state == name else 0)
        yield state

        cpu = GaugeMetricFamily(
            "loadlab_locust_worker_cpu_ratio",
            "CPU use of each Locust worker process as reported to the master (1 = one core busy).",
            labels=["worker"],
        )
        if isinstance(runner, MasterRunner):
            nodes = list(runner.clients.values())
            workers = GaugeMetricFamily(
                "loadlab_locust_workers", "Workers known to the master by state.", labels=["state"]
            )
            for name in RUNNER_STATES:
                workers.add_metric([name], sum(1 for node in nodes if node.state == name))
            yield workers
            for node in nodes:
                cpu.add_metric([str(node.id)], float(node.cpu_usage) / 100)
        else:
            cpu.add_metric(["local"], float(runner.current_cpu_usage) / 100)
        yield cpu

        requests = CounterMetricFamily(
            "loadlab_locust_requests_total", "Requests made, per endpoint.", labels=["method", "name"]
        )
        failures = CounterMetricFamily(
            "loadlab_locust_failures_total", "Requests that failed, per endpoint.", labels=["method", "name"]
        )
        latency = HistogramMetricFamily(
            "loadlab_locust_response_time_seconds",
            "Response time per endpoint, in buckets on Locust's own rounded values (quantiles within 9%).",
            labels=["method", "name"],
        )
        for entry in list(stats.entries.values()):
            labels = [str(entry.method or ""), str(entry.name)]
            requests.add_metric(labels, entry.num_requests)
            failures.add_metric(labels, entry.num_failures)
            latency.add_metric(
                labels, histogram_buckets(dict(entry.response_times)), entry.total_response_time / 1000
            )
        yield requests
        yield failures
        yield latency
        yield from _open_metrics()
        yield GaugeMetricFamily(
            "loadlab_locust_current_rps",
            "Requests per second over the last seconds, all endpoints (Locust's current RPS).",
            value=float(stats.total.current_rps),
        )


def _open_metrics() -> Iterator[Metric]:
    """The open model's figures (locust_open.py): the rate held, what became of the arrivals, the backlog
    and the latency from each request's intended start; all zero in the closed model."""
    state = locust_open.OPEN
    yield GaugeMetricFamily(
        "loadlab_locust_open_rate",
        "Intended arrivals per second held by the workers (0: the closed model).",
        value=state.rate,
    )
    arrivals = CounterMetricFamily(
        "loadlab_locust_arrivals_total",
        "Open model: arrivals due, task iterations sent (started), done (ended) and late, all workers.",
        labels=["outcome"],
    )
    for outcome in ("due", "sent", "done", "late"):
        arrivals.add_metric([outcome], state.totals[outcome])
    yield arrivals
    yield GaugeMetricFamily(
        "loadlab_locust_backlog",
        "Open model: arrivals due and not yet answered (waiting for a free user, or in flight), all workers.",
        value=sum(state.waiting.values()) + sum(state.in_flight.values()),
    )
    intended = HistogramMetricFamily(
        "loadlab_locust_intended_latency_seconds",
        "Open model: each request's latency from its intended start (send-to-answer plus its lateness).",
    )
    total_ms = sum(ms * n for ms, n in state.intended.items())
    intended.add_metric([], histogram_buckets(state.intended), total_ms / 1000)
    yield intended


@events.init_command_line_parser.add_listener
def _add_options(parser: Any, **_: Any) -> None:
    parser.add_argument(
        "--loadlab-metrics-port",
        type=int,
        default=DEFAULT_PORT,
        env_var="LOCUST_LOADLAB_METRICS_PORT",
        help=f"Port for the master's Prometheus metrics (default {DEFAULT_PORT}; 0 turns them off).",
        include_in_web_ui=False,
    )
    parser.add_argument(
        "--loadlab-metrics-host",
        default=DEFAULT_HOST,
        env_var="LOCUST_LOADLAB_METRICS_HOST",
        help=f"Address the metrics listen on (default {DEFAULT_HOST}).",
        include_in_web_ui=False,
    )


REPORTS_PATH = "/loadlab/reports"
STATE_PATH = "/loadlab/state"
"""The master's state, users and workers as they are now: Locust's /stats/requests answers from a cache up
to 2 s old, which would hold a sweep up that long after each ramp."""
REPORT_INTERVAL = REPORT_INTERVAL_S
"""Seconds between a worker's reports to the master (Locust's default is 3): each report is one sample of
what that worker did, so a step's window holds one sample per second per worker."""


class _Reports:
    """The workers' reports since the master's stats were last reset, each with its arrival time."""

    def __init__(self) -> None:
        self.reset_at = time.time()
        self.items: deque[dict[str, Any]] = deque(maxlen=200_000)

    def reset(self) -> None:
        self.reset_at = time.time()
        self.items.clear()

    def add(self, worker: str, data: dict[str, Any]) -> None:
        total = data.get("stats_total") or {}
        times = total.get("response_times") or {}
        item = {
            "time": time.time(),
            "worker": worker,
            "requests": int(total.get("num_requests") or 0),
            "failures": int(total.get("num_failures") or 0),
            "response_times": {str(ms): n for ms, n in sorted(times.items())},
        }
        opened = data.get("loadlab_open")
        if isinstance(opened, dict):  # the worker holds an arrival rate (locust_open.py)
            item["open"] = opened
            locust_open.OPEN.add(worker, opened)
        self.items.append(item)


_REPORTS = _Reports()


@events.init.add_listener
def _reports(environment: Any, runner: Any = None, web_ui: Any = None, **_: Any) -> None:
    """Workers report every REPORT_INTERVAL; the master keeps the reports since the last stats reset and
    serves them at GET /loadlab/reports on its web UI, where a sweep reads a step's samples."""
    if isinstance(runner, WorkerRunner):
        locust.runners.WORKER_REPORT_INTERVAL = REPORT_INTERVAL  # read by the worker's report loop
        return
    if not isinstance(runner, MasterRunner) or web_ui is None:
        return
    environment.events.worker_report.add_listener(
        lambda client_id, data, **_: _REPORTS.add(str(client_id), data)
    )
    environment.events.reset_stats.add_listener(lambda **_: _REPORTS.reset())

    from flask import jsonify

    def reports() -> Any:
        return jsonify(
            {
                "now": time.time(),
                "reset_at": _REPORTS.reset_at,
                "report_interval_s": REPORT_INTERVAL,
                "reports": list(_REPORTS.items),
                "open": locust_open.OPEN.as_json(),
            }
        )

    def state() -> Any:
        return jsonify(
            {"state": runner.state, "user_count": runner.user_count, "worker_count": runner.worker_count}
        )

    guard = getattr(web_ui, "auth_required_if_enabled", None)
    web_ui.app.add_url_rule(REPORTS_PATH, "loadlab_reports", guard(reports) if guard else reports)
    web_ui.app.add_url_rule(STATE_PATH, "loadlab_state", guard(state) if guard else state)


@events.init.add_listener
def _serve(environment: Any, runner: Any = None, **_: Any) -> None:
    options = environment.parsed_options
    if options is None or not isinstance(runner, MasterRunner | LocalRunner):
        return
    port = getattr(options, "loadlab_metrics_port", DEFAULT_PORT)
    host = getattr(options, "loadlab_metrics_host", DEFAULT_HOST)
    if not port:
        return
    from gevent.pywsgi import WSGIServer
    from prometheus_client import CollectorRegistry, make_wsgi_app

    from loadlab.exporters.server import LabExporter

    registry = CollectorRegistry()
    registry.register(LabExporter([LocustCollector(environment)], logger=log))
    server = WSGIServer((host, port), make_wsgi_app(registry), log=None, error_log=log)
    try:
        server.start()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        log.error("loadlab metrics: cannot listen on %s:%s: %s", host, port, reason)
        raise SystemExit(2) from None
    log.info("loadlab metrics on http://%s:%s/metrics", host, server.server_port)
    environment.events.quit.add_listener(lambda **_: server.stop(timeout=1))
