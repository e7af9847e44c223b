"""The lab exporter inside the lab: Prometheus scrapes it, and its socket series follow the users.

A small swarm (10 users) from the lab's own Locust master through the lab's nginx; the exporter's
established client sockets toward nginx's port must rise to one per user and fall back when the users stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]

USERS = 10


def _wait_for(what: str, probe: Callable[[], object], timeout: float = 60.0, every: float = 1.0):
    """Poll until probe() is truthy; fail saying what never happened."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"{what} did not happen within {timeout:.0f}s (last: {last!r})")


def _sockets(exporter_url: str, port: int, role: str, state: str = "established") -> int:
    """One sample of loadlab_tcp_sockets straight from the exporter (it reads the kernel per scrape)."""
    text = httpx.get(exporter_url, timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "loadlab_tcp_sockets":
            for s in family.samples:
                if s.labels == {"port": str(port), "state": state, "role": role}:
                    return int(s.value)
    return 0


def _query(prometheus_url: str, expr: str) -> list[dict]:
    body = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scrapes_the_exporter_and_every_source_is_up(lab):
    """Every lab exporter target is up in Prometheus, and each configured source reports _up 1."""
    prometheus = lab.lab.prometheus_url

    def exporters_up():
        targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        mine = [t for t in targets if t["labels"].get("job") == "exporter"]
        return len(mine) == len(lab.lab.hosts) and all(t["health"] == "up" for t in mine) and mine

    _wait_for("every exporter target up in Prometheus", exporters_up)
    for source in ("sockets", "host", "processes", "postgres", "redis", "nginx"):
        result = _wait_for(
            f"loadlab_{source}_up in Prometheus", lambda s=source: _query(prometheus, f"loadlab_{s}_up")
        )
        assert all(r["value"][1] == "1" for r in result), (source, result)
        assert all(r["metric"].get("host") for r in result), f"{source}: no host label from the scrape config"


def test_socket_series_rise_and_fall_with_the_users(lab):
    """10 users hold 10 established sockets toward nginx (client role) and nginx sees 10 (server role)."""
    host = lab.lab.lb
    port = host.int_var("nginx_port")
    exporter = f"http://{host.address}:{host.int_var('exporter_port')}/metrics"
    web = lab.lab.locust_web_url
    started = time.time()
    form = {
        "user_count": USERS,
        "spawn_rate": USERS,
        "host": lab.lab.nginx_url,
        "user_classes": lab.lab.locust_master.var("locust_default_user_classes"),
    }
    interval = float(str(lab.lab.monitor.var("prometheus_scrape_interval")).rstrip("s"))
    selector = f'loadlab_tcp_sockets{{role="client",state="established",port="{port}"}}'

    def prometheus_now() -> float | None:
        result = _query(lab.lab.prometheus_url, f"max({selector})")
        return float(result[0]["value"][1]) if result else None

    response = httpx.post(f"{web}/swarm", data=form, timeout=10)
    assert response.status_code == 200, response.text
    try:
        _wait_for(
            f"{USERS} established client sockets toward :{port}",
            lambda: _sockets(exporter, port, "client") == USERS,
        )
        time.sleep(3)  # a steady state, not a passing moment
        assert _sockets(exporter, port, "client") == USERS
        assert _sockets(exporter, port, "server") >= USERS
        # The plateau is held until a scrape has caught it (a scrape every few seconds can miss a short one).
        _wait_for(
            f"Prometheus scraping {USERS} client sockets",
            lambda: prometheus_now() == USERS,
            timeout=4 * interval,
        )
    finally:
        httpx.post(f"{web}/stop", timeout=10)
    _wait_for(
        "client sockets toward nginx closing after the users stop",
        lambda: _sockets(exporter, port, "client") == 0,
    )

    # Prometheus saw the same rise and fall over the swarm.
    time.sleep(2 * interval)
    window = f"{int(time.time() - started) + 1}s"
    peak = _query(lab.lab.prometheus_url, f"max(max_over_time({selector}[{window}]))")
    now = _query(lab.lab.prometheus_url, f"max({selector})")
    assert peak and float(peak[0]["value"][1]) == USERS, peak
    assert not now or float(now[0]["value"][1]) == 0, now
