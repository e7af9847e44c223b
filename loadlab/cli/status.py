"""`loadlab status`: every lab service with its address and whether it answers; exit 0 only when all do."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import click
import httpx
from rich.table import Table

from loadlab.cli.usage import OneLineCommand
from loadlab.console import console
from loadlab.errors import LoadlabError, UserError
from loadlab.lab import Lab, Service
from loadlab.remote import TIMED_OUT, Endpoint, HostUnreachable, Remote, RemoteHosts

TIMEOUT = 3.0
"""Seconds one check may take: a service slower than this to answer a health probe is not healthy."""


@dataclass(frozen=True)
class Health:
    """What one check found."""

    healthy: bool
    detail: str


# host name -> program name -> state (RUNNING, FATAL, ...); a str instead says why it could not be read.
Programs = Mapping[str, str] | str


def supervisor_programs(remote: Remote) -> Programs:
    """The lab supervisord's programs on a host: run here for this machine, over SSH for the others."""
    conf = f"{remote.host.var('loadlab_etc_dir')}/supervisord.conf"
    try:
        out = remote.run(f"supervisorctl -c {conf} status", timeout=15)
    except HostUnreachable as exc:
        return str(exc)
    if out.exit_code == TIMED_OUT:
        return "supervisorctl did not answer"
    if out.exit_code == 127:
        return "supervisorctl is not installed"
    return _parse_supervisor_status(out.stdout, out.stderr)


def _parse_supervisor_status(stdout: str, stderr: str = "") -> Programs:
    programs: dict[str, str] = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith(("unix://", "Error", "error", "For help")):
            programs[parts[0]] = parts[1]
    if not programs:
        said = [ln.strip() for ln in (stdout + "\n" + stderr).splitlines() if ln.strip()]
        first = next(
            (ln for ln in said if ln.lower().startswith("error")), said[0] if said else "no programs"
        )
        return "supervisord is not running" if "no such file" in first or "refused" in first else first
    return programs


def _http(url: str) -> httpx.Response:
    return httpx.get(url, timeout=TIMEOUT, trust_env=False)  # lab addresses never go through a proxy


def _check_nginx(service: Service, lab: Lab, at: Endpoint) -> Health:
    apps = lab.group("app")
    # nginx passes the app's health path through to an instance: your app's, or the demo app's /health
    path = str(apps[0].var("app_health_path")) if apps and apps[0].var("app_command") else "/health"
    response = _http(f"{at.url}{path}")
    upstream = response.headers.get("x-upstream", "?")
    return Health(200 <= response.status_code < 300, f"{response.status_code} via {upstream}")


def _check_external(service: Service, lab: Lab, at: Endpoint) -> Health:
    """A service of yours: its external_health_path answers 2xx, or without one, its URL answers at all."""
    health_path = service.host.var("external_health_path")
    path = str(health_path or urlsplit(lab.external_target_url or "").path or "/")
    scheme = urlsplit(lab.external_target_url or "").scheme or "http"
    response = _http(f"{scheme}{at.url.removeprefix('http')}{path}")
    ok = 200 <= response.status_code < 300 if health_path else response.status_code < 500
    return Health(ok, f"{response.status_code} on {path}")


def _check_nginx_status(service: Service, lab: Lab, at: Endpoint) -> Health:
    response = _http(f"{at.url}/stub_status")
    match = re.search(r"Active connections:\s*(\d+)", response.text)
    active = f", {match.group(1)} active" if match else ""
    return Health(response.status_code == 200 and match is not None, f"{response.status_code}{active}")


def _check_app(service: Service, lab: Lab, at: Endpoint) -> Health:
    if service.host.var("app_command"):  # your own app: its health path answers 2xx
        path = str(service.host.var("app_health_path"))
        response = _http(f"{at.url}{path}")
        return Health(200 <= response.status_code < 300, f"{response.status_code} on {path}")
    response = _http(f"{at.url}/health")
    try:
        body = response.json()
    except ValueError:
        body = {}
    parts = [f"{key} {body[key]}" for key in ("db", "redis") if key in body]
    ok = response.status_code == 200 and body.get("status") == "ok"
    return Health(ok, f"{response.status_code}" + (f", {', '.join(parts)}" if parts else ""))


def _check_postgres(service: Service, lab: Lab, at: Endpoint) -> Health:
    import psycopg

    host = service.host
    with psycopg.connect(
        host=at.host,
        port=at.port,
        dbname=host.var("postgres_db"),
        user=host.var("postgres_monitor_user"),
        password=lab.secret("postgres_monitor"),
        connect_timeout=int(TIMEOUT),
    ) as conn:
        used, limit = conn.execute(
            "SELECT count(*), current_setting('max_connections')::int FROM pg_stat_activity"
        ).fetchone()
    return Health(True, f"{used}/{limit} connections")


