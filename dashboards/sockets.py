"""Sockets: TCP state per port on the accepting and the connecting side, TIME_WAIT and ephemeral ports."""

from __future__ import annotations

from loadlab.dashboards import panels
from loadlab.dashboards import queries as q
from loadlab.dashboards.builder import Dashboard, Panel, Row, Target, Unit

UID = "loadlab-sockets"
H = q.HOST


def _role_row(role: str, title: str, side: str) -> Row:
    sockets = f'loadlab_tcp_sockets{{{H}, role="{role}"'
    return Row(
        title,
        (
            Panel(
                f"{side} sockets by port and state",
                (
                    Target(
                        f'sum by (host, port, state) ({sockets}, state!~"listen|established"}}) > 0',
                        "{{host}} :{{port}} {{state}}",
                    ),
                ),
                Unit.SHORT,
                f"Every TCP state but established and listen, per port, role {role}; states at zero are left "
                "out. Piles of syn_* or close_wait show who is stuck.",
                width=12,
            ),
            Panel(
                f"{side} established sockets by port",
                (
                    Target(
                        f'sum by (host, port) ({sockets}, state="established"}}) > 0', "{{host}} :{{port}}"
                    ),
                ),
                Unit.SHORT,
                "Open connections per port. Ports the exporter does not list are folded into 'other'.",
                width=12,
            ),
        ),
    )


def _time_wait_row() -> Row:
    return Row(
        "TIME_WAIT and ports",
        (
            Panel(
                "TIME_WAIT sockets",
                (
                    Target(q.time_wait(), "{{host}} all"),
                    Target(
                        f'sum by (host, port, role) (loadlab_tcp_sockets{{{H}, state="time_wait"}}) > 0',
                        "{{host}} :{{port}} {{role}}",
                    ),
                ),
                Unit.SHORT,
                "Closed connections waiting out 2*MSL, holding ports on the side that closed first.",
                width=8,
            ),
            Panel(
                "Ephemeral port usage",
                (
                    Target(q.ephemeral_ports_used(), "{{host}}"),
                    Target("vector(1)", "exhausted", limit=True),
                ),
                Unit.PERCENT,
                "Share of net.ipv4.ip_local_port_range in use; at 100% new outgoing connections fail.",
                width=8,
                max=1,
            ),
            Panel(
                "Kernel socket totals",
                (
                    Target(
                        f"sum by (host, protocol, kind) (loadlab_sockstat_sockets{{{H}}})",
                        "{{host}} {{protocol}} {{kind}}",
                    ),
                ),
                Unit.SHORT,
                "From /proc/net/sockstat: the whole host, every port and protocol.",
                width=8,
            ),
        ),
    )


def build() -> Dashboard:
    """Where connections pile up and in which state."""
    return panels.lab_dashboard(
        UID,
        "loadlab / Sockets",
        "TCP sockets per port and state, as the target (server) and as the generators (client).",
        [
            _role_row("server", "Accepting side (role server: the port is local)", "Server"),
            _role_row("client", "Connecting side (role client: the port is remote)", "Client"),
            _time_wait_row(),
        ],
    )
