"""What the machines did during a step's window: from the lab's Prometheus, or sampled in-process.

Both readers fill one model (loadlab.sweep.resource_model), host by host, with the same fields: what a
reader cannot give is null there. Every figure is for the window only. The Prometheus reader's queries are
the dashboards' own (loadlab.dashboards.queries), so a step's figure and the panel showing it agree. CPU is
in cores (1.0 = one core busy for the whole window), so a Locust process at 0.95 is as busy as one Python
process can be.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from loadlab.dashboards import queries as q
from loadlab.exporters.sockets import read_listen_overflows, sample_sockets
from loadlab.inputs import target_port  # noqa: F401 (imported from here)
from loadlab.sweep.resource_model import (
    LOADGEN,
    ComponentTrack,
    Resources,
    SocketFigures,
    key,
    role_of,
)

if TYPE_CHECKING:
    from loadlab.lab import Lab

SAMPLE_INTERVAL = 1.0
# Prometheus needs a few scrapes inside the window for rate(); shorter windows are sampled in-process.
PROMETHEUS_MIN_SCRAPES = 3


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


def this_host(lab: Lab | None) -> str:
    """This machine's name in the lab: the inventory's name for it (a loadgen host first, since sampling
    watches the generators), else its hostname."""
    if lab is not None:
        for group in ("loadgen", "lb", "app", "postgres", "redis", "monitor"):
            for host in lab.group(group):
                if is_local_address(host.address):
                    return host.name
    return socket.gethostname()


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


def _runnable_total(proc: psutil.Process) -> float | None:
    return _schedstat(proc.pid)


@dataclass
class _CpuTrack:
    """Seconds a changing set of processes used since the window began: CPU time, or (`read` =
    _runnable_total) the time their main threads ran or sat runnable waiting for a CPU, as the exporter's
    loadlab_process_runnable_seconds_total counts it. A process on a busy host may get only part of a core;
    if it was runnable all the time it would have used a full one, so it is as CPU-bound as one at 100%."""

    start_time: float
    read: Callable[[psutil.Process], float | None] = _cpu_total
    first: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)
    most: int = 0  # the most processes seen at once

    def see(self, procs: Iterable[psutil.Process]) -> None:
        seen = 0
        for proc in procs:
            total = self.read(proc)
            if total is None:
                continue
            seen += 1
            if proc.pid not in self.first:
                try:
                    born_inside = proc.create_time() >= self.start_time
                except psutil.Error:
                    born_inside = False
                self.first[proc.pid] = 0.0 if born_inside else total
            self.last[proc.pid] = total
        self.most = max(self.most, seen)

    def used(self) -> float:
        """CPU seconds the processes used since the window began (as far as they were seen)."""
        return sum(self.last[p] - self.first[p] for p in self.last)

    def cores(self, seconds: float) -> float:
        return self.used() / seconds if seconds > 0 else 0.0

    def busiest(self, seconds: float) -> float:
        """The one process that used the most CPU, in cores."""
        used = [self.last[p] - self.first[p] for p in self.last]
        return max(used) / seconds if used and seconds > 0 else 0.0


class Sampler:
    """In-process sampling for one window on this machine, into the same model PrometheusWindow fills.

    Every process is keyed with `host`, this machine's name in the lab (the inventory's, else its hostname).
    Samples are taken every `interval` seconds from the window's start (on that schedule, not drifting by
    the time a sample takes), and one when the window closes; `series()` gives the window sample by sample.
    """

    def __init__(
        self,
        port: int,
        locust: Callable[[], Mapping[str, psutil.Process]],
        target: Callable[[], Mapping[str, list[psutil.Process]]],
        others: Callable[[], Mapping[str, list[psutil.Process]]] | None = None,
        collectors: Iterable[Any] = (),
        interval: float = SAMPLE_INTERVAL,
        host: str | None = None,
        count_server_sockets: bool = False,
        app_metrics: Mapping[str, str] | None = None,
    ) -> None:
        self.port = port
        self.host = host or socket.gethostname()
        self._locust = locust
        self._target = target
        self._others = others or (lambda: {})
        self._collectors = list(collectors)
        self._server_sockets = count_server_sockets
        self._app_metrics = dict(app_metrics or {})  # app process name -> its /metrics URL
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._http: httpx.Client | None = None

    def start(self) -> None:
        """Begin the window now."""
        self._t0 = time.time()
        self._mono0 = time.monotonic()
        self._host0 = psutil.cpu_times()
        self._cpu: dict[str, _CpuTrack] = {}
        self._runnable: dict[str, _CpuTrack] = {}
        self._sockets: dict[str, list[int]] = {"client": [], "server": []}
        self._memory_used: list[int] = []
        self._gauges: dict[tuple[str, str], list[float]] = {}
        self._pool: dict[str, tuple[list[float], list[float]]] = {}
        self._fds: dict[str, float] = {}  # group -> peak share of its open-files limit one process held
        # The collectors' sources, scrape by scrape: one whose collector fails is down, like `_up` 0.
        self._components: dict[str, ComponentTrack] = {}
        self._tcp: dict[str, list[float]] = {"ephemeral_ports_used_ratio": [], "time_wait": []}
        # Per sample: (when, the machine's CPU times, group -> (when read, CPU seconds used in the window)).
        self._ticks: list[tuple[float, Any, dict[str, tuple[float, float]]]] = []
        self._overflows0 = _listen_overflows()
        if self._app_metrics and self._http is None:
            self._http = httpx.Client(timeout=2.0, trust_env=False)
        self._stop.clear()
        self._tick()
        self._thread = threading.Thread(target=self._run, name="sweep-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        due = 1
        while not self._stop.wait(max(0.0, self._mono0 + due * self.interval - time.monotonic())):
            self._tick()
            # The next sample on the schedule; one that a slow sample overran is skipped, not crowded in.
            due = max(due + 1, math.floor((time.monotonic() - self._mono0) / self.interval) + 1)

    def _tick(self) -> None:
        with self._lock:
            machine = (time.monotonic(), psutil.cpu_times())
            used: dict[str, tuple[float, float]] = {}
            locust = {
                (name if name.startswith("locust") else f"locust-{name}"): [proc]
                for name, proc in self._locust().items()
            }
            for group in (locust, self._target(), self._others()):
                for name, found in group.items():
                    procs = list(found)
                    cpu = self._cpu.setdefault(name, _CpuTrack(self._t0))
                    cpu.see(procs)
                    used[name] = (time.monotonic(), cpu.used())
                    self._runnable.setdefault(name, _CpuTrack(self._t0, _runnable_total)).see(procs)
                    self._see_fds(name, procs)
            self._ticks.append((*machine, used))
            with contextlib.suppress(OSError):
                sampled = sample_sockets([self.port])
                counts = dict(sampled.items())
                self._sockets["client"].append(counts.get((str(self.port), "established", "client"), 0))
                if self._server_sockets:
                    self._sockets["server"].append(counts.get((str(self.port), "established", "server"), 0))
                ports_used = sampled.ephemeral_used / sampled.ephemeral_size
                self._tcp["ephemeral_ports_used_ratio"].append(ports_used)
                self._tcp["time_wait"].append(sampled.time_wait)
            memory = psutil.virtual_memory()
            self._memory_used.append(memory.total - memory.available)
            gauges, down = _collector_gauges(self._collectors)
            for figure, value in gauges.items():
                self._gauges.setdefault(figure, []).append(value)
            now = time.time()
            for source, is_down in down.items():
                series = f"loadlab_{source}_up"
                self._components.setdefault(source, ComponentTrack()).scrape(now, is_down, series)
            for name, url in self._app_metrics.items():
                pool = _app_pool(self._http, url)
                if pool is not None:
                    in_use, size = self._pool.setdefault(name, ([], []))
                    in_use.append(pool[0])
                    size.append(pool[1])

    def _see_fds(self, name: str, procs: Iterable[psutil.Process]) -> None:
        ratio = _fds_limit_ratio(procs)
        if ratio is not None:
            self._fds[name] = max(ratio, self._fds.get(name, 0.0))

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
        if self._http is not None:
            self._http.close()
            self._http = None
        with self._lock:
            model = Resources("sampled", seconds)
            for name, track in sorted(self._cpu.items()):
                runnable = self._runnable.get(name)
                model.add_process(
                    self.host,
                    name,
                    track.cores(seconds),
                    runnable=round(runnable.cores(seconds), 3) if runnable and runnable.last else None,
                    busiest_one=round(track.busiest(seconds), 3) if track.last else None,
                    processes_max=track.most if track.last else None,
                    fds_limit_ratio=round(self._fds[name], 3) if name in self._fds else None,
                )
            me = model.host(self.host)
            me.cpu = _busy_share(self._host0, host1)
            me.cores = psutil.cpu_count() or 1
            me.cpu_from = "machine"
            me.memory_total_bytes = psutil.virtual_memory().total
            me.memory_used_bytes = max(self._memory_used) if self._memory_used else None
            # shared_machine stays null: this machine's figures say nothing of which lab hosts share it.
            for role, values in self._sockets.items():
                spread = _spread(values)
                if spread is not None:
                    figures = SocketFigures(**spread, hosts={self.host: spread["median"]})
                    setattr(model, f"{role}_sockets", figures)
            if not self._server_sockets:
                model.server_sockets = None  # the target's port is not on this machine
            # Sections no collector (or no app's /metrics) here reads are null, not empty.
            sources = {getattr(c, "name", None) for c in self._collectors}
            for section in ("postgres", "redis", "nginx"):
                if section not in sources:
                    setattr(model, section, None)
            if not self._app_metrics:
                model.db_pool = None
            for (section, figure), values in self._gauges.items():
                entries = getattr(model, section)
                if values and entries is not None:  # peak during the window: saturation is the worst moment
                    entries.setdefault(self.host, {})[figure] = max(values)
            tcp = {figure: max(values) for figure, values in self._tcp.items() if values}
            overflows = _listen_overflows()
            if overflows is not None and self._overflows0 is not None:
                tcp["listen_overflows"] = max(0, overflows - self._overflows0)
            if tcp:
                model.tcp[self.host] = {k: round(v, 3) for k, v in tcp.items()}
            if self._collectors:
                end = time.time()
                for source, track in sorted(self._components.items()):
                    found = track.figures(self._t0, end, self.interval)
                    if found is not None:
                        model.components[key(self.host, source)] = found  # type: ignore[index]
            else:
                model.components = None  # no collector: nothing here says what was down
            for name, (in_use, size) in sorted(self._pool.items()):
                model.db_pool[key(self.host, name)] = {  # type: ignore[index]
                    "in_use_avg": round(statistics.fmean(in_use), 3),
                    "size": max(size),
                }
            return model.to_dict()

    def series(self) -> dict[str, Any] | None:
        """The last window sample by sample, in the shape PrometheusWindow.series() gives, for the step's
        samples: each process group's CPU (cores, keyed `host/group` as in the step's resources) and this
        host's busy share, one value per sample interval (from one sample to the next), `t` the interval
        ends in seconds since the window began and `interval_s` the sampling interval. A group missing from
        either end of an interval has no value there (None). A sample closer than half an interval to the
        one before (the window closed just after a scheduled sample) ends no interval: the series stops at
        the last whole one, as Prometheus's does at the last whole scrape interval. None before a window
        has two samples; call it after stop()."""
        with self._lock:
            ticks = list(getattr(self, "_ticks", []))
        if len(ticks) < 2:
            return None
        kept = [ticks[0]]
        for tick in ticks[1:]:
            if tick[0] - kept[-1][0] >= self.interval / 2:
                kept.append(tick)
        if len(kept) < 2:
            return None
        names = sorted({name for _, _, used in kept for name in used})
        processes: dict[str, list[float | None]] = {key(self.host, name): [] for name in names}
        busy: list[float | None] = []
        for (_, times0, used0), (_, times1, used1) in zip(kept, kept[1:], strict=False):
            share = _busy_share(times0, times1, digits=4)
            busy.append(share)
            for name in names:
                a, b = used0.get(name), used1.get(name)
                value = (
                    (b[1] - a[1]) / (b[0] - a[0]) if a is not None and b is not None and b[0] > a[0] else None
                )
                processes[key(self.host, name)].append(None if value is None else round(value, 4))
        return {
            "source": "sampled",
            "interval_s": self.interval,
            "t": [round(t - self._mono0, 3) for t, _, _ in kept[1:]],
            "processes": processes,
            "hosts": {self.host: busy},
        }


def _listen_overflows() -> int | None:
    try:
        return read_listen_overflows()
    except (OSError, ValueError):
        return None


def _fds_limit_ratio(procs: Iterable[psutil.Process]) -> float | None:
    """The highest share of its own soft open-files limit that one of these processes holds."""
    best = None
    for proc in procs:
        try:
            soft = proc.rlimit(psutil.RLIMIT_NOFILE)[0]
            used = proc.num_fds()
        except (psutil.Error, OSError):
            continue
        if soft > 0:
            best = max(best or 0.0, used / soft)
    return best


def _busy_share(a: Any, b: Any, digits: int = 3) -> float | None:
    """The machine's busy share (not idle, not waiting for I/O) between two psutil.cpu_times() readings."""
    idle = (b.idle - a.idle) + (getattr(b, "iowait", 0.0) - getattr(a, "iowait", 0.0))
    total = sum(b) - sum(a)
    return round(1.0 - idle / total, digits) if total > 0 else None


