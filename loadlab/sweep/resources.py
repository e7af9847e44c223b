"""What the machines did during a step's window: from the lab's Prometheus, or sampled in-process.

Every figure is for the window only. CPU is in cores (1.0 = one core busy for the whole window), so a
Locust process at 0.95 is as busy as one Python process can be.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil

from loadlab.exporters.sockets import count_sockets

SAMPLE_INTERVAL = 1.0
# Prometheus needs a few scrapes inside the window for rate(); shorter windows are sampled in-process.
PROMETHEUS_MIN_SCRAPES = 3


def target_port(url: str) -> int:
    """The TCP port a target URL talks to."""
    parts = urlsplit(url)
    if parts.port:
        return parts.port
    return 443 if parts.scheme == "https" else 80


def is_local_address(host: str) -> bool:
    """True when `host` resolves to this machine (loopback or one of its interface addresses)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    mine = {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs}
    for info in infos:
        addr = str(info[4][0]).split("%")[0]
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(addr).is_loopback:
                return True
        if addr in mine:
            return True
    return False


def listening_processes(ports: Mapping[int, str]) -> dict[str, list[psutil.Process]]:
    """Group name -> processes listening on its port, and their children (nginx workers, PG backends)."""
    pids: dict[str, set[int]] = {}
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port in ports and conn.pid:
                pids.setdefault(ports[conn.laddr.port], set()).add(conn.pid)
    groups: dict[str, list[psutil.Process]] = {}
    for name, found in pids.items():
        procs: dict[int, psutil.Process] = {}
        for pid in found:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                procs[pid] = proc
                for child in proc.children(recursive=True):
                    procs[child.pid] = child
        groups[name] = list(procs.values())
    return groups


def locust_processes(web_port: int, master_port: int) -> dict[str, psutil.Process]:
    """The lab's Locust processes on this machine: the master (listening on the web port) and its workers
    (connected to the master port), found by their sockets whatever their command line says."""
    master: int | None = None
    workers: set[int] = set()
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections(kind="tcp"):
            if not conn.pid:
                continue
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == web_port:
                master = conn.pid
            elif conn.status == psutil.CONN_ESTABLISHED and conn.raddr and conn.raddr.port == master_port:
                workers.add(conn.pid)
    found: dict[str, psutil.Process] = {}
    for name, pid in [("master", master)] + [(f"worker-{i}", p) for i, p in enumerate(sorted(workers), 1)]:
        if pid is not None and (name == "master" or pid != master):
            with contextlib.suppress(psutil.Error):
                found[name] = psutil.Process(pid)
    return found


def _cpu_total(proc: psutil.Process) -> float | None:
    try:
        t = proc.cpu_times()
    except psutil.Error:
        return None
    return t.user + t.system


def _schedstat(pid: int) -> float | None:
    """Seconds the process's main thread ran plus waited to run (/proc/PID/schedstat), or None."""
    try:
        run_ns, wait_ns, _ = open(f"/proc/{pid}/schedstat").read().split()  # noqa: SIM115 - one read
    except (OSError, ValueError):
        return None
    return (int(run_ns) + int(wait_ns)) / 1e9


@dataclass
class _RunnableTrack:
    """How much of the window a process wanted a CPU: ran or sat runnable waiting for one.

    A Locust process on a busy host may get only part of a core; if it was runnable all the time it
    would have used a full one, so it is as CPU-bound as one at 100%.
    """

    pid: int
    first: float
    last: float

    def share(self, seconds: float) -> float:
        return (self.last - self.first) / seconds if seconds > 0 else 0.0


@dataclass
class _CpuTrack:
    """CPU seconds used by a changing set of processes since the window began."""

    start_time: float
    first: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)

    def see(self, procs: Iterable[psutil.Process]) -> None:
        for proc in procs:
            total = _cpu_total(proc)
            if total is None:
                continue
            if proc.pid not in self.first:
                try:
                    born_inside = proc.create_time() >= self.start_time
                except psutil.Error:
                    born_inside = False
                self.first[proc.pid] = 0.0 if born_inside else total
            self.last[proc.pid] = total

    def cores(self, seconds: float) -> float:
        used = sum(self.last[p] - self.first[p] for p in self.last)
        return used / seconds if seconds > 0 else 0.0

    def busiest(self, seconds: float) -> float:
        """The one process that used the most CPU, in cores."""
        used = [self.last[p] - self.first[p] for p in self.last]
        return max(used) / seconds if used and seconds > 0 else 0.0


