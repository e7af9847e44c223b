"""CPU, memory, threads and open files per process group, read straight from /proc.

A group is a name and a regular expression searched in each process's full command line (arguments
joined by spaces); a process belongs to the first group that matches. The exporter's own process is the
group `exporter` unless the configuration names that group itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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


def _pid_namespace(base: str) -> str | None:
    """The PID namespace of /proc/<pid> (None where it cannot be read, as in recorded fixtures)."""
    try:
        return os.readlink(f"{base}/ns/pid")
    except OSError:
        return None


def scan(
    groups: Mapping[str, re.Pattern[str]], proc_root: str | Path = "/proc", self_pid: int | None = None
) -> dict[str, GroupUsage]:
    """Usage per group over every process now running; groups with no process are present with zeros."""
    proc = str(proc_root)
    usage = {name: GroupUsage() for name in groups}
    # Another PID namespace is another host (a container, a test host of this machine): its processes
    # are not this host's, however alike their command lines.
    own_ns = _pid_namespace(f"{proc}/self")
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        base = f"{proc}/{entry.name}"
        try:
            if pid == self_pid and SELF_GROUP in usage:
                group = SELF_GROUP
            else:
                with open(f"{base}/cmdline", "rb") as f:
                    raw = f.read()
                if not raw:
                    continue  # kernel threads and zombies
                cmdline = raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
                group = next((name for name, rx in groups.items() if rx.search(cmdline)), None)
                if group is None or _pid_namespace(base) != own_ns:
                    continue
            with open(f"{base}/stat") as f:
                cpu, threads, rss = read_stat(f.read())
            try:
                fds = len(os.listdir(f"{base}/fd"))
            except PermissionError:
                fds = 0
            with open(f"{base}/limits") as f:
                limit = read_nofile_limit(f.read())
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited while we looked
        u = usage[group]
        u.count += 1
        u.cpu_seconds += cpu
        u.threads += threads
        u.rss_bytes += rss
        u.open_fds += fds
        if limit:
            u.fds_limit_ratio = max(u.fds_limit_ratio, fds / limit)
    return usage


class ProcessesCollector(Collector):
    """CPU seconds, resident memory, threads and open fds per configured process group."""

    name = "processes"

    def __init__(
        self,
        groups: Mapping[str, str | re.Pattern[str]],
        proc_root: str | Path = "/proc",
        self_pid: int | None = None,
    ) -> None:
        self.groups = {name: re.compile(rx) for name, rx in groups.items()}
        if SELF_GROUP not in self.groups:
            self.groups[SELF_GROUP] = re.compile(r"(?!)")  # matches nothing: filled by pid
        self.proc_root = proc_root
        self.self_pid = os.getpid() if self_pid is None else self_pid

    def collect(self) -> Iterator[Metric]:
        usage = scan(self.groups, self.proc_root, self.self_pid)
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
            # not loadlab_process_count: promtool reserves _count for histograms and summaries
            (GaugeMetricFamily, "loadlab_processes", "Processes in the group.", "count"),
        ]
        for cls, name, doc, attr in families:
            family = cls(name, doc, labels=["group"])
            for group, u in usage.items():
                family.add_metric([group], getattr(u, attr))
            yield family
