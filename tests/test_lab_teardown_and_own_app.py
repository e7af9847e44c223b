"""The one-host lab's last chapter, after every other lab module: `ansible-playbook playbooks/teardown.yml`
leaves no lab process and keeps the data; the lab comes back on that data — running your own app instead of
the demo (`-i inventory/own-app.yml`: ordersvc of tests/own_app, two instances behind the lab's nginx, on the
lab's PostgreSQL and Redis, its setup command run once, the lab's Locust running its locustfile); then the
same machine as a lab for a service it does not provision (`-i inventory/external.yml`: a one-process
service the test starts, the lab's exporter, Locust and Prometheus beside it). The session's teardown
(tests/lab_fixture.py) stops it; `-e wipe=true` is tested on the multi-host lab's hosts.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from loadlab.dashboards import queries
from loadlab.lab import Lab
from tests.lab_fixture import ROOT, LabSession, lab_processes, run_playbook

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

OWN_APP = ROOT / "inventory" / "own-app.yml"
LOADLAB = Path(sys.executable).with_name("loadlab")


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _database(lab: Lab) -> psycopg.Connection:
    host = lab.group("postgres")[0]
    return psycopg.connect(
        host=host.address,
        port=host.int_var("postgres_port"),
        dbname="loadlab",
        user="loadlab",
        password=lab.secret("postgres_app"),
        autocommit=True,
    )


def _setup_runs(lab: Lab) -> int:
    with _database(lab) as db:
        return db.execute("SELECT count(*) FROM setup_runs").fetchone()[0]


@pytest.fixture(scope="module")
def own(lab: LabSession) -> Lab:
    """The lab torn down (checked) and brought back on its data as ordersvc's lab."""
    mark = f"teardown-{uuid.uuid4().hex[:8]}"
    with _database(lab.lab) as db:
        db.execute("CREATE TABLE IF NOT EXISTS teardown_marks (mark text NOT NULL)")
        db.execute("INSERT INTO teardown_marks VALUES (%s)", (mark,))

    down = run_playbook("playbooks/teardown.yml")
    assert down.returncode == 0, down.tail()
    assert lab_processes() == []
    assert not Path("/run/loadlab/supervisord.pid").exists()
    assert [p for p in (8080, 8001, 5433, 6380, 8089, 9465, 9490) if _accepts(p)] == []
    assert Path("/var/lib/loadlab/postgres/PG_VERSION").is_file()  # data stays without -e wipe=true

    up = run_playbook("lab.yml", inventory=OWN_APP)
    assert up.returncode == 0, up.tail()
    own = Lab.load(OWN_APP)
    with _database(own) as db:
        assert db.execute("SELECT count(*) FROM teardown_marks WHERE mark = %s", (mark,)).fetchone()[0] == 1
    return own