class Sampler:
    """In-process sampling for one window: process CPU, client sockets, and the lab exporter's collectors."""

    def __init__(
        self,
        port: int,
        locust: Callable[[], Mapping[str, psutil.Process]],
        target: Callable[[], Mapping[str, list[psutil.Process]]],
        others: Callable[[], Mapping[str, list[psutil.Process]]] | None = None,
        collectors: Iterable[Any] = (),
        interval: float = SAMPLE_INTERVAL,
    ) -> None:
        self.port = port
        self._locust = locust
        self._target = target
        self._others = others or (lambda: {})
        self._collectors = list(collectors)
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Begin the window now."""
        self._t0 = time.time()
        self._mono0 = time.monotonic()
        self._host0 = psutil.cpu_times()
        self._locust_cpu: dict[str, _CpuTrack] = {}
        self._locust_runnable: dict[str, _RunnableTrack] = {}
        self._target_cpu: dict[str, _CpuTrack] = {}
        self._other_cpu: dict[str, _CpuTrack] = {}
        self._sockets: list[int] = []
        self._gauges: dict[str, list[float]] = {}
        self._stop.clear()
        self._tick()
        self._thread = threading.Thread(target=self._run, name="sweep-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._tick()

    def _tick(self) -> None:
        with self._lock:
            for name, proc in self._locust().items():
                self._locust_cpu.setdefault(name, _CpuTrack(self._t0)).see([proc])
                sched = _schedstat(proc.pid)
                track = self._locust_runnable.get(name)
                if sched is not None and (track is None or track.pid != proc.pid):
                    self._locust_runnable[name] = _RunnableTrack(proc.pid, sched, sched)
                elif sched is not None and track is not None:
                    track.last = sched
            for name, procs in self._target().items():
                self._target_cpu.setdefault(name, _CpuTrack(self._t0)).see(procs)
            for name, procs in self._others().items():
                self._other_cpu.setdefault(name, _CpuTrack(self._t0)).see(procs)
            with contextlib.suppress(OSError):
                counts = count_sockets([self.port])
                self._sockets.append(counts.get((str(self.port), "established", "client"), 0))
            for name, value in _collector_gauges(self._collectors).items():
                self._gauges.setdefault(name, []).append(value)

    def stop(self) -> dict[str, Any]:
        """End the window and return its figures ({} when no window is open)."""
        if self._thread is None:
            return {}
        self._stop.set()
        self._thread.join(timeout=10)
        self._thread = None
        self._tick()
        seconds = time.monotonic() - self._mono0
        host1 = psutil.cpu_times()
        with self._lock:
            return {
                "source": "sampled",
                "seconds": round(seconds, 2),
                "loadgen_cpu": {n: round(t.cores(seconds), 3) for n, t in sorted(self._locust_cpu.items())},
                "loadgen_runnable": {
                    n: round(t.share(seconds), 3) for n, t in sorted(self._locust_runnable.items())
                },
                "target_cpu": {n: round(t.cores(seconds), 3) for n, t in sorted(self._target_cpu.items())},
                "target_cpu_max_process": {
                    n: round(t.busiest(seconds), 3) for n, t in sorted(self._target_cpu.items())
                },
                "process_cpu": {n: round(t.cores(seconds), 3) for n, t in sorted(self._other_cpu.items())},
                "host_cpu": _busy_share(self._host0, host1),
                "host_cores": psutil.cpu_count() or 1,
                "client_sockets": _spread(self._sockets),
                **_gauge_figures(self._gauges),
            }


def _busy_share(a: Any, b: Any) -> float | None:
    idle = (b.idle - a.idle) + (getattr(b, "iowait", 0.0) - getattr(a, "iowait", 0.0))
    total = sum(b) - sum(a)
    return round(1.0 - idle / total, 3) if total > 0 else None


def _spread(values: list[int]) -> dict[str, Any] | None:
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "samples": len(values),
    }


# lab exporter metric -> figure name; summed over label sets, except where a label filter is given
_GAUGES: dict[str, tuple[str, dict[str, str] | None]] = {
    "loadlab_postgres_connections": ("pg_connections", None),
    "loadlab_postgres_max_connections": ("pg_max_connections", None),
    "loadlab_redis_connected_clients": ("redis_clients", None),
    "loadlab_redis_maxclients": ("redis_maxclients", None),
    "loadlab_nginx_connections": ("nginx_active", {"state": "active"}),
}


def _collector_gauges(collectors: Iterable[Any]) -> dict[str, float]:
    """One reading of the exporter's collectors, reduced to the figures a step records."""
    out: dict[str, float] = {}
    for collector in collectors:
        try:
            families = list(collector.collect())
        except Exception:  # noqa: BLE001 - a source that is down gives no figure, like `_up 0`
            continue
        for family in families:
            spec = _GAUGES.get(family.name)
            if spec is None:
                continue
            figure, match = spec
            values = [
                s.value
                for s in family.samples
                if s.name == family.name and all(s.labels.get(k) == v for k, v in (match or {}).items())
            ]
            if values:
                out[figure] = out.get(figure, 0.0) + float(sum(values))
    return out


