"""CPU, memory, threads, open files and start time per process group, read straight from /proc.

A group is a name and a regular expression searched in each process's full command line (arguments
joined by spaces); a process belongs to the first group that matches, and a process that matches none
belongs to the group of its nearest matching ancestor (nginx workers to their master, PostgreSQL backends
to the postmaster). The exporter's own process is the group `exporter` unless the configuration names that
group itself.

Each group has a role in the lab (target, data, loadgen, monitor or other), which the configuration gives
or the group's name implies; `loadlab_process_group_info{group, role}` says it for every group, so queries
select the target's groups by role whatever they are called.

A group's start time is that of its most recently started process among those whose parent is not in the
group: a PostgreSQL backend forked per connection, or an nginx worker, is part of its parent's start, so
only a restart moves it, and a restart between two scrapes still shows as a newer start time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from loadlab.exporters.config import role_of

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SELF_GROUP = "exporter"


@dataclass
class GroupUsage:
    """What the processes of one group use, summed."""

    count: int = 0
    cpu_seconds: float = 0.0
    rss_bytes: int = 0
    threads: int = 0
    open_fds: int = 0
    fds_limit_ratio: float = 0.0  # the highest share of its own open-files limit one process holds
    started: float | None = None  # unix start time of the newest process whose parent is outside the group
    runnable_seconds: float = 0.0  # main threads' time on a CPU or waiting for one (schedstat)


def read_nofile_limit(text: str) -> int | None:
    """The soft open-files limit (RLIMIT_NOFILE) from /proc/<pid>/limits text; None when unlimited."""
    for line in text.splitlines():
        if line.startswith("Max open files"):
            soft = line[len("Max open files") :].split()[0]
            return None if soft == "unlimited" else int(soft)
    return None


def read_stat(text: str) -> tuple[float, int, int]:
    """(CPU seconds, threads, resident bytes) from /proc/<pid>/stat; the command name may hold spaces."""
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime 14, stime 15, num_threads 20, rss 24
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS, int(fields[17]), int(fields[21]) * PAGE_SIZE


def read_start(text: str) -> tuple[int, int]:
    """(parent pid, start time in clock ticks after boot) from /proc/<pid>/stat."""
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): ppid 4, starttime 22
    return int(fields[1]), int(fields[19])


def read_boot_time(text: str) -> float | None:
    """The boot time (unix seconds) from /proc/stat text: `btime`, whole seconds as the kernel gives it."""
    for line in text.splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return None


def _pid_namespace(base: str) -> str | None:
    """The PID namespace of /proc/<pid> (None where it cannot be read, as in recorded fixtures)."""
    try:
        return os.readlink(f"{base}/ns/pid")
    except OSError:
        return None


def scan(
    groups: Mapping[str, re.Pattern[str]], proc_root: str | Path = "/proc", self_pid: int | None = None
) -> dict[str, GroupUsage]:
    """Usage per group over every process now running; groups with no process are present with zeros.

    A process whose command line matches no group belongs to the group of its nearest ancestor that does:
    a group's regex names its main process (an nginx master with the lab's config, a postmaster), and the
    workers and backends it forks come with it, whatever their own titles say.
    """
    proc = str(proc_root)
    usage = {name: GroupUsage() for name in groups}
    # Another PID namespace is another host (a container, a test host of this machine): its processes
    # are not this host's, however alike their command lines.
    own_ns = _pid_namespace(f"{proc}/self")
    matched: dict[int, str] = {}
    stats: dict[int, tuple[str, str]] = {}  # pid -> (/proc/<pid> path, stat text)
    parents: dict[int, int] = {}
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        base = f"{proc}/{entry.name}"
        try:
            if pid == self_pid and SELF_GROUP in usage:
                matched[pid] = SELF_GROUP
            else:
                with open(f"{base}/cmdline", "rb") as f:
                    raw = f.read()
                if not raw:
                    continue  # kernel threads and zombies
                cmdline = raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
                group = next((name for name, rx in groups.items() if rx.search(cmdline)), None)
                if group is not None:
                    matched[pid] = group
            if _pid_namespace(base) != own_ns:
                matched.pop(pid, None)
                continue
            with open(f"{base}/stat") as f:
                stat = f.read()
        except (FileNotFoundError, ProcessLookupError):
            matched.pop(pid, None)
            continue  # exited while we looked
        stats[pid] = (base, stat)
        parents[pid] = read_start(stat)[0]

    def group_of(pid: int) -> str | None:
        seen = []
        while pid in parents and pid not in matched and len(seen) < 64:
            seen.append(pid)
            pid = parents[pid]
        # The exporter's own process is its group by pid alone: what it (or a test running it) starts is not.
        found = matched.get(pid) if pid != self_pid else None
        for p in seen:  # remember the answer for every process on the way
            if found is not None:
                matched[p] = found
            else:
                parents.pop(p, None)
        return found

    # pid -> (group, parent pid, start ticks after boot)
    starts: dict[int, tuple[str, int, int]] = {}
    for pid, (base, stat) in stats.items():
        group = matched.get(pid) or group_of(pid)
        if group is None:
            continue
        try:
            cpu, threads, rss = read_stat(stat)
            ppid, start_ticks = read_start(stat)
            try:
                fds = len(os.listdir(f"{base}/fd"))
            except PermissionError:
                fds = 0
            with open(f"{base}/limits") as f:
                limit = read_nofile_limit(f.read())
            runnable = _read_runnable(base)
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited while we looked
        u = usage[group]
        u.runnable_seconds += runnable
        u.count += 1
        u.cpu_seconds += cpu
        u.threads += threads
        u.rss_bytes += rss
        u.open_fds += fds
        if limit:
            u.fds_limit_ratio = max(u.fds_limit_ratio, fds / limit)
        starts[pid] = (group, ppid, start_ticks)
    boot = _boot_time(proc)
    if boot is not None:
        for group, ppid, ticks in starts.values():
            parent = starts.get(ppid)
            if parent is not None and parent[0] == group:
                continue  # a child of the group's own process (a PG backend, an nginx worker)
            u = usage[group]
            started = boot + ticks / CLOCK_TICKS
            u.started = started if u.started is None else max(u.started, started)
    return usage


def _read_runnable(base: str) -> float:
    """Seconds the process's main thread ran plus waited to run (/proc/<pid>/schedstat); 0 without it."""
    try:
        with open(f"{base}/schedstat") as f:
            run_ns, wait_ns, _slices = f.read().split()
    except (OSError, ValueError):
        return 0.0
    return (int(run_ns) + int(wait_ns)) / 1e9


