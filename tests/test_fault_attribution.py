"""A component that goes down mid-step is named, with its down interval, and the step's errors are put down
to it.

The fault is real: a PostgreSQL of this module's own (the session's is shared with other tests) is stopped
for a few seconds while a real app instance serves a small headless Locust run (3 users, loopback), so the
errors are the app's real 503 bodies as Locust records them. The lab exporter and Debian's Prometheus
(scraping every second) watch it; PrometheusWindow reads the window from Prometheus and diagnose() judges
the step. A process restarted between two scrapes shows by its start time. The model's and the
diagnosis's own rules are checked on hand-written figures at the end.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from loadlab.sweep import resource_model as model
from loadlab.sweep.diagnosis import VOCABULARY, attribute_errors, diagnose
from loadlab.sweep.resources import PrometheusWindow
from tests.app_instance import running_app
from tests.servers import PostgresServer, free_port, require, terminate, wait_port

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SCRAPE = 1.0  # seconds
HOST = "data1"  # the inventory name the scrape config gives the exporter
# Prometheus stamps a sample when the scrape starts; the exporter reads its sources a little later.
SLACK = 0.3
# /proc/stat's btime is whole seconds (rounded down): a start time read from /proc is up to 1 s early.
BOOT_TIME_GRAIN = 1.0


class NamedPostgres(PostgresServer):
    """A PostgreSQL whose backends carry a cluster name in their title, as the lab's do
    (`postgres: loadlab: ...`), so its process group holds the postmaster and every backend it forks."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.cluster = f"fault{uuid.uuid4().hex[:8]}"

    def _command(self) -> list[str]:
        return [*super()._command(), "-c", f"cluster_name={self.cluster}"]

    @property
    def group_regex(self) -> str:
        return rf"^(\S*/bin/postgres -D {re.escape(str(self.data))} |postgres: {self.cluster}: )"


@dataclass
class Run:
    """What the module did to real services, and when (unix seconds)."""

    prometheus_url: str
    quiet: tuple[float, float] = (0.0, 0.0)
    outage: tuple[float, float] = (0.0, 0.0)  # the measured window around the outage
    stop_called: float = 0.0  # just before PostgreSQL was told to stop
    stopped: float = 0.0  # its port refused connections
    start_called: float = 0.0
    started: float = 0.0  # its port accepted connections again
    postmaster_started: float = 0.0  # the new postmaster's start time, as psutil reads it
    locust_errors: list[dict] = field(default_factory=list)
    locust_requests: int = 0
    locust_failures: int = 0
    blink: tuple[float, float] = (0.0, 0.0)  # the measured window around the quick restart
    blink_at: float = 0.0
    blinker_started: float = 0.0
    blink_scrapes: list[float] = field(default_factory=list)  # loadlab_processes{group="blinker"} samples

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        response = httpx.get(f"{self.prometheus_url}/api/v1/query", params=params, timeout=10)
        response.raise_for_status()
        return response.json()["data"]["result"]

    def window(self) -> PrometheusWindow:
        return PrometheusWindow(self.prometheus_url, port=0, scrape_interval=SCRAPE)


def _last_scrape(run: Run) -> float:
    """The time of the exporter's newest sample in Prometheus (0 before the first)."""
    try:
        result = run.query('timestamp(loadlab_processes{group="exporter"})')
    except httpx.HTTPError:
        return 0.0
    return float(result[0]["value"][1]) if result else 0.0


def _scraped_after(run: Run, when: float, timeout: float = 30) -> float:
    """Block until the exporter has been scraped after `when`; that scrape's time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (last := _last_scrape(run)) > when:
            return last
        time.sleep(0.02)
    raise RuntimeError(f"no scrape after {when} within {timeout}s")


def _prometheus_config(exporter_port: int) -> str:
    return (
        f"global:\n  scrape_interval: {SCRAPE:g}s\n  scrape_timeout: {SCRAPE:g}s\n"
        "scrape_configs:\n  - job_name: exporter\n    static_configs:\n"
        f'      - targets: ["127.0.0.1:{exporter_port}"]\n        labels: {{host: {HOST}}}\n'
    )


def _locust_failures(prefix: Path) -> tuple[list[dict], int, int]:
    """The run's error lines as a step records them, and its total requests and failures."""
    with open(f"{prefix}_failures.csv", newline="") as f:
        errors = [
            {
                "method": r["Method"],
                "name": r["Name"],
                "error": r["Error"],
                "occurrences": int(r["Occurrences"]),
            }
            for r in csv.DictReader(f)
        ]
    with open(f"{prefix}_stats.csv", newline="") as f:
        total = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    return errors, int(total["Request Count"]), int(total["Failure Count"])


