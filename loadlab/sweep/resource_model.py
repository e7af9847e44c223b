"""One model of what the machines did in a step's window, whoever read it (Prometheus or in-process sampling).

Every figure keeps the host it was measured on. Processes are keyed `host/process` (`target2/app-8003`,
`loadgen1/locust-worker-2`), so the same process group on two hosts never merges; host figures (CPU share of
that host's own cores, cores, memory) and connection figures (PostgreSQL, Redis, nginx, each app instance's
DB pool) are keyed by host too. A step's resources are this model's `to_dict()`; the per-step scalars of
summary.json (`loadgen_cpu`, `target_cpu` and the busiest process and host beside them) are derived from it
by `step_figures`.

`components` holds what was down or restarted during the window, keyed `host/component` (`data1/postgres`,
`target1/app-8002`): a source whose exporter collector failed (`loadlab_<source>_up` 0), a process group
with no process, a group whose processes started inside the window. A quiet window has none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# A process group's role is the exporter's: its config says it, or the group's name implies it (role_of).
from loadlab.exporters.config import (  # noqa: F401 (imported from here)
    DATA,
    LOADGEN,
    MONITOR,
    OTHER,
    TARGET,
    role_of,
)


def key(host: str, process: str) -> str:
    """The one name of a process across the lab: `host/process`."""
    return f"{host}/{process}"


def host_of(name: str) -> str:
    """The host part of a `host/process` key."""
    return name.split("/", 1)[0]


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(float(x), nd)


@dataclass
class HostFigures:
    """One host in the window: busy share of its own cores, its cores, its memory."""

    cpu: float | None = None  # share 0..1 of the host's cores that was busy
    cores: float | None = None
    memory_total_bytes: float | None = None
    memory_used_bytes: float | None = None  # peak in the window
    cpu_from: str | None = None  # "cgroup": the host's own processes; "machine": the whole machine
    shared_machine: bool = False  # the host shares its machine's cores with other lab hosts

    def to_dict(self) -> dict[str, Any]:
        out = {
            "cpu": _r(self.cpu),
            "cores": self.cores,
            "memory_total_bytes": self.memory_total_bytes,
            "memory_used_bytes": self.memory_used_bytes,
            "cpu_from": self.cpu_from,
            "shared_machine": self.shared_machine,
        }
        return {k: v for k, v in out.items() if v is not None}


@dataclass
class SocketFigures:
    """Established TCP sockets at the target port in the window: median of the total, and per host."""

    median: float | None = None
    min: float | None = None
    max: float | None = None
    samples: int | None = None
    hosts: dict[str, float] = field(default_factory=dict)  # host -> median on that host

    def to_dict(self) -> dict[str, Any] | None:
        if self.median is None and not self.hosts:
            return None
        out = {"median": self.median, "min": self.min, "max": self.max, "samples": self.samples}
        out = {k: v for k, v in out.items() if v is not None}
        out["hosts"] = dict(sorted(self.hosts.items()))
        return out


@dataclass
class Resources:
    """A step's resources, host by host; both readers fill the same fields."""

    source: str  # "prometheus" or "sampled"
    seconds: float
    hosts: dict[str, HostFigures] = field(default_factory=dict)
    # host/process -> {"cpu": cores, "role": ..., "runnable": share of the window it ran or waited to run,
    # "fds_limit_ratio": peak share of its open-files limit one of its processes held}
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)
    client_sockets: SocketFigures = field(default_factory=SocketFigures)  # on the loadgen hosts
    server_sockets: SocketFigures = field(default_factory=SocketFigures)  # on the lb hosts
    postgres: dict[str, dict[str, float]] = field(
        default_factory=dict
    )  # host -> connections, max_connections
    redis: dict[str, dict[str, float]] = field(default_factory=dict)  # host -> clients, maxclients
    nginx: dict[str, dict[str, float]] = field(default_factory=dict)  # host -> active
    db_pool: dict[str, dict[str, float | None]] = field(
        default_factory=dict
    )  # host/app-PORT -> in_use_avg, size
    # host -> ephemeral_ports_used_ratio (peak), time_wait (peak), listen_overflows (new in the window)
    tcp: dict[str, dict[str, float]] = field(default_factory=dict)
    # host/component -> {"down_s", "down_from", "down_to", "restarted_at", "source"}: see ComponentTrack
    components: dict[str, dict[str, Any]] = field(default_factory=dict)

    def host(self, name: str) -> HostFigures:
        """The host's figures, created on first use."""
        return self.hosts.setdefault(name, HostFigures())

    def add_process(self, host: str, process: str, cpu: float, **extra: Any) -> None:
        """One process (group) on one host; the same name on another host stays apart."""
        self.processes[key(host, process)] = {"cpu": _r(cpu), "role": role_of(process), **extra}

    def to_dict(self) -> dict[str, Any]:
        """The step's `resources` in steps.jsonl and summary.json."""
        out: dict[str, Any] = {
            "source": self.source,
            "seconds": round(self.seconds, 2),
            "shared_machine": any(h.shared_machine for h in self.hosts.values()),
            "hosts": {h: f.to_dict() for h, f in sorted(self.hosts.items())},
            "processes": dict(sorted(self.processes.items())),
            "client_sockets": self.client_sockets.to_dict(),
            "server_sockets": self.server_sockets.to_dict(),
            "postgres": dict(sorted(self.postgres.items())),
            "redis": dict(sorted(self.redis.items())),
            "nginx": dict(sorted(self.nginx.items())),
            "db_pool": dict(sorted(self.db_pool.items())),
            "tcp": dict(sorted(self.tcp.items())),
            "components": dict(sorted(self.components.items())),
        }
        return {k: v for k, v in out.items() if v is not None and v != {}}


