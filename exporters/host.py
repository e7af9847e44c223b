"""Host CPU, load, memory, network and context switches, read straight from /proc."""

from __future__ import annotations

import os
from collections.abc import Iterator
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
    """CPU time per core and mode, load, memory, network per interface, context switches."""

    name = "host"

    def __init__(self, proc_root: str | Path = "/proc") -> None:
        self.proc = Path(proc_root)

    def collect(self) -> Iterator[Metric]:
        cores, ctxt = read_cpu((self.proc / "stat").read_text())
        cpu = CounterMetricFamily(
            "loadlab_host_cpu_seconds_total", "CPU time per core and mode.", labels=["cpu", "mode"]
        )
        for core, seconds in cores.items():
            for mode, value in zip(CPU_MODES, seconds, strict=False):
                cpu.add_metric([core, mode], value)
        yield cpu
        yield GaugeMetricFamily("loadlab_host_cpus", "Online CPU cores.", value=len(cores))
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
