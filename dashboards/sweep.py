"""Sweep: each step as an annotated region, and the step's figures for whatever time range is selected.

The top row evaluates over the selected range (`$__range`), the way the sweep reads its measurement
window: drag across one step's annotated region and the row shows that step's figures.
"""

from __future__ import annotations

from loadlab.dashboards import panels
from loadlab.dashboards import queries as q
from loadlab.dashboards.builder import Dashboard, Panel, Row, Target, Unit

UID = "loadlab-sweep"
W = q.RANGE
STEP = "$__interval"
# Each of panels.QUANTILES in words.
QUANTILE_WORDS = {"p50": "Median", "p95": "95th percentile", "p99": "99th percentile"}


def _stat(
    title: str, target: Target, unit: str, description: str, width: int = 4, decimals: int | None = None
) -> Panel:
    """One figure over the selected range, in the band of step figures."""
    return Panel(title, (target,), unit, description, kind="stat", width=width, height=4, decimals=decimals)


def _step_figures_row() -> Row:
    # Over the selected range as the sweep reads its window: the median total of client sockets, the most
    # PostgreSQL backends (the same subqueries, evaluated every $__interval instead of every scrape).
    client_sockets = q.over_window("quantile_over_time", q.established("client", by=""), W, STEP, 0.5)
    postgres_connections = f"max({q.over_window('max_over_time', q.postgres_connections(), W, STEP)})"
    return Row(
        "Selected step (drag across one step's region)",
        (
            _stat(
                "Users",
                Target(f"max(max_over_time(loadlab_locust_users{{{q.HOST}}}[{W}]))", "users"),
                Unit.SHORT,
                "Most users during the selected range.",
                decimals=0,
            ),
            _stat(
                "Requests/s",
                Target(q.requests_per_second(W), "rps"),
                Unit.REQUESTS_PER_SECOND,
                "Mean throughput over the range.",
            ),
            *(
                _stat(
                    legend,
                    Target(q.latency_quantile(quantile, W), legend),
                    Unit.SECONDS,
                    f"{QUANTILE_WORDS[legend]} response time over the range.",
                )
                for quantile, legend in panels.QUANTILES
            ),
            _stat(
                "Failure ratio",
                Target(q.failure_ratio(W), "failed"),
                Unit.PERCENT,
                "Failed share of requests over the range.",
            ),
            _stat(
                "Client sockets (median)",
                Target(client_sockets, "client sockets"),
                Unit.SHORT,
                "Median established sockets from the generators to $port, as the sweep's client_sockets.",
                width=5,
                decimals=0,
            ),
            _stat(
                "Busiest Locust process CPU",
                Target(q.busiest_locust_process(W), "generator"),
                Unit.PERCENT,
                "Mean CPU of the busiest Locust process; near 100% the generator limits the step.",
                width=5,
            ),
            _stat(
                "Target CPU",
                Target(q.target_cpu(W), "target"),
                Unit.PERCENT,
                "Mean CPU of the target's processes (nginx and the app instances, or your service's), as the "
                "sweep's target_cpu; 100% = one full core.",
                width=5,
            ),
            _stat(
                "Data stores CPU",
                Target(q.data_cpu(W), "data stores"),
                Unit.PERCENT,
                "Mean CPU of the data stores' processes (PostgreSQL, Redis), apart from the target's.",
                width=5,
            ),
            _stat(
                "PostgreSQL connections (max)",
                Target(postgres_connections, "connections"),
                Unit.SHORT,
                "Most PostgreSQL backends during the range.",
                width=4,
                decimals=0,
            ),
        ),
    )


def _steps_row() -> Row:
    return Row(
        "Steps over time",
        (
            panels.users(
                "Users per step",
                "Each plateau is a step; its annotation carries the run id and step number.",
                width=12,
            ),
            panels.requests_and_failures(
                "Requests per second",
                "Throughput per step: it should rise with users until something saturates.",
                width=12,
            ),
            panels.response_time(
                "Response time", "Latency per step: rising with flat throughput is the knee.", width=12
            ),
            panels.failure_ratio("Failure ratio", "Failed share of requests per step.", width=12),
            Panel(
                "Client and server sockets vs users",
                (
                    Target(q.established("client", by=""), "client sockets"),
                    Target(q.established("server", by=""), "server sockets"),
                    Target(q.users(), "users"),
                ),
                Unit.SHORT,
                "Sockets the generators hold open to $port (all loadgen hosts) and those accepted on $port; "
                "far below users means connections are capped, a gap between them that connections are lost "
                "on the way.",
                width=12,
            ),
            Panel(
                "Generator, target and data stores CPU",
                (
                    Target(q.busiest_locust_process(), "busiest Locust process"),
                    Target(q.target_cpu(), "target (nginx, app)"),
                    Target(q.data_cpu(), "data stores"),
                    panels.one_core(),
                ),
                Unit.PERCENT,
                "Which side runs out of CPU first: the busiest Locust process, the target's processes "
                "together (the sweep's target_cpu) and the data stores' apart; 100% = one full core.",
                width=12,
            ),
        ),
    )


def build() -> Dashboard:
    """A finished or running sweep, step by step."""
    return panels.lab_dashboard(
        UID,
        "loadlab / Sweep",
        "Sweep steps as annotated regions; the top row shows the figures of the selected range.",
        [_step_figures_row(), _steps_row()],
        time_from="now-1h",
    )
