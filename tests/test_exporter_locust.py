"""The Locust plugin inside a real Locust master with a worker, a local runner, and on known stats.

Locust monkey-patches the standard library when imported, so every Locust here runs in its own process.
"""

from __future__ import annotations

import http.server
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.exporter_support import assert_golden, promtool_check
from tests.servers import free_port, terminate

LOCUSTFILE = """
import loadlab.exporters.locust  # noqa: F401
from locust import HttpUser, constant, task


class LabUser(HttpUser):
    wait_time = constant(0.1)

    @task
    def ok(self):
        self.client.get("/ok")

    @task
    def missing(self):
        self.client.get("/missing/1", name="/missing")
"""


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        status = 200 if self.path == "/ok" else 404
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def target() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def locustfile(tmp_path: Path) -> Path:
    path = tmp_path / "locustfile.py"
    path.write_text(LOCUSTFILE)
    return path


def locust(*args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "locust", *args],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        start_new_session=True,
    )


def one_user(locustfile: Path, target: str, *args: str, log: Path) -> subprocess.Popen:
    """A headless local runner with one user against target; args add the plugin's options."""
    return locust("-f", str(locustfile), "--headless", "-u", "1", "-r", "1", "--host", target, *args, log=log)


def samples(text: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"^(\S+) (\S+)$", text, re.M)}


