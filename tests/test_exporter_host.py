"""The host collector on this machine's /proc and on recorded /proc files."""

from __future__ import annotations

import os

import pytest

from loadlab.exporters.host import CPU_MODES, HostCollector
from tests.exporter_support import GOLDEN, assert_golden, exposition, promtool_check, registry_of


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
    assert get("loadlab_host_load_average", {"period": "15m"}) is not None
    assert get("loadlab_host_network_receive_bytes_total", {"device": "lo"}) is not None
    assert promtool_check(text) == ""


def test_this_machine() -> None:
    registry = registry_of(HostCollector())
    get = registry.get_sample_value
    assert get("loadlab_host_cpus") == os.cpu_count()
    for cpu in range(os.cpu_count() or 1):
        for mode in CPU_MODES:
            assert get("loadlab_host_cpu_seconds_total", {"cpu": str(cpu), "mode": mode}) >= 0
    assert 0 < get("loadlab_host_memory_available_bytes") <= get("loadlab_host_memory_total_bytes")
    assert get("loadlab_host_network_transmit_bytes_total", {"device": "lo"}) > 0
    assert get("loadlab_host_context_switches_total") > 0
    assert promtool_check(exposition(registry)) == ""