def _spread(values: list[int]) -> dict[str, Any] | None:
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "samples": len(values),
    }


def _app_pool(http: httpx.Client | None, url: str) -> tuple[float, float] | None:
    """(connections in use, pool size) from an app instance's /metrics, or None when it does not answer."""
    if http is None:
        return None
    try:
        text = http.get(url).text
        families = list(text_string_to_metric_families(text))
    except (httpx.HTTPError, ValueError):
        return None
    in_use = size = None
    for family in families:
        for sample in family.samples:
            if sample.name == "loadlab_app_db_pool_connections" and sample.labels.get("state") == "in_use":
                in_use = sample.value
            elif sample.name == "loadlab_app_db_pool_size":
                size = sample.value
    return (in_use, size) if in_use is not None and size is not None else None


# lab exporter metric -> (model section, figure); summed over label sets, except where a label filter is given
_GAUGES: dict[str, tuple[str, str, dict[str, str] | None]] = {
    "loadlab_postgres_connections": ("postgres", "connections", None),
    "loadlab_postgres_max_connections": ("postgres", "max_connections", None),
    "loadlab_redis_connected_clients": ("redis", "clients", None),
    "loadlab_redis_maxclients": ("redis", "maxclients", None),
    "loadlab_nginx_connections": ("nginx", "active", {"state": "active"}),
}


