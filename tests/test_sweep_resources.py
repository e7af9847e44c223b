"""The per-host resource model: figures keep their host, from either reader.

The model's own rules run on hand-written steps, and both readers' output shapes are built from fixtures
(canned Prometheus answers; this process and a child sampled in-process) and compared field by field.
PrometheusWindow is also checked against Debian's Prometheus
scraping six /metrics endpoints on loopback that stand for the hosts of a multi-host lab (two target hosts
with the same app and nginx group names, two loadgen hosts with the same worker names, a data host), each
labelled with its inventory host as the lab's scrape config does. Their counters grow at known rates, so
the expected figures are known. The Sampler is checked on this machine with a real busy process.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.core import GaugeMetricFamily

from loadlab.sweep import resource_model as model
from loadlab.sweep.diagnosis import diagnose
from loadlab.sweep.resources import PrometheusWindow, Sampler
from tests.servers import free_port, terminate

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
SCRAPE = 1.0


def two_target_hosts() -> model.Resources:
    """target1 (2 cores) and target2 (4 cores) both run nginx and app-8001; two loadgen hosts run
    locust-worker-1."""
    r = model.Resources("prometheus", 30.0)
    r.host("target1").cores = 2
    r.host("target2").cores = 4
    r.host("loadgen1").cores = 2
    r.host("loadgen2").cores = 2
    r.add_process("target1", "nginx", 0.3)
    r.add_process("target1", "app-8001", 0.8)
    r.add_process("target1", "app-8002", 0.7)
    r.add_process("target2", "nginx", 0.1)
    r.add_process("target2", "app-8001", 0.9)
    r.add_process("loadgen1", "locust-master", 0.05)
    r.add_process("loadgen1", "locust-worker-1", 0.4)
    r.add_process("loadgen1", "locust-worker-2", 0.91)
    r.add_process("loadgen2", "locust-worker-1", 0.5)
    return r


def test_the_same_group_on_two_hosts_never_merges() -> None:
    res = two_target_hosts().to_dict()
    assert res["processes"]["target1/app-8001"]["cpu"] == 0.8
    assert res["processes"]["target2/app-8001"]["cpu"] == 0.9
    assert res["processes"]["loadgen1/locust-worker-1"]["cpu"] == 0.4
    assert res["processes"]["loadgen2/locust-worker-1"]["cpu"] == 0.5
    assert "app-8001" not in res["processes"] and "locust-worker-1" not in res["processes"]
    assert {p["role"] for n, p in res["processes"].items() if "locust" in n} == {"loadgen"}
    assert {res["processes"][n]["role"] for n in ("target1/nginx", "target2/app-8001")} == {"target"}


def test_step_figures_are_totals_with_the_busiest_process_and_host_beside_them() -> None:
    figures = model.step_figures(two_target_hosts().to_dict())
    assert figures["loadgen_cpu"] == pytest.approx(0.05 + 0.4 + 0.91 + 0.5)
    assert figures["loadgen_cpu_busiest"] == {"process": "loadgen1/locust-worker-2", "cpu": 0.91}
    assert figures["loadgen_cpu_busiest_host"]["host"] == "loadgen1"
    assert figures["target_cpu"] == pytest.approx(0.3 + 0.8 + 0.7 + 0.1 + 0.9)
    assert figures["target_cpu_busiest"] == {"process": "target2/app-8001", "cpu": 0.9}
    # target1 burns 1.8 of its 2 cores, target2 1.0 of its 4: target1 is the busier host for its cores.
    assert figures["target_cpu_busiest_host"] == {"host": "target1", "cpu": 1.8, "cores": 2, "share": 0.9}


def _step(resources: dict, **kw) -> dict:
    step = {"index": 0, "users": 20, "rps": 100.0, "p50_ms": 50, "p95_ms": 60, "avg_ms": 50.0}
    step.update(kw, fail_ratio=0.0, resources=resources)
    return step


def test_target_cpu_is_compared_with_each_hosts_own_cores() -> None:
    r = model.Resources("prometheus", 30.0)
    r.host("target1").cores = 2
    r.host("target2").cores = 4
    for host in ("target1", "target2"):  # 1.8 cores of target processes on each host
        r.add_process(host, "nginx", 0.6)
        r.add_process(host, "app-8001", 0.6)
        r.add_process(host, "app-8002", 0.6)
    codes, evidence = diagnose(_step(r.to_dict()), [])
    # Summed over hosts 3.6 cores would look like neither host; per host only target1 (2 cores) is full.
    assert codes == ["target_cpu_bound"]
    found = evidence["target_cpu_bound"]
    assert found["host"] == "target1" and found["cores"] == 2 and found["target_cpu"] == 1.8
    assert found["process"].startswith("target1/")
    r.host("target1").cores = 4
    assert diagnose(_step(r.to_dict()), [])[0] == ["ok"]


def test_diagnosis_names_host_and_process() -> None:
    res = two_target_hosts().to_dict()
    codes, evidence = diagnose(_step(res), [])
    assert codes == ["generator_cpu_bound", "target_cpu_bound"]
    assert evidence["generator_cpu_bound"]["process"] == "loadgen1/locust-worker-2"
    assert evidence["generator_cpu_bound"]["host"] == "loadgen1"
    assert evidence["target_cpu_bound"]["process"] == "target2/app-8001"
    assert evidence["target_cpu_bound"]["host"] == "target2"


def test_a_full_loadgen_host_is_generator_bound_unless_it_shares_its_machine() -> None:
    r = model.Resources("prometheus", 30.0)
    loadgen = r.host("loadgen2")
    loadgen.cores, loadgen.cpu = 2, 0.97  # four workers on two cores: none reaches a full core
    for n in range(1, 5):
        r.add_process("loadgen2", f"locust-worker-{n}", 0.47)
    codes, evidence = diagnose(_step(r.to_dict()), [])
    assert codes == ["generator_cpu_bound"]
    assert evidence["generator_cpu_bound"]["host"] == "loadgen2"
    assert evidence["generator_cpu_bound"]["host_cpu"] == 0.97
    # A test host's CPU share is its whole machine's: no process figure blames the generator there, but the
    # machine itself is full, and is named as the shared machine.
    loadgen.shared_machine = True
    codes, evidence = diagnose(_step(r.to_dict()), [])
    assert codes == ["host_cpu_saturated"]
    assert evidence["host_cpu_saturated"]["host"] == "shared machine (loadgen2)"
    assert r.to_dict()["shared_machine"] is True


def test_target_cpu_is_the_target_role_alone_and_the_data_stores_apart() -> None:
    """One meaning of "target CPU", the dashboards' too: nginx and the app instances (role target), never
    PostgreSQL or Redis (role data), whose CPU stays in `processes` under their own role."""
    r = two_target_hosts()
    r.add_process("data1", "postgres", 1.5)
    r.add_process("data1", "redis", 0.5)
    res = r.to_dict()
    assert (
        model.step_figures(res)["target_cpu"]
        == model.step_figures(two_target_hosts().to_dict())["target_cpu"]
    )
    assert model.processes(res, model.DATA) == {"data1/postgres": 1.5, "data1/redis": 0.5}


def test_a_figure_outside_the_model_is_refused() -> None:
    r = model.Resources("sampled", 1.0)
    with pytest.raises(model.UnknownFigure, match="loadgen_runnable"):
        r.add_process("h", "locust-worker-1", 0.5, loadgen_runnable=0.9)
    r.add_process("h", "app-8001", 0.5)
    r.processes["h/app-8001"]["busiest"] = 0.5  # a reader writing past add_process
    with pytest.raises(model.UnknownFigure, match="busiest"):
        r.to_dict()
    r = model.Resources("sampled", 1.0)
    r.postgres = {"h": {"connections": 3, "backends": 3}}
    with pytest.raises(model.UnknownFigure, match="backends"):
        r.to_dict()


def test_db_figures_keep_their_host() -> None:
    r = model.Resources("prometheus", 30.0)
    r.postgres["data1"] = {"connections": 96, "max_connections": 100}
    r.db_pool["target2/app-8003"] = {"in_use_avg": 1.0, "size": 5}
    codes, evidence = diagnose(_step(r.to_dict()), [])
    assert codes == ["db_connections_saturated"] and evidence["db_connections_saturated"]["host"] == "data1"
    r.postgres["data1"]["connections"] = 10
    r.db_pool["target2/app-8003"]["in_use_avg"] = 4.9
    codes, evidence = diagnose(_step(r.to_dict()), [])
    assert evidence["db_connections_saturated"]["process"] == "target2/app-8003"


# -- PrometheusWindow against a real Prometheus ------------------------------------------------------------

T0 = time.time()


def _exporter_text(cores: int, busy: float, groups: dict[str, float], extra: str = "") -> Callable[[], str]:
    """An exporter's /metrics whose counters grow at fixed rates: `busy` cores of the host, group CPU."""

    def text() -> str:
        t = time.time() - T0
        lines = []
        for cpu in range(cores):
            lines.append(f'loadlab_host_cpu_seconds_total{{cpu="{cpu}",mode="user"}} {busy / cores * t}')
            lines.append(
                f'loadlab_host_cpu_seconds_total{{cpu="{cpu}",mode="idle"}} {(1 - busy / cores) * t}'
            )
        lines += [
            f"loadlab_host_cpus {cores}",
            "loadlab_host_memory_total_bytes 8e9",
            "loadlab_host_memory_available_bytes 6e9",
            "loadlab_host_cpu_cgroup 1",
            "loadlab_host_shared_machine 1",
        ]
        lines += [
            f'loadlab_process_cpu_seconds_total{{group="{g}"}} {rate * t}' for g, rate in groups.items()
        ]
        return "\n".join(lines) + "\n" + extra

    return text


