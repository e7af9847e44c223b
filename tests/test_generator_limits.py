"""The generator's other limits on the real kernel: ephemeral ports, file descriptors, listen queue overflows,
and a host whose CPU is full with no process at a full core.

A listener with a backlog of 1 that never accepts is flooded with connections on loopback (ListenOverflows);
a process with a low RLIMIT_NOFILE opens sockets until the kernel refuses (EMFILE); in a network namespace of
its own (so nothing else on the machine is touched) a narrowed ip_local_port_range runs out (EADDRNOTAVAIL).
Both resource readers, the in-process Sampler and PrometheusWindow over a real Prometheus, must put what the
exporter counts into the same fields, and the diagnosis must name each limit.
"""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client import CollectorRegistry, start_http_server

from loadlab.exporters.processes import ProcessesCollector
from loadlab.exporters.sockets import SocketsCollector
from loadlab.sweep.diagnosis import diagnose
from loadlab.sweep.resources import PrometheusWindow, Sampler
from tests.servers import free_port, require, terminate

pytestmark = pytest.mark.timeout(120)

FD_LIMIT = 64

# Run as `python -c HOG MARKER [PORT]`: with a PORT, connect to it until no ephemeral port is left; then
# open sockets until the open-files limit refuses one; say "ready" and hold everything.
HOG = f"""
import errno, resource, socket, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, ({FD_LIMIT}, {FD_LIMIT}))
held = []
if len(sys.argv) > 2:
    while True:
        s = socket.socket()
        s.setblocking(False)
        if s.connect_ex(("127.0.0.1", int(sys.argv[2]))) == errno.EADDRNOTAVAIL:
            s.close()
            break
        held.append(s)
try:
    while True:
        held.append(socket.socket())
except OSError as exc:
    assert exc.errno == errno.EMFILE, exc
print("ready", flush=True)
time.sleep(120)
"""

# Runs inside `unshare --net`: loopback up, a listener that never accepts, then a port range of 16 ports
# exhausted by a descriptor-limited client, all while the in-process Sampler watches.
IN_NETNS = """
import json, socket, subprocess, sys, time
import psutil
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
port = listener.getsockname()[1]
with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:
    f.write("40000 40015")
from loadlab.exporters.processes import ProcessesCollector
from loadlab.exporters.sockets import SocketsCollector
from loadlab.sweep.resources import Sampler
from prometheus_client import CollectorRegistry

hog = []
sampler = Sampler(port, locust=lambda: {"worker-1": psutil.Process(hog[0].pid)} if hog else {},
                  target=lambda: {}, interval=0.2, host="loadgen1")
registry = CollectorRegistry()
registry.register(SocketsCollector([port]))
before = registry.get_sample_value("loadlab_tcp_listen_overflows_total")
sampler.start()
hog.append(subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], str(port)],
                            stdout=subprocess.PIPE, text=True))
assert hog[0].stdout.readline().strip() == "ready"
time.sleep(1.0)
resources = sampler.stop()
registry.register(ProcessesCollector({"locust-worker-1": sys.argv[2]}))
exporter = {
    "overflows": registry.get_sample_value("loadlab_tcp_listen_overflows_total") - before,
    "ports": registry.get_sample_value("loadlab_tcp_ephemeral_ports_used_ratio"),
    "fds": registry.get_sample_value("loadlab_process_open_fds_limit_ratio", {"group": "locust-worker-1"}),
}
hog[0].kill()
print(json.dumps({"resources": resources, "exporter": exporter}))
"""


def _step(resources: dict) -> dict:
    return {"users": 50, "rps": 100.0, "p50_ms": 5, "p95_ms": 9, "avg_ms": 5.0, "fail_ratio": 0.0,
            "resources": resources}  # fmt: skip


@pytest.fixture
def marker() -> str:
    return f"loadlab-hog-{uuid.uuid4().hex[:12]}"


def test_sampler_reads_ports_fds_and_overflows_and_the_diagnosis_names_them(marker: str) -> None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2)")
    done = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", IN_NETNS, HOG, marker],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    exporter, res = out["exporter"], out["resources"]
    # the exporter: every port of the range bound, the hog at its limit, SYNs dropped on the full queue
    assert exporter["ports"] == 1.0 and exporter["fds"] == 1.0 and exporter["overflows"] >= 1
    # the Sampler: the same figures, in the model's fields
    assert res["tcp"]["loadgen1"]["ephemeral_ports_used_ratio"] == 1.0
    assert res["tcp"]["loadgen1"]["listen_overflows"] >= 1
    assert res["processes"]["loadgen1/locust-worker-1"]["fds_limit_ratio"] == 1.0
    codes, evidence = diagnose(_step(res), [])
    assert {"ephemeral_ports_exhausted", "fds_exhausted", "listen_queue_overflow"} <= set(codes)
    assert evidence["fds_exhausted"]["process"] == "loadgen1/locust-worker-1"
    assert evidence["ephemeral_ports_exhausted"]["host"] == "loadgen1"


