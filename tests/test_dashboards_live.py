"""Every dashboard query against a real Prometheus scraping real sources under a small load, and the PNGs.

The sources are the lab's own: `loadlab exporter` reading a real PostgreSQL, Redis and nginx (with their
process groups, the data stores, beside the app instance's: the target), one real app instance, and a
headless Locust run that loads the lab's metrics plugin. Prometheus is Debian's,
in a temp dir on a free port, scraping every second. The load is tiny (3 users for about 12 s, loopback).
A query that parses but returns nothing here is a bug in the query or in the exporter.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from PIL import Image

from loadlab.dashboards import DASHBOARDS, load
from loadlab.dashboards.render import (
    SERIES_KEY,
    Step,
    builtin_variables,
    dashboard_variables,
    render_panels,
    substitute,
)
from loadlab.errors import UserError
from tests.app_instance import running_app
from tests.servers import free_port, terminate, wait_port

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
SCRAPE = 1.0  # seconds


def panels(name: str) -> list[dict]:
    return [p for p in load(name)["panels"] if p["type"] != "row"]


# (dashboard, panel) pairs, from the committed JSON: the very queries Grafana gets.
PANELS = [(name, panel) for name in DASHBOARDS for panel in panels(name)]
PANEL_IDS = [f"{name}/{panel['title']}" for name, panel in PANELS]


@dataclass
class MiniLab:
    """A Prometheus with data from one short load, and what the queries need to find it."""

    prometheus_url: str
    start: float
    end: float
    variables: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen] = field(default_factory=list)

    def get(self, path: str, **params) -> httpx.Response:
        return httpx.get(f"{self.prometheus_url}{path}", params=params, timeout=30)


def _prometheus_config(targets: dict[str, int]) -> str:
    jobs = "".join(
        f"""
  - job_name: {job}
    static_configs:
      - targets: ["127.0.0.1:{port}"]
        labels: {{host: localhost}}"""
        for job, port in targets.items()
    )
    return f"global:\n  scrape_interval: {SCRAPE:g}s\n  scrape_timeout: {SCRAPE:g}s\nscrape_configs:{jobs}\n"


def _wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"Prometheus at {url} not ready after {timeout}s")


def _leave_time_wait(port: int) -> None:
    """TIME_WAIT at both ends of nginx's port: nginx closes first on `Connection: close`, we on a connect."""
    for _ in range(3):
        httpx.get(f"http://127.0.0.1:{port}/", headers={"Connection": "close"}, timeout=5)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass


