"""Host and processes: per-core CPU, memory and network per host, then CPU, RSS and fds per process group."""

from __future__ import annotations

from loadlab.dashboards import panels
from loadlab.dashboards import queries as q
from loadlab.dashboards.builder import Dashboard, Panel, Row, Target, Unit

UID = "loadlab-host-processes"
H = q.HOST
R = q.RATE


def _cpu_row() -> Row:
    cpu = f"loadlab_host_cpu_seconds_total{{{H}"
    return Row(
        "CPU",
        (
            Panel(
                "CPU busy per core",
                (Target(f'1 - sum by (host, cpu) (rate({cpu}, mode="idle"}}[{R}]))', "{{host}} cpu{{cpu}}"),),
                Unit.PERCENT,
                "One core pinned at 100% while others idle points at a single-threaded bottleneck.",
                width=8,
                max=1,
            ),
            Panel(
                "CPU by mode",
                (
                    Target(
                        f'sum by (host, mode) (rate({cpu}, mode!="idle"}}[{R}])) '
                        f"/ on (host) group_left max by (host) (loadlab_host_cpus{{{H}}})",
                        "{{host}} {{mode}}",
                    ),
                ),
                Unit.PERCENT,
                "Where the busy time goes; high softirq means network load, iowait means disks.",
                width=8,
                stack=True,
                max=1,
            ),
            Panel(
                "Load average vs cores",
                (
                    Target(
                        f"max by (host, period) (loadlab_host_load_average{{{H}}})",
                        "{{host}} {{period}}",
                    ),
                    panels.cores(),
                ),
                Unit.SHORT,
                "Runnable tasks; above the core count work queues for CPU.",
                width=8,
            ),
        ),
    )


def _memory_network_row() -> Row:
    net = "sum by (host, device) (rate(loadlab_host_network_{}_total{{" + H + "}}[" + R + "]))"
    return Row(
        "Memory and network",
        (
            Panel(
                "Memory",
                (
                    Target(q.host_memory_used(), "{{host}} used"),
                    Target(q.host_memory_total(), "{{host}} total", limit=True),
                ),
                Unit.BYTES,
                "Used = total - available (what the kernel could hand out without swapping).",
                width=6,
            ),
            Panel(
                "Network traffic",
                (
                    Target(
                        net.format("receive_bytes"),
                        "{{host}} {{device}} in",
                    ),
                    Target(
                        net.format("transmit_bytes"),
                        "{{host}} {{device}} out",
                    ),
                ),
                Unit.BYTES_PER_SECOND,
                "Bytes per second per interface; loopback carries the whole lab on a single machine.",
                width=6,
            ),
            Panel(
                "Network errors",
                (
                    Target(
                        f"{net.format('receive_errors')} + {net.format('transmit_errors')}",
                        "{{host}} {{device}}",
                    ),
                ),
                Unit.OPS_PER_SECOND,
                "Receive plus transmit errors per second; anything above zero deserves a look.",
                width=6,
            ),
            Panel(
                "Context switches",
                (
                    Target(
                        f"sum by (host) (rate(loadlab_host_context_switches_total{{{H}}}[{R}]))",
                        "{{host}}",
                    ),
                ),
                Unit.OPS_PER_SECOND,
                "Context switches per second; a jump with flat throughput means contention.",
                width=6,
            ),
        ),
    )


def _summed_per_group(metric: str) -> str:
    """A process metric of all the processes of each group together."""
    return f"sum by (host, group) ({metric}{{{H}}})"


def _process_row() -> Row:
    return Row(
        "Process groups",
        (
            Panel(
                "CPU per process group",
                (Target(q.process_cpu(), "{{host}} {{group}}"),),
                Unit.PERCENT,
                "All processes of a group together; 100% = one full core.",
                width=12,
            ),
            Panel(
                "Resident memory per process group",
                (Target(_summed_per_group("loadlab_process_resident_memory_bytes"), "{{host}} {{group}}"),),
                Unit.BYTES,
                "RSS of all processes in the group.",
                width=12,
            ),
            Panel(
                "Open file descriptors per process group",
                (Target(_summed_per_group("loadlab_process_open_fds"), "{{host}} {{group}}"),),
                Unit.SHORT,
                "Every socket is a descriptor: a group near its ulimit refuses connections.",
                width=8,
            ),
            Panel(
                "Threads per process group",
                (Target(_summed_per_group("loadlab_process_threads"), "{{host}} {{group}}"),),
                Unit.SHORT,
                "Threads of all processes in the group.",
                width=8,
            ),
            Panel(
                "Processes per group",
                (Target(q.processes(), "{{host}} {{group}}"),),
                Unit.SHORT,
                "A group dropping to zero is a crashed service.",
                width=8,
                decimals=0,
            ),
        ),
    )


def _exporter_row() -> Row:
    return Row(
        "Lab exporter",
        (
            Panel(
                "Sources up",
                (Target(f"max by (host, __name__) ({q.sources_up()})", "{{host}} {{__name__}}"),),
                Unit.SHORT,
                "1 when the exporter could read the source at the last scrape, 0 when it failed.",
                width=12,
                stepped=True,
                max=1,
                decimals=0,
            ),
            Panel(
                "Scrape duration per collector",
                (
                    Target(
                        f"max by (host, collector) (loadlab_scrape_duration_seconds{{{H}}})",
                        "{{host}} {{collector}}",
                    ),
                ),
                Unit.SECONDS,
                "Time each collector took at the last scrape; near the scrape interval it misses samples.",
                width=12,
            ),
        ),
    )


def build() -> Dashboard:
    """Which host or process is short of CPU, memory or descriptors."""
    return panels.lab_dashboard(
        UID,
        "loadlab / Host and processes",
        "Per-core CPU, memory and network per host; CPU, RSS and descriptors per process group.",
        [_cpu_row(), _memory_network_row(), _process_row(), _exporter_row()],
    )