def _blinker(marker: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()", f"{marker}-blink"], stdin=subprocess.PIPE
    )


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def run(redis_server) -> Iterator[Run]:
    """A quiet stretch, then PostgreSQL down for about 4 s under load, then a process restarted between
    two scrapes; every process started here is stopped afterwards, whatever happens."""
    prom = require("prometheus")
    root = Path(tempfile.mkdtemp(prefix="loadlab-fault-"))
    marker = f"loadlab-test-{uuid.uuid4().hex[:12]}"
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        pg_root = Path(tempfile.mkdtemp(prefix="loadlab-fault-pg-"))  # its own: initdb chowns it
        stack.callback(shutil.rmtree, pg_root, ignore_errors=True)
        pg = NamedPostgres(pg_root)
        stack.callback(pg.stop)
        pg.start()
        pg.provision()
        blinkers = [_blinker(marker)]
        stack.callback(lambda: [_stop(p) for p in blinkers])
        app = stack.enter_context(running_app(pg, redis_server, LOADLAB_DB_POOL_TIMEOUT="1"))
        exporter_port, prometheus_port, metrics_port = free_port(), free_port(), free_port()
        config = {
            "listen": f"127.0.0.1:{exporter_port}",
            "ports": [pg.port, app.port],
            "process_groups": {
                "postgres": pg.group_regex,
                f"app-{app.port}": rf"loadlab\.app .*--port {app.port}\b",
                "blinker": rf"\b{marker}-blink$",
            },
            "postgres": {"dsn": pg.monitor_dsn},
            "redis": {"url": redis_server.url},
            "timeout": 0.5,
        }
        (root / "exporter.yml").write_text(yaml.safe_dump(config))
        exporter = subprocess.Popen(
            [str(BIN / "loadlab"), "exporter", "--config", str(root / "exporter.yml")],
            stdout=(root / "exporter.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        stack.callback(terminate, exporter)
        wait_port(exporter_port)
        (root / "prometheus.yml").write_text(_prometheus_config(exporter_port))
        prometheus = subprocess.Popen(
            [prom, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
             f"--web.listen-address=127.0.0.1:{prometheus_port}"],
            stdout=(root / "prometheus.log").open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        stack.callback(terminate, prometheus)
        run = Run(f"http://127.0.0.1:{prometheus_port}")
        first = _scraped_after(run, 0, timeout=60)

        # Quiet: everything up, nothing started.
        _scraped_after(run, first + 2 * SCRAPE)
        q0 = time.time()
        time.sleep(4)
        run.quiet = (q0, time.time())
        _scraped_after(run, run.quiet[1])

        # PostgreSQL down for about 4 s in the middle of a window, under a small load.
        env = {
            **os.environ,
            "LOADLAB_THINK_TIME_SCALE": "0.1",
            "LOCUST_LOADLAB_METRICS_PORT": str(metrics_port),
        }
        env.pop("LOCUST_SKIP_MONKEY_PATCH", None)
        prefix = root / "locust"
        locust = subprocess.Popen(
            [str(BIN / "locust"), "-f", "locustfiles/scaling.py", "--headless", "--host", app.url,
             "-u", "3", "-r", "3", "-t", "18s", "--only-summary", "--csv", str(prefix)],
            cwd=REPO, env=env, stdout=(root / "locust.log").open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        stack.callback(terminate, locust)
        time.sleep(4)
        w0 = time.time()
        time.sleep(2)
        run.stop_called = time.time()
        pg.stop()
        run.stopped = time.time()
        time.sleep(4)
        run.start_called = time.time()
        pg.start()
        run.started = time.time()
        assert pg.proc is not None
        run.postmaster_started = psutil.Process(pg.proc.pid).create_time()
        time.sleep(3)
        run.outage = (w0, time.time())
        locust.wait(timeout=60)
        assert locust.returncode in (0, 1), (root / "locust.log").read_text()[-3000:]
        run.locust_errors, run.locust_requests, run.locust_failures = _locust_failures(prefix)
        _scraped_after(run, run.outage[1])

        # A restart quicker than a scrape, right after one, so no scrape can see the group empty.
        for _ in range(3):
            b0 = time.time()
            time.sleep(2)
            last = _last_scrape(run)
            _scraped_after(run, last, timeout=10)
            run.blink_at = time.time()
            _stop(blinkers[-1])
            blinkers.append(_blinker(marker))
            run.blinker_started = psutil.Process(blinkers[-1].pid).create_time()
            time.sleep(3)
            run.blink = (b0, time.time())
            _scraped_after(run, run.blink[1])
            millis = round((run.blink[1] - run.blink[0]) * 1000)
            rows = run.query(f'loadlab_processes{{group="blinker"}}[{millis}ms]', run.blink[1])
            run.blink_scrapes = [float(v) for _, v in rows[0]["values"]]
            if all(v == 1 for v in run.blink_scrapes):
                break
        yield run


def _step(resources: dict, errors: list[dict] | None = None, requests: int = 100, failures: int = 0) -> dict:
    return {
        "index": 0,
        "users": 3,
        "rps": 20.0,
        "p50_ms": 5,
        "p95_ms": 20,
        "avg_ms": 8.0,
        "requests": requests,
        "failures": failures,
        "fail_ratio": failures / requests if requests else 0.0,
        "errors": errors or [],
        "resources": resources,
    }


@pytest.mark.server
def test_a_quiet_window_names_no_component(run: Run) -> None:
    start, end = run.quiet
    # The exporter did report start times, all from before the window: data, not the lack of it.
    started = {r["metric"]["group"]: float(r["value"][1]) for r in run.query(
        "loadlab_process_start_time_seconds", end
    )}  # fmt: skip
    assert {"postgres", "blinker", "exporter"} <= set(started)
    assert all(t < start for t in started.values())
    window = run.window()
    try:
        res = window.measure(start, end)
    finally:
        window.close()
    assert "components" not in res
    codes, evidence = diagnose(_step(res), [])
    assert "component_down" not in codes  # (a busy machine may show as a full host: not this test's point)


@pytest.mark.server
def test_postgres_down_mid_step_is_named_with_its_interval(run: Run) -> None:
    window = run.window()
    try:
        res = window.measure(*run.outage)
    finally:
        window.close()
    components = res["components"]
    # PostgreSQL alone: the app instance, Redis, the exporter and the other groups stayed up.
    assert set(components) == {f"{HOST}/postgres"}, components
    pg = components[f"{HOST}/postgres"]
    # The first scrape that found it down, and the last, each within one scrape of the real outage.
    assert run.stop_called - SLACK <= pg["down_from"] <= run.stopped + SCRAPE + SLACK
    assert pg["down_to"] is not None
    assert run.start_called - SCRAPE - SLACK <= pg["down_to"] <= run.started + SCRAPE + SLACK
    assert pg["down_s"] == pytest.approx(run.started - run.stop_called, abs=SCRAPE + SLACK)
    # The new postmaster's start, not the backends it forked since: one restart.
    assert len(pg["restarted_at"]) == 1
    assert pg["restarted_at"][0] == pytest.approx(run.postmaster_started, abs=0.011)
    assert run.start_called - BOOT_TIME_GRAIN - SLACK <= pg["restarted_at"][0] <= run.started + SLACK
    assert pg["source"] == [
        "loadlab_postgres_up",
        "loadlab_process_start_time_seconds",
        "loadlab_processes",
    ]


@pytest.mark.server
def test_the_step_names_postgres_and_attributes_the_apps_503s_to_it(run: Run) -> None:
    window = run.window()
    try:
        res = window.measure(*run.outage)
    finally:
        window.close()
    step = _step(res, run.locust_errors, run.locust_requests, run.locust_failures)
    codes, evidence = diagnose(step, [])
    assert "component_down" in codes and "errors" in codes
    assert codes.index("component_down") < codes.index("errors")
    down = evidence["component_down"]
    assert down["component"] == f"{HOST}/postgres" and down["host"] == HOST
    assert down["down_from"] == res["components"][f"{HOST}/postgres"]["down_from"]
    # Locust's own lines, carrying the app's 503 body that says the database failed.
    lines = down["error_lines"]
    assert lines, run.locust_errors
    assert all(line in run.locust_errors for line in lines)
    assert any("503" in line["error"] and "database" in line["error"] for line in lines), lines
    assert evidence["errors"]["attributed_to"] == [f"{HOST}/postgres"]


@pytest.mark.server
def test_a_restart_between_two_scrapes_shows_by_its_start_time(run: Run) -> None:
    assert run.blink_scrapes and all(v == 1 for v in run.blink_scrapes), "a scrape saw the group empty"
    window = run.window()
    try:
        res = window.measure(*run.blink)
    finally:
        window.close()
    assert set(res["components"]) == {f"{HOST}/blinker"}
    blinker = res["components"][f"{HOST}/blinker"]
    assert blinker["down_s"] == 0 and "down_from" not in blinker and "down_to" not in blinker
    assert blinker["restarted_at"] == [pytest.approx(run.blinker_started, abs=0.011)]
    assert run.blink_at - BOOT_TIME_GRAIN - SLACK <= blinker["restarted_at"][0] <= run.blink_at + SLACK
    assert blinker["source"] == ["loadlab_process_start_time_seconds"]
    codes, evidence = diagnose(_step(res), [])
    assert "component_down" in codes and "errors" not in codes
    assert evidence["component_down"]["component"] == f"{HOST}/blinker"
    assert evidence["component_down"]["restarted_at"] == blinker["restarted_at"]


# -- the model's and the diagnosis's rules on hand-written figures -------------------------------------------


def test_a_quiet_window_adds_no_components_section() -> None:
    r = model.Resources("prometheus", 10.0)
    r.add_process("data1", "postgres", 0.1)
    assert r.components == {}
    track = model.ComponentTrack()
    for t in range(100, 111):
        track.scrape(float(t), False, "loadlab_postgres_up")
    track.started(50.0, "loadlab_process_start_time_seconds")  # started before the window: no restart
    assert track.figures(100.0, 110.0, 1.0) is None
    res = r.to_dict()
    assert "components" not in res
    step = _step(res, [{"method": "GET", "name": "/x", "error": "got 503: x", "occurrences": 5}], 100, 5)
    codes, evidence = diagnose(step, [])
    assert codes == ["errors"] and "attributed_to" not in evidence["errors"]


def test_a_component_still_down_at_the_end_has_no_down_to_and_at_most_the_window() -> None:
    track = model.ComponentTrack()
    for t in range(95, 111):  # down since before the window
        track.scrape(float(t), True, "loadlab_processes")
        track.scrape(float(t), True, "loadlab_redis_up")
    figures = track.figures(100.0, 110.0, 1.0)
    assert figures == {
        "down_s": 10.0,  # 11 scrapes in [100, 110], capped to the 10 s window
        "down_from": 100.0,
        "down_to": None,
        "restarted_at": [],
        "source": ["loadlab_processes", "loadlab_redis_up"],
    }


def test_error_lines_go_to_the_component_they_name() -> None:
    components = {
        "data1/postgres": {"down_s": 3.0, "restarted_at": []},
        "target1/app-8002": {"down_s": 2.0, "restarted_at": []},
    }
    db = 'CatchResponseError(\'expected 200, got 503: {"detail":"database unavailable"}\')'
    health = (
        'CatchResponseError(\'expected 200, got 503: {"status":"unavailable","instance":"app-8001",'
        '"db":"down: PoolTimeout","redis":"ok"}\')'
    )
    gateway = "CatchResponseError('expected 201, got 502: <html><center>nginx/1.22.1</center></html>')"
    redis = "CatchResponseError('expected 200, got 503: {&quot;detail&quot;:&quot;redis unavailable&quot;}')"
    missing = "CatchResponseError('expected 404, got 200: {}')"
    lines = [{"error": e, "occurrences": 1} for e in (db, health, gateway, redis, missing)]
    got = attribute_errors({"errors": lines}, components)
    assert [line["error"] for line in got["data1/postgres"]] == [db, health, gateway]
    # nginx's 502 names nginx only as the page's signature: a server failure naming no failed component
    assert [line["error"] for line in got["target1/app-8002"]] == [gateway]
    step = _step({"components": components}, lines, 100, 10)
    codes, evidence = diagnose(step, [])
    assert codes == ["component_down", "errors"]
    assert evidence["component_down"]["component"] == "data1/postgres"  # down longest
    assert set(evidence["component_down"]["components"]) == set(components)
    assert evidence["errors"]["attributed_to"] == ["data1/postgres", "target1/app-8002"]


def test_every_diagnosis_code_is_documented() -> None:
    readme = (REPO / "README.md").read_text()
    listed = re.search(r"in this vocabulary: (.*?) \(each with", readme, re.DOTALL)
    assert listed is not None
    assert re.findall(r"`(\w+)`", listed.group(1)) == list(VOCABULARY)
    assert "| `component_down` |" in readme