def _sockets(port: int, role: str, count: int) -> str:
    return f'loadlab_tcp_sockets{{port="{port}",state="established",role="{role}"}} {count}\n'


class _Metrics(BaseHTTPRequestHandler):
    texts: dict[int, Callable[[], str]] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = self.texts[self.server.server_address[1]]().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


TARGET_PORT = 8080


@pytest.fixture(scope="module")
def two_host_prometheus() -> Iterator[tuple[str, dict[str, int]]]:
    """Prometheus scraping five hosts' exporters and one app instance on each of two target hosts."""
    hosts = {
        "target1": _exporter_text(
            2, 1.5, {"nginx": 0.3, "app-8001": 0.6}, _sockets(TARGET_PORT, "server", 30)
        ),
        "target2": _exporter_text(4, 1.0, {"nginx": 0.1, "app-8001": 0.9}),
        "loadgen1": _exporter_text(
            2, 1.2, {"locust-master": 0.05, "locust-worker-1": 0.3, "locust-worker-2": 0.9},
            _sockets(TARGET_PORT, "client", 20),
        ),
        "loadgen2": _exporter_text(
            2, 0.6, {"locust-worker-1": 0.5, "locust-worker-2": 0.1}, _sockets(TARGET_PORT, "client", 10)
        ),
        "data1": _exporter_text(
            2, 0.4, {"postgres": 0.2, "redis": 0.1},
            'loadlab_postgres_connections{state="active"} 7\n'
            'loadlab_postgres_connections{state="idle"} 5\n'
            "loadlab_postgres_max_connections 100\n",
        ),
    }  # fmt: skip
    apps = {
        "target1": lambda: 'loadlab_app_db_pool_connections{state="in_use"} 5\nloadlab_app_db_pool_size 5\n',
        "target2": lambda: 'loadlab_app_db_pool_connections{state="in_use"} 1\nloadlab_app_db_pool_size 5\n',
    }
    servers: list[ThreadingHTTPServer] = []
    ports: dict[str, int] = {}

    def serve(name: str, text: Callable[[], str]) -> int:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
        port = server.server_address[1]
        _Metrics.texts[port] = text
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        ports[name] = port
        return port

    exporter_jobs = "".join(
        f'      - targets: ["127.0.0.1:{serve(h, t)}"]\n        labels: {{host: {h}}}\n'
        for h, t in hosts.items()
    )
    app_jobs = "".join(
        f'      - targets: ["127.0.0.1:{serve("app-" + h, t)}"]\n        labels: {{host: {h}}}\n'
        for h, t in apps.items()
    )
    config = (
        f"global:\n  scrape_interval: {SCRAPE:g}s\n  scrape_timeout: {SCRAPE:g}s\nscrape_configs:\n"
        f"  - job_name: exporter\n    static_configs:\n{exporter_jobs}"
        f"  - job_name: app\n    static_configs:\n{app_jobs}"
    )
    root = Path(tempfile.mkdtemp(prefix="loadlab-prom-"))
    (root / "prometheus.yml").write_text(config)
    prom_port = free_port()
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=(root / "prometheus.log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{prom_port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # every target up, then enough scrapes for a rate over the window
            assert time.monotonic() < deadline, (root / "prometheus.log").read_text()[-2000:]
            try:
                result = httpx.get(
                    f"{url}/api/v1/query", params={"query": "count(up == 1)"}, timeout=2
                ).json()
                if result["data"]["result"] and int(result["data"]["result"][0]["value"][1]) == 7:
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.3)
        time.sleep(7 * SCRAPE)
        yield url, ports
    finally:
        terminate(proc)
        for server in servers:
            server.shutdown()
            server.server_close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.server
