"""The one-host lab's last chapter, after every other lab module: `ansible-playbook playbooks/teardown.yml`
leaves no lab process and keeps the data; the lab comes back on that data — running your own app instead of
the demo (`-i inventory/own-app.yml`: ordersvc of tests/own_app, two instances behind the lab's nginx, on the
lab's PostgreSQL and Redis, its setup command run once, the lab's Locust running its locustfile). The
session's teardown (tests/lab_fixture.py) stops it; `-e wipe=true` is tested on the multi-host lab's hosts.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

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