def _scraped_after(lab: MiniLab, when: float, timeout: float = 20) -> None:
    """Block until Prometheus holds an exporter sample newer than `when`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = lab.get("/api/v1/query", query='timestamp(up{job="exporter"})').json()["data"]["result"]
        if result and float(result[0]["value"][1]) > when:
            return
        time.sleep(0.2)
    raise RuntimeError(f"no scrape after {when} within {timeout}s")


@pytest.fixture(scope="module")
def mini_lab(postgres_server, redis_server, nginx_stub) -> Iterator[MiniLab]:
    root = Path(tempfile.mkdtemp(prefix="loadlab-dash-"))
    exporter_port, metrics_port, prometheus_port = free_port(), free_port(), free_port()
    with running_app(postgres_server, redis_server) as app:
        lab = MiniLab(f"http://127.0.0.1:{prometheus_port}", 0.0, 0.0, {"port": str(app.port)})
        try:
            ports = [app.port, nginx_stub.port, postgres_server.port, redis_server.port, metrics_port]
            pg_data = re.escape(str(postgres_server.data))  # the postmaster's command line names its cluster
            lab.procs.append(
                subprocess.Popen(
                    [str(BIN / "loadlab"), "exporter", "--listen", f"127.0.0.1:{exporter_port}",
                     "--ports", ",".join(map(str, ports)),
                     "--postgres-dsn", postgres_server.monitor_dsn,
                     "--redis-url", redis_server.url,
                     "--nginx-status-url", nginx_stub.status_url,
                     "--process-group", rf"app-{app.port}=loadlab\.app .*--port {app.port}\b",
                     "--process-group", rf"postgres=\bpostgres -D {pg_data}( |$)",
                     "--process-group", rf"redis=\bredis-server \S*:{redis_server.port}\b",
                     "--process-group", r"locust-local=\blocust\b.*--headless\b"],
                    stdout=(root / "exporter.log").open("w"),
                    stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
            wait_port(exporter_port)
            targets = {
                "exporter": exporter_port,
                "app": app.port,
                "locust": metrics_port,
                "prometheus": prometheus_port,
            }
            (root / "prometheus.yml").write_text(_prometheus_config(targets))
            lab.procs.append(
                subprocess.Popen(
                    [PROMETHEUS, f"--config.file={root / 'prometheus.yml'}",
                     f"--storage.tsdb.path={root / 'data'}",
                     f"--web.listen-address=127.0.0.1:{prometheus_port}"],
                    stdout=(root / "prometheus.log").open("w"),
                    stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
            _wait_ready(lab.prometheus_url)
            _scraped_after(lab, 0)  # Prometheus applies new targets within 5 s; start the clock after that
            lab.start = time.time()
            _leave_time_wait(nginx_stub.port)
            env = {
                **os.environ,
                "LOADLAB_THINK_TIME_SCALE": "0.1",
                "LOCUST_LOADLAB_METRICS_PORT": str(metrics_port),
            }
            env.pop("LOCUST_SKIP_MONKEY_PATCH", None)
            locust = subprocess.run(
                [str(BIN / "locust"), "-f", "locustfiles/scaling.py", "--headless", "--host", app.url,
                 "-u", "3", "-r", "3", "-t", "12s", "--only-summary"],
                cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert locust.returncode in (0, 1), locust.stdout + locust.stderr
            lab.end = time.time()
            _scraped_after(lab, lab.end)
            yield lab
        finally:
            for proc in reversed(lab.procs):
                terminate(proc)
            shutil.rmtree(root, ignore_errors=True)


def _queries(name: str, panel: dict, lab: MiniLab) -> list[str]:
    """The panel's PromQL as Grafana sends it with "All" hosts and instances, over the load's window."""
    duration = lab.end - lab.start
    step = 1.0 if panel["type"] == "timeseries" else SCRAPE
    variables = {
        **dashboard_variables(load(name), lab.variables),
        **builtin_variables(duration, step, SCRAPE),
    }
    return [substitute(t["expr"], variables) for t in panel["targets"]]


def test_a_query_prometheus_cannot_parse_is_refused(mini_lab):
    """The parse check below means something: Prometheus answers 400 to broken PromQL."""
    response = mini_lab.get("/api/v1/query", query="sum(rate(loadlab_locust_requests_total[5s])")
    assert response.status_code == 400
    assert response.json()["errorType"] == "bad_data"


@pytest.mark.parametrize(("name", "panel"), PANELS, ids=PANEL_IDS)
def test_panel_queries_parse_and_return_data_under_load(mini_lab, name, panel):
    for query in _queries(name, panel, mini_lab):
        if panel["type"] == "stat":
            response = mini_lab.get("/api/v1/query", query=query, time=mini_lab.end)
        else:
            response = mini_lab.get(
                "/api/v1/query_range", query=query, start=mini_lab.start, end=mini_lab.end, step=1
            )
        assert response.status_code == 200, f"{query}\n{response.text}"
        result = response.json()["data"]["result"]
        assert result, f"no data for {query}"


@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_variable_queries_select_series(mini_lab, name):
    """The host and instance pickers list values: their label_values() selectors match series."""
    for var in load(name)["templating"]["list"]:
        if var["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"])
        assert match, var["query"]
        selector = match.group(1).replace("$host", ".*")
        response = mini_lab.get("/api/v1/series", **{"match[]": selector})
        assert response.status_code == 200, response.text
        assert any(match.group(2) in s for s in response.json()["data"]), f"{var['name']}: {selector}"


def _series_drawn(path: Path) -> int:
    with Image.open(path) as image:
        return int(image.text[SERIES_KEY])


@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_render_draws_every_panel_with_data(mini_lab, name, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"png-{name}")
    paths = render_panels(
        mini_lab.prometheus_url,
        mini_lab.start,
        mini_lab.end,
        out,
        dashboard=name,
        variables=mini_lab.variables,
        scrape_interval=SCRAPE,
    )
    assert [p.name for p in paths] == sorted(p.name for p in out.glob("*.png"))
    assert len(paths) == len(panels(name))
    empty = [p.name for p in paths if _series_drawn(p) == 0]
    assert not empty, f"panels rendered without data: {empty}"


def test_render_shows_sweep_steps_as_one_bar_each(mini_lab, tmp_path):
    middle = (mini_lab.start + mini_lab.end) / 2
    steps = [Step(mini_lab.start, middle, "step 1"), Step(middle, mini_lab.end, "step 2")]
    paths = render_panels(
        mini_lab.prometheus_url,
        mini_lab.start,
        mini_lab.end,
        tmp_path,
        dashboard="sweep",
        variables=mini_lab.variables,
        steps=steps,
        scrape_interval=SCRAPE,
    )
    assert len(paths) == len(panels("sweep"))
    assert all(_series_drawn(p) > 0 for p in paths)


def test_render_says_in_one_line_when_prometheus_is_down(tmp_path):
    port = free_port()
    with pytest.raises(UserError, match=f"cannot reach Prometheus at http://127.0.0.1:{port}"):
        render_panels(f"http://127.0.0.1:{port}", 0, 60, tmp_path, dashboard="sockets", timeout=2)
