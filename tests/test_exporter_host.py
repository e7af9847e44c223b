"""The host collector on this machine's /proc and on recorded /proc files."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadlab.exporters.config import load_config
from loadlab.exporters.host import CPU_MODES, HostCollector
from tests.exporter_support import GOLDEN, assert_golden, exposition, promtool_check, registry_of
from tests.servers import terminate


def test_recorded_proc_files_golden_output() -> None:
    registry = registry_of(HostCollector(GOLDEN / "proc"))
    text = exposition(registry)
    assert_golden(text, "host.prom")
    get = registry.get_sample_value
    assert get("loadlab_host_cpus") == 2
    # recorded /proc/stat: "cpu0 ..." user column 1634 ticks at USER_HZ 100
    assert get("loadlab_host_cpu_seconds_total", {"cpu": "0", "mode": "user"}) == pytest.approx(
        int((GOLDEN / "proc/stat").read_text().splitlines()[1].split()[1]) / os.sysconf("SC_CLK_TCK")
    )
    assert get("loadlab_host_memory_total_bytes") == 24683656 * 1024
    assert get("loadlab_host_load_average", {"period": "15m"}) == 0.39  # recorded loadavg: 1.65 0.82 0.39
    assert get("loadlab_host_network_receive_bytes_total", {"device": "lo"}) == 138966581  # recorded net/dev
    assert promtool_check(text) == ""


def test_this_machine() -> None:
    registry = registry_of(HostCollector())
    get = registry.get_sample_value
    assert get("loadlab_host_cpus") == os.cpu_count()
    # every core in every mode, and no other; each core has spent time since boot (idle counts too)
    cores = [str(cpu) for cpu in range(os.cpu_count() or 1)]
    seconds = cpu_seconds(HostCollector())
    assert set(seconds) == {(cpu, mode) for cpu in cores for mode in CPU_MODES}
    assert all(sum(seconds[cpu, mode] for mode in CPU_MODES) > 0 for cpu in cores), seconds
    assert 0 < get("loadlab_host_memory_available_bytes") <= get("loadlab_host_memory_total_bytes")
    assert get("loadlab_host_network_transmit_bytes_total", {"device": "lo"}) > 0
    assert get("loadlab_host_context_switches_total") > 0
    assert promtool_check(exposition(registry)) == ""


CPUACCT = Path("/sys/fs/cgroup/cpuacct")


@contextlib.contextmanager
def cpuacct_cgroup(name: str) -> Iterator[Path]:
    """A fresh cgroup v1 cpuacct directory, removed afterwards (its processes must have ended)."""
    path = CPUACCT / f"{name}-{os.getpid()}"
    path.mkdir()
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.rmdir()


def cpu_seconds(collector: HostCollector) -> dict[tuple[str, str], float]:
    """One scrape's loadlab_host_cpu_seconds_total by (cpu, mode)."""
    family = next(f for f in collector.collect() if f.name == "loadlab_host_cpu_seconds")
    return {(s.labels["cpu"], s.labels["mode"]): s.value for s in family.samples if s.name.endswith("_total")}


@pytest.mark.skipif(not os.access(CPUACCT, os.W_OK), reason="needs a writable cgroup v1 cpuacct hierarchy")
@pytest.mark.timeout(60)
def test_a_host_with_its_own_cgroup_reads_its_own_cpu_not_the_machines(tmp_path: Path) -> None:
    with cpuacct_cgroup("loadlab-test-busy") as busy_cg, cpuacct_cgroup("loadlab-test-idle") as idle_cg:
        config = tmp_path / "exporter.yml"
        config.write_text(f"cpu_cgroup: {busy_cg}\nshared_machine: true\n")
        busy = HostCollector(cpu_cgroup=load_config(config).cpu_cgroup, shared_machine=True)
        idle = HostCollector(cpu_cgroup=idle_cg)
        child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            (busy_cg / "cgroup.procs").write_text(str(child.pid))
            deadline = time.monotonic() + 30
            while int((busy_cg / "cpuacct.usage").read_text()) < 300_000_000:  # 0.3 s of CPU
                assert time.monotonic() < deadline, "the busy child got no CPU"
                time.sleep(0.1)
        finally:
            terminate(child)
        used_ns = int((busy_cg / "cpuacct.usage").read_text())
        boot = time.clock_gettime(time.CLOCK_BOOTTIME)
        first = cpu_seconds(busy)
        cores = [str(c) for c in range(os.cpu_count() or 1)]
        used = sum(first[c, m] for c in cores for m in ("user", "system"))
        # Exactly the cgroup's CPU: the busy child's time, not the machine's (/proc/stat holds far more).
        assert used == pytest.approx(used_ns / 1e9, rel=1e-6)
        machine = cpu_seconds(HostCollector())
        assert sum(machine[c, m] for c in cores for m in ("user", "system")) > used
        # An empty cgroup on the same busy machine used nothing: every core of it reads idle.
        empty = cpu_seconds(idle)
        assert sum(empty[c, m] for c in cores for m in ("user", "system")) == 0
        for core in cores:
            # user + system + idle of each core is the core's whole time since boot: busy shares add up.
            total = sum(first[core, m] for m in ("user", "system", "idle"))
            assert total == pytest.approx(boot, abs=1.0)
        # Idle never steps back between scrapes (Prometheus would read a counter reset).
        again = cpu_seconds(busy)
        assert all(again[c, "idle"] >= first[c, "idle"] for c in cores)
        registry = registry_of(busy)
        assert registry.get_sample_value("loadlab_host_cpu_cgroup") == 1
        assert registry.get_sample_value("loadlab_host_shared_machine") == 1
        assert registry_of(HostCollector()).get_sample_value("loadlab_host_cpu_cgroup") == 0
        assert promtool_check(exposition(registry)) == ""


MIXED_WORK = """
import os, time
while True:
    end = time.monotonic() + 0.02
    while time.monotonic() < end:
        pass  # user time
    for _ in range(2000):
        os.stat("/")  # system time
"""


@pytest.mark.skipif(not os.access(CPUACCT, os.W_OK), reason="needs a writable cgroup v1 cpuacct hierarchy")
@pytest.mark.timeout(60)
def test_cgroup_cpu_counters_never_step_back_while_work_shifts_between_user_and_system() -> None:
    """Each mode is a counter: a dip would read as a reset in Prometheus and multiply the host's CPU."""
    with cpuacct_cgroup("loadlab-test-mixed") as cg:
        collector = HostCollector(cpu_cgroup=cg)
        child = subprocess.Popen([sys.executable, "-c", MIXED_WORK])
        try:
            (cg / "cgroup.procs").write_text(str(child.pid))
            scrapes = []
            for _ in range(60):
                scrapes.append(cpu_seconds(collector))
                time.sleep(0.03)
        finally:
            terminate(child)
    stepped_back = [
        (key, before[key], after[key])
        for before, after in zip(scrapes, scrapes[1:], strict=False)
        for key in before
        if after[key] < before[key]
    ]
    assert not stepped_back, stepped_back[:5]
    used = [sum(v for (_, mode), v in s.items() if mode != "idle") for s in scrapes]
    assert used[-1] > used[0], "the child's CPU did not show"
