"""One model of what the machines did in a step's window, whoever read it (Prometheus or in-process sampling).

Every figure keeps the host it was measured on. Processes are keyed `host/process` (`target2/app-8003`,
`loadgen1/locust-worker-2`), so the same process group on two hosts never merges; host figures (CPU share of
that host's own cores, cores, memory) and connection figures (PostgreSQL, Redis, nginx, each app instance's
DB pool) are keyed by host too. A step's resources are this model's `to_dict()`; the per-step scalars of
summary.json (`loadgen_cpu`, `target_cpu` and the busiest process and host beside them) are derived from it
by `step_figures`.

Both readers fill the same fields: every process, host, socket and connection entry carries each of the
figures below (PROCESS_FIGURES, HOST_FIGURES, SOCKET_FIGURES, SECTION_FIGURES), null where its reader cannot
give that figure, and a section the reader cannot read at all is null (the README lists which). A section
with nothing in it (no PostgreSQL in the window, a quiet window's components) is left out.

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


# -- the fields ---------------------------------------------------------------------------------------------

# Per process group (`host/process`):
#   cpu             cores it used over the window (1.0 = one core busy all window)
#   role            loadgen, target, data, monitor or other (the exporter's config, else its name's)
#   runnable        share of the window its processes' main threads ran or waited to run (schedstat)
#   busiest_one     cores its busiest single process used (from Prometheus only for a group that is one
#                   process, one_process; null for the others: the exporter counts groups, not processes)
#   processes_max   the most processes it had at once
#   fds_limit_ratio peak share of its open-files limit one of its processes held
#   cpu_from        "process": its processes' CPU time; "locust": the Locust plugin's own estimate, where
#                   the exporter counts no Locust process group (its other figures are null)
PROCESS_FIGURES = ("cpu", "role", "runnable", "busiest_one", "processes_max", "fds_limit_ratio", "cpu_from")
# Per host: busy share of its own cores, its cores, memory (used: peak), where its CPU figure comes from
# ("cgroup": its own processes; "machine": the whole machine) and whether it shares its machine's cores with
# other lab hosts.
HOST_FIGURES = ("cpu", "cores", "memory_total_bytes", "memory_used_bytes", "cpu_from", "shared_machine")
# Established sockets at the target port: median, least and most of the total over the window, the samples
# they are over, and the median per host.
SOCKET_FIGURES = ("median", "min", "max", "samples", "hosts")
# Per host (db_pool: per `host/app-PORT`), the figures of each connection and TCP section.
SECTION_FIGURES = {
    "postgres": ("connections", "max_connections"),  # peak backends; the server's max_connections
    "redis": ("clients", "maxclients"),  # peak connected clients; the server's maxclients
    "nginx": ("active",),  # peak active client connections (stub_status)
    "db_pool": ("in_use_avg", "size"),  # mean connections in use; the pool's size
    # peak share of the ephemeral port range bound, peak TIME_WAIT sockets, listen overflows in the window
    "tcp": ("ephemeral_ports_used_ratio", "time_wait", "listen_overflows"),
}


@dataclass
class HostFigures:
    """One host in the window: busy share of its own cores, its cores, its memory."""

    cpu: float | None = None  # share 0..1 of the host's cores that was busy
    cores: float | None = None
    memory_total_bytes: float | None = None
    memory_used_bytes: float | None = None  # peak in the window
    cpu_from: str | None = None  # "cgroup": the host's own processes; "machine": the whole machine
    shared_machine: bool | None = None  # the host shares its machine's cores with other lab hosts

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in HOST_FIGURES}
        out["cpu"] = _r(self.cpu)
        return out


@dataclass
class SocketFigures:
    """Established TCP sockets at the target port in the window: median of the total, and per host."""

    median: float | None = None
    min: float | None = None
    max: float | None = None
    samples: int | None = None
    hosts: dict[str, float] = field(default_factory=dict)  # host -> median on that host

    def to_dict(self) -> dict[str, Any] | None:
        """The figures, or None when the window had none (the section is left out)."""
        if self.median is None and not self.hosts:
            return None
        out: dict[str, Any] = {name: getattr(self, name) for name in SOCKET_FIGURES}
        out["hosts"] = dict(sorted(self.hosts.items()))
        return out


def one_process(group: str, processes_max: int | None) -> bool:
    """A group whose CPU is one process's: an app instance (the lab runs each as one process), or a group
    that never had more than one process at once. Its `busiest_one` is its `cpu` where a reader cannot
    measure it."""
    return group.startswith("app-") or processes_max == 1


class UnknownFigure(ValueError):
    """A reader put a figure into the model that the model does not have."""


def _entry(name: str, figures: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    unknown = sorted(set(figures) - set(fields))
    if unknown:
        raise UnknownFigure(f"{name}: {', '.join(unknown)} not in the resource model ({', '.join(fields)})")
    return {f: figures.get(f) for f in fields}


def _section(name: str, entries: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any] | None:
    if entries is None:
        return None
    fields = SECTION_FIGURES[name]
    return {k: _entry(f"{name} {k}", v, fields) for k, v in sorted(entries.items())}


@dataclass
class Resources:
    """A step's resources, host by host; both readers fill the same fields. A section set to None is one the
    reader cannot read (null in the step); an empty one had nothing in it (left out)."""

    source: str  # "prometheus" or "sampled"
    seconds: float
    hosts: dict[str, HostFigures] = field(default_factory=dict)
    # host/process -> PROCESS_FIGURES
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)
    client_sockets: SocketFigures | None = field(default_factory=SocketFigures)  # on the loadgen hosts
    server_sockets: SocketFigures | None = field(default_factory=SocketFigures)  # on the lb hosts
    # host -> SECTION_FIGURES[section] (db_pool: host/app-PORT ->)
    postgres: dict[str, dict[str, float | None]] | None = field(default_factory=dict)
    redis: dict[str, dict[str, float | None]] | None = field(default_factory=dict)
    nginx: dict[str, dict[str, float | None]] | None = field(default_factory=dict)
    db_pool: dict[str, dict[str, float | None]] | None = field(default_factory=dict)
    tcp: dict[str, dict[str, float | None]] | None = field(default_factory=dict)
    # host/component -> {"down_s", "down_from", "down_to", "restarted_at", "source"}: see ComponentTrack
    components: dict[str, dict[str, Any]] | None = field(default_factory=dict)

    def host(self, name: str) -> HostFigures:
        """The host's figures, created on first use."""
        return self.hosts.setdefault(name, HostFigures())

    def add_process(self, host: str, process: str, cpu: float, **figures: Any) -> None:
        """One process (group) on one host; the same name on another host stays apart. `figures` are the
        other PROCESS_FIGURES the reader has (`role` defaults to the one the group's name implies)."""
        entry = {"cpu": _r(cpu), "role": role_of(process), "cpu_from": "process", **figures}
        if entry.get("busiest_one") is None and one_process(process, entry.get("processes_max")):
            entry["busiest_one"] = entry["cpu"]
        self.processes[key(host, process)] = _entry(key(host, process), entry, PROCESS_FIGURES)

    def to_dict(self) -> dict[str, Any]:
        """The step's `resources` in steps.jsonl and summary.json."""
        out: dict[str, Any] = {
            "source": self.source,
            "seconds": round(self.seconds, 2),
            "shared_machine": any(bool(h.shared_machine) for h in self.hosts.values()),
            "hosts": {h: f.to_dict() for h, f in sorted(self.hosts.items())},
            "processes": {
                name: _entry(name, p, PROCESS_FIGURES) for name, p in sorted(self.processes.items())
            },
        }
        for name in ("client_sockets", "server_sockets"):
            figures = getattr(self, name)
            out[name] = figures.to_dict() if figures is not None else None
            if figures is not None and out[name] is None:
                del out[name]  # read, and none in the window
        for name in SECTION_FIGURES:
            section = _section(name, getattr(self, name))
            if section != {}:
                out[name] = section
        if self.components is None or self.components:
            out["components"] = None if self.components is None else dict(sorted(self.components.items()))
        for name in ("hosts", "processes"):
            if not out[name]:
                del out[name]
        return out


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