def _boot_time(proc: str) -> float | None:
    try:
        with open(f"{proc}/stat") as f:
            return read_boot_time(f.read())
    except OSError:
        return None


class ProcessesCollector(Collector):
    """CPU seconds, resident memory, threads, open fds and start time per configured process group."""

    name = "processes"

    def __init__(
        self,
        groups: Mapping[str, str | re.Pattern[str]],
        proc_root: str | Path = "/proc",
        self_pid: int | None = None,
        roles: Mapping[str, str] | None = None,
    ) -> None:
        self.groups = {name: re.compile(rx) for name, rx in groups.items()}
        if SELF_GROUP not in self.groups:
            self.groups[SELF_GROUP] = re.compile(r"(?!)")  # matches nothing: filled by pid
        # group -> role; a group the mapping leaves out has the role its name implies
        self.roles = {name: (roles or {}).get(name) or role_of(name) for name in self.groups}
        self.proc_root = proc_root
        self.self_pid = os.getpid() if self_pid is None else self_pid

    def collect(self) -> Iterator[Metric]:
        usage = scan(self.groups, self.proc_root, self.self_pid)
        info = GaugeMetricFamily(
            "loadlab_process_group_info",
            "A process group the exporter watches and its role in the lab: target, data, loadgen, monitor "
            "or other.",
            labels=["group", "role"],
        )
        for group in self.groups:
            info.add_metric([group, self.roles[group]], 1)
        yield info
        families = [
            (
                CounterMetricFamily,
                "loadlab_process_cpu_seconds_total",
                "CPU time (user+system) of the group's processes.",
                "cpu_seconds",
            ),
            (
                GaugeMetricFamily,
                "loadlab_process_resident_memory_bytes",
                "Resident memory of the group's processes.",
                "rss_bytes",
            ),
            (GaugeMetricFamily, "loadlab_process_threads", "Threads in the group's processes.", "threads"),
            (
                GaugeMetricFamily,
                "loadlab_process_open_fds",
                "Open file descriptors of the group's processes.",
                "open_fds",
            ),
            (
                GaugeMetricFamily,
                "loadlab_process_open_fds_limit_ratio",
                "Highest share of its own open-files limit (RLIMIT_NOFILE, soft) one process of the group "
                "holds; 1 means it cannot open another socket or file.",
                "fds_limit_ratio",
            ),
            (
                CounterMetricFamily,
                "loadlab_process_runnable_seconds_total",
                "Time the main threads of the group's processes ran on a CPU or waited in the run queue for "
                "one (schedstat): its rate near 1 for one process means it wanted a whole core.",
                "runnable_seconds",
            ),
            # not loadlab_process_count: promtool reserves _count for histograms and summaries
            (GaugeMetricFamily, "loadlab_processes", "Processes in the group.", "count"),
        ]
        for cls, name, doc, attr in families:
            family = cls(name, doc, labels=["group"])
            for group, u in usage.items():
                family.add_metric([group], getattr(u, attr))
            yield family
        started = GaugeMetricFamily(
            "loadlab_process_start_time_seconds",
            "Start time (unix seconds) of the group's most recently started process whose parent is not in "
            "the group; a newer value means the group restarted. Absent while the group has no process.",
            labels=["group"],
        )
        for group, u in usage.items():
            if u.started is not None:
                started.add_metric([group], round(u.started, 2))
        yield started
