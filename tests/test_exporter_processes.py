"""The processes collector against real processes this test starts."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import psutil
import pytest

from loadlab.exporters.processes import ProcessesCollector, read_stat
from tests.exporter_support import exposition, promtool_check, registry_of

# A process with 3 threads and 5 extra open files, named by a marker in its command line.
CHILD = """
import sys, threading, time
for _ in range(2):
    threading.Thread(target=time.sleep, args=(120,), daemon=True).start()
files = [open("/dev/null") for _ in range(5)]
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def marker() -> str:
    return f"loadlab-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def children(marker: str) -> Iterator[list[subprocess.Popen]]:
    procs = []
    for i in range(2):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, marker, f"--instance={i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline().strip() == "ready"
        procs.append(proc)
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def test_groups_sum_their_processes(marker: str, children: list[subprocess.Popen]) -> None:
    groups = {"first": rf"{marker} --instance=0\b", "both": marker}
    registry = registry_of(ProcessesCollector(groups))
    get = registry.get_sample_value
    # a process belongs to the first group that matches
    assert get("loadlab_processes", {"group": "first"}) == 1
    assert get("loadlab_processes", {"group": "both"}) == 1
    assert get("loadlab_process_threads", {"group": "first"}) == 3
    fds = len(os.listdir(f"/proc/{children[0].pid}/fd"))
    assert get("loadlab_process_open_fds", {"group": "first"}) == fds
    assert fds >= 3 + 5
    assert get("loadlab_process_resident_memory_bytes", {"group": "first"}) > 1_000_000
    # the child's own CPU (user + system, as psutil reads it; the child sits idle on stdin by now)
    child_cpu = sum(psutil.Process(children[0].pid).cpu_times()[:2])
    assert get("loadlab_process_cpu_seconds_total", {"group": "first"}) == pytest.approx(child_cpu, abs=0.02)
    assert get("loadlab_process_cpu_seconds_total", {"group": "both"}) > 0  # a Python start costs CPU
    assert get("loadlab_processes", {"group": "exporter"}) == 1  # this process, always its own group
    assert promtool_check(exposition(registry)) == ""


def test_a_group_with_no_process_reads_zero(marker: str, children: list[subprocess.Popen]) -> None:
    collector = ProcessesCollector({"mine": marker})
    assert registry_of(collector).get_sample_value("loadlab_processes", {"group": "mine"}) == 2
    for proc in children:
        proc.kill()
        proc.wait()
    registry = registry_of(collector)
    assert registry.get_sample_value("loadlab_processes", {"group": "mine"}) == 0
    assert registry.get_sample_value("loadlab_process_threads", {"group": "mine"}) == 0


def test_every_group_says_its_role_even_without_a_process(
    marker: str, children: list[subprocess.Popen]
) -> None:
    """A group's role comes from the configuration, or from its name where the configuration gives none."""
    groups = {"shop": marker, "app-8001": rf"^{marker}-none", "java": rf"^{marker}-none"}
    collector = ProcessesCollector(groups, roles={"shop": "target", "java": "data"})
    registry = registry_of(collector)
    get = registry.get_sample_value
    assert get("loadlab_processes", {"group": "shop"}) == 2
    assert get("loadlab_processes", {"group": "app-8001"}) == 0
    assert get("loadlab_processes", {"group": "java"}) == 0
    info = {
        (s.labels["group"], s.labels["role"]): s.value
        for family in registry.collect()
        if family.name == "loadlab_process_group_info"
        for s in family.samples
    }
    assert info == {
        ("shop", "target"): 1,
        ("app-8001", "target"): 1,  # no process, no role given: its name's
        ("java", "data"): 1,
        ("exporter", "monitor"): 1,  # this process, always its own group
    }
    assert promtool_check(exposition(registry)) == ""
    # without roles, each group's name says it
    plain = registry_of(ProcessesCollector({"gunicorn": marker, "locust-worker-1": r"(?!)"}))
    assert plain.get_sample_value("loadlab_process_group_info", {"group": "gunicorn", "role": "other"}) == 1
    assert (
        plain.get_sample_value("loadlab_process_group_info", {"group": "locust-worker-1", "role": "loadgen"})
        == 1
    )


