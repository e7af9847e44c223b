"""`loadlab status`: every lab service with its address and whether it answers; exit 0 only when all do."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import click
import httpx
from rich.table import Table

from loadlab.console import UserError, console
from loadlab.lab import Host, Lab, Service, ansible_tool, project_dir

TIMEOUT = 3.0
"""Seconds one check may take: a service slower than this to answer a health probe is not healthy."""


@dataclass(frozen=True)
class Health:
    """What one check found."""

    healthy: bool
    detail: str


# host name -> program name -> state (RUNNING, FATAL, ...); a str instead says why it could not be read.
Programs = Mapping[str, str] | str


def supervisor_programs(lab: Lab, host: Host) -> Programs:
    """The lab supervisord's programs on a host: directly here, through Ansible on other hosts."""
    conf = f"{host.var('loadlab_etc_dir')}/supervisord.conf"
    if host.local:
        try:
            cmd = ["supervisorctl", "-c", conf, "status"]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        except FileNotFoundError:
            return "supervisorctl is not installed"
        except subprocess.TimeoutExpired:
            return "supervisorctl did not answer"
        stdout = out.stdout
    else:
        stdout = _remote_supervisor_status(lab, host, conf)
        if stdout is None:
            return "not reachable through Ansible"
    return _parse_supervisor_status(stdout)


def _parse_supervisor_status(stdout: str) -> Programs:
    programs: dict[str, str] = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith(("unix://", "Error", "error")):
            programs[parts[0]] = parts[1]
    if not programs:
        first = stdout.strip().splitlines()[0] if stdout.strip() else "no programs"
        return "supervisord is not running" if "no such file" in first or "refused" in first else first
    return programs