def _gauge_figures(gauges: Mapping[str, list[float]]) -> dict[str, Any]:
    """Peak during the window for connection counts (saturation is about the worst moment)."""
    return {name: max(values) for name, values in gauges.items() if values}


class PrometheusWindow:
    """Window figures from the lab's Prometheus, which scrapes the lab exporter and the Locust plugin."""

    def __init__(self, url: str, port: int, scrape_interval: float = 5.0, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.port = port
        self.scrape_interval = scrape_interval
        self._http = httpx.Client(base_url=self.url, timeout=timeout, trust_env=False)

    def ready(self) -> bool:
        """True when Prometheus answers."""
        try:
            return self._http.get("/-/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def covers(self, seconds: float) -> bool:
        """True when the window holds enough scrapes for rate()."""
        return seconds >= PROMETHEUS_MIN_SCRAPES * self.scrape_interval

    def _query(self, expr: str, at: float) -> list[dict[str, Any]]:
        try:
            resp = self._http.get("/api/v1/query", params={"query": expr, "time": f"{at:.3f}"})
            data = resp.json()
        except (httpx.HTTPError, ValueError):
            return []
        if data.get("status") != "success":
            return []
        return data["data"]["result"]

    def _scalar(self, expr: str, at: float) -> float | None:
        result = self._query(expr, at)
        return round(float(result[0]["value"][1]), 3) if result else None

    def _by(self, expr: str, at: float, labels: tuple[str, ...]) -> dict[str, float]:
        out = {}
        for row in self._query(expr, at):
            name = "/".join(row["metric"].get(label, "") for label in labels).strip("/")
            out[name or "all"] = round(float(row["value"][1]), 3)
        return out

    def measure(self, start: float, end: float) -> dict[str, Any]:
        """Figures for [start, end] (unix seconds)."""
        w = f"{max(1, round(end - start))}s"
        p = self.port
        groups = self._by(f"sum by (group) (rate(loadlab_process_cpu_seconds_total[{w}]))", end, ("group",))
        # The exporter's per-process groups (locust-master, locust-worker-N) count CPU seconds exactly; the
        # Locust plugin's per-worker ratio (sampled by Locust every 10 s) stands in when they are missing.
        loadgen = {g: v for g, v in groups.items() if g.startswith("locust")}
        if not any(g != "locust-master" for g in loadgen):
            loadgen.update(self._by(f"avg_over_time(loadlab_locust_worker_cpu_ratio[{w}])", end, ("worker",)))
        target = {g: v for g, v in groups.items() if g == "nginx" or g.startswith("app-")}
        sockets = self._scalar(
            "quantile_over_time(0.5, sum("
            f'loadlab_tcp_sockets{{port="{p}",state="established",role="client"}})'
            f"[{w}:])",
            end,
        )
        pool_in_use = self._by(
            f'avg_over_time(loadlab_app_db_pool_connections{{state="in_use"}}[{w}])', end, ("instance",)
        )
        pool_size = self._by(f"max_over_time(loadlab_app_db_pool_size[{w}])", end, ("instance",))
        figures: dict[str, Any] = {
            "source": "prometheus",
            "seconds": round(end - start, 2),
            "loadgen_cpu": loadgen,
            "target_cpu": target,
            "process_cpu": groups,
            # the busiest host's share of its cores
            "host_cpu": self._scalar(
                f'max(1 - sum by (host) (rate(loadlab_host_cpu_seconds_total{{mode=~"idle|iowait"}}[{w}])) '
                f"/ sum by (host) (rate(loadlab_host_cpu_seconds_total[{w}])))",
                end,
            ),
            "host_cores": self._scalar("max(loadlab_host_cpus)", end),
            "client_sockets": {"median": sockets} if sockets is not None else None,
            "pg_connections": self._scalar(f"max_over_time(sum(loadlab_postgres_connections)[{w}:])", end),
            "pg_max_connections": self._scalar("max(loadlab_postgres_max_connections)", end),
            "redis_clients": self._scalar(f"max_over_time(sum(loadlab_redis_connected_clients)[{w}:])", end),
            "redis_maxclients": self._scalar("max(loadlab_redis_maxclients)", end),
            "nginx_active": self._scalar(
                f'max_over_time(sum(loadlab_nginx_connections{{state="active"}})[{w}:])', end
            ),
        }
        if pool_size:
            figures["db_pool"] = {
                inst: {"in_use_avg": pool_in_use.get(inst), "size": size}
                for inst, size in sorted(pool_size.items())
            }
        return {k: v for k, v in figures.items() if v is not None and v != {}}

    def close(self) -> None:
        self._http.close()
