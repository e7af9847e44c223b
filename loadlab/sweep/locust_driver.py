"""Driving Locust through its own interfaces: the master's web API, and local master/worker processes."""

from __future__ import annotations

import contextlib
import csv
import ctypes
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from loadlab.errors import LabError
from loadlab.sweep.samples import REPORT_INTERVAL_S

# Workers send their stats to the master every locust.runners.WORKER_REPORT_INTERVAL seconds (the lab's
# plugin makes it REPORT_INTERVAL_S); a window that spans whole intervals gets one window's worth of every
# worker's requests, and a step's counts are per the span its reports cover (samples.covered_span).
WORKER_REPORT_INTERVAL = REPORT_INTERVAL_S
START_TIMEOUT = 60.0


@dataclass
class EndpointStats:
    """One row of Locust's request stats for the measured window (or the Aggregated row)."""

    method: str
    name: str
    requests: int
    failures: int
    avg_ms: float | None
    max_ms: float | None
    percentiles: dict[str, float | None] = field(default_factory=dict)  # "50%" -> ms

    def pct(self, p: str) -> float | None:
        return self.percentiles.get(p)


def _num(text: str) -> float | None:
    if text in ("", "N/A", "None"):
        return None
    try:
        return float(text)
    except ValueError:
        return None


def parse_requests_csv(text: str) -> tuple[list[EndpointStats], EndpointStats | None]:
    """Locust's /stats/requests/csv: per-endpoint rows and the Aggregated row, with every percentile."""
    rows = list(csv.DictReader(io.StringIO(text)))
    endpoints: list[EndpointStats] = []
    total: EndpointStats | None = None
    for row in rows:
        pct = {k: _num(v) for k, v in row.items() if k and k.endswith("%")}
        requests = int(_num(row.get("Request Count", "0")) or 0)
        entry = EndpointStats(
            method=row.get("Type", ""),
            name=row.get("Name", ""),
            requests=requests,
            failures=int(_num(row.get("Failure Count", "0")) or 0),
            avg_ms=_num(row.get("Average Response Time", "")) if requests else None,
            max_ms=_num(row.get("Max Response Time", "")) if requests else None,
            percentiles=pct,
        )
        if entry.name == "Aggregated" and not entry.method:
            total = entry
        else:
            endpoints.append(entry)
    return endpoints, total