@pytest.mark.timeout(120)
def test_prometheus_window_keeps_every_figure_on_its_host(two_host_prometheus) -> None:
    url, ports = two_host_prometheus
    window = PrometheusWindow(
        url, TARGET_PORT, SCRAPE, loadgen_hosts=["loadgen1", "loadgen2"], lb_hosts=["target1"]
    )
    try:
        end = time.time()
        res = window.measure(end - 5, end)
    finally:
        window.close()
    procs = res["processes"]
    # The same group names on two hosts stay apart, each with its own rate.
    assert procs["target1/app-8001"]["cpu"] == pytest.approx(0.6, rel=0.05)
    assert procs["target2/app-8001"]["cpu"] == pytest.approx(0.9, rel=0.05)
    assert procs["loadgen1/locust-worker-1"]["cpu"] == pytest.approx(0.3, rel=0.05)
    assert procs["loadgen2/locust-worker-1"]["cpu"] == pytest.approx(0.5, rel=0.05)
    assert procs["data1/postgres"]["role"] == "data"
    # Each host's CPU share is of its own cores.
    assert res["hosts"]["target1"]["cores"] == 2 and res["hosts"]["target2"]["cores"] == 4
    assert res["hosts"]["target1"]["cpu"] == pytest.approx(0.75, abs=0.03)
    assert res["hosts"]["target2"]["cpu"] == pytest.approx(0.25, abs=0.03)
    assert res["hosts"]["loadgen1"]["cpu_from"] == "cgroup" and res["shared_machine"] is True
    assert res["hosts"]["data1"]["memory_used_bytes"] == 2e9
    # Client sockets on the loadgen hosts, server sockets on the lb host: they agree.
    assert res["client_sockets"]["hosts"] == {"loadgen1": 20, "loadgen2": 10}
    assert res["client_sockets"]["median"] == 30
    assert res["server_sockets"]["hosts"] == {"target1": 30} and res["server_sockets"]["median"] == 30
    assert res["postgres"] == {"data1": {"connections": 12, "max_connections": 100}}
    assert res["db_pool"] == {
        f"target1/app-{ports['app-target1']}": {"in_use_avg": 5, "size": 5},
        f"target2/app-{ports['app-target2']}": {"in_use_avg": 1, "size": 5},
    }
    figures = model.step_figures(res)
    assert figures["client_sockets"] == figures["server_sockets"] == 30
    assert figures["loadgen_cpu"] == pytest.approx(0.05 + 0.3 + 0.9 + 0.5 + 0.1, rel=0.05)
    assert figures["loadgen_cpu_busiest"]["process"] == "loadgen1/locust-worker-2"
    assert figures["target_cpu"] == pytest.approx(0.3 + 0.6 + 0.1 + 0.9, rel=0.05)
    assert figures["target_cpu_busiest_host"]["host"] == "target1"  # 0.9 of 2 cores beats 1.0 of 4
    codes, evidence = diagnose(_step(res), [])
    assert codes == ["generator_cpu_bound", "target_cpu_bound", "db_connections_saturated"]
    assert evidence["generator_cpu_bound"]["process"] == "loadgen1/locust-worker-2"
    assert evidence["target_cpu_bound"]["process"] == "target2/app-8001"
    assert evidence["db_connections_saturated"]["process"] == f"target1/app-{ports['app-target1']}"


