"""Real PostgreSQL, Redis and nginx servers for tests: loopback, free ports, temp dirs, stopped afterwards.

A test that uses one of the fixtures here is in the real-server tier (tests/conftest.py marks it `server`);
where a server's program is not installed, the test skips and says which package brings it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")
# The Debian package that installs each program the real-server tests start (scripts/bootstrap.sh has them).
PACKAGES = {
    "nginx": "nginx",
    "redis-server": "redis-server",
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "sshd": "openssh-server",
    "ssh-keygen": "openssh-client",
    "supervisord": "supervisor",
    "supervisorctl": "supervisor",
    "postgres": "postgresql-15",
    "initdb": "postgresql-15",
    "psql": "postgresql-15",
}


def require(program: str | Path) -> str:
    """The path of a program a test needs; the test skips, naming the package to install, where it is missing.

    A bare name is looked up on PATH and then in /usr/sbin (nginx and sshd live there, off a user's PATH)."""
    if isinstance(program, Path):
        found = str(program) if os.access(program, os.X_OK) else None
    else:
        found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin")
    if found is None:
        package = PACKAGES.get(Path(program).name, Path(program).name)
        pytest.skip(
            f"{program} is not installed (apt install {package}): this test starts or runs it; "
            "`make system` installs every program the tests need"
        )
    return found


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 20.0) -> None:
    """Block until something accepts connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout}s")


def wait_port_closed(port: int, host: str = "127.0.0.1", timeout: float = 20.0) -> None:
    """Block until host:port refuses connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
        except OSError:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{host}:{port} still accepts connections after {timeout}s")


def terminate(*procs: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """Stop processes as a supervisor would: a signal to each, SIGKILL for any that outlives the timeout."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(sig)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                if os.getpgid(proc.pid) == proc.pid:  # a group of its own: its children (nginx workers) too
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()
            proc.wait()


def established_toward(port: int) -> int:
    """Established TCP sockets whose remote end is `port` (a load generator's side), counted by `ss`."""
    out = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( dport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    )
    return len(out.stdout.splitlines())


class _Server:
    """A server process the tests can take down and bring back on the same port."""

    host = "127.0.0.1"
    port: int
    stop_signal = signal.SIGTERM

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _popen_kwargs(self) -> dict:
        return {}

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(
            self._command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            **self._popen_kwargs(),
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        terminate(self.proc, sig=self.stop_signal)
        wait_port_closed(self.port)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class PostgresServer(_Server):
    """A throwaway cluster run as the `postgres` user, with the lab's app and monitoring roles."""

    dbname = "loadlab"
    # SIGTERM is PostgreSQL's "smart" shutdown, which waits for every client (an app's pool) to leave.
    stop_signal = signal.SIGINT

    def __init__(self, root: Path, max_connections: int = 50) -> None:
        super().__init__()
        self.root = root
        self.data = root / "data"
        self.sockdir = root / "sock"
        self.port = free_port()
        self.max_connections = max_connections
        self.app_password = secrets.token_hex(12)
        self.monitor_password = secrets.token_hex(12)
        self._initdb, self._postgres, self._psql = (
            require(PG_BIN / n) for n in ("initdb", "postgres", "psql")
        )
        pw = pwd.getpwnam("postgres")
        self._uid, self._gid = pw.pw_uid, pw.pw_gid
        for d in (root, self.sockdir):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, self._uid, self._gid)
        subprocess.run(
            [self._initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
            user=self._uid,
            group=self._gid,
        )

    def _command(self) -> list[str]:
        return [
            self._postgres,
            "-D", str(self.data),
            "-p", str(self.port),
            "-k", str(self.sockdir),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"max_connections={self.max_connections}",
            "-c", "fsync=off",
        ]  # fmt: skip

    def _popen_kwargs(self) -> dict:
        return {"user": self._uid, "group": self._gid}

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL as the superuser over the unix socket."""
        out = subprocess.run(
            [self._psql, "-h", str(self.sockdir), "-p", str(self.port), "-U", "postgres",
             "-d", dbname, "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
            check=True,
            capture_output=True,
            text=True,
        )  # fmt: skip
        return out.stdout.strip()

    def provision(self) -> None:
        """The database, the app's role and the least-privilege monitoring role, as the lab makes them."""
        self.psql(f"CREATE ROLE loadlab LOGIN PASSWORD '{self.app_password}'")
        self.psql(f"CREATE DATABASE {self.dbname} OWNER loadlab")
        self.psql(f"CREATE ROLE loadlab_monitor LOGIN PASSWORD '{self.monitor_password}' IN ROLE pg_monitor")

    @property
    def superuser_dsn(self) -> str:
        return f"host={self.sockdir} port={self.port} user=postgres dbname={self.dbname}"

    @property
    def app_dsn(self) -> str:
        return f"postgresql://loadlab:{self.app_password}@{self.host}:{self.port}/{self.dbname}"

    @property
    def monitor_dsn(self) -> str:
        return (
            f"host={self.host} port={self.port} dbname={self.dbname} "
            f"user=loadlab_monitor password={self.monitor_password}"
        )


class RedisServer(_Server):
    """redis-server with a password, no persistence."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.program = require("redis-server")
        self.root = root
        self.port = free_port()
        self.password = secrets.token_hex(12)
        root.mkdir(parents=True, exist_ok=True)

    def _command(self) -> list[str]:
        return [
            self.program, "--port", str(self.port), "--bind", self.host, "--requirepass", self.password,
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(self.root),
            "--maxclients", "200",
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{self.host}:{self.port}/0"


class NginxStub(_Server):
    """nginx serving stub_status (and a tiny static page) on one loopback port."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.program = require("nginx")
        self.root = root
        self.port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        (root / "logs").mkdir(exist_ok=True)
        (root / "nginx.conf").write_text(
            f"""
pid {root}/nginx.pid;
error_log {root}/logs/error.log warn;
daemon off;
worker_processes 1;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen {self.host}:{self.port};
        location = /stub_status {{ stub_status; }}
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""
        )

    def _command(self) -> list[str]:
        return [self.program, "-p", str(self.root), "-c", str(self.root / "nginx.conf")]

    @property
    def status_url(self) -> str:
        return f"http://{self.host}:{self.port}/stub_status"


@contextlib.contextmanager
def _running(server: _Server, root: Path) -> Iterator[_Server]:
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL 15 with the lab's roles; tests may stop() and start() it."""
    require(PG_BIN / "postgres")
    root = Path(tempfile.mkdtemp(prefix="loadlab-pg-"))
    server = PostgresServer(root)
    with _running(server, root):
        server.provision()
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server with requirepass; tests may stop() and start() it."""
    require("redis-server")
    root = Path(tempfile.mkdtemp(prefix="loadlab-redis-"))
    with _running(RedisServer(root), root) as server:
        yield server


@pytest.fixture(scope="session")
def nginx_stub() -> Iterator[NginxStub]:
    """A real nginx with stub_status; tests may stop() and start() it."""
    require("nginx")
    root = Path(tempfile.mkdtemp(prefix="loadlab-nginx-"))
    with _running(NginxStub(root), root) as server:
        yield server
