"""The panels more than one dashboard shows, so the same figure is drawn the same way wherever it stands.

Each panel takes only what differs between dashboards: the title, the description and the width.
`lab_dashboard` is the frame every dashboard shares.
"""

from __future__ import annotations

from typing import Any

from loadlab.dashboards import queries as q
from loadlab.dashboards.builder import Dashboard, Panel, Row, Target, Unit

# The response time quantiles every latency panel draws, with their legends.
QUANTILES = ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))


def cores() -> Target:
    """Each host's cores, the ceiling a CPU figure of 1.0 per core meets."""
    return Target(q.host_cores(), "{{host}} cores", limit=True)


def one_core() -> Target:
    """The ceiling of one Python process (a Locust worker, an app instance): one full core."""
    return Target("vector(1)", "one core", limit=True)


def users(title: str, description: str, *, width: int) -> Panel:
    """Locust users over time, stepped: a sweep holds each count as a plateau."""
    return Panel(
        title, (Target(q.users(), "users"),), Unit.SHORT, description, width=width, stepped=True, decimals=0
    )


def requests_and_failures(title: str, description: str, *, width: int) -> Panel:
    """Locust's throughput with its failures on the same axis."""
    return Panel(
        title,
        (
            Target(q.requests_per_second(), "requests/s"),
            Target(q.failures_per_second(), "failures/s"),
        ),
        Unit.REQUESTS_PER_SECOND,
        description,
        width=width,
    )


def response_time(title: str, description: str, *, width: int) -> Panel:
    """Client-side response time quantiles, as Locust saw them."""
    targets = tuple(Target(q.latency_quantile(quantile), legend) for quantile, legend in QUANTILES)
    return Panel(title, targets, Unit.SECONDS, description, width=width)


def failure_ratio(title: str, description: str, *, width: int) -> Panel:
    """The failed share of requests, on a 0-100% axis."""
    return Panel(
        title,
        (Target(q.failure_ratio(), "failed share"),),
        Unit.PERCENT,
        description,
        width=width,
        max=1,
    )


def lab_dashboard(uid: str, title: str, description: str, rows: list[Row], **options: Any) -> Dashboard:
    """A dashboard with the lab's variables, so links between dashboards keep the selection."""
    return Dashboard(
        uid=uid, title=title, description=description, rows=rows, variables=q.variables(), **options
    )