# -- the Sampler on this machine ---------------------------------------------------------------------------


@pytest.mark.server
@pytest.mark.timeout(60)
def test_sampler_fills_the_same_model_keyed_with_this_machines_name() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        proc = psutil.Process(busy.pid)
        sampler = Sampler(
            free_port(),
            locust=lambda: {"worker-1": proc},
            target=lambda: {"nginx": [proc]},
            interval=0.2,
            host="lab-host-1",
        )
        sampler.start()
        time.sleep(1.5)
        res = sampler.stop()
    finally:
        terminate(busy)
    assert res["source"] == "sampled"
    assert set(res["processes"]) == {"lab-host-1/locust-worker-1", "lab-host-1/nginx"}
    worker = res["processes"]["lab-host-1/locust-worker-1"]
    assert worker["role"] == "loadgen" and worker["cpu"] > 0 and "runnable" in worker
    assert set(res["hosts"]) == {"lab-host-1"}
    host = res["hosts"]["lab-host-1"]
    assert host["cores"] == psutil.cpu_count() and 0 <= host["cpu"] <= 1 and host["cpu_from"] == "machine"
    assert res["client_sockets"]["hosts"] == {"lab-host-1": 0}
    assert model.step_figures(res)["loadgen_cpu_busiest"]["process"] == "lab-host-1/locust-worker-1"