def _collector_gauges(collectors: Iterable[Any]) -> tuple[dict[tuple[str, str], float], dict[str, bool]]:
    """One reading of the exporter's collectors, reduced to the figures a step records, and which named
    sources were down (their collector failed, as the exporter's `loadlab_<source>_up` would read 0)."""
    out: dict[tuple[str, str], float] = {}
    down: dict[str, bool] = {}
    for collector in collectors:
        name = getattr(collector, "name", None)
        try:
            families = list(collector.collect())
        except Exception:  # noqa: BLE001 - a source that is down gives no figure, like `_up 0`
            if name:
                down[name] = True
            continue
        if name:
            down[name] = False
        for family in families:
            spec = _GAUGES.get(family.name)
            if spec is None:
                continue
            section, figure, match = spec
            values = [
                s.value
                for s in family.samples
                if s.name == family.name and all(s.labels.get(k) == v for k, v in (match or {}).items())
            ]
            if values:
                out[section, figure] = out.get((section, figure), 0.0) + float(sum(values))
    return out, down


# Exporter sources whose `loadlab_<source>_up` says a lab component is down (the others read this host).
_COMPONENT_SOURCES = ("postgres", "redis", "nginx")


class PrometheusWindow:
    """Window figures from the lab's Prometheus, which scrapes every host's exporter, the apps and the
    Locust plugin, each target labelled with its inventory `host`.

    `loadgen_hosts` and `lb_hosts` (inventory names) narrow where client and server sockets are counted;
    without them every host counts.
    """

    def __init__(
        self,
        url: str,
        port: int,
        scrape_interval: float,
        timeout: float = 5.0,
        loadgen_hosts: Iterable[str] | None = None,
        lb_hosts: Iterable[str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.port = port
        self.scrape_interval = scrape_interval
        self.loadgen_hosts = list(loadgen_hosts or [])
        self.lb_hosts = list(lb_hosts or [])
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

    def _by(self, expr: str, at: float, labels: tuple[str, ...]) -> dict[tuple[str, ...], float]:
        """Label values -> value, for an expression aggregated by `labels`; NaN results are left out."""
        out = {}
        for row in self._query(expr, at):
            value = float(row["value"][1])
            if value == value:  # not NaN (0/0 on a host with no samples)
                out[tuple(row["metric"].get(label, "") for label in labels)] = round(value, 3)
        return out

    def _over(self, function: str, expr: str, w: str, *params: float) -> str:
        """`function` over the window at one point per scrape (not the server's evaluation interval)."""
        return q.over_window(function, expr, w, f"{self.scrape_interval:g}s", *params)

    def _sockets(self, role: str, hosts: list[str], w: str, end: float) -> SocketFigures:
        where = {"hosts": q.hosts_matcher(hosts), "port": str(self.port)}
        total = q.established(role, by="", **where)
        per_host = self._by(
            self._over("quantile_over_time", q.established(role, **where), w, 0.5), end, ("host",)
        )
        samples = self._scalar(self._over("count_over_time", total, w), end)
        return SocketFigures(
            median=self._scalar(self._over("quantile_over_time", total, w, 0.5), end),
            min=self._scalar(self._over("min_over_time", total, w), end),
            max=self._scalar(self._over("max_over_time", total, w), end),
            samples=None if samples is None else int(samples),
            hosts={h: v for (h,), v in per_host.items()},
        )

    def measure(self, start: float, end: float) -> dict[str, Any]:
        """Figures for [start, end] (unix seconds), host by host."""
        w = f"{max(1, round(end - start))}s"
        model = Resources("prometheus", end - start)
        every = ""  # every host: the queries' host matcher
        by_group = ("host", "group")
        groups = self._by(q.process_cpu(window=w, hosts=every), end, by_group)
        runnable = self._by(q.process_runnable(w, every), end, by_group)
        # Each group's role as its exporter's config says (a service of yours names its own groups), and
        # the most processes it had: a group of one process is as full at one core as an app instance.
        roles = {
            (host, group): role
            for host, group, role in self._by(q.process_roles(every), end, ("host", "group", "role"))
        }
        counts = self._by(q.processes(w, every), end, by_group)
        fds = self._by(q.fds_limit_ratio(w, every), end, by_group)
        for (host, group), cores in groups.items():
            most = int(counts[(host, group)]) if (host, group) in counts else None
            figures: dict[str, Any] = {
                "runnable": runnable.get((host, group)),
                "processes_max": most,
                # busiest_one: the exporter counts groups, so only a group of one process has it (the model
                # gives it that group's cpu)
                "fds_limit_ratio": fds.get((host, group)),
            }
            if (host, group) in roles:
                figures["role"] = roles[(host, group)]
            model.add_process(host, group, cores, **figures)
        # The exporter's per-process groups (locust-master, locust-worker-N) count CPU seconds exactly; the
        # Locust plugin's per-worker ratio (sampled by Locust every 10 s) stands in when they are missing.
        # A worker's id starts with the hostname it runs on.
        if not any(role_of(g) == LOADGEN and g != "locust-master" for _, g in groups):
            for (worker,), cores in self._by(q.locust_worker_cpu(w, every), end, ("worker",)).items():
                where, _, suffix = worker.rpartition("_")
                model.add_process(where or "unknown", f"locust-worker-{suffix[:8]}", cores, cpu_from="locust")
        host_rows = {
            "cpu": self._by(q.host_cpu_busy(w, every), end, ("host",)),
            "cores": self._by(q.host_cores(every), end, ("host",)),
            "memory_total_bytes": self._by(q.host_memory_total(every), end, ("host",)),
            "memory_used_bytes": self._by(q.host_memory_used(w, every), end, ("host",)),
            "cgroup": self._by(q.host_cpu_cgroup(every), end, ("host",)),
            "shared": self._by(q.host_shared_machine(every), end, ("host",)),
        }
        for figure, rows in host_rows.items():
            for (host,), value in rows.items():
                h = model.host(host)
                if figure == "cgroup":
                    h.cpu_from = "cgroup" if value else "machine"
                elif figure == "shared":
                    h.shared_machine = bool(value)
                elif figure == "cores":
                    h.cores = int(value) if float(value).is_integer() else value
                else:
                    setattr(h, figure, value)
        model.client_sockets = self._sockets("client", self.loadgen_hosts, w, end)
        model.server_sockets = self._sockets("server", self.lb_hosts, w, end)
        # peaks over the window (max_over_time of the per-host total, scrape by scrape); limits as they are
        connections = (
            ("postgres", "connections", self._over("max_over_time", q.postgres_connections(every), w)),
            ("postgres", "max_connections", q.postgres_max_connections(every)),
            ("redis", "clients", self._over("max_over_time", q.redis_clients(every), w)),
            ("redis", "maxclients", q.redis_maxclients(every)),
            ("nginx", "active", self._over("max_over_time", q.nginx_connections(("active",), every), w)),
            ("tcp", "ephemeral_ports_used_ratio", q.ephemeral_ports_used(w, every)),
            ("tcp", "time_wait", q.time_wait(w, every)),
            ("tcp", "listen_overflows", q.listen_overflows(w, every)),
        )
        for section, figure, expr in connections:
            for (host,), value in self._by(expr, end, ("host",)).items():
                getattr(model, section).setdefault(host, {})[figure] = value
        labels = ("host", "instance")
        in_use = self._by(q.db_pool_in_use(w, every, instances=""), end, labels)
        size = self._by(q.db_pool_size(w, every, instances=""), end, labels)
        for (host, instance), pool_size in sorted(size.items()):
            app = f"app-{instance.rsplit(':', 1)[-1]}"
            model.db_pool[key(host, app)] = {"in_use_avg": in_use.get((host, instance)), "size": pool_size}
        self._components(model, start, end)
        return model.to_dict()

    def series(self, start: float, end: float) -> dict[str, Any] | None:
        """The window scrape by scrape: each process group's CPU (cores) and each host's busy share, one
        value per scrape interval (a rate over two scrapes), for the step's samples; None when Prometheus
        has none."""
        step = self.scrape_interval
        rate = f"{2 * step:g}s"
        queries = {
            "processes": (q.process_cpu(window=rate, hosts=""), ("host", "group")),
            "hosts": (q.host_cpu_busy(rate, hosts=""), ("host",)),
        }
        times = [round(start + step * (k + 1), 3) for k in range(int((end - start) // step))]
        if not times:
            return None
        out: dict[str, Any] = {
            "source": "prometheus",
            "interval_s": step,
            "t": [round(t - start, 3) for t in times],
        }
        for name, (expr, labels) in queries.items():
            found: dict[str, list[float | None]] = {}
            try:
                resp = self._http.get(
                    "/api/v1/query_range",
                    params={
                        "query": expr,
                        "start": f"{times[0]:.3f}",
                        "end": f"{times[-1]:.3f}",
                        "step": f"{step:g}s",
                    },
                )
                rows = resp.json()["data"]["result"] if resp.status_code == 200 else []
            except (httpx.HTTPError, ValueError, KeyError):
                rows = []
            for row in rows:
                values = {round(float(t), 3): float(v) for t, v in row.get("values") or []}
                name_of = "/".join(row["metric"].get(label, "") for label in labels)
                found[name_of] = [
                    round(values[t], 4) if t in values and values[t] == values[t] else None for t in times
                ]
            out[name] = dict(sorted(found.items()))
        return out if out["processes"] or out["hosts"] else None

    def _samples(self, selector: str, start: float, end: float) -> Iterator[tuple[dict[str, str], list]]:
        """Every raw sample of the selected series in [start, end]: (labels, [(scrape time, value)])."""
        millis = max(1, round((end - start) * 1000))
        for row in self._query(f"{selector}[{millis}ms]", end):
            yield row["metric"], [(float(t), float(v)) for t, v in row.get("values") or []]

    def _components(self, model: Resources, start: float, end: float) -> None:
        """What was down or restarted in [start, end]: sources whose collector failed (`_up` 0), process
        groups with no process, groups whose processes started in the window.

        Read from each scrape's own sample (a range selector at `end`), which is exact: query_range and
        subqueries resample at fixed steps, so a scrape can be counted twice or missed when scrape times
        drift against the steps, and the last sample before the window is carried into it."""
        tracks: dict[tuple[str, str], ComponentTrack] = {}

        def track(labels: dict[str, str], component: str) -> ComponentTrack:
            return tracks.setdefault((labels.get("host", ""), component), ComponentTrack())

        for labels, values in self._samples(q.sources_up(_COMPONENT_SOURCES, hosts=""), start, end):
            series = labels["__name__"]
            for at, value in values:
                track(labels, series[len("loadlab_") : -len("_up")]).scrape(at, value == 0, series)
        for labels, values in self._samples("loadlab_processes", start, end):
            for at, value in values:
                track(labels, labels.get("group", "")).scrape(at, value == 0, "loadlab_processes")
        for labels, values in self._samples("loadlab_process_start_time_seconds", start, end):
            for _, value in values:
                track(labels, labels.get("group", "")).started(value, "loadlab_process_start_time_seconds")
        for (host, component), found in sorted(tracks.items()):
            figures = found.figures(start, end, self.scrape_interval)
            if figures is not None:
                model.components[key(host, component)] = figures

    def close(self) -> None:
        self._http.close()