def test_stat_line_with_spaces_and_parentheses_in_the_name() -> None:
    fields = ["S"] + ["0"] * 10 + ["250", "150"] + ["0"] * 4 + ["7"] + ["0"] * 3 + ["100"] + ["0"] * 20
    cpu, threads, rss = read_stat(f"4242 (odd ) name) {' '.join(fields)}")
    assert cpu == pytest.approx(400 / os.sysconf("SC_CLK_TCK"))
    assert threads == 7
    assert rss == 100 * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(os.geteuid() != 0, reason="a new PID namespace needs root")
def test_processes_of_another_pid_namespace_are_another_hosts(marker: str) -> None:
    """A test host (or container) on this machine runs the same programs: they are not this host's."""
    # The child sleeps in a new PID namespace; only its command line is exactly `sleep <marker-seconds>`.
    seconds = str(300 + int(marker[-4:], 16) % 1000)
    inside = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "sleep", seconds])
    here = subprocess.Popen(["sleep", seconds])
    try:
        deadline = 50
        while (
            deadline
            and len(
                subprocess.run(
                    ["pgrep", "-fx", f"sleep {seconds}"], capture_output=True, text=True
                ).stdout.split()
            )
            < 2
        ):
            deadline -= 1
            subprocess.run(["sleep", "0.1"])
        assert deadline, "the namespaced child did not start"
        registry = registry_of(ProcessesCollector({"sleeper": rf"^sleep {seconds}$"}))
        assert registry.get_sample_value("loadlab_processes", {"group": "sleeper"}) == 1
    finally:
        for proc in (inside, here):
            proc.kill()
            proc.wait()


# A parent that forks a child with the same marker in its command line (like a PostgreSQL backend), then
# waits; the child's pid comes back on stdout.
FORKING = """
import subprocess, sys, time
time.sleep(0.05)  # start times are in clock ticks: the child must start visibly later than its parent
child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()", sys.argv[1], "--child"],
                         stdin=subprocess.PIPE)
print(child.pid, flush=True)
sys.stdin.read()
child.kill()
"""


def _start_time(pid: int) -> float:
    return psutil.Process(pid).create_time()


def test_start_time_is_the_groups_newest_process_not_its_children(marker: str) -> None:
    """A fork inside the group (a PG backend per connection) is no restart; a new parent process is."""
    registry = registry_of(ProcessesCollector({"pg": marker}))
    get = registry.get_sample_value
    assert get("loadlab_process_start_time_seconds", {"group": "pg"}) is None  # no process: no sample
    first = subprocess.Popen(
        [sys.executable, "-c", FORKING, marker], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        child = int(first.stdout.readline())
        assert get("loadlab_processes", {"group": "pg"}) == 2
        assert _start_time(child) > _start_time(first.pid)
        # psutil reads the same clock (boot time + start ticks): the parent's start, not its newer child's
        assert get("loadlab_process_start_time_seconds", {"group": "pg"}) == pytest.approx(
            _start_time(first.pid), abs=0.011
        )
        second = subprocess.Popen(
            [sys.executable, "-c", FORKING, marker], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            second.stdout.readline()
            # two independent processes in one group: the newer one's start is the group's
            assert get("loadlab_process_start_time_seconds", {"group": "pg"}) == pytest.approx(
                _start_time(second.pid), abs=0.011
            )
        finally:
            second.communicate("")
    finally:
        first.communicate("")
    assert get("loadlab_process_start_time_seconds", {"group": "pg"}) is None
    assert get("loadlab_processes", {"group": "pg"}) == 0