def test_sampler_without_a_name_uses_the_hostname() -> None:
    assert Sampler(1, locust=dict, target=dict).host == socket.gethostname()


@pytest.mark.server
@pytest.mark.timeout(60)
def test_sampler_series_gives_cpu_per_interval_in_the_shape_compare_reads(tmp_path: Path) -> None:
    """The window sample by sample, as PrometheusWindow.series gives it: a busy target's CPU near one core
    in every interval, an idle generator's near none, a group seen only from the third sample on without a
    value before; and `loadlab compare` reads the target's and the generator's CPU from it."""
    from loadlab.sweep import samples
    from loadlab.sweep.compare import Run, compare
    from loadlab.sweep.compare_stats import NO_DIFFERENCE

    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    idle = subprocess.Popen(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"], stdout=subprocess.PIPE
    )
    assert idle.stdout is not None and idle.stdout.readline()  # its start-up spent, it sleeps
    calls = []

    def late() -> dict[str, list[psutil.Process]]:
        calls.append(1)
        return {"redis": [psutil.Process(idle.pid)]} if len(calls) >= 3 else {}

    interval = 0.25
    try:
        sampler = Sampler(
            free_port(),
            locust=lambda: {"worker-1": psutil.Process(idle.pid)},
            target=lambda: {"target-8080": [psutil.Process(busy.pid)]},
            others=late,
            interval=interval,
            host="lab-host-1",
        )
        assert sampler.series() is None  # no window yet
        sampler.start()
        time.sleep(2.6)
        res = sampler.stop()
        series = sampler.series()
    finally:
        terminate(busy, idle)
    assert series is not None and series["source"] == "sampled" and series["interval_s"] == interval
    t = series["t"]
    # On the schedule from the window's start (a slow sample does not push the next ones later); the last
    # interval may be the one the window's close ended, never one shorter than half an interval.
    assert 5 <= len(t) <= 11, t
    assert all(abs(end / interval - round(end / interval)) < 0.4 for end in t[:-1]), t
    assert all(b - a >= interval / 2 for a, b in zip([0.0, *t], t, strict=False)), t
    assert t[-1] <= res["seconds"] + 0.01, (t, res["seconds"])
    # The same groups, keyed as in the step's resources, one value per interval.
    assert set(series["processes"]) == set(res["processes"]) == {
        "lab-host-1/locust-worker-1", "lab-host-1/target-8080", "lab-host-1/redis"
    }  # fmt: skip
    assert all(len(v) == len(t) for v in series["processes"].values())
    target = series["processes"]["lab-host-1/target-8080"]
    assert all(0.2 < v <= 1.05 for v in target), target  # a spinning process, on a machine others share
    assert sum(target) / len(target) == pytest.approx(
        res["processes"]["lab-host-1/target-8080"]["cpu"], abs=0.1
    )
    assert all(v < 0.05 for v in series["processes"]["lab-host-1/locust-worker-1"])
    redis = series["processes"]["lab-host-1/redis"]
    assert redis[:2] == [None, None] and all(v is not None and v < 0.05 for v in redis[2:]), redis
    assert set(series["hosts"]) == {"lab-host-1"} and len(series["hosts"]["lab-host-1"]) == len(t)
    assert all(0.0 <= v <= 1.0 for v in series["hosts"]["lab-host-1"])

    # compare reads it as it reads Prometheus's: the target's and the generator's CPU per interval.
    reports = [
        {"time": 100.0 + s, "worker": "w1", "requests": 10, "failures": 0, "response_times": {"5": 10}}
        for s in range(1, 4)
    ]
    answer = {"reset_at": 100.0, "now": 103.0, "report_interval_s": 1.0, "reports": reports}
    data = {**samples.from_master(answer), "resources": series}
    samples.write(tmp_path, 0, data)
    step = {"index": 0, "users": 4, "resources": res}
    run = Run(path=tmp_path, run={}, summary={}, steps=[step])
    figures = run.series(step)
    assert figures is not None
    assert figures["target_cpu"] == target
    assert figures["loadgen_cpu"] == series["processes"]["lab-host-1/locust-worker-1"]
    rows = {r["figure"]: r for r in compare(run, run)["rows"]}
    assert rows["target_cpu"]["n_a"] == len(t) and rows["target_cpu"]["verdict"] == NO_DIFFERENCE