@pytest.fixture
def exporter_under_prometheus(marker: str) -> Iterator[tuple[str, int]]:
    """Prometheus scraping the real sockets and processes collectors of this machine as host `loadgen1`."""
    prometheus_bin = require("prometheus")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    registry = CollectorRegistry()
    registry.register(SocketsCollector([port]))
    registry.register(ProcessesCollector({"locust-worker-1": marker}))
    metrics_port = free_port()
    server, thread = start_http_server(metrics_port, "127.0.0.1", registry)
    root = Path(tempfile.mkdtemp(prefix="loadlab-limits-"))
    (root / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: exporter\n"
        f'    static_configs:\n      - targets: ["127.0.0.1:{metrics_port}"]\n'
        "        labels: {host: loadgen1}\n"
    )
    prom_port = free_port()
    prom = subprocess.Popen(
        [prometheus_bin, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=(root / "prometheus.log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{prom_port}", port
    finally:
        terminate(prom)
        server.shutdown()
        listener.close()
        shutil.rmtree(root, ignore_errors=True)


def _samples(url: str, expr: str) -> int:
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
        result = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=2).json()["data"]["result"]
        return int(float(result[0]["value"][1])) if result else 0
    return 0


@pytest.mark.server
def test_prometheus_window_reads_the_same_fields(marker: str, exporter_under_prometheus) -> None:
    url, port = exporter_under_prometheus
    deadline = time.monotonic() + 60
    while _samples(url, "count_over_time(loadlab_tcp_listen_overflows_total[1m])") < 3:
        assert time.monotonic() < deadline, "Prometheus never scraped the collectors"
        time.sleep(0.3)
    start = time.time()
    hog = subprocess.Popen([sys.executable, "-c", HOG, marker], stdout=subprocess.PIPE, text=True)
    flood = []
    try:
        assert hog.stdout.readline().strip() == "ready"
        for _ in range(12):  # the queue holds two; the rest are dropped and counted
            s = socket.socket()
            s.setblocking(False)
            assert s.connect_ex(("127.0.0.1", port)) in (0, errno.EINPROGRESS)
            flood.append(s)
        time.sleep(4)
        end = time.time()
        window = PrometheusWindow(url, port, scrape_interval=1.0)
        try:
            res = window.measure(start, end)
        finally:
            window.close()
    finally:
        hog.kill()
        hog.wait()
        for s in flood:
            s.close()
    assert res["processes"]["loadgen1/locust-worker-1"]["fds_limit_ratio"] == 1.0
    assert res["tcp"]["loadgen1"]["listen_overflows"] >= 1
    assert 0 < res["tcp"]["loadgen1"]["ephemeral_ports_used_ratio"] < 1
    codes, _ = diagnose(_step(res), [])
    assert {"fds_exhausted", "listen_queue_overflow"} <= set(codes)


BUSY = "import sys, time\nend = time.monotonic() + 60\nwhile time.monotonic() < end:\n    pass\n"


@pytest.mark.server
def test_a_full_host_with_no_process_at_a_full_core_is_host_cpu_saturated(marker: str) -> None:
    """Four busy processes on this machine's cores (two per core here): each gets part of a core, the host
    none to spare. The in-process Sampler's figures must be diagnosed `host_cpu_saturated`, never `ok`."""
    cores = psutil.cpu_count() or 1
    procs = [subprocess.Popen([sys.executable, "-c", BUSY, marker]) for _ in range(2 * cores)]
    try:
        half = len(procs) // 2
        sampler = Sampler(
            8,  # no socket figure is looked at here
            locust=lambda: {f"worker-{i}": psutil.Process(p.pid) for i, p in enumerate(procs[:half], 1)},
            target=lambda: {f"app-{9100 + i}": [psutil.Process(p.pid)] for i, p in enumerate(procs[half:])},
            interval=0.5,
            host="lab1",
        )
        sampler.start()
        time.sleep(3)
        res = sampler.stop()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    assert res["hosts"]["lab1"]["cpu"] >= 0.9
    assert all(p["cpu"] < 0.85 for p in res["processes"].values())
    codes, evidence = diagnose(_step(res), [])
    assert "host_cpu_saturated" in codes and "ok" not in codes
    groups = evidence["host_cpu_saturated"]["groups"]
    # each group's share is named (how much each got depends on what else this machine runs), and with
    # `other` (CPU no group accounts for) they add up to the host's busy cores
    assert groups["generator"]["cpu"] > 0 and groups["target"]["cpu"] > 0
    busy = res["hosts"]["lab1"]["cpu"] * cores
    assert sum(g["cpu"] for g in groups.values()) == pytest.approx(busy, abs=0.02)
    assert evidence["host_cpu_saturated"]["host"] == "lab1"
