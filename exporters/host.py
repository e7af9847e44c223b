"""Host CPU, load, memory, network and context switches, read straight from /proc.

Hosts that share one machine (test hosts in namespaces) share its /proc/stat. Such a host can be given its
own CPU accounting: with `cpu_cgroup` (a cgroup v1 cpuacct directory holding every process of the host) the
CPU figures are that cgroup's user and system time per core, and `idle` is the rest of each core's time, so
every query over `loadlab_host_cpu_seconds_total` keeps its meaning.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# /proc/stat cpu columns in order; guest time is already counted in user and nice, so it is left out.
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def read_cpu(text: str) -> tuple[dict[str, list[float]], int]:
    """Per-core seconds in each mode, and context switches since boot, from /proc/stat text."""
    cores: dict[str, list[float]] = {}
    ctxt = 0
    for line in text.splitlines():
        if line.startswith("cpu") and not line.startswith("cpu "):
            name, *values = line.split()
            cores[name[3:]] = [int(v) / CLOCK_TICKS for v in values[: len(CPU_MODES)]]
        elif line.startswith("ctxt "):
            ctxt = int(line.split()[1])
    return cores, ctxt


def read_cgroup_cpu(cgroup: Path) -> dict[str, tuple[float, float]]:
    """Per-core (user, system) seconds a cpuacct cgroup used: the scheduler's exact time per core
    (cpuacct.usage_percpu, which sums to cpuacct.usage) split in the user/system ratio of cpuacct.stat
    (tick-sampled, so only its ratio is used)."""
    percpu = [int(v) / 1e9 for v in (cgroup / "cpuacct.usage_percpu").read_text().split()]
    stat = dict(line.split() for line in (cgroup / "cpuacct.stat").read_text().splitlines())
    user, system = int(stat.get("user", 0)), int(stat.get("system", 0))
    user_share = user / (user + system) if user + system else 1.0
    return {str(i): (used * user_share, used * (1.0 - user_share)) for i, used in enumerate(percpu)}


def _boot_seconds() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def read_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo fields in bytes."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields:
            out[key] = int(fields[0]) * (1024 if fields[1:] == ["kB"] else 1)
    return out


def read_netdev(text: str) -> dict[str, tuple[int, int, int, int]]:
    """Per interface (rx bytes, rx errors, tx bytes, tx errors) from /proc/net/dev text."""
    out = {}
    for line in text.splitlines()[2:]:
        device, _, rest = line.partition(":")
        f = rest.split()
        out[device.strip()] = (int(f[0]), int(f[2]), int(f[8]), int(f[10]))
    return out


class HostCollector(Collector):
    """CPU time per core and mode, load, memory, network per interface, context switches.

    `cpu_cgroup` makes the CPU figures this host's own (see the module docstring); `shared_machine` says
    the host shares its machine's cores and memory with other hosts, so the sweep knows what a host-level
    figure is worth.
    """

    name = "host"

    def __init__(
        self,
        proc_root: str | Path = "/proc",
        cpu_cgroup: str | Path | None = None,
        shared_machine: bool = False,
        clock: Callable[[], float] = _boot_seconds,
    ) -> None:
        self.proc = Path(proc_root)
        self.cpu_cgroup = Path(cpu_cgroup) if cpu_cgroup else None
        self.shared_machine = shared_machine
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}  # (core, mode) -> last value: counters never step back

    def _cgroup_cpu(self, online: Iterable[str]) -> dict[str, list[tuple[str, float]]]:
        assert self.cpu_cgroup is not None
        used = read_cgroup_cpu(self.cpu_cgroup)
        now = self._clock()  # after the read: a core's idle is never counted before its usage
        out = {}
        for core in online:
            user, system = used.get(core, (0.0, 0.0))
            modes = [("user", user), ("system", system), ("idle", now - user - system)]
            # The user/system split follows cpuacct.stat's tick-grained ratio, so one of the two can dip
            # while their sum grows; a counter must never step back (Prometheus would read a reset).
            for i, (mode, value) in enumerate(modes):
                value = max(value, self._last.get((core, mode), 0.0))
                self._last[(core, mode)] = value
                modes[i] = (mode, value)
            out[core] = modes
        return out

    def collect(self) -> Iterator[Metric]:
        cores, ctxt = read_cpu((self.proc / "stat").read_text())
        if self.cpu_cgroup is not None:
            per_core = self._cgroup_cpu(cores)
            doc = (
                f"CPU time per core and mode of the processes in cgroup {self.cpu_cgroup}; "
                "idle is the rest of each core's time since boot."
            )
        else:
            per_core = {c: list(zip(CPU_MODES, v, strict=False)) for c, v in cores.items()}
            doc = "CPU time per core and mode."
        cpu = CounterMetricFamily("loadlab_host_cpu_seconds_total", doc, labels=["cpu", "mode"])
        for core, modes in per_core.items():
            for mode, value in modes:
                cpu.add_metric([core, mode], value)
        yield cpu
        yield GaugeMetricFamily("loadlab_host_cpus", "Online CPU cores.", value=len(cores))
        yield GaugeMetricFamily(
            "loadlab_host_cpu_cgroup",
            "1 when the CPU figures are this host's own cgroup, 0 when they are the whole machine's.",
            value=1 if self.cpu_cgroup is not None else 0,
        )
        yield GaugeMetricFamily(
            "loadlab_host_shared_machine",
            "1 when this host shares its machine's cores and memory with other lab hosts.",
            value=1 if self.shared_machine else 0,
        )
        yield CounterMetricFamily(
            "loadlab_host_context_switches_total", "Context switches since boot.", value=ctxt
        )

        load = GaugeMetricFamily(
            "loadlab_host_load_average", "Run queue length averaged over a period.", labels=["period"]
        )
        for period, value in zip(
            ("1m", "5m", "15m"), (self.proc / "loadavg").read_text().split()[:3], strict=True
        ):
            load.add_metric([period], float(value))
        yield load

        mem = read_meminfo((self.proc / "meminfo").read_text())
        yield GaugeMetricFamily("loadlab_host_memory_total_bytes", "Usable RAM.", value=mem["MemTotal"])
        yield GaugeMetricFamily(
            "loadlab_host_memory_available_bytes",
            "RAM available for new work without swapping (MemAvailable).",
            value=mem["MemAvailable"],
        )

        families = {
            "receive_bytes": ("Bytes received per interface.", 0),
            "receive_errors": ("Receive errors per interface.", 1),
            "transmit_bytes": ("Bytes sent per interface.", 2),
            "transmit_errors": ("Transmit errors per interface.", 3),
        }
        netdev = read_netdev((self.proc / "net/dev").read_text())
        for suffix, (doc, column) in families.items():
            family = CounterMetricFamily(f"loadlab_host_network_{suffix}_total", doc, labels=["device"])
            for device, values in netdev.items():
                family.add_metric([device], values[column])
            yield family