# -- both readers, one shape: built from fixtures, no server ---------------------------------------------

# What each reader cannot give (README, "Sweeps"), and so leaves null: every other field is filled.
PROMETHEUS_NULL = {
    # the exporter counts groups, not processes: a group of more than one has no busiest process
    "processes/*/busiest_one (multi-process group)",
    # the Locust plugin's per-worker estimate stands in where the exporter counts no Locust group
    "processes/*/runnable (cpu_from locust)",
    "processes/*/processes_max (cpu_from locust)",
    "processes/*/busiest_one (cpu_from locust)",
    "processes/*/fds_limit_ratio (cpu_from locust)",
}
SAMPLED_NULL = {
    "hosts/*/shared_machine",  # this machine's figures say nothing of which lab hosts share it
}


class _Collector:
    """An exporter collector stand-in: `name`, and `collect()` yielding the gauges a step records (failing
    the first `fail` times, as a source that is down)."""

    def __init__(self, name: str, gauges: dict[str, float], fail: int = 0) -> None:
        self.name, self.gauges, self.fail = name, gauges, fail

    def collect(self):
        if self.fail > 0:
            self.fail -= 1
            raise ConnectionError(f"{self.name} is down")
        for metric, value in self.gauges.items():
            labels = ["state"] if metric == "loadlab_nginx_connections" else []
            family = GaugeMetricFamily(metric, metric, labels=labels)
            family.add_metric(["active"] if labels else [], value)
            yield family


def _prometheus_answer(request: httpx.Request) -> httpx.Response:
    """Every instant query answers with one series carrying every label the window reader groups by; a
    range selector (the components' raw samples) with two scrapes that read the component down."""
    expr = request.url.params["query"]
    at = float(request.url.params["time"])
    labels = {
        "host": "target1", "group": "nginx", "role": "target", "instance": "127.0.0.1:8001",
        "worker": "loadgen1_0123456789", "state": "active", "__name__": "loadlab_postgres_up",
    }  # fmt: skip
    if expr.endswith("ms]"):
        row = {"metric": labels, "values": [[at - 2, "0"], [at - 1, "0"]]}
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "matrix", "result": [row]}}
        )
    row = {"metric": labels, "value": [at, "2" if "loadlab_processes" in expr else "1"]}
    return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": [row]}})


def _prometheus_shape() -> dict:
    window = PrometheusWindow("http://prometheus.invalid", TARGET_PORT, 1.0)
    window._http = httpx.Client(base_url=window.url, transport=httpx.MockTransport(_prometheus_answer))
    try:
        return window.measure(1000.0, 1010.0)
    finally:
        window.close()


