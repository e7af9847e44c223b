"""Load vs saturation: the load Locust applies, on the same time axis as what runs out on both sides."""

from __future__ import annotations

from loadlab.dashboards import panels
from loadlab.dashboards import queries as q
from loadlab.dashboards.builder import Dashboard, Panel, Row, Target, Unit

UID = "loadlab-load-saturation"
H = q.HOST


def _load_row() -> Row:
    return Row(
        "Load (Locust)",
        (
            panels.users(
                "Users",
                "Simulated users Locust runs now; each step of a sweep is a plateau here.",
                width=6,
            ),
            panels.requests_and_failures(
                "Requests and failures per second",
                "Throughput Locust measured. Flat while users grow means something saturates.",
                width=6,
            ),
            panels.response_time(
                "Response time (Locust)",
                "Client-side latency quantiles from the Locust plugin's histogram.",
                width=6,
            ),
            panels.failure_ratio("Failure ratio", "Share of requests Locust counted as failed.", width=6),
        ),
    )


def _open_row() -> Row:
    """The open model (`loadlab sweep --rate`): arrivals held at a rate, and what became of them."""
    return Row(
        "Arrivals (open model)",
        (
            Panel(
                "Arrivals per second: intended, sent, done",
                (
                    Target(q.open_rate(), "intended"),
                    Target(q.arrivals_per_second("sent"), "sent"),
                    Target(q.arrivals_per_second("done"), "done"),
                    Target(q.arrivals_per_second("late"), "late"),
                ),
                Unit.REQUESTS_PER_SECOND,
                "The rate the open model holds (0 while users run the closed model), the task iterations "
                "started and ended. Sent below intended: the generator is behind; done below sent: the "
                "target is.",
                width=8,
            ),
            Panel(
                "Backlog",
                (Target(q.backlog(), "backlog"),),
                Unit.SHORT,
                "Arrivals due and not yet answered: waiting for a free user, or in flight. Growing: the "
                "stack does not keep up with the rate.",
                width=8,
                decimals=0,
            ),
            Panel(
                "Latency from intended start",
                tuple(
                    Target(q.intended_latency_quantile(quantile), legend)
                    for quantile, legend in panels.QUANTILES
                ),
                Unit.SECONDS,
                "Each request's latency from when its arrival was due (send-to-answer plus how late it "
                "started): a stall shows here even when few requests were sent during it. Without a rate "
                "held, Locust's send-to-answer latency.",
                width=8,
            ),
        ),
    )


def _group_cpu(title: str, roles: tuple[str, ...], description: str) -> Panel:
    """The CPU of the process groups of these roles, stacked under each host's cores."""
    return Panel(
        title,
        (Target(q.process_cpu(roles), "{{host}} {{group}}"), panels.cores()),
        Unit.PERCENT,
        description,
        width=6,
        stack=True,
    )


def _cpu_row() -> Row:
    return Row(
        "CPU: target, data stores, generator",
        (
            _group_cpu(
                "Target CPU per process group",
                q.TARGET_ROLES,
                "CPU of the target's process groups (role target: nginx and the app instances, or your "
                "service's), as the sweep's target_cpu counts them; 100% = one full core.",
            ),
            _group_cpu(
                "Data stores CPU per process group",
                q.DATA_ROLES,
                "CPU of the data stores' process groups (role data: PostgreSQL, Redis), apart from the "
                "target's; 100% = one full core.",
            ),
            Panel(
                "Generator CPU per Locust process",
                (
                    Target(q.process_cpu(q.GENERATOR), "{{host}} {{group}}"),
                    panels.one_core(),
                ),
                Unit.PERCENT,
                "A Locust process uses one core at most: near 100% the generator, not the target, limits.",
                width=6,
            ),
            Panel(
                "Host CPU busy",
                (Target(q.host_cpu_busy(), "{{host}}"),),
                Unit.PERCENT,
                "Share of each host's CPU neither idle nor waiting for I/O, all cores together, as the "
                "sweep's host CPU.",
                width=6,
                max=1,
            ),
        ),
    )


def _connections_row() -> Row:
    return Row(
        "Connections",
        (
            Panel(
                "Established sockets at the target port",
                (
                    Target(q.established("server"), "{{host}} accepted (target)"),
                    Target(q.established("client"), "{{host}} opened (generators)"),
                    Target(q.users(), "users"),
                ),
                Unit.SHORT,
                "Sockets the target accepted and the generators opened on $port. "
                "Opened far below users means the client caps connections.",
                width=12,
            ),
            Panel(
                "PostgreSQL connections vs max",
                (
                    Target(
                        f"sum by (host, state) (loadlab_postgres_connections{{{H}}})",
                        "{{host}} {{state}}",
                    ),
                    Target(q.postgres_max_connections(), "{{host}} max_connections", limit=True),
                ),
                Unit.SHORT,
                "Backends by state against max_connections.",
                width=12,
                stack=True,
            ),
            Panel(
                "Redis clients",
                (
                    Target(q.redis_clients(), "{{host}} connected"),
                    Target(f"sum by (host) (loadlab_redis_blocked_clients{{{H}}})", "{{host}} blocked"),
                ),
                Unit.SHORT,
                "Connected and blocked Redis clients.",
                width=12,
            ),
            Panel(
                "nginx connections",
                (Target(q.nginx_connections(), "{{host}} {{state}}"),),
                Unit.SHORT,
                "Active client connections at nginx (stub_status), and the idle keep-alive share.",
                width=12,
            ),
        ),
    )


def _app_row() -> Row:
    inst = f'{H}, instance=~"$instance"'
    return Row(
        "App instances",
        (
            Panel(
                "App requests per second by instance",
                (
                    Target(
                        f"sum by (host, instance) (rate(loadlab_app_requests_total{{{inst}}}[{q.RATE}]))",
                        "{{host}} {{instance}}",
                    ),
                ),
                Unit.REQUESTS_PER_SECOND,
                "How nginx spread the load over the app instances.",
                width=8,
            ),
            Panel(
                "App p95 by instance",
                (
                    Target(
                        "histogram_quantile(0.95, sum by (host, instance, le) "
                        f"(rate(loadlab_app_request_duration_seconds_bucket{{{inst}}}[{q.RATE}])))",
                        "{{host}} {{instance}}",
                    ),
                ),
                Unit.SECONDS,
                "Server-side latency per instance; compare with Locust's p95 to see time spent in the queue.",
                width=8,
            ),
            Panel(
                "App DB pool in use vs size",
                (
                    Target(q.db_pool_in_use(), "{{host}} {{instance}} in use"),
                    Target(
                        f"sum by (host, instance) (loadlab_app_db_pool_requests_waiting{{{inst}}})",
                        "{{host}} {{instance}} waiting",
                    ),
                    Target(q.db_pool_size(), "{{host}} {{instance}} pool size", limit=True),
                ),
                Unit.SHORT,
                "Connections in use against the pool size, and requests queued for one: "
                "a full pool with waiters is DB connection saturation.",
                width=8,
            ),
        ),
    )


def build() -> Dashboard:
    """The dashboard to watch during a run."""
    return panels.lab_dashboard(
        UID,
        "loadlab / Load vs saturation",
        "Locust's load and results on the same time axis as CPU and connections on both sides.",
        [_load_row(), _open_row(), _cpu_row(), _connections_row(), _app_row()],
    )
