"""The PromQL behind the figures more than one dashboard shows, so the same figure means the same query.

Queries filter on the dashboard variables: `$host` (inventory hostname, from the scrape config's `host`
label), `$instance` (an app instance's scrape target) and `$port` (the target's port, nginx_port in the lab).
`window` is a range selector: `$__rate_interval` for time series, `$__range` for one figure over the
selected time (a sweep step).

Process groups are selected by their role (`loadlab_process_group_info{group, role}`, which the exporter's
config gives each group), not by name, so a service of yours counts as the target whatever its groups are
called.
"""

from __future__ import annotations

from collections.abc import Sequence

from loadlab.dashboards.builder import Variable, datasource_variable, query_variable, textbox_variable
from loadlab.exporters.config import DATA, LOADGEN, TARGET

RATE = "$__rate_interval"
RANGE = "$__range"

HOST = 'host=~"$host"'
# The roles whose process groups make up the target stack: what load is aimed at and its data stores (the
# rest are the generators, the monitoring and other).
TARGET_STACK = (TARGET, DATA)
GENERATOR = (LOADGEN,)


def variables() -> list[Variable]:
    """The variables every lab dashboard offers, so links between dashboards keep the selection."""
    return [
        datasource_variable(),
        query_variable("host", "Host", "label_values(up, host)", "Inventory hostname (scrape config label)"),
        query_variable(
            "instance",
            "App instance",
            'label_values(loadlab_app_requests_total{host=~"$host"}, instance)',
            "An app instance's scrape target",
        ),
        textbox_variable("port", "Target port", "8080", "The port load goes to (nginx_port in the lab)"),
    ]


def users() -> str:
    """Locust users running now (the load the sweep sets)."""
    return f"sum(loadlab_locust_users{{{HOST}}})"


def requests_per_second(window: str = RATE) -> str:
    return f"sum(rate(loadlab_locust_requests_total{{{HOST}}}[{window}]))"


def failures_per_second(window: str = RATE) -> str:
    return f"sum(rate(loadlab_locust_failures_total{{{HOST}}}[{window}]))"


def failure_ratio(window: str = RATE) -> str:
    """Failed share of requests; the sweep's fail_ratio."""
    return f"{failures_per_second(window)} / {requests_per_second(window)}"


def latency_quantile(q: float, window: str = RATE) -> str:
    """Response time quantile as Locust saw it (client side, from the plugin's histogram, whose buckets keep
    it within 9% of Locust's own percentile)."""
    return (
        f"histogram_quantile({q}, sum by (le) "
        f"(rate(loadlab_locust_response_time_seconds_bucket{{{HOST}}}[{window}])))"
    )


def open_rate() -> str:
    """The arrival rate the open model holds now (0 while the closed model runs)."""
    return f"sum(loadlab_locust_open_rate{{{HOST}}})"


def arrivals_per_second(outcome: str, window: str = RATE) -> str:
    """Open model: arrivals per second by outcome (due, sent, done, late)."""
    return f'sum(rate(loadlab_locust_arrivals_total{{{HOST}, outcome="{outcome}"}}[{window}]))'


def backlog() -> str:
    """Open model: arrivals due and not yet answered (waiting for a free user, or in flight)."""
    return f"sum(loadlab_locust_backlog{{{HOST}}})"


def intended_latency_quantile(q: float, window: str = RATE) -> str:
    """Latency from each request's intended start (open model: send-to-answer plus its lateness). Where no
    rate is held there is no intended start, and the quantile is Locust's send-to-answer one."""
    intended = (
        f"histogram_quantile({q}, sum by (le) "
        f"(rate(loadlab_locust_intended_latency_seconds_bucket{{{HOST}}}[{window}])))"
    )
    return f"({intended} >= 0) or {latency_quantile(q, window)}"


def _role_matcher(roles: Sequence[str]) -> str:
    return f'role="{roles[0]}"' if len(roles) == 1 else f'role=~"{"|".join(roles)}"'


def process_cpu(roles: Sequence[str] | None = None, window: str = RATE) -> str:
    """Cores each process group uses, one series per host and group (1.0 = one full core): the groups that
    had one of these roles during the window, or every group."""
    cpu = f"sum by (host, group) (rate(loadlab_process_cpu_seconds_total{{{HOST}}}[{window}]))"
    if roles is None:
        return cpu
    info = f"loadlab_process_group_info{{{HOST}, {_role_matcher(roles)}}}"
    return f"{cpu} and on (host, group) max_over_time({info}[{window}])"


def target_cpu(window: str = RATE) -> str:
    """CPU the target stack burns in cores, all its process groups together."""
    return f"sum({process_cpu(TARGET_STACK, window)})"


def busiest_locust_process(window: str = RATE) -> str:
    """The Locust process closest to a full core: at 1.0 the generator, not the target, is the limit."""
    return f"max({process_cpu(GENERATOR, window)})"


def host_cpu_busy(window: str = RATE) -> str:
    """Share of each host's CPU time not idle (0..1 over all its cores)."""
    return f'1 - avg by (host) (rate(loadlab_host_cpu_seconds_total{{{HOST}, mode="idle"}}[{window}]))'


def host_cores() -> str:
    return f"max by (host) (loadlab_host_cpus{{{HOST}}})"


def established(role: str, by: str = "host") -> str:
    """Established TCP sockets at the target port: role server = accepted by it, client = opened to it."""
    grouping = f" by ({by}) " if by else ""
    return f'sum{grouping}(loadlab_tcp_sockets{{{HOST}, role="{role}", state="established", port="$port"}})'


def postgres_connections() -> str:
    return f"sum by (host) (loadlab_postgres_connections{{{HOST}}})"


def postgres_max_connections() -> str:
    return f"max by (host) (loadlab_postgres_max_connections{{{HOST}}})"
