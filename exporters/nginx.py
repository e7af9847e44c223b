"""nginx connections and requests from the stub_status page."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_STUB_STATUS = re.compile(
    r"Active connections:\s*(?P<active>\d+)\s+"
    r"server accepts handled requests\s+(?P<accepted>\d+)\s+(?P<handled>\d+)\s+(?P<requests>\d+)\s+"
    r"Reading:\s*(?P<reading>\d+)\s+Writing:\s*(?P<writing>\d+)\s+Waiting:\s*(?P<waiting>\d+)"
)


def parse_stub_status(text: str) -> dict[str, int]:
    """stub_status text to numbers; a page that is not stub_status is an error, not zeros."""
    match = _STUB_STATUS.search(text)
    if match is None:
        raise ValueError("not an nginx stub_status page")
    return {key: int(value) for key, value in match.groupdict().items()}


class NginxSource:
    """The stub_status page over HTTP, with a short timeout."""

    def __init__(self, status_url: str, timeout: float = 3.0) -> None:
        self.status_url = status_url
        self.timeout = timeout

    def __call__(self) -> str:
        with urllib.request.urlopen(self.status_url, timeout=self.timeout) as response:
            return response.read(65536).decode("ascii", errors="replace")


class NginxCollector(Collector):
    """Connections by state, connections accepted and handled, requests."""

    name = "nginx"

    def __init__(self, source: Callable[[], str]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        status = parse_stub_status(self.source())
        connections = GaugeMetricFamily(
            "loadlab_nginx_connections",
            "Client connections: active is all open ones, the rest split them by what nginx does with them.",
            labels=["state"],
        )
        for state in ("active", "reading", "writing", "waiting"):
            connections.add_metric([state], status[state])
        yield connections
        yield CounterMetricFamily(
            "loadlab_nginx_connections_accepted_total",
            "Client connections accepted.",
            value=status["accepted"],
        )
        yield CounterMetricFamily(
            "loadlab_nginx_connections_handled_total",
            "Client connections handled (fewer than accepted when a limit was hit).",
            value=status["handled"],
        )
        yield CounterMetricFamily(
            "loadlab_nginx_requests_total", "Client requests.", value=status["requests"]
        )
