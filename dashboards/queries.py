"""The lab's PromQL, in one place: the dashboards' panels and the sweep's window reader
(loadlab.sweep.resources.PrometheusWindow) are built from these functions, so a figure the two both show is
the same query and means the same thing (the sweep's `target_cpu` is the dashboards' "Target CPU").

The functions the sweep reads too take `hosts`, a label matcher on the scrape config's `host` label (the
inventory hostname): the dashboards' `$host` variable by default, `""` for every host (the sweep), or
`hosts_matcher(names)`.
The dashboards also filter on `$instance` (an app instance's scrape target) and `$port` (the target's port,
nginx_port in the lab). `window` is a range: `$__rate_interval` for time series, `$__range` for one figure
over the selected time (a sweep step), a duration such as `30s` for the sweep's window. Functions with
`window=None` give the figure now; with a window, its peak (or mean, where it says) over the window.

Process groups are selected by their role (`loadlab_process_group_info{group, role}`, which the exporter's
config gives each group), not by name, so a service of yours counts as the target whatever its groups are
called. The target is the groups of role `target` (nginx and the app instances, or your service's); the data
stores (PostgreSQL, Redis: role `data`) are a figure of their own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from loadlab.dashboards.builder import Variable, datasource_variable, query_variable, textbox_variable
from loadlab.exporters.config import DATA, LOADGEN, TARGET

RATE = "$__rate_interval"
RANGE = "$__range"

HOST = 'host=~"$host"'
INSTANCE = 'instance=~"$instance"'
# The roles whose process groups each CPU figure counts: the target (what load is aimed at), its data stores,
# the generators. Monitoring and other groups count in no figure of their own.
TARGET_ROLES = (TARGET,)
DATA_ROLES = (DATA,)
GENERATOR = (LOADGEN,)


def hosts_matcher(names: Iterable[str]) -> str:
    """A matcher for some hosts by name (`""`, every host, when there are none). A regex escape's backslash
    is doubled: PromQL's double-quoted strings read a lone one as the start of an escape sequence."""
    names = sorted(set(names))
    pattern = "|".join(re.escape(h) for h in names).replace("\\", "\\\\")
    return f'host=~"{pattern}"' if names else ""


def _select(metric: str, *matchers: str) -> str:
    """`metric{a, b}` with the matchers that are not empty, or the bare metric name."""
    parts = [m for m in matchers if m]
    return f"{metric}{{{', '.join(parts)}}}" if parts else metric


def _now_or(function: str, series: str, window: str | None) -> str:
    """The series now, or `function` (max_over_time, avg_over_time) of it over the window."""
    return series if window is None else f"{function}({series}[{window}])"


def _per_host(aggregation: str, metric: str) -> Callable[..., str]:
    """A query of one figure per host now: `aggregation` (sum, max) of the metric's series by host."""

    def query(hosts: str = HOST) -> str:
        return f"{aggregation} by (host) ({_select(metric, hosts)})"

    return query


def _peak(by: str, metric: str) -> Callable[..., str]:
    """A query of a gauge's highest series per `by` labels: now, or at its peak in a window."""

    def query(window: str | None = None, hosts: str = HOST) -> str:
        return f"max by ({by}) ({_now_or('max_over_time', _select(metric, hosts), window)})"

    return query


def over_window(function: str, expr: str, window: str, step: str, *params: str | float) -> str:
    """An `*_over_time` of an expression over `window`, evaluated every `step` (a subquery):
    over_window("quantile_over_time", e, "30s", "5s", 0.5) is quantile_over_time(0.5, (e)[30s:5s])."""
    args = "".join(f"{p}, " for p in params)
    return f"{function}({args}({expr})[{window}:{step}])"


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


# -- process groups ------------------------------------------------------------------------------------------


def process_cpu(roles: Sequence[str] | None = None, window: str = RATE, hosts: str = HOST) -> str:
    """Cores each process group uses, one series per host and group (1.0 = one full core): the groups that
    had one of these roles during the window, or every group."""
    cpu = f"sum by (host, group) (rate({_select('loadlab_process_cpu_seconds_total', hosts)}[{window}]))"
    if roles is None:
        return cpu
    info = _select("loadlab_process_group_info", hosts, _role_matcher(roles))
    return f"{cpu} and on (host, group) max_over_time({info}[{window}])"


def target_cpu(window: str = RATE, hosts: str = HOST) -> str:
    """CPU the target burns in cores (nginx and the app instances, or your service's groups: role `target`),
    all its process groups on all hosts together: the sweep's `target_cpu`."""
    return f"sum({process_cpu(TARGET_ROLES, window, hosts)})"


def data_cpu(window: str = RATE, hosts: str = HOST) -> str:
    """CPU the data stores burn in cores (PostgreSQL, Redis: role `data`), all together."""
    return f"sum({process_cpu(DATA_ROLES, window, hosts)})"


def busiest_locust_process(window: str = RATE, hosts: str = HOST) -> str:
    """The Locust process closest to a full core: at 1.0 the generator, not the target, is the limit."""
    return f"max({process_cpu(GENERATOR, window, hosts)})"


def process_roles(hosts: str = HOST) -> str:
    """Each process group's role, as its host's exporter config gives it (labels host, group, role)."""
    return f"max by (host, group, role) ({_select('loadlab_process_group_info', hosts)})"