class LocustWeb:
    """A Locust master's web API: /swarm, /stop, /stats/reset, /stats/requests(/csv)."""

    def __init__(self, base_url: str, timeout: float = 10.0, retry_for: float = 0.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, trust_env=False)
        # A master on another host is asked again for this long when the way to it fails (a cut link, a
        # dropped SSH connection): every call is one Locust takes twice without harm.
        self.retry_for = retry_for

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        deadline = time.monotonic() + self.retry_for
        while True:
            try:
                resp = self._http.request(method, path, **kwargs)
                break
            except httpx.TransportError as exc:
                if time.monotonic() >= deadline:
                    waited = f" (for {self.retry_for:g}s)" if self.retry_for else ""
                    raise LabError(
                        f"Locust master at {self.base_url} did not answer {path}{waited}: {exc}"
                    ) from None
                time.sleep(1.0)
            except httpx.HTTPError as exc:
                raise LabError(f"Locust master at {self.base_url} did not answer {path}: {exc}") from None
        if resp.status_code >= 400:
            raise LabError(f"Locust master at {self.base_url} answered {path} with HTTP {resp.status_code}")
        return resp

    def answers(self) -> bool:
        """True when the master's web API responds (it is up and it is Locust)."""
        try:
            resp = self._http.get("/stats/requests", timeout=2.0)
            return resp.status_code == 200 and "state" in resp.json()
        except (httpx.HTTPError, ValueError):
            return False

    def stats(self) -> dict[str, Any]:
        """Live figures: state, user_count, workers, current rps and percentiles (cached 2 s by Locust)."""
        return self._request("GET", "/stats/requests").json()

    def live(self) -> dict[str, Any]:
        """stats(), with the state, users and workers as they are now where the master tells them (state()):
        the cache would show a ramp done, or workers joined, up to 2 s late."""
        return {**self.stats(), **(self.state() or {})}

    def state(self) -> dict[str, Any] | None:
        """state, user_count and worker_count as they are now (the lab's plugin in the master; /stats/requests
        is up to 2 s old); None where the master has no such route or does not answer it."""
        try:
            resp = self._http.get("/loadlab/state", timeout=2.0)
            return resp.json() if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    def reports(self) -> dict[str, Any] | None:
        """The workers' reports since the last reset, as the lab's plugin in the master keeps them
        (samples.py); None where the master does not have the plugin."""
        try:
            resp = self._http.get("/loadlab/reports", timeout=10.0)
            return resp.json() if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    def hold(self, rate: float, arrivals: str) -> dict[str, Any]:
        """Hold `rate` arrivals per second over the workers from now on (0: the closed model again), through
        the lab's plugin in the master (exporters/locust_open.py)."""
        try:
            resp = self._http.post("/loadlab/open", data={"rate": f"{rate:g}", "arrivals": arrivals})
        except httpx.HTTPError as exc:
            raise LabError(f"Locust master at {self.base_url} did not answer /loadlab/open: {exc}") from None
        if resp.status_code == 404:
            raise LabError(
                f"the Locust master at {self.base_url} has no open model (the lab's Locust plugin, "
                "loadlab.exporters.locust): in a lab, run ansible-playbook lab.yml again"
            )
        try:
            answer = resp.json()
        except ValueError:
            answer = {}
        if resp.status_code >= 400 or not answer.get("success"):
            why = answer.get("message") or f"HTTP {resp.status_code}"
            raise LabError(f"Locust master at {self.base_url} refused the rate {rate:g}/s: {why}")
        return answer

    def window(self) -> tuple[list[EndpointStats], EndpointStats | None]:
        """Stats since the last reset, every percentile, per endpoint and aggregated."""
        return parse_requests_csv(self._request("GET", "/stats/requests/csv").text)

    def swarm(self, users: int, spawn_rate: float, host: str, user_classes: list[str] | None = None) -> dict:
        """Ramp to `users` at `spawn_rate` against `host`; running users stay, Locust adds or stops some."""
        form: list[tuple[str, str]] = [
            ("user_count", str(users)),
            ("spawn_rate", f"{spawn_rate:g}"),
            ("host", host),
        ]
        form += [("user_classes", c) for c in user_classes or []]
        data = self._request(
            "POST",
            "/swarm",
            content=urlencode(form),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ).json()
        if not data.get("success"):
            raise LabError(f"Locust master refused to start: {data.get('message', 'no reason given')}")
        return data

    def reset(self) -> None:
        """Start the measured window: Locust's stats from now on cover only the window."""
        self._request("POST", "/stats/reset")

    def stop(self) -> None:
        """Stop every user (the master and its workers stay up)."""
        self._request("POST", "/stop")


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Children get SIGTERM if the sweep is killed outright (SIGKILL leaves no chance to clean up)."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _last_line(path: Path) -> str:
    """The last meaningful line of a log: usually the error that stopped the process."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    if not lines:
        return "no output"
    # "[2024-01-01 10:00:00,000] host/ERROR/locust.main: Unknown User(s): X" -> "Unknown User(s): X"
    return re.sub(r"^\[[^]]*\] \S+/[A-Z]+/\S+: ", "", lines[-1])


class LocalLocust:
    """A Locust master and N workers on this machine, started for one sweep and stopped after it."""

    def __init__(self, locustfile: str, workers: int, user_classes: list[str], log_dir: Path) -> None:
        # Locust takes several files separated by commas; the children run in log_dir, so paths are absolute.
        # The lab's plugin comes first: any locustfile gets its samples (exporters/locust.py).
        plugin = Path(__file__).with_name("locust_plugin.py")
        self.locustfile = ",".join([str(plugin)] + [str(Path(p).resolve()) for p in locustfile.split(",")])
        self.workers = workers
        self.user_classes = user_classes
        self.log_dir = log_dir
        self.web_port = free_port()
        self.master_port = free_port()
        self.procs: dict[str, subprocess.Popen] = {}

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        cmd = [sys.executable, "-m", "locust", "-f", self.locustfile, *args, *self.user_classes]
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.log_dir,
                # A locustfile built on the lab's LabUser loads its metrics plugin, whose default port is
                # the lab master's: this Locust's figures come from its web API, so the plugin stays off.
                env={
                    **os.environ,
                    "LOCUST_LOADLAB_METRICS_PORT": os.environ.get("LOCUST_LOADLAB_METRICS_PORT", "0"),
                },
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - setsid + parent-death signal
            )
        finally:
            log.close()
        self.procs[name] = proc
        return proc

    def pids(self) -> dict[str, int]:
        """Locust process name -> pid, for CPU sampling."""
        return {name: p.pid for name, p in self.procs.items() if p.poll() is None}

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                reason = _last_line(self.log_dir / f"{name}.log")
                raise LabError(f"Locust {name} exited with code {proc.returncode}: {reason}")

    def start(self, timeout: float = START_TIMEOUT) -> LocustWeb:
        """Start the master, then the workers; return the master's web API once every worker has joined."""
        self._spawn(
            "master",
            [
                "--master",
                "--master-bind-host", "127.0.0.1",
                "--master-bind-port", str(self.master_port),
                "--web-host", "127.0.0.1",
                "--web-port", str(self.web_port),
            ],
        )  # fmt: skip
        web = LocustWeb(f"http://127.0.0.1:{self.web_port}")
        deadline = time.monotonic() + timeout
        while not web.answers():
            self._check_alive()
            if time.monotonic() > deadline:
                raise LabError(
                    f"Locust master did not start within {timeout:g}s (log: {self.log_dir}/master.log)"
                )
            time.sleep(0.2)
        for i in range(1, self.workers + 1):
            self._spawn(
                f"worker-{i}",
                ["--worker", "--master-host", "127.0.0.1", "--master-port", str(self.master_port)],
            )
        while True:
            self._check_alive()
            joined = int(web.live().get("worker_count", 0))
            if joined >= self.workers:
                return web
            if time.monotonic() > deadline:
                raise LabError(
                    f"only {joined} of {self.workers} Locust workers joined "
                    f"within {timeout:g}s (logs: {self.log_dir})"
                )
            time.sleep(0.3)

    def check(self) -> None:
        """Fail the sweep if a Locust process died under it."""
        self._check_alive()

    def stop(self) -> None:
        """Stop the workers and the master: SIGTERM, then SIGKILL for stragglers."""
        order = [n for n in self.procs if n != "master"] + (["master"] if "master" in self.procs else [])
        for name in order:
            proc = self.procs[name]
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for name in order:
            proc = self.procs[name]
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