def test_teardown_stops_everything_and_the_lab_comes_back_with_its_data(own: Lab):
    """The fixture did it: here, what came back is healthy."""
    done = subprocess.run(
        [str(LOADLAB), "status", "-i", str(OWN_APP)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_your_app_answers_through_the_labs_nginx_on_the_labs_data_stores(own: Lab):
    created = httpx.post(f"{own.nginx_url}/orders", json={"item": "widget", "qty": 3}, timeout=5)
    assert created.status_code == 201, created.text
    order = httpx.get(f"{own.nginx_url}/orders/{created.json()['id']}", timeout=5)
    assert order.json() == {"id": created.json()["id"], "item": "widget", "qty": 3}
    # Both instances answer behind nginx, each with the instance name the lab gave it.
    seen = {httpx.get(f"{own.nginx_url}/health", timeout=5).json()["instance"] for _ in range(20)}
    assert seen == {"app-8001", "app-8002"}
    assert _setup_runs(own) == 1


def test_status_shows_your_apps_instances(own: Lab):
    done = subprocess.run(
        [str(LOADLAB), "status", "-i", str(OWN_APP)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("app-8001", "app-8002"):
        (row,) = [line for line in done.stdout.splitlines() if f" {name} " in line]
        assert "200 on /health" in row, done.stdout
    assert "app-8003" not in done.stdout


def test_a_lab_sweep_runs_your_locustfile_and_names_your_processes(own: Lab, tmp_path: Path):
    out = tmp_path / "run"
    cmd = [str(LOADLAB), "sweep", "-i", str(OWN_APP), "--users", "4", "--step-time", "15s"]
    cmd += ["--warmup", "3s", "--out", str(out), "--threshold", "fail_ratio<1%"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (step,) = json.loads((out / "summary.json").read_text())["steps"]
    assert step["rps"] > 0 and step["fail_ratio"] == 0.0
    names = {e["name"] for e in step["endpoints"]}
    assert {"/orders", "/orders/{id}", "/work"} <= names, names  # ordersvc's own locustfile ran
    processes = step["resources"]["processes"]
    for instance in ("localhost/app-8001", "localhost/app-8002"):
        assert processes[instance]["cpu"] > 0, sorted(processes)
    assert "localhost/app-8003" not in processes
    assert step["target_cpu"] > 0 and step["resources"]["source"] == "prometheus"


def test_a_rerun_changes_nothing_and_runs_the_setup_command_no_more(own: Lab):
    rerun = run_playbook("lab.yml", inventory=OWN_APP)
    assert rerun.returncode == 0, rerun.tail()
    assert rerun.recap["localhost"]["changed"] == 0, f"a rerun changed: {rerun.changed_tasks}"
    assert _setup_runs(own) == 1


def test_a_half_configured_app_is_refused_naming_the_missing_knob(own: Lab):
    run = run_playbook("lab.yml", "-e", "app_command=", inventory=OWN_APP)
    assert run.returncode != 0
    assert "app_source is set but app_command is not" in run.output, run.tail()


# -- A service the lab does not provision: inventory/external.yml -------------------------------------------

EXTERNAL = ROOT / "inventory" / "external.yml"
SERVICE = ROOT / "tests" / "external_service" / "service.py"
SERVICE_PORT = 8000  # inventory/external.yml's external_target_url


def _supervisor_programs() -> set[str]:
    out = subprocess.run(
        ["supervisorctl", "-c", "/etc/loadlab/supervisord.conf", "status"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {line.split()[0] for line in out.splitlines() if "RUNNING" in line}


def _prometheus(lab: Lab, expr: str, at: float | None = None) -> list[dict]:
    params = {"query": expr, **({"time": at} if at is not None else {})}
    body = httpx.get(f"{lab.prometheus_url}/api/v1/query", params=params, timeout=10).json()
    return body["data"]["result"]


@pytest.fixture(scope="module")
def external(own: Lab) -> Iterator[Lab]:
    """The same machine turned into a lab for a service it does not provision: a one-process service the
    test starts itself (tests/external_service/service.py, outside the lab's supervisor) on loopback, then
    `ansible-playbook -i inventory/external.yml lab.yml` over the running own-app lab."""
    service = subprocess.Popen(
        [sys.executable, str(SERVICE), "--port", str(SERVICE_PORT), "--metrics-port", "8009"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while not _accepts(SERVICE_PORT):
            assert service.poll() is None and time.monotonic() < deadline, "the service did not start"
            time.sleep(0.2)
        up = run_playbook("lab.yml", inventory=EXTERNAL)
        assert up.returncode == 0, up.tail()
        yield Lab.load(EXTERNAL)
    finally:
        service.terminate()
        service.wait(timeout=10)


def test_your_services_host_gets_only_the_labs_exporter_locust_and_prometheus(external: Lab):
    # The own-app lab's nginx, app instances, PostgreSQL and Redis were stopped: this host left those groups.
    programs = _supervisor_programs()
    lab_side = {"exporter", "locust-master", "prometheus"}
    workers = programs - lab_side
    assert lab_side <= programs and workers and all(p.startswith("locust-worker-") for p in workers), programs
    assert [p for p in (8080, 8001, 8002, 5433, 6380) if _accepts(p)] == []
    done = subprocess.run(
        [str(LOADLAB), "status", "-i", str(EXTERNAL)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = [line for line in done.stdout.splitlines() if " target " in line]
    assert "127.0.0.1:8000" in row and "200 on /health" in row, done.stdout
    # Prometheus knows the service's process group as the target, from the exporter's config.
    deadline = time.monotonic() + 30
    while not (found := _prometheus(external, 'loadlab_process_group_info{group="svc"}')):
        assert time.monotonic() < deadline, "no loadlab_process_group_info for svc in Prometheus"
        time.sleep(1)
    assert [(r["metric"]["host"], r["metric"]["role"]) for r in found] == [("localhost", "target")]
    # and scrapes the service's own /metrics (external_metrics_path) as job service, on its host
    deadline = time.monotonic() + 30
    while not (up := _prometheus(external, 'up{job="service"} == 1')):
        assert time.monotonic() < deadline, "the service's own /metrics is not up in Prometheus"
        time.sleep(1)
    assert [r["metric"]["host"] for r in up] == ["localhost"]


def test_a_sweep_loads_your_service_and_names_its_one_process_as_what_gave_out(external: Lab, tmp_path: Path):
    out = tmp_path / "run"
    cmd = [str(LOADLAB), "sweep", "-i", str(EXTERNAL), "--users", "1,4", "--step-time", "15s"]
    cmd += ["--warmup", "3s", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["target"] == f"http://127.0.0.1:{SERVICE_PORT}"
    for step in summary["steps"]:
        res = step["resources"]
        assert res["source"] == "prometheus"
        assert res["processes"]["localhost/svc"]["role"] == "target"
        assert res["processes"]["localhost/svc"]["cpu"] > 0.2, res["processes"]
        # its sockets: one per user, accepted by the service's host and opened by the generator's
        assert res["server_sockets"]["hosts"] == {"localhost": step["users"]}, res["server_sockets"]
        assert step["client_sockets"] == step["users"]
        assert step["target_cpu_busiest"]["process"] == "localhost/svc"
        # The dashboards' target CPU (groups selected by role) over the step's window is the step's.
        window = f"{round(step['window_end'] - step['window_start'])}s"
        expr = queries.target_cpu(window).replace("$host", ".+")
        (row,) = _prometheus(external, expr, step["window_end"])
        assert float(row["value"][1]) == pytest.approx(step["target_cpu"], abs=0.03), (expr, row)
        # The service's own count of what it answered agrees with Locust's (Prometheus extrapolates a
        # counter's increase to the window's edges from a few scrapes: within a quarter).
        own = f"sum(increase(svc_work_requests_total[{window}]))"
        (row,) = _prometheus(external, own, step["window_end"])
        assert float(row["value"][1]) == pytest.approx(step["requests"], rel=0.25), (row, step["requests"])
    last = summary["steps"][-1]
    assert "target_cpu_bound" in last["diagnosis"], last["diagnosis"]
    evidence = last["diagnosis_evidence"]["target_cpu_bound"]
    assert evidence["process"] == "localhost/svc", last["diagnosis_evidence"]


def test_the_sweep_loads_your_service_and_nothing_else(external: Lab, tmp_path: Path):
    locustfile = ROOT / "tests" / "external_service" / "locustfiles" / "work.py"
    cmd = [str(LOADLAB), "sweep", "-i", str(EXTERNAL), "--host", "http://127.0.0.1:8080"]
    cmd += ["-f", str(locustfile), "--users", "1", "--out", str(tmp_path / "refused")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "refusing to load http://127.0.0.1:8080" in line and "http://127.0.0.1:8000" in line, line
    assert not (tmp_path / "refused").exists()


def test_a_rerun_for_your_service_changes_nothing(external: Lab):
    rerun = run_playbook("lab.yml", inventory=EXTERNAL)
    assert rerun.returncode == 0, rerun.tail()
    assert rerun.recap["localhost"]["changed"] == 0, f"a rerun changed: {rerun.changed_tasks}"


def test_an_external_group_without_its_url_is_refused_naming_the_knob(external: Lab):
    run = run_playbook("lab.yml", "-e", "external_target_url=", inventory=EXTERNAL)
    assert run.returncode != 0
    assert "names no external_target_url" in run.output, run.tail()