def _sampled_shape() -> dict:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        me, kid = psutil.Process(), psutil.Process(child.pid)
        pool = 'loadlab_app_db_pool_connections{state="in_use"} 2\nloadlab_app_db_pool_size 5\n'
        sampler = Sampler(
            free_port(),
            locust=lambda: {"worker-1": me},
            target=lambda: {"nginx": [me, kid]},
            others=lambda: {"postgres": [kid]},
            collectors=[
                _Collector(
                    "postgres", {"loadlab_postgres_connections": 3, "loadlab_postgres_max_connections": 100}
                ),
                _Collector("redis", {"loadlab_redis_connected_clients": 2, "loadlab_redis_maxclients": 200}),
                _Collector("nginx", {"loadlab_nginx_connections": 4}, fail=2),
            ],
            interval=0.05,
            host="target1",
            count_server_sockets=True,
            app_metrics={"app-8001": "http://app.invalid/metrics"},
        )
        sampler._http = httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(200, text=pool)))
        sampler.start()
        time.sleep(0.3)
        return sampler.stop()
    finally:
        terminate(child)


def _fields(res: dict) -> dict[str, set[str]]:
    """Field names per level of a step's resources: the sections, and the fields of each kind of entry."""
    out = {"": set(res)}
    for section in ("processes", "hosts", *model.SECTION_FIGURES):
        for entry in (res.get(section) or {}).values():
            out.setdefault(section, set()).update(entry)
    for section in ("client_sockets", "server_sockets"):
        out[section] = set(res.get(section) or {})
    for entry in (res.get("components") or {}).values():
        out.setdefault("components", set()).update(entry)
    return out


def _nulls(res: dict) -> set[str]:
    """The fields a reader left null, named as PROMETHEUS_NULL and SAMPLED_NULL name them."""
    out = {section for section in res if res[section] is None}
    for p in (res.get("processes") or {}).values():
        for figure, value in p.items():
            if value is None:
                why = "cpu_from locust" if p["cpu_from"] == "locust" else "multi-process group"
                out.add(f"processes/*/{figure} ({why})")
    for section in ("hosts", *model.SECTION_FIGURES):
        for entry in (res.get(section) or {}).values():
            out.update(f"{section}/*/{figure}" for figure, value in entry.items() if value is None)
    for section in ("client_sockets", "server_sockets"):
        out.update(
            f"{section}/{figure}" for figure, value in (res.get(section) or {}).items() if value is None
        )
    return out


@pytest.mark.timeout(30)
def test_both_readers_fill_the_same_fields() -> None:
    prom, sampled = _prometheus_shape(), _sampled_shape()
    assert prom["source"] == "prometheus" and sampled["source"] == "sampled"
    assert _fields(prom) == _fields(sampled)
    assert _fields(prom)["processes"] == set(model.PROCESS_FIGURES)
    assert _fields(prom)["hosts"] == set(model.HOST_FIGURES)
    assert _fields(prom)["client_sockets"] == _fields(prom)["server_sockets"] == set(model.SOCKET_FIGURES)
    for section, figures in model.SECTION_FIGURES.items():
        assert _fields(prom)[section] == set(figures), section
    # Each leaves null only what it cannot give.
    assert _nulls(prom) == PROMETHEUS_NULL
    assert _nulls(sampled) == SAMPLED_NULL
    # The same figures, in the same places: a process's runnable share and its most processes, the DB pool,
    # a component whose source failed.
    assert sampled["processes"]["target1/nginx"]["processes_max"] == 2
    assert prom["processes"]["target1/nginx"]["processes_max"] == 2
    assert sampled["processes"]["target1/nginx"]["busiest_one"] is not None
    assert sampled["processes"]["target1/locust-worker-1"]["runnable"] is not None
    assert sampled["db_pool"] == {"target1/app-8001": {"in_use_avg": 2.0, "size": 5.0}}
    assert prom["db_pool"] == {"target1/app-8001": {"in_use_avg": 1.0, "size": 1.0}}
    assert set(sampled["components"]) == {"target1/nginx"}  # its collector failed
    assert set(prom["components"]) == {"target1/postgres", "target1/nginx"}  # `_up` 0, no nginx process
    assert sampled["components"]["target1/nginx"]["source"] == ["loadlab_nginx_up"]


def test_a_sampler_without_collectors_says_what_it_did_not_read() -> None:
    """Sections a sampler has no collector, app or local target for are null, not empty."""
    sampler = Sampler(free_port(), locust=dict, target=dict, interval=0.05, host="h")
    sampler.start()
    res = sampler.stop()
    assert {s for s in res if res[s] is None} == {
        "server_sockets", "postgres", "redis", "nginx", "db_pool", "components"
    }  # fmt: skip