@dataclass
class ComponentTrack:
    """One component's scrapes in a window, as a reader finds them: which scrapes read it down, and the
    start times its processes reported (a start inside the window is a restart, even one between two
    scrapes that never read it down)."""

    seen: set[float] = field(default_factory=set)  # every scrape time of the component's series
    down: dict[float, set[str]] = field(default_factory=dict)  # scrape time -> series that read it down
    starts: dict[float, set[str]] = field(default_factory=dict)  # start time -> series that reported it

    def scrape(self, at: float, is_down: bool, series: str) -> None:
        self.seen.add(at)
        if is_down:
            self.down.setdefault(at, set()).add(series)

    def started(self, at: float, series: str) -> None:
        self.starts.setdefault(at, set()).add(series)

    def figures(self, start: float, end: float, interval: float) -> dict[str, Any] | None:
        """{"down_s", "down_from", "down_to", "restarted_at", "source"} for [start, end], or None when it
        was neither down nor restarted. `down_s` is the down scrapes times the scrape interval (at most
        the window); `down_from`/`down_to` are the first and last down scrape, `down_to` None while it was
        still down at the last scrape; without a down scrape both are left out."""
        seen = sorted(t for t in self.seen if start <= t <= end)
        down = [t for t in seen if t in self.down]
        restarts = sorted(t for t in self.starts if start < t <= end)
        if not down and not restarts:
            return None
        sources = {s for t in down for s in self.down[t]} | {s for t in restarts for s in self.starts[t]}
        out: dict[str, Any] = {"down_s": round(min(len(down) * interval, end - start), 3)}
        if down:
            out["down_from"] = round(down[0], 3)
            out["down_to"] = None if down[-1] == seen[-1] else round(down[-1], 3)
        out["restarted_at"] = [round(t, 3) for t in restarts]
        out["source"] = sorted(sources)
        return out


# -- reading a step's resources (the dict form, as steps.jsonl holds it) -------------------------------------


def processes(resources: Mapping[str, Any], role: str) -> dict[str, float]:
    """host/process -> cores, for the processes of one role."""
    return {
        name: float(p.get("cpu") or 0.0)
        for name, p in (resources.get("processes") or {}).items()
        if p.get("role") == role
    }


