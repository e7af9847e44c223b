"""`loadlab exporter` as a process: a real scrape of every collector, promtool, a source down, shutdown."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.exporter_support import promtool_check
from tests.servers import free_port, terminate, wait_port

pytestmark = pytest.mark.server  # `loadlab exporter` processes, most against the real servers
SOURCES = ("sockets", "host", "processes", "postgres", "redis", "nginx")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        return r.read().decode()


def value(text: str, sample: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return None


class Exporter:
    """One `loadlab exporter` process; stderr goes to a file so the test can read the log."""

    def __init__(self, config: Path, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from loadlab.cli import main; main()",
                "exporter",
                "--config",
                str(config),
                "--listen",
                f"127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
        )
        wait_port(self.port)

    def stop(self) -> int:
        terminate(self.proc)
        return self.proc.returncode


@pytest.fixture
def lab_config(tmp_path: Path, postgres_server, redis_server, nginx_stub) -> Path:
    path = tmp_path / "exporter.yml"
    path.write_text(
        f"""
listen: "127.0.0.1:1"   # overridden by --listen
ports: [{nginx_stub.port}, {postgres_server.port}, {redis_server.port}]
process_groups:
  nginx: "^nginx: "
  postgres: "^postgres: |/postgres "
  redis: "^redis-server "
postgres: {{dsn: "{postgres_server.monitor_dsn}"}}
redis: {{url: "{redis_server.url}"}}
nginx: {{status_url: "{nginx_stub.status_url}"}}
"""
    )
    return path


@pytest.fixture
def exporter(lab_config: Path, tmp_path: Path) -> Iterator[Exporter]:
    exp = Exporter(lab_config, tmp_path / "exporter.log")
    yield exp
    exp.stop()


def test_real_scrape_of_every_collector_passes_promtool(
    exporter: Exporter, postgres_server, nginx_stub
) -> None:
    scrape(exporter.port)  # the first scrape opens the exporter's connection to postgres
    text = scrape(exporter.port)
    for source in SOURCES:
        assert value(text, f"loadlab_{source}_up") == 1, source
        # each source timed, a healthy one well inside the default 2 s source timeout
        assert 0 < value(text, f'loadlab_scrape_duration_seconds{{collector="{source}"}}') < 2, source
    assert value(text, "loadlab_postgres_max_connections") == postgres_server.max_connections
    # the exporter's own connection to postgres is a client socket toward the postgres port
    assert (
        value(text, f'loadlab_tcp_sockets{{port="{postgres_server.port}",role="client",state="established"}}')
        >= 1
    )
    assert value(text, f'loadlab_tcp_sockets{{port="{nginx_stub.port}",role="server",state="listen"}}') == 1
    assert value(text, 'loadlab_processes{group="nginx"}') >= 2  # master and worker
    assert value(text, 'loadlab_processes{group="exporter"}') == 1
    assert promtool_check(text) == ""


def test_source_down_keeps_serving_and_logs_once(exporter: Exporter, nginx_stub) -> None:
    nginx_stub.stop()
    try:
        for _ in range(3):
            text = scrape(exporter.port)
            assert value(text, "loadlab_nginx_up") == 0
            assert value(text, "loadlab_nginx_requests_total") is None
            assert value(text, "loadlab_postgres_up") == 1
            assert value(text, "loadlab_sockets_up") == 1
    finally:
        nginx_stub.start()
    assert value(scrape(exporter.port), "loadlab_nginx_up") == 1
    assert exporter.stop() == 0
    log = exporter.log.read_text()
    assert log.count("nginx: source down") == 1, log
    assert log.count("nginx: source recovered") == 1, log
    assert "Traceback" not in log


def test_sigterm_stops_cleanly(exporter: Exporter) -> None:
    scrape(exporter.port)
    assert exporter.stop() == 0
    log = exporter.log.read_text()
    assert f"serving http://127.0.0.1:{exporter.port}/metrics" in log
    assert "stopped" in log
    with pytest.raises(OSError):
        scrape(exporter.port)


def test_scrapes_are_served_while_a_source_hangs_no_longer_than_its_timeout(tmp_path: Path) -> None:
    """A source that accepts but never answers costs one timeout, not a stuck exporter."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        config = tmp_path / "exporter.yml"
        config.write_text(
            f"nginx: {{status_url: 'http://127.0.0.1:{silent.getsockname()[1]}/stub_status'}}\ntimeout: 1\n"
        )
        exp = Exporter(config, tmp_path / "exporter.log")
        try:
            start = time.monotonic()
            text = scrape(exp.port)
            assert value(text, "loadlab_nginx_up") == 0
            assert value(text, "loadlab_host_up") == 1
            assert time.monotonic() - start < 20  # generous: the point is that the scrape returns at all
        finally:
            assert exp.stop() == 0
