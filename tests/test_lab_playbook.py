"""The lab on this machine, brought up by `ansible-playbook lab.yml`: idempotent, healthy, and carrying load.

The load here is small on purpose (20 users for 15 s on two shared cores): it proves the plumbing - one
socket per user, every instance reached, no failures - not the stack's capacity.
"""

from __future__ import annotations

import os
import re
import socket
import statistics
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from loadlab.cli import main
from tests.lab_fixture import ROOT, SUPERVISORCTL, VENV_BIN, run_playbook
from tests.servers import established_toward

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

INVENTORY = ROOT / "inventory" / "local.yml"
APP_PORTS = (8001, 8002, 8003)


def _programs() -> dict[str, str]:
    out = subprocess.run([*SUPERVISORCTL, "status"], capture_output=True, text=True, check=False)
    return {line.split()[0]: line.split()[1] for line in out.stdout.splitlines() if line.strip()}


def _expected_programs() -> set[str]:
    workers = os.cpu_count() or 1  # locust_workers defaults to the host's cores
    return {
        "nginx",
        *(f"app-{p}" for p in APP_PORTS),
        "postgres",
        "redis",
        "exporter",
        "prometheus",
        "locust-master",
        *(f"locust-worker-{n}" for n in range(1, workers + 1)),
    }


def _status() -> tuple[int, str]:
    result = CliRunner().invoke(main, ["status", "-i", str(INVENTORY)])
    return result.exit_code, result.output


