"""Start the real target service (`python -m loadlab.app`) as a subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.servers import PostgresServer, RedisServer, free_port, terminate


@dataclass
class AppInstance:
    """One running app process and where to reach it."""

    proc: subprocess.Popen
    port: int
    instance: str
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)


def app_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment the lab's supervisor program gives an instance."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOADLAB_")}
    env.update(LOADLAB_DATABASE_URL=database_url, LOADLAB_REDIS_URL=redis_url, **extra)
    return env


def run_app(env: dict[str, str], *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run the app command to completion (for starts that must fail)."""
    return subprocess.run(
        [sys.executable, "-m", "loadlab.app", "--host", "127.0.0.1", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_app(
    postgres: PostgresServer, redis: RedisServer, database_url: str | None = None, **extra_env: str
) -> AppInstance:
    """Launch an instance without waiting for it, so several can start at the same moment."""
    port = free_port()
    instance = extra_env.pop("LOADLAB_INSTANCE", f"app-{port}")
    env = app_env(database_url or postgres.app_dsn, redis.url, LOADLAB_INSTANCE=instance, **extra_env)
    log = Path(tempfile.mkstemp(prefix=f"loadlab-app-{port}-", suffix=".log")[1])
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "loadlab.app", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return AppInstance(proc=proc, port=port, instance=instance, log=log)


def stop_app(app: AppInstance) -> None:
    """SIGTERM, as supervisord stops it; SIGKILL only if it does not finish."""
    terminate(app.proc, timeout=15)
    app.log.unlink(missing_ok=True)


@contextlib.contextmanager
def running_app(
    postgres: PostgresServer, redis: RedisServer, database_url: str | None = None, **extra_env: str
) -> Iterator[AppInstance]:
    """An instance that answers /health with 200, stopped afterwards."""
    app = start_app(postgres, redis, database_url, **extra_env)
    try:
        wait_healthy(app)
        yield app
    finally:
        stop_app(app)


def wait_healthy(app: AppInstance, timeout: float = 30) -> None:
    """Block until /health says 200; fail with the app's log if it exits or never gets there."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if app.proc.poll() is not None:
            raise RuntimeError(f"app exited with {app.proc.returncode}:\n{app.log.read_text()}")
        try:
            response = httpx.get(f"{app.url}/health", timeout=5)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text}"
        except httpx.TransportError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise RuntimeError(
        f"app on port {app.port} not healthy after {timeout}s ({last}):\n{app.log.read_text()}"
    )
