#!/usr/bin/env python3
"""Benchmark the lab exporter's socket collector against `ss` and node_exporter's tcpstat collector.

Opens 5k, 10k and 20k TCP connections on 127.0.0.1 (a listener in this process; the accepted and the
connecting ends are held by child processes, 5k connections per child, so no process needs more file
descriptors than the machine allows), and at each level prints side by side, in this one run:

- the socket collector's time (in-process `collect()`, median of --repeat runs);
- `ss -Htan state established` (a subprocess, wall time);
- node_exporter's tcpstat: a scrape of Debian's prometheus-node-exporter started with only tcpstat on, a
  scrape of a second one with no collector (the baseline: HTTP, Go runtime and process metrics), their
  difference, and the tcpstat time node_exporter reports itself;
- a full scrape of `loadlab exporter` (every collector the flags or --config enable) over HTTP;

then the exporter's resident memory over --scrapes scrapes at the highest level. Connections are closed
with RST at the end, so nothing is left in TIME_WAIT. Run as: .venv/bin/python scripts/bench_exporter.py
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from loadlab.exporters.config import default_ports
from loadlab.exporters.sockets import SocketsCollector

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
PER_CHILD = 5000

# A child holds one side of a batch of connections until its stdin closes.
CHILD = r"""
import resource, socket, struct, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
role, n = sys.argv[1], int(sys.argv[2])
held = []
if role == "accept":
    listener = socket.socket(fileno=int(sys.argv[3]))
    while len(held) < n:
        held.append(listener.accept()[0])
    listener.detach()
else:
    for _ in range(n):
        held.append(socket.create_connection(("127.0.0.1", int(sys.argv[3]))))
print("ready", flush=True)
sys.stdin.read()
for s in held:
    if role == "connect":  # RST instead of FIN: no TIME_WAIT left behind
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
"""


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (this process needs few; the children raise their own)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                r.read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def scrape(url: str) -> tuple[float, str]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as r:
        body = r.read().decode()
    return time.perf_counter() - start, body


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of `repeat` calls after one warm-up call."""
    fn()
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def sample(body: str, name: str, labels: str = "") -> float | None:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", body, re.M)
    return float(match.group(1)) if match else None


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Connections:
    """Loopback connections to one listener, added in batches held by child processes."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4096)
        self.port = self.listener.getsockname()[1]
        self.children: list[subprocess.Popen] = []
        self.count = 0

    def _child(self, *args: str, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            pass_fds=pass_fds,
        )
        self.children.append(child)
        return child

    def grow_to(self, total: int) -> None:
        while self.count < total:
            n = min(PER_CHILD, total - self.count)
            acceptor = self._child(
                "accept", str(n), str(self.listener.fileno()), pass_fds=(self.listener.fileno(),)
            )
            connector = self._child("connect", str(n), str(self.port))
            for child in (connector, acceptor):
                if child.stdout.readline().strip() != "ready":
                    raise RuntimeError("a connection child failed")
            self.count += n

    def close(self) -> None:
        for child in self.children:  # connectors first (RST), then acceptors
            with contextlib.suppress(OSError):
                child.stdin.close()
        for child in self.children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.listener.close()


@contextlib.contextmanager
def process(cmd: list[str], url: str) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(url)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Targets:
    """The three scrape targets: node_exporter with tcpstat, node_exporter with no collector (the
    baseline), and `loadlab exporter`; each a command and its /metrics URL."""

    ne_cmd: list[str]
    ne_url: str
    base_cmd: list[str]
    base_url: str
    exp_cmd: list[str]
    exp_url: str


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="5000,10000,20000", help="connection counts, ascending")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per figure (median shown)")
    parser.add_argument("--scrapes", type=int, default=100, help="exporter scrapes for the memory check")
    parser.add_argument(
        "--config", help="exporter config file, to include postgres/redis/nginx in the full scrape"
    )
    return parser.parse_args()


def _loadlab_command() -> str | None:
    """The `loadlab` command of this environment (else of the PATH), None where it is not installed."""
    return shutil.which("loadlab", path=str(Path(sys.executable).parent)) or shutil.which("loadlab")


def _targets(loadlab: str, ports: list[int], config: str | None) -> Targets:
    """The scrape targets, each on a free loopback port."""
    ne_port, base_port, exp_port = free_port(), free_port(), free_port()
    exp_cmd = [loadlab, "exporter", "--listen", f"127.0.0.1:{exp_port}", "--ports", ",".join(map(str, ports))]
    if config:
        exp_cmd += ["--config", config]
    return Targets(
        ne_cmd=[
            NODE_EXPORTER,
            "--collector.disable-defaults",
            "--collector.tcpstat",
            f"--web.listen-address=127.0.0.1:{ne_port}",
        ],
        ne_url=f"http://127.0.0.1:{ne_port}/metrics",
        base_cmd=[
            NODE_EXPORTER,
            "--collector.disable-defaults",
            f"--web.listen-address=127.0.0.1:{base_port}",
        ],
        base_url=f"http://127.0.0.1:{base_port}/metrics",
        exp_cmd=exp_cmd,
        exp_url=f"http://127.0.0.1:{exp_port}/metrics",
    )


def _level(
    level: int, conns: Connections, collector: SocketsCollector, targets: Targets, repeat: int
) -> tuple[float, float]:
    """Grow to `level` connections and print its row; the collector's and node_exporter's net tcpstat
    times (seconds)."""
    conns.grow_to(level)
    families = list(collector.collect())
    n_sockets = sum(s.value for s in families[0].samples)
    est = {
        s.labels["role"]: s.value
        for s in families[0].samples
        if s.labels["port"] == str(conns.port) and s.labels["state"] == "established"
    }
    coll = timed(lambda: list(collector.collect()), repeat)
    ss = timed(
        lambda: subprocess.run(["ss", "-Htan", "state", "established"], stdout=subprocess.PIPE, check=True),
        repeat,
    )
    ne = timed(lambda: scrape(targets.ne_url), repeat)
    base = timed(lambda: scrape(targets.base_url), repeat)
    ne_self = statistics.median(
        sample(scrape(targets.ne_url)[1], "node_scrape_collector_duration_seconds", '{collector="tcpstat"}')
        or float("nan")
        for _ in range(repeat)
    )
    full = timed(lambda: scrape(targets.exp_url), repeat)
    net = max(ne - base, 1e-9)
    print(
        f"{level:>6} {int(n_sockets):>7} {coll * 1e3:>9.2f} {ss * 1e3:>7.2f} {ne * 1e3:>12.2f} "
        f"{base * 1e3:>9.2f} {net * 1e3:>8.2f} {ne_self * 1e3:>9.2f} {coll / net:>8.2f} "
        f"{coll / ss:>7.2f} {full * 1e3:>11.2f}"
    )
    if est.get("server") != level or est.get("client") != level:
        print(
            f"       warning: collector counted {est} established on port {conns.port}, expected {level} each"
        )
    return coll, net


def _per_collector(exp_url: str, repeat: int) -> dict[str, float]:
    """Median seconds of each collector in the exporter's full scrape, as the exporter reports them."""
    per: dict[str, list[float]] = {}
    for _ in range(repeat):
        _, body = scrape(exp_url)
        for name, v in re.findall(
            r'^loadlab_scrape_duration_seconds\{collector="(\w+)"\} (\S+)$', body, re.M
        ):
            per.setdefault(name, []).append(float(v))
    return {name: statistics.median(v) for name, v in per.items()}