def _remote_supervisor_status(lab: Lab, host: Host, conf: str) -> str | None:
    env = dict(os.environ, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
    try:
        out = subprocess.run(
            [
                ansible_tool("ansible"),
                host.name,
                "-i",
                str(lab.inventory.resolve()),
                "-m",
                "ansible.builtin.command",
                "-a",
                f"supervisorctl -c {conf} status",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
            cwd=project_dir(lab.inventory),
        )
        result = json.loads(out.stdout)["plays"][0]["tasks"][0]["hosts"][host.name]
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, IndexError, UserError):
        return None
    if result.get("unreachable"):
        return None
    return result.get("stdout", "")


def _http(url: str) -> httpx.Response:
    return httpx.get(url, timeout=TIMEOUT)


def _check_nginx(service: Service, lab: Lab) -> Health:
    response = _http(f"http://{service.address}/health")
    upstream = response.headers.get("x-upstream", "?")
    return Health(response.status_code == 200, f"{response.status_code} via {upstream}")


def _check_nginx_status(service: Service, lab: Lab) -> Health:
    response = _http(f"http://{service.address}/stub_status")
    match = re.search(r"Active connections:\s*(\d+)", response.text)
    active = f", {match.group(1)} active" if match else ""
    return Health(response.status_code == 200 and match is not None, f"{response.status_code}{active}")


def _check_app(service: Service, lab: Lab) -> Health:
    response = _http(f"http://{service.address}/health")
    try:
        body = response.json()
    except ValueError:
        body = {}
    parts = [f"{key} {body[key]}" for key in ("db", "redis") if key in body]
    ok = response.status_code == 200 and body.get("status") == "ok"
    return Health(ok, f"{response.status_code}" + (f", {', '.join(parts)}" if parts else ""))


def _check_postgres(service: Service, lab: Lab) -> Health:
    import psycopg

    host = service.host
    with psycopg.connect(
        host=host.address,
        port=service.port,
        dbname=host.var("postgres_db"),
        user=host.var("postgres_monitor_user"),
        password=lab.secret("postgres_monitor"),
        connect_timeout=int(TIMEOUT),
    ) as conn:
        used, limit = conn.execute(
            "SELECT count(*), current_setting('max_connections')::int FROM pg_stat_activity"
        ).fetchone()
    return Health(True, f"{used}/{limit} connections")


def _check_redis(service: Service, lab: Lab) -> Health:
    import redis

    client = redis.Redis(
        host=service.host.address,
        port=service.port or 0,
        password=lab.secret("redis"),
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
    )
    try:
        pong = client.ping()
        clients = client.info("clients").get("connected_clients", "?")
    finally:
        client.close()
    return Health(bool(pong), f"PING ok, {clients} clients")


def _check_locust_web(service: Service, lab: Lab, expected_workers: int | None) -> Health:
    response = _http(f"http://{service.address}/stats/requests")
    body = response.json() if response.status_code == 200 else {}
    workers = int(body.get("worker_count", 0))
    state = body.get("state", "?")
    if expected_workers is None:
        return Health(response.status_code == 200 and workers > 0, f"{state}, {workers} workers")
    ok = response.status_code == 200 and workers == expected_workers and workers > 0
    return Health(ok, f"{state}, {workers}/{expected_workers} workers")


def _check_metrics(service: Service, lab: Lab) -> Health:
    response = _http(f"http://{service.address}/metrics")
    down = sorted(set(re.findall(r"^loadlab_(\w+)_up(?:\{[^}]*\})? 0(?:\.0)?$", response.text, re.M)))
    detail = f"{response.status_code}" + (f", sources down: {', '.join(down)}" if down else "")
    return Health(response.status_code == 200, detail)


def _check_prometheus(service: Service, lab: Lab) -> Health:
    ready = _http(f"http://{service.address}/-/ready")
    detail = f"{ready.status_code}"
    if ready.status_code == 200:
        targets = _http(f"http://{service.address}/api/v1/targets?state=active").json()["data"][
            "activeTargets"
        ]
        up = sum(1 for t in targets if t.get("health") == "up")
        detail += f", {up}/{len(targets)} targets up"
    return Health(ready.status_code == 200, detail)


def _check_supervisor(programs: Programs) -> Health:
    if isinstance(programs, str):
        return Health(False, programs)
    down = [f"{name} {state}" for name, state in sorted(programs.items()) if state != "RUNNING"]
    if down:
        return Health(False, f"not running: {', '.join(down)}")
    return Health(True, f"{len(programs)} programs running")


def _program_state(programs: Programs, name: str) -> Health:
    if isinstance(programs, str):
        return Health(False, f"loopback only on its host; supervisor: {programs}")
    state = programs.get(name, "not configured")
    return Health(state == "RUNNING", f"loopback only on its host; supervisor: {state}")


_CHECKS: dict[str, Callable[[Service, Lab], Health]] = {
    "nginx": _check_nginx,
    "nginx_status": _check_nginx_status,
    "app": _check_app,
    "postgres": _check_postgres,
    "redis": _check_redis,
    "locust_metrics": _check_metrics,
    "exporter": _check_metrics,
    "prometheus": _check_prometheus,
}
_PROGRAM_OF_KIND = {"nginx_status": "nginx", "locust_web": "locust-master"}


def check_lab(lab: Lab) -> list[tuple[Service, Health]]:
    """Check every service at once (each check is I/O); one failing check never hides the others."""
    services = lab.services()
    with ThreadPoolExecutor(max_workers=16) as pool:
        hosts = list(lab.hosts.values())
        programs = dict(zip(lab.hosts, pool.map(lambda h: supervisor_programs(lab, h), hosts), strict=True))
        expected_workers = _expected_workers(lab, programs)

        def check(service: Service) -> Health:
            host_programs = programs[service.host.name]
            if service.kind == "supervisor":
                return _check_supervisor(host_programs)
            if service.loopback_only and not service.host.local:
                return _program_state(host_programs, _PROGRAM_OF_KIND.get(service.kind, service.name))
            try:
                if service.kind == "locust_web":
                    return _check_locust_web(service, lab, expected_workers)
                return _CHECKS[service.kind](service, lab)
            except UserError as exc:
                return Health(False, str(exc))
            except Exception as exc:  # noqa: BLE001 - any failure to answer is what the row reports
                return Health(False, _reason(exc))

        return list(zip(services, pool.map(check, services), strict=True))


def _expected_workers(lab: Lab, programs: Mapping[str, Programs]) -> int | None:
    """Workers the master should see: the locust-worker-N programs on every loadgen host."""
    total = 0
    for host in lab.group("loadgen"):
        host_programs = programs.get(host.name)
        if isinstance(host_programs, str) or host_programs is None:
            return None
        total += sum(1 for name in host_programs if name.startswith("locust-worker-"))
    return total


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def render(results: list[tuple[Service, Health]]) -> Table:
    """One row per service: what a user checks first when a sweep looks wrong."""
    table = Table(title="loadlab status", title_justify="left")
    table.add_column("service", no_wrap=True)
    table.add_column("host", overflow="fold")
    table.add_column("address", overflow="fold")
    table.add_column("health", no_wrap=True)
    table.add_column("detail", ratio=1)
    for service, health in results:
        mark = "[green]ok[/]" if health.healthy else "[red]DOWN[/]"
        table.add_row(service.name, service.host.name, service.address, mark, health.detail)
    return table


@click.command()
@click.option(
    "-i",
    "--inventory",
    type=click.Path(path_type=Path, dir_okay=True),
    default=None,
    help="Ansible inventory of the lab (default: inventory/local.yml of this project).",
)
def status(inventory: Path | None) -> None:
    """Every lab service with its address and health; exit 0 only when all are healthy."""
    lab = Lab.load(inventory)
    results = check_lab(lab)
    console.print(render(results))
    down = [f"{s.name}@{s.host.name}" for s, h in results if not h.healthy]
    if down:
        console.print(f"[red]{len(down)} of {len(results)} not healthy:[/] {', '.join(down)}")
        sys.exit(1)
    console.print(f"[green]all {len(results)} healthy[/]")