def busiest_process(resources: Mapping[str, Any], role: str) -> dict[str, Any] | None:
    """The process of a role that used the most CPU: {"process": "loadgen1/locust-worker-2", "cpu": 0.91}."""
    cpu = processes(resources, role)
    if not cpu:
        return None
    name = max(sorted(cpu), key=lambda n: cpu[n])
    return {"process": name, "cpu": _r(cpu[name])}


def per_host(resources: Mapping[str, Any], role: str) -> dict[str, float]:
    """host -> cores the processes of one role used on it."""
    out: dict[str, float] = {}
    for name, cores in processes(resources, role).items():
        out[host_of(name)] = out.get(host_of(name), 0.0) + cores
    return out


def host_cores(resources: Mapping[str, Any], host: str) -> float | None:
    """The host's own cores, as its exporter (or this machine) reported them."""
    return ((resources.get("hosts") or {}).get(host) or {}).get("cores")


def busiest_host(resources: Mapping[str, Any], role: str) -> dict[str, Any] | None:
    """The host whose processes of a role used the largest share of that host's own cores:
    {"host": "target1", "cpu": 0.8, "cores": 2, "share": 0.4}."""
    used = per_host(resources, role)
    if not used:
        return None
    rows = []
    for host, cores_used in used.items():
        cores = host_cores(resources, host)
        share = cores_used / cores if cores else None
        rows.append({"host": host, "cpu": _r(cores_used), "cores": cores, "share": _r(share)})
    return max(sorted(rows, key=lambda r: r["host"]), key=lambda r: (r["share"] or 0.0, r["cpu"] or 0.0))


def _whole(x: float | None) -> float | int | None:
    if x is None:
        return None
    return int(x) if float(x).is_integer() else x


def step_figures(resources: Mapping[str, Any]) -> dict[str, Any]:
    """The per-step scalars of summary.json: CPU totals in cores over all hosts, with the busiest process
    and host beside them, and the median total of client and server sockets at the target port."""
    loadgen, target = processes(resources, LOADGEN), processes(resources, TARGET)
    return {
        "client_sockets": _whole((resources.get("client_sockets") or {}).get("median")),
        "server_sockets": _whole((resources.get("server_sockets") or {}).get("median")),
        "loadgen_cpu": _r(sum(loadgen.values())) if loadgen else None,
        "loadgen_cpu_busiest": busiest_process(resources, LOADGEN),
        "loadgen_cpu_busiest_host": busiest_host(resources, LOADGEN),
        "target_cpu": _r(sum(target.values())) if target else None,
        "target_cpu_busiest": busiest_process(resources, TARGET),
        "target_cpu_busiest_host": busiest_host(resources, TARGET),
    }


def with_generator(lab: Mapping[str, Any], generator: Mapping[str, Any]) -> dict[str, Any]:
    """A standalone sweep against the lab: the lab's figures (its Prometheus) with this sweep's own Locust
    (sampled where it runs) as the generator. The lab's idle Locust processes are left out, the client
    sockets are the generator's, and the generator's host keeps its sampled figures where the lab has none."""
    out = {k: v for k, v in lab.items()}
    procs = {n: p for n, p in (lab.get("processes") or {}).items() if p.get("role") != LOADGEN}
    procs.update({n: p for n, p in (generator.get("processes") or {}).items() if p.get("role") == LOADGEN})
    out["processes"] = dict(sorted(procs.items()))
    if generator.get("client_sockets"):
        out["client_sockets"] = generator["client_sockets"]
    else:
        out.pop("client_sockets", None)
    for section in ("hosts", "tcp"):
        merged = dict(generator.get(section) or {})
        merged.update(lab.get(section) or {})
        if merged:
            out[section] = dict(sorted(merged.items()))
    out["generator_source"] = generator.get("source")
    return out