def _rss_over_scrapes(exp_url: str, pid: int, scrapes: int) -> list[str]:
    """The exporter's resident memory (MiB) after 1, 10, 25, 50 and every 100 scrapes, up to `scrapes`."""
    marks = sorted({1, 10, 25, 50, scrapes} | set(range(100, scrapes + 1, 100)))
    marks = [m for m in marks if m <= scrapes]
    seen = []
    for i in range(1, scrapes + 1):
        scrape(exp_url)
        if i in marks:
            seen.append(f"{i}: {rss_mib(pid):.1f}")
    return seen


def main() -> None:
    args = _parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    hard = raise_nofile()
    if not os.path.exists(NODE_EXPORTER):
        sys.exit(f"error: {NODE_EXPORTER} is missing (apt-get install prometheus-node-exporter)")
    loadlab = _loadlab_command()
    if loadlab is None:
        sys.exit("error: the loadlab command is not installed in this environment (pip install -e .)")

    conns = Connections()
    ports = [*default_ports(), conns.port]
    collector = SocketsCollector(ports)
    targets = _targets(loadlab, ports, args.config)
    print(
        f"loadlab exporter benchmark: {os.cpu_count()} cores, kernel {os.uname().release}, "
        f"RLIMIT_NOFILE hard {hard}, {PER_CHILD} connections per child process, median of {args.repeat} runs"
    )
    print("times in ms; 'node net' = node_exporter scrape with tcpstat minus its scrape with no collector")
    header = (
        f"{'conns':>6} {'sockets':>7} {'collector':>9} {'ss':>7} {'node tcpstat':>12} {'node base':>9} "
        f"{'node net':>8} {'node self':>9} {'coll/net':>8} {'coll/ss':>7} {'full scrape':>11}"
    )
    try:
        with (
            process(targets.ne_cmd, targets.ne_url),
            process(targets.base_cmd, targets.base_url),
            process(targets.exp_cmd, targets.exp_url) as exporter,
        ):
            print(header)
            coll, net = 0.0, 0.0
            for level in levels:
                coll, net = _level(level, conns, collector, targets, args.repeat)
            per = _per_collector(targets.exp_url, args.repeat)
            print(
                f"\nfull scrape at {levels[-1]} connections, per collector (exporter's own, median ms): "
                + ", ".join(f"{name} {median * 1e3:.2f}" for name, median in per.items())
            )
            verdict = "met" if coll <= net / 2 else "NOT met"
            print(
                f"goal 'collector at {levels[-1]} <= half of node_exporter tcpstat': {coll * 1e3:.2f} ms vs "
                f"{net * 1e3:.2f} ms -> {verdict}"
            )
            seen = _rss_over_scrapes(targets.exp_url, exporter.pid, args.scrapes)
            print(f"exporter RSS (MiB) after N scrapes at {levels[-1]} connections: " + ", ".join(seen))
    finally:
        conns.close()


if __name__ == "__main__":
    main()
