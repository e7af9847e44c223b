"""`loadlab collect` and `loadlab status` for an inventory whose host is reached over SSH (a real sshd on
loopback, a real supervisord and nginx behind it) and one host that cannot be reached at all."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from loadlab.cli import main
from loadlab.lab import REQUIRED_GROUPS, STACK_GROUPS
from tests import ssh_server
from tests.servers import NginxStub, free_port, require, terminate
from tests.ssh_server import SshServer

sshd = ssh_server.sshd  # the fixture
GROUPS = STACK_GROUPS + REQUIRED_GROUPS  # every group of a lab with its own stack


@dataclass(frozen=True)
class RemoteBox:
    """A lab host reached over SSH: its etc and log folders, and its inventory beside a ghost host."""

    inventory: Path
    etc: Path
    logs: Path
    nginx: NginxStub


def _supervisord(etc: Path, logs: Path) -> subprocess.Popen:
    supervisord, supervisorctl = require("supervisord"), require("supervisorctl")
    sock = etc / "supervisor.sock"
    (etc / "supervisord.conf").write_text(
        f"[unix_http_server]\nfile={sock}\n"
        f"[supervisord]\nlogfile={logs}/supervisord.log\npidfile={etc}/supervisord.pid\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        f"[supervisorctl]\nserverurl=unix://{sock}\n"
        "[program:sleeper]\ncommand=sleep 600\nstartsecs=0\n"
    )
    proc = subprocess.Popen([supervisord, "-n", "-c", str(etc / "supervisord.conf")], start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        out = subprocess.run(
            [supervisorctl, "-c", str(etc / "supervisord.conf"), "status"], capture_output=True, text=True
        )
        if "RUNNING" in out.stdout:
            return proc
        time.sleep(0.2)
    terminate(proc)
    raise RuntimeError("supervisord did not start its program")


@pytest.fixture(scope="module")
def box(sshd: SshServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteBox]:
    for program in ("supervisord", "supervisorctl"):  # skip before nginx starts, not after
        require(program)
    root = tmp_path_factory.mktemp("box")
    etc, logs = root / "etc", root / "log"
    for folder in (etc / "nginx", etc / "redis", etc / "postgres", logs):
        folder.mkdir(parents=True)
    (etc / "nginx" / "nginx.conf").write_text("worker_processes 2;\n")
    (etc / "redis" / "redis.conf").write_text("port 6380\nrequirepass s3cret-pass\nmaxclients 500\n")
    (etc / "postgres" / "postgresql.conf").write_text("max_connections = 100\n")
    (etc / "postgres" / "pg_hba.conf").write_text("host loadlab loadlab 127.0.0.1/32 scram-sha-256\n")
    nginx = NginxStub(root / "nginx")
    nginx.start()
    supervisord = _supervisord(etc, logs)
    groups = "\n".join(
        f"    {g}: {{hosts: {{box: {{}}{', ghost: {}' if g == 'loadgen' else ''}}}}}" for g in GROUPS
    )
    inventory = root / "inventory" / "hosts.yml"
    inventory.parent.mkdir()
    inventory.write_text(
        "all:\n"
        "  hosts:\n"
        f"    box: {{{sshd.inventory_vars()}, lab_address: 127.0.0.1, loadlab_etc_dir: {etc}, "
        # A free port for the master's web API: nothing answers there, whatever else runs on this machine.
        f"loadlab_log_dir: {logs}, nginx_status_port: {nginx.port}, locust_web_port: {free_port()}}}\n"
        f"    ghost: {{ansible_host: 127.0.0.1, ansible_port: {free_port()}, ansible_user: {sshd.user}, "
        f"ansible_ssh_private_key_file: {sshd.key}, lab_address: 127.0.0.1}}\n"
        "  children:\n"
        f"{groups}\n"
    )
    try:
        yield RemoteBox(inventory, etc, logs, nginx)
    finally:
        terminate(supervisord)
        nginx.stop()


def _stamp(ts: float) -> str:
    """Locust's log stamp, in this machine's local time (which the host shares)."""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]


def _run_dir(tmp_path: Path, inventory: Path, now: float) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    started = datetime.fromtimestamp(now - 600).astimezone().isoformat(timespec="seconds")
    (run / "run.json").write_text(
        json.dumps(
            {
                "id": "run",
                "mode": "lab",
                "started_at": started,
                "spec": {"name": "remote", "users": [10]},
                "inventory": {"path": str(inventory)},
            }
        )
    )
    step = {
        "index": 0,
        "users": 10,
        "rps": 50.0,
        "p95_ms": 20,
        "window_start": now - 300,
        "window_end": now - 240,
    }
    (run / "steps.jsonl").write_text(json.dumps(step) + "\n")
    return run


@pytest.mark.server
def test_collect_fetches_the_reachable_host_and_records_the_unreachable_one(
    box: RemoteBox, tmp_path: Path
) -> None:
    now = time.time()
    run = _run_dir(tmp_path, box.inventory, now)
    (box.logs / "locust-master.log").write_text(
        f"[{_stamp(now - 900)}] box/INFO/locust.main: before the run\n"
        f"[{_stamp(now - 280)}] box/INFO/locust.runners: inside the run\n"
        "Traceback (most recent call last): belongs to the line above\n"
        f"[{_stamp(now + 600)}] box/INFO/locust.main: after the run\n"
        "  continuation of the line after the run\n"
    )
    (box.logs / "app-8001.log").write_text("".join(f'INFO: "GET /users/{i}" 200\n' for i in range(300)))
    old = box.logs / "old.log"
    old.write_text("from last week\n")
    os.utime(old, (now - 7 * 86400, now - 7 * 86400))

    result = CliRunner().invoke(main, ["collect", str(run)])

    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output.replace("Traceback (most recent call last): belongs", "")
    assert "collect ghost: not reachable" in result.output
    assert "not reachable: ghost" in result.output
    index = json.loads((run / "hosts.json").read_text())
    box_entry, ghost = index["hosts"]["box"], index["hosts"]["ghost"]
    assert box_entry["reachable"] is True and box_entry["error"] is None
    assert box_entry["groups"] == sorted(GROUPS)
    assert box_entry["cores"] == len(os.sched_getaffinity(0))
    assert box_entry["memory_bytes"] == psutil.virtual_memory().total
    assert box_entry["kernel"] == platform.release()
    assert box_entry["folder"] == "hosts/box"
    assert ghost["reachable"] is False and "host ghost" in ghost["error"]
    assert json.loads((run / "hosts" / "ghost" / "host.json").read_text())["reachable"] is False

    folder = run / "hosts" / "box"
    assert "sleeper" in (folder / "supervisor.txt").read_text()
    assert "RUNNING" in (folder / "supervisor.txt").read_text()
    assert "TCP:" in (folder / "ss.txt").read_text()
    assert "sockets: used" in (folder / "sockstat.txt").read_text()
    assert "net.core.somaxconn" in (folder / "sysctl.txt").read_text()
    assert (folder / "configs" / "nginx" / "nginx.conf").read_text() == "worker_processes 2;\n"
    redis_conf = (folder / "configs" / "redis" / "redis.conf").read_text()
    assert "maxclients 500" in redis_conf and "requirepass <redacted>" in redis_conf
    assert "s3cret" not in redis_conf
    assert (folder / "configs" / "postgres" / "pg_hba.conf").exists()

    locust = (folder / "logs" / "locust-master.log").read_text()
    assert "inside the run" in locust and "belongs to the line above" in locust
    assert "before the run" not in locust and "after the run" not in locust
    assert "continuation" not in locust
    app = (folder / "logs" / "app-8001.log").read_text().splitlines()
    assert app[-1] == 'INFO: "GET /users/299" 200' and len(app) == 200
    assert not (folder / "logs" / "old.log").exists()
    detail = json.loads((folder / "host.json").read_text())
    assert detail["logs"]["locust-master.log"]["cut"] == "time"
    assert detail["logs"]["app-8001.log"]["cut"] == "tail"


@pytest.mark.server
def test_the_report_shows_the_collected_hosts_with_links(box: RemoteBox, tmp_path: Path) -> None:
    run = _run_dir(tmp_path, box.inventory, time.time())
    before = CliRunner().invoke(main, ["report", str(run), "--no-panels"])
    assert before.exit_code == 0, before.output
    assert "Not collected" in (run / "report.html").read_text()
    assert CliRunner().invoke(main, ["collect", str(run)]).exit_code == 0
    assert CliRunner().invoke(main, ["report", str(run), "--no-panels"]).exit_code == 0
    page = (run / "report.html").read_text()
    assert '<a href="hosts/box/">box</a>' in page
    assert platform.release() in page
    assert "not reachable over SSH" in page  # the ghost's row says why it has no folder


def test_collect_without_an_inventory_is_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(
        json.dumps({"id": "run", "mode": "standalone", "inventory": {"path": None}})
    )
    result = CliRunner().invoke(main, ["collect", str(run)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {run}/run.json names no inventory (a standalone run): give -i INVENTORY"
    ]


def _rows(output: str) -> dict[str, str]:
    """service@host -> its row's text, with the lines of a wrapped row joined."""
    rows: dict[str, str] = {}
    last: str | None = None
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) != 5:
            continue
        if cells[0] and cells[1]:
            last = f"{cells[0]}@{cells[1]}"
            rows[last] = " | ".join(cells)
        elif last is not None:
            rows[last] += " " + " ".join(c for c in cells if c)
    return rows


@pytest.mark.server
def test_status_checks_a_remote_host_over_ssh(box: RemoteBox) -> None:
    result = CliRunner().invoke(main, ["status", "-i", str(box.inventory)], terminal_width=250)
    assert result.exit_code == 1, result.output  # ghost and the services not running here are down
    assert "Traceback" not in result.output
    rows = _rows(result.output)
    assert "| ok |" in rows["supervisor@box"] and "1 programs running" in rows["supervisor@box"]
    nginx_status = rows["nginx-status@box"]  # bound to the host's loopback: checked through SSH
    assert "| ok |" in nginx_status and "active" in nginx_status and "(through SSH)" in nginx_status
    assert (
        "| DOWN |" in rows["locust-master@box"] and "nothing accepts connections" in rows["locust-master@box"]
    )
    for row in (rows["supervisor@ghost"], rows["exporter@ghost"]):
        assert "| DOWN |" in row and "host ghost" in row and "not reachable over SSH" in row
        assert "refused" in row