def _check_redis(service: Service, lab: Lab, at: Endpoint) -> Health:
    import redis

    client = redis.Redis(
        host=at.host,
        port=at.port,
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


def _check_locust_web(service: Service, lab: Lab, at: Endpoint, expected_workers: int | None) -> Health:
    response = _http(f"{at.url}/stats/requests")
    body = response.json() if response.status_code == 200 else {}
    workers = int(body.get("worker_count", 0))
    state = body.get("state", "?")
    if expected_workers is None:
        return Health(response.status_code == 200 and workers > 0, f"{state}, {workers} workers")
    ok = response.status_code == 200 and workers == expected_workers and workers > 0
    return Health(ok, f"{state}, {workers}/{expected_workers} workers")


def _check_metrics(service: Service, lab: Lab, at: Endpoint) -> Health:
    response = _http(f"{at.url}/metrics")
    down = sorted(set(re.findall(r"^loadlab_(\w+)_up(?:\{[^}]*\})? 0(?:\.0)?$", response.text, re.M)))
    detail = f"{response.status_code}" + (f", sources down: {', '.join(down)}" if down else "")
    return Health(response.status_code == 200, detail)


def _check_prometheus(service: Service, lab: Lab, at: Endpoint) -> Health:
    ready = _http(f"{at.url}/-/ready")
    detail = f"{ready.status_code}"
    if ready.status_code == 200:
        targets = _http(f"{at.url}/api/v1/targets?state=active").json()["data"]["activeTargets"]
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


_CHECKS: dict[str, Callable[[Service, Lab, Endpoint], Health]] = {
    "nginx": _check_nginx,
    "nginx_status": _check_nginx_status,
    "external": _check_external,
    "app": _check_app,
    "postgres": _check_postgres,
    "redis": _check_redis,
    "locust_metrics": _check_metrics,
    "exporter": _check_metrics,
    "prometheus": _check_prometheus,
}


def check_lab(lab: Lab) -> list[tuple[Service, Health]]:
    """Check every service at once (each check is I/O); one failing check never hides the others.

    A service bound to another host's loopback (the Locust master's web API, nginx's stub_status) is
    checked through an SSH forward to that host; the others directly where this machine reaches them.
    """
    services = lab.services()
    with RemoteHosts(lab) as remotes, ThreadPoolExecutor(max_workers=16) as pool:
        compose_file = lab.compose_file
        if compose_file is not None:  # the Compose twin: containers through the Docker API, no supervisord
            programs: dict[str, Programs] = {}
            expected_workers = _twin_workers(compose_file)
        else:
            hosts = list(lab.hosts.values())
            programs = dict(
                zip(lab.hosts, pool.map(lambda h: supervisor_programs(remotes[h]), hosts), strict=True)
            )
            expected_workers = _expected_workers(lab, programs)

        def check(service: Service) -> Health:
            if service.kind == "supervisor":
                return _check_supervisor(programs[service.host.name])
            if service.kind == "compose":
                assert compose_file is not None
                return check_containers(compose_file)
            address, _, port = service.address.rpartition(":")
            try:
                # PostgreSQL admits the lab's hosts only, so it is asked from its own host.
                from_host = service.kind == "postgres"
                with remotes[service.host].reach(address, int(port), from_host=from_host) as at:
                    if service.kind == "locust_web":
                        health = _check_locust_web(service, lab, at, expected_workers)
                    else:
                        health = _CHECKS[service.kind](service, lab, at)
            except LoadlabError as exc:  # a host out of reach (LabError), a secret never made (UserError)
                return Health(False, str(exc))
            except Exception as exc:  # noqa: BLE001 - any failure to answer is what the row reports
                return Health(False, _reason(exc))
            return Health(health.healthy, f"{health.detail} (through SSH)") if at.forwarded else health

        return list(zip(services, pool.map(check, services), strict=True))


def check_containers(compose_file: Path) -> Health:
    """The Compose twin's containers, as the Docker Engine API reports them (docker package; DOCKER_HOST
    or /var/run/docker.sock): every service compose.yml names running, and healthy where it has a check."""
    from loadlab import compose

    try:
        state = compose.twin_state(compose_file)
    except UserError as exc:  # compose.yml missing or not valid
        return Health(False, str(exc))
    except Exception as exc:  # noqa: BLE001 - docker.errors.DockerException, requests' errors: what the row says
        return Health(False, f"Docker Engine API at {compose.docker_host()}: {_reason(exc)}")
    problems = list(state.problems())
    if problems:
        return Health(False, f"{len(problems)} of {len(state.expected)} not ready: {', '.join(problems)}")
    return Health(True, f"{state.running} containers running, {state.healthy} healthy")


def _twin_workers(compose_file: Path) -> int | None:
    """Workers the twin's master should see: its locust-worker-N services."""
    from loadlab import compose

    try:
        return compose.locust_worker_count(compose_file)
    except UserError:
        return None


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


@click.command(cls=OneLineCommand)
@click.option(
    "-i",
    "--inventory",
    type=click.Path(path_type=Path, dir_okay=True),
    default=None,
    help="Ansible inventory of the lab (default: inventory/local.yml of this project).",
)
def status(inventory: Path | None) -> None:
    """Every lab service with its address and health; exit 0 only when all are healthy.

    For the Compose twin (-i inventory/compose.yml), its containers' state and health through the Docker
    Engine API stand where a lab host's supervisord programs do."""
    lab = Lab.load(inventory)
    results = check_lab(lab)
    console.print(render(results))
    down = [f"{s.name}@{s.host.name}" for s, h in results if not h.healthy]
    if down:
        console.print(f"[red]{len(down)} of {len(results)} not healthy:[/] {', '.join(down)}")
        sys.exit(1)
    console.print(f"[green]all {len(results)} healthy[/]")