def _wait_healthy(timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    code, output = _status()
    while code != 0 and time.monotonic() < deadline:
        time.sleep(2)
        code, output = _status()
    assert code == 0, output


def _user_requests(port: int) -> float:
    """Requests an app instance answered on /users routes (not health checks or scrapes)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    pattern = r'^loadlab_app_requests_total\{[^}]*handler="/users[^"]*"[^}]*\} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def test_every_lab_process_runs_under_the_labs_supervisord(lab):
    programs = _programs()
    assert set(programs) == _expected_programs()
    assert {state for state in programs.values()} == {"RUNNING"}


def test_status_lists_every_service_healthy(lab):
    _wait_healthy()
    code, output = _status()
    assert code == 0, output
    for name in ("nginx", "nginx-status", "app-8001", "app-8003", "postgres", "redis", "locust-master"):
        assert re.search(rf"^\W*{re.escape(name)}\s.*\sok\s", output, re.M), output
    for name in ("locust-metrics", "exporter", "prometheus", "supervisor"):
        assert re.search(rf"^\W*{name}\s.*\sok\s", output, re.M), output


def test_status_exits_1_and_names_a_stopped_service(lab):
    subprocess.run([*SUPERVISORCTL, "stop", "redis"], check=True, capture_output=True)
    try:
        code, output = _status()
        assert code == 1, output
        assert re.search(r"^\W*redis\s.*\sDOWN\s", output, re.M), output
        assert "redis STOPPED" in output, output  # the supervisor row says which program is down
    finally:
        subprocess.run([*SUPERVISORCTL, "start", "redis"], check=True, capture_output=True)
    _wait_healthy()


def test_nginx_balances_over_every_instance(lab):
    seen = set()
    for _ in range(30):
        response = httpx.get(f"{lab.lab.nginx_url}/health", timeout=5)
        assert response.status_code == 200
        seen.add(response.headers["x-upstream"])
    assert seen == {f"127.0.0.1:{p}" for p in APP_PORTS}


def test_load_through_nginx_holds_one_socket_per_user_and_reaches_every_instance(lab, tmp_path):
    _wait_healthy()
    before = {p: _user_requests(p) for p in APP_PORTS}
    log = (tmp_path / "locust.log").open("w")
    locust = subprocess.Popen(
        [
            str(VENV_BIN / "locust"),
            "-f",
            str(ROOT / "locustfiles" / "scaling.py"),
            "--headless",
            "--users",
            "20",
            "--spawn-rate",
            "20",
            "--run-time",
            "15s",
            "--host",
            lab.lab.nginx_url,
            "--loadlab-metrics-port",
            "0",  # the lab's master already serves the plugin's port
            "--csv",
            str(tmp_path / "run"),
            "--only-summary",
        ],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    started = time.monotonic()
    sockets: list[int] = []
    try:
        while locust.poll() is None:
            if 4 <= time.monotonic() - started <= 14:  # every user started and past its first request
                sockets.append(established_toward(8080))
            time.sleep(0.5)
    finally:
        if locust.poll() is None:
            locust.kill()
        log.close()
    output = (tmp_path / "locust.log").read_text()
    assert locust.returncode == 0, output[-3000:]

    stats = (tmp_path / "run_stats.csv").read_text().splitlines()
    header = stats[0].split(",")
    total = dict(zip(header, stats[-1].split(","), strict=True))
    assert total["Name"] == "Aggregated"
    assert int(total["Request Count"]) > 50
    assert int(total["Failure Count"]) == 0, output[-3000:]

    assert sockets, "the load ended before any socket sample"
    assert 18 <= statistics.median(sockets) <= 22, f"established sockets toward nginx: {sockets}"

    after = {p: _user_requests(p) for p in APP_PORTS}
    assert all(after[p] > before[p] for p in APP_PORTS), f"/users requests per instance: {before} -> {after}"


def test_exporter_config_names_every_lab_process_and_port(lab):
    path = Path("/etc/loadlab/exporter.yml")
    assert path.stat().st_mode & 0o777 == 0o600  # it holds passwords
    config = yaml.safe_load(path.read_text())
    assert config["listen"] == "127.0.0.1:9465"
    assert {8080, *APP_PORTS, 5433, 6380, 5557, 9466} <= set(config["ports"])
    assert set(config["process_groups"]) == _expected_programs()
    assert "user=loadlab_monitor" in config["postgres"]["dsn"]
    assert config["redis"]["url"].endswith("@127.0.0.1:6380/0")
    assert config["nginx"]["status_url"] == "http://127.0.0.1:8088/stub_status"
    ps = subprocess.run(["ps", "-ww", "-eo", "args="], capture_output=True, text=True, check=True)
    commands = ps.stdout
    for group, pattern in config["process_groups"].items():
        assert re.search(pattern, commands, re.M), f"no process matches {group}: {pattern}"


def test_prometheus_scrapes_every_target_with_a_host_label(lab):
    deadline = time.monotonic() + 60
    while True:
        body = httpx.get(f"{lab.lab.prometheus_url}/api/v1/targets?state=active", timeout=5).json()
        targets = body["data"]["activeTargets"]
        if all(t["health"] == "up" for t in targets) or time.monotonic() > deadline:
            break
        time.sleep(2)
    jobs = sorted((t["labels"]["job"], t["labels"]["instance"]) for t in targets)
    assert jobs == sorted(
        [("app", f"127.0.0.1:{p}") for p in APP_PORTS]
        + [("exporter", "127.0.0.1:9465"), ("locust", "127.0.0.1:9466"), ("prometheus", "127.0.0.1:9490")]
    )
    assert {t["labels"]["host"] for t in targets} == {"localhost"}
    assert [t["scrapeUrl"] for t in targets if t["health"] != "up"] == []


def test_secrets_are_private_and_reused(lab):
    folder = ROOT / "secrets"
    assert folder.stat().st_mode & 0o777 == 0o700
    for name in ("postgres_app", "postgres_monitor", "redis"):
        path = folder / name
        assert path.stat().st_mode & 0o777 == 0o600
        assert len(path.read_text().strip()) == 32
    # The app logs in with the generated password: the lab would not be healthy otherwise.
    assert httpx.get(f"{lab.lab.nginx_url}/health", timeout=5).json()["db"] == "ok"


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_preflight_refuses_a_port_taken_by_something_else():
    with _listener() as taken:
        port = taken.getsockname()[1]
        run = run_playbook("lab.yml", "-e", f"prometheus_port={port}")
    assert run.returncode != 0
    assert f"port {port} (prometheus) is taken by pid {os.getpid()}" in " ".join(run.output.split())


def test_preflight_refuses_a_knob_out_of_range():
    run = run_playbook("lab.yml", "-e", "app_instances=0")
    assert run.returncode != 0
    assert "app_instances must be 1-64" in " ".join(run.output.split())


def test_preflight_names_a_missing_group(tmp_path):
    folder = tmp_path / "inventory"
    folder.mkdir()
    (folder / "group_vars").symlink_to(ROOT / "inventory" / "group_vars")
    inventory = folder / "lab.yml"
    local = yaml.safe_load((ROOT / "inventory" / "local.yml").read_text())
    del local["all"]["children"]["monitor"]
    inventory.write_text(yaml.safe_dump(local))
    run = run_playbook("lab.yml", inventory=inventory)
    assert run.returncode != 0
    assert "The inventory has no host in group `monitor`" in " ".join(run.output.split())
    assert not (tmp_path / "secrets").exists()  # nothing was generated or changed