def process_runnable(window: str, hosts: str = HOST) -> str:
    """Share of the window each group's main threads ran on a CPU or waited in the run queue for one."""
    runnable = _select("loadlab_process_runnable_seconds_total", hosts)
    return f"sum by (host, group) (rate({runnable}[{window}]))"


# Processes in each group: now, or the most it had at once in the window.
processes = _peak("host, group", "loadlab_processes")
# The highest share of its own open-files limit one process of each group holds (peak in the window).
fds_limit_ratio = _peak("host, group", "loadlab_process_open_fds_limit_ratio")


def locust_worker_cpu(window: str, hosts: str = HOST) -> str:
    """Each Locust worker's CPU as the Locust plugin reports it (label `worker`, sampled by Locust every
    10 s): a stand-in where the exporter counts no Locust process groups."""
    return f"avg_over_time({_select('loadlab_locust_worker_cpu_ratio', hosts)}[{window}])"


# -- hosts ---------------------------------------------------------------------------------------------------


def host_cpu_busy(window: str = RATE, hosts: str = HOST) -> str:
    """Share of each host's CPU time (0..1 over all its cores) neither idle nor waiting for I/O."""
    cpu = _select("loadlab_host_cpu_seconds_total", hosts)
    idle = _select("loadlab_host_cpu_seconds_total", hosts, 'mode=~"idle|iowait"')
    return f"1 - sum by (host) (rate({idle}[{window}])) / sum by (host) (rate({cpu}[{window}]))"


host_cores = _per_host("max", "loadlab_host_cpus")
# 1 where a host's CPU figures are its own cgroup's, 0 where they are the whole machine's.
host_cpu_cgroup = _per_host("max", "loadlab_host_cpu_cgroup")
# 1 where a host shares its machine's cores with other lab hosts.
host_shared_machine = _per_host("max", "loadlab_host_shared_machine")
host_memory_total = _per_host("max", "loadlab_host_memory_total_bytes")


def host_memory_used(window: str | None = None, hosts: str = HOST) -> str:
    """Memory in use (total - available: what the kernel could not hand out without swapping), now or at
    its peak in the window."""
    total = _select("loadlab_host_memory_total_bytes", hosts)
    available = _select("loadlab_host_memory_available_bytes", hosts)
    if window is None:
        return f"max by (host) ({total}) - max by (host) ({available})"
    return f"max by (host) (max_over_time({total}[{window}]) - min_over_time({available}[{window}]))"


# -- sockets -------------------------------------------------------------------------------------------------


def established(role: str, by: str = "host", hosts: str = HOST, port: str = "$port") -> str:
    """Established TCP sockets at the target port: role server = accepted by it, client = opened to it."""
    grouping = f" by ({by}) " if by else ""
    sockets = _select("loadlab_tcp_sockets", hosts, f'role="{role}"', 'state="established"', f'port="{port}"')
    return f"sum{grouping}({sockets})"


# Share of each host's ephemeral port range in use, now or at its peak in the window.
ephemeral_ports_used = _peak("host", "loadlab_tcp_ephemeral_ports_used_ratio")
# Sockets in TIME_WAIT on each host, every port, now or at the peak in the window.
time_wait = _peak("host", "loadlab_tcp_time_wait_sockets")


def listen_overflows(window: str, hosts: str = HOST) -> str:
    """Connections each host's kernel dropped on a full listen queue during the window."""
    overflows = _select("loadlab_tcp_listen_overflows_total", hosts)
    return f"max by (host) (round(increase({overflows}[{window}])))"


# -- connections ---------------------------------------------------------------------------------------------


postgres_connections = _per_host("sum", "loadlab_postgres_connections")
postgres_max_connections = _per_host("max", "loadlab_postgres_max_connections")
redis_clients = _per_host("sum", "loadlab_redis_connected_clients")
redis_maxclients = _per_host("max", "loadlab_redis_maxclients")


def nginx_connections(states: Sequence[str] = ("active", "waiting"), hosts: str = HOST) -> str:
    """nginx's client connections (stub_status) per host and state: `active` is all open ones, `waiting` the
    idle keep-alive share of them."""
    state = f'state="{states[0]}"' if len(states) == 1 else f'state=~"{"|".join(states)}"'
    return f"sum by (host, state) ({_select('loadlab_nginx_connections', hosts, state)})"


def db_pool_in_use(window: str | None = None, hosts: str = HOST, instances: str = INSTANCE) -> str:
    """Each app instance's DB pool connections in use, now or as a mean over the window."""
    in_use = _select("loadlab_app_db_pool_connections", hosts, instances, 'state="in_use"')
    return f"sum by (host, instance) ({_now_or('avg_over_time', in_use, window)})"


def db_pool_size(window: str | None = None, hosts: str = HOST, instances: str = INSTANCE) -> str:
    """Each app instance's DB pool size, now or the largest in the window."""
    size = _select("loadlab_app_db_pool_size", hosts, instances)
    return f"max by (host, instance) ({_now_or('max_over_time', size, window)})"


# -- what was down -------------------------------------------------------------------------------------------


def sources_up(sources: Sequence[str] | None = None, hosts: str = HOST) -> str:
    """The exporter's `loadlab_<source>_up` series (1 when it read the source at that scrape, 0 when it
    failed): of these sources, or of every one."""
    names = "[a-z]+" if sources is None else f"({'|'.join(sources)})"
    return _select("", f'__name__=~"loadlab_{names}_up"', hosts)