def scrape_until(port: int, ready, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
            if ready(samples(text)):
                return text
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the plugin's metrics never got ready; last scrape:\n{text}")


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.server
def test_master_with_a_worker(tmp_path: Path, target: str, locustfile: Path) -> None:
    bind, metrics, worker_metrics = free_port(), free_port(), free_port()
    master = locust(
        "-f",
        str(locustfile),
        "--master",
        "--headless",
        "-u",
        "2",
        "-r",
        "2",
        "--expect-workers",
        "1",
        "--host",
        target,
        "--master-bind-host",
        "127.0.0.1",
        "--master-bind-port",
        str(bind),
        "--loadlab-metrics-port",
        str(metrics),
        log=tmp_path / "master.log",
    )
    worker = locust(
        "-f",
        str(locustfile),
        "--worker",
        "--master-host",
        "127.0.0.1",
        "--master-port",
        str(bind),
        "--loadlab-metrics-port",
        str(worker_metrics),
        log=tmp_path / "worker.log",
    )
    try:
        ok = 'loadlab_locust_requests_total{method="GET",name="/ok"}'
        text = scrape_until(
            metrics,
            lambda s: (
                s.get(ok, 0) > 0
                and s.get('loadlab_locust_workers{state="running"}') == 1
                and s.get("loadlab_locust_users") == 2
                and s.get("loadlab_locust_current_rps", 0) > 0  # Locust's rate leaves out the last 2 s
            ),
        )
        s = samples(text)
        assert s["loadlab_locust_up"] == 1
        assert s['loadlab_locust_runner_state{state="running"}'] == 1
        assert sum(v for k, v in s.items() if k.startswith("loadlab_locust_runner_state")) == 1
        assert sum(v for k, v in s.items() if k.startswith("loadlab_locust_workers{")) == 1
        cpu = [k for k in s if k.startswith("loadlab_locust_worker_cpu_ratio{")]
        assert len(cpu) == 1 and 0 <= s[cpu[0]] <= 2
        assert s['loadlab_locust_failures_total{method="GET",name="/ok"}'] == 0
        missing = s['loadlab_locust_requests_total{method="GET",name="/missing"}']
        assert missing > 0 and s['loadlab_locust_failures_total{method="GET",name="/missing"}'] == missing
        for name in ("/ok", "/missing"):
            count = s[f'loadlab_locust_response_time_seconds_count{{method="GET",name="{name}"}}']
            assert count == s[f'loadlab_locust_requests_total{{method="GET",name="{name}"}}']
            buckets = [
                v
                for k, v in s.items()
                if k.startswith("loadlab_locust_response_time_seconds_bucket") and f'name="{name}"' in k
            ]
            assert buckets == sorted(buckets) and buckets[-1] == count
        # two users, each one request then 0.1 s of wait: at most 20 requests a second between them
        assert 0 < s["loadlab_locust_current_rps"] <= 25
        assert promtool_check(text) == ""
        assert not listening(worker_metrics), "a worker must not serve the plugin's metrics"
    finally:
        terminate(worker, master)


@pytest.mark.server
def test_local_runner_reports_its_own_cpu_and_port_0_turns_it_off(
    tmp_path: Path, target: str, locustfile: Path
) -> None:
    metrics, off = free_port(), free_port()
    local = one_user(locustfile, target, "--loadlab-metrics-port", str(metrics), log=tmp_path / "local.log")
    disabled = one_user(
        locustfile,
        target,
        "--loadlab-metrics-port",
        "0",
        "--loadlab-metrics-host",
        "127.0.0.1",
        log=tmp_path / "disabled.log",
    )
    try:
        text = scrape_until(
            metrics, lambda s: s.get('loadlab_locust_requests_total{method="GET",name="/ok"}', 0) > 0
        )
        s = samples(text)
        assert 'loadlab_locust_worker_cpu_ratio{worker="local"}' in s
        assert not any(k.startswith("loadlab_locust_workers") for k in s)
        assert promtool_check(text) == ""
        assert disabled.poll() is None and not listening(off)
    finally:
        terminate(local, disabled)


@pytest.mark.server
def test_busy_metrics_port_stops_the_master_with_one_error(
    tmp_path: Path, target: str, locustfile: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = one_user(locustfile, target, "--loadlab-metrics-port", str(port), log=tmp_path / "busy.log")
        try:
            assert proc.wait(timeout=60) == 2
        finally:
            terminate(proc)
    log = (tmp_path / "busy.log").read_text()
    assert f"loadlab metrics: cannot listen on 127.0.0.1:{port}: Address already in use" in log


def test_importing_the_plugin_only_registers_listeners() -> None:
    code = textwrap.dedent(
        """
        import threading
        import loadlab.exporters.locust as plugin
        from locust import events
        assert threading.active_count() == 1, threading.enumerate()
        assert plugin._serve in events.init._handlers
        assert plugin._add_options in events.init_command_line_parser._handlers
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr


GOLDEN_STATS = """
from locust.env import Environment
from prometheus_client import CollectorRegistry, generate_latest
from loadlab.exporters.locust import LocustCollector
from loadlab.exporters.server import LabExporter

env = Environment()
env.create_local_runner()
# known response times (ms) per endpoint; Locust rounds them to about two significant digits
for ms in (0.4, 1, 2, 3, 7, 12, 30, 30, 80, 147, 260, 990, 3432, 12000):
    env.stats.log_request("GET", "/users/{id}", ms, 100)
for ms in (5, 5, 50):
    env.stats.log_request("POST", "/users", ms, 10)
env.stats.log_error("POST", "/users", "500 Internal Server Error")
registry = CollectorRegistry()
registry.register(LocustCollector(env))
text = generate_latest(registry).decode()
print(text, end="")
"""


def test_known_stats_golden_output() -> None:
    """Real Locust stats objects fed known response times: counters and histogram buckets, exactly."""
    done = subprocess.run([sys.executable, "-c", GOLDEN_STATS], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert_golden(done.stdout, "locust.prom")
    s = samples(done.stdout)
    get = 'loadlab_locust_response_time_seconds_bucket{le="%s",method="GET",name="/users/{id}"}'
    assert s[get % "0.001"] == 2  # 0.4 ms and 1 ms
    assert s[get % "0.01"] == 5
    assert s[get % "0.1"] == 9
    assert s[get % "0.25"] == 10  # 147 ms is kept as 150 ms
    assert s[get % "1.0"] == 12
    assert s[get % "10.0"] == 13
    assert s[get % "+Inf"] == 14
    assert s['loadlab_locust_failures_total{method="POST",name="/users"}'] == 1
    assert s['loadlab_locust_runner_state{state="ready"}'] == 1
    assert promtool_check(done.stdout) == ""
