#!/usr/bin/env python3
"""Benchmark the lab's Locust overhead: requests per second per core of a bare `FastHttpUser`, of the lab's
base user with the metrics plugin, and of `wrk` as the hardware's ceiling, side by side in one run.

A static nginx (one worker, pinned to core 0) starts on a free loopback port and stops at the end. Each
generator is pinned to one other core with taskset and sends `GET /` back to back (no think time) with the
same number of users/connections. Both Locust users make the same plain `self.client.get("/")`, so the
difference is the lab's base class (one connection per user) and the plugin (scraped every second while
it runs: five times as often as the lab's Prometheus, whose scrape interval is 5 s, so the figure holds
more scrape cost than the lab pays - about 0.4% of the core at one scrape a second).

How a generator is measured: at two instants inside its steady state (4 s after it starts, 2 s before it
ends) the benchmark reads the generator's CPU from /proc and, right after, its nginx's own request counter
(stub_status); the requests nginx answered between the two instants divided by the CPU seconds the
generator used between them is its requests per CPU second, per core. The same for all three generators,
with no code added to the processes measured. (This used to read the requests from Locust's
once-a-second stats history, whose Timestamp column is the whole second the row was written in: a row
stood for a moment up to 1 s after its label, drifting within a run, so interpolating the requests at the
CPU instants miscounted a 9 s window by up to 10%, either way, on either user, against a counter read
inside the Locust process at the same instants.)

Per CPU second is not immune to other work on the machine: when other processes load the cores (the lab
running, tests), a generator's requests per CPU second drift by up to 10-20% from one second to the next,
so two runs one after the other differ by more than the overhead sought (lab/bare of single pairs of runs
one after the other: 0.87 to 1.10, counted exactly). So each repeat runs:
- wrk, then the bare and the lab user each alone (alternating which goes first): the table, absolute
  figures per core, and the "alone" lab/bare ratio of each repeat, printed for reference;
- then both Locust users at the same time on the generator core, each against an nginx of its own (two
  nginx on core 0, so each counter counts one generator), alternating which starts first and which nginx
  each gets: whatever else runs on the machine hits both alike, and their lab/bare ratio is the verdict
  (median of the repeats, goal >= 0.95). Sharing the core, each gets about half of it and does fewer
  requests per CPU second than alone (context switches between them); that costs both alike, and the same
  file run on both sides gives 0.98-1.02.
Run as: .venv/bin/python scripts/bench_locust_overhead.py [--seconds 15 --repeat 3 --users 20]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

BARE = """
from locust import FastHttpUser, constant, task


class BareUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def index(self):
        self.client.get("/")
"""

LAB = f"""
import sys
sys.path.insert(0, {str(REPO / "locustfiles")!r})
from lab_base import LabUser
from locust import constant, task


class BenchLabUser(LabUser):
    wait_time = constant(0)

    @task
    def index(self):
        self.client.get("/")
"""


@dataclass
class Result:
    rps: float  # over the whole run, as the generator reports it
    cores: float  # CPU the generator used in the measured window, in cores
    per_core: float  # requests per CPU second: requests and CPU counted between the same two instants


class BenchFailed(Exception):
    """A generator or nginx did not do what the benchmark needs: the entry point says so and exits."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise BenchFailed(f"nothing listens on 127.0.0.1:{port} after {timeout:g}s")


@contextlib.contextmanager
def static_nginx(root: Path, core: int) -> Iterator[int]:
    """nginx answering a static 200 on a free loopback port, one worker pinned to `core`.

    `/nginx_status` is nginx's stub_status: its request counter is how the benchmark counts requests.
    """
    port = free_port()
    (root / "logs").mkdir(parents=True, exist_ok=True)
    (root / "nginx.conf").write_text(
        f"""
pid {root}/nginx.pid;
error_log {root}/logs/error.log warn;
daemon off;
worker_processes 1;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "ok\\n"; }}
        location = {STATUS_PATH} {{ stub_status; }}
    }}
}}
"""
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen(
        ["taskset", "-c", str(core), nginx, "-p", str(root), "-c", str(root / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=20)


STATUS_PATH = "/nginx_status"


def nginx_requests(port: int) -> int:
    """Requests nginx has received so far (stub_status; this status request included)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{STATUS_PATH}", timeout=5) as r:
        text = r.read().decode()
    counts = re.search(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s*$", text, re.MULTILINE)
    if counts is None:
        raise BenchFailed(f"nginx stub_status without counters:\n{text}")
    return int(counts[3])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads), from /proc."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


Window = tuple[float, float, int]  # (wall seconds, CPU seconds of the generator, requests nginx answered)


def steady_windows(targets: list[tuple[int, int]], start: float, end: float) -> list[Window]:
    """One Window per (generator pid, its nginx's port), between `start` and `end` seconds from now.

    A generator's CPU and its nginx's counter are read back to back at each end, so both count the same
    interval; the second status request, counted by nginx itself, is taken off.
    """

    def sample() -> list[tuple[float, float, int]]:
        return [(time.monotonic(), cpu_seconds(pid), nginx_requests(port)) for pid, port in targets]

    time.sleep(start)
    first = sample()
    time.sleep(end - start)
    return [
        (t1 - t0, c1 - c0, n1 - n0 - 1) for (t0, c0, n0), (t1, c1, n1) in zip(first, sample(), strict=True)
    ]


def measured(rps: float, window: Window) -> Result:
    wall, cpu, made = window
    return Result(rps, cpu / wall, made / cpu if cpu > 0 else 0.0)


def run_wrk(port: int, core: int, seconds: int, connections: int) -> Result:
    proc = subprocess.Popen(
        ["taskset", "-c", str(core), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
         f"http://127.0.0.1:{port}/"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        (window,) = steady_windows([(proc.pid, port)], 4.0, seconds - 2.0)  # taskset execs wrk in place
        out, _ = proc.communicate(timeout=seconds + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out or "")
    if rate is None:
        raise BenchFailed(f"wrk printed no request rate:\n{out}")
    return measured(float(rate[1]), window)


def _scrape_until(port: int, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()


@dataclass
class LocustRun:
    locustfile: Path
    port: int  # the nginx it loads
    plugin: bool  # scrape its metrics plugin every second while it runs


def run_locusts(runs: list[LocustRun], core: int, seconds: int, users: int) -> list[Result]:
    """Headless Locust processes started together, pinned to `core`, measured inside their steady state."""
    procs: list[subprocess.Popen] = []
    stop = threading.Event()
    try:
        for run in runs:
            metrics_port = free_port()
            env = {**os.environ, "LOCUST_LOADLAB_METRICS_PORT": str(metrics_port)}
            env.pop("LOCUST_SKIP_MONKEY_PATCH", None)
            procs.append(
                subprocess.Popen(
                    [
                        "taskset",
                        "-c",
                        str(core),
                        str(BIN / "locust"),
                        "-f",
                        str(run.locustfile),
                        "--headless",
                        "--host",
                        f"http://127.0.0.1:{run.port}",
                        "-u",
                        str(users),
                        "-r",
                        str(users),
                        "-t",
                        f"{seconds}s",
                        "--only-summary",
                        "--csv",
                        str(run.locustfile.with_suffix("")),
                        "--loglevel",
                        "WARNING",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                    cwd=REPO,
                )  # fmt: skip
            )
            if run.plugin:
                threading.Thread(target=_scrape_until, args=(metrics_port, stop), daemon=True).start()
        # Locust imports for a second or two before its clock starts; measure well inside the run.
        windows = steady_windows(
            [(proc.pid, run.port) for proc, run in zip(procs, runs, strict=True)], 4.0, seconds - 2.0
        )
        errors = [proc.communicate(timeout=seconds + 60)[1] for proc in procs]
    finally:
        stop.set()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    results = []
    for run, window, err in zip(runs, windows, errors, strict=True):
        name = run.locustfile.name
        with Path(f"{run.locustfile.with_suffix('')}_stats.csv").open() as f:
            total = next((r for r in csv.DictReader(f) if r["Name"] == "Aggregated"), None)
        if total is None or not float(total["Request Count"]):
            raise BenchFailed(f"{name}: Locust made no request\n{err[-2000:]}")
        if float(total["Failure Count"]):
            raise BenchFailed(f"{name}: {total['Failure Count']} requests failed\n{err[-2000:]}")
        results.append(measured(float(total["Requests/s"]), window))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=15, help="length of each run (default 15)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each generator (default 3)")
    parser.add_argument("--users", type=int, default=20, help="users (and wrk connections), default 20")
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs two cores: nginx on one, the generator on the other")
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        raise SystemExit("needs wrk and taskset (apt-get install wrk util-linux)")
    if args.seconds < 10:
        raise SystemExit("--seconds must be at least 10: the window is from 4 s to 2 s before the end")
    nginx_core, generator_core = 0, 1
    bare_name, lab_name = "bare FastHttpUser", "lab user + plugin"
    results: dict[str, list[Result]] = {"wrk": [], bare_name: [], lab_name: []}
    solo_ratios: list[float] = []
    pair_ratios: list[float] = []
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="loadlab-bench-")))
        for name in ("bare", "lab", "bare_pair", "lab_pair"):
            (root / f"{name}.py").write_text(LAB if name.startswith("lab") else BARE)
        # Two nginx on the nginx core: in the paired runs each Locust loads one of its own, so that each
        # nginx's counter counts one generator's requests.
        port = stack.enter_context(static_nginx(root / "nginx", nginx_core))
        other_port = stack.enter_context(static_nginx(root / "nginx2", nginx_core))
        solo = {
            bare_name: LocustRun(root / "bare.py", port, False),
            lab_name: LocustRun(root / "lab.py", port, True),
        }
        for i in range(args.repeat):
            print(f"run {i + 1}/{args.repeat}...", file=sys.stderr, flush=True)
            results["wrk"].append(run_wrk(port, generator_core, args.seconds, args.users))
            # Alternate which user goes first so a trend in other work on the core favours neither.
            for name in (bare_name, lab_name) if i % 2 == 0 else (lab_name, bare_name):
                (result,) = run_locusts([solo[name]], generator_core, args.seconds, args.users)
                results[name].append(result)
            solo_ratios.append(results[lab_name][-1].per_core / results[bare_name][-1].per_core)
            # Both users at once on the generator core, so other work hits both alike; alternate which
            # starts first and which nginx each loads.
            first, second = (port, other_port) if i % 2 == 0 else (other_port, port)
            together = {
                bare_name: LocustRun(root / "bare_pair.py", first, False),
                lab_name: LocustRun(root / "lab_pair.py", second, True),
            }
            order = [bare_name, lab_name] if i % 2 == 0 else [lab_name, bare_name]
            got = run_locusts([together[n] for n in order], generator_core, args.seconds, args.users)
            bare_pair, lab_pair = (dict(zip(order, got, strict=True))[n] for n in (bare_name, lab_name))
            pair_ratios.append(lab_pair.per_core / bare_pair.per_core)
            print(
                f"  alone: lab/bare {solo_ratios[-1]:.3f} (cores {results[bare_name][-1].cores:.2f} and "
                f"{results[lab_name][-1].cores:.2f}); together: lab/bare {pair_ratios[-1]:.3f} "
                f"({bare_pair.per_core:,.0f} and {lab_pair.per_core:,.0f} per CPU s)",
                file=sys.stderr,
                flush=True,
            )
    print(
        f"\nGET / on a static nginx (core {nginx_core}), generator pinned to core {generator_core}, "
        f"{args.users} users/connections, {args.seconds} s runs, median of {args.repeat}\n"
    )
    print("| generator | requests/s | cores used | requests/s per core | vs bare Locust | vs wrk |")
    print("|---|---:|---:|---:|---:|---:|")
    medians = {
        name: (
            statistics.median(r.rps for r in rs),
            statistics.median(r.cores for r in rs),
            statistics.median(r.per_core for r in rs),
        )
        for name, rs in results.items()
    }
    bare_per_core = medians[bare_name][2]
    wrk_per_core = medians["wrk"][2]
    for name, (rps, cores, per_core) in medians.items():
        print(
            f"| {name} | {rps:,.0f} | {cores:.2f} | {per_core:,.0f} | {per_core / bare_per_core:.3f} | "
            f"{per_core / wrk_per_core:.3f} |"
        )
    print(f"\nlab/bare requests per core, each alone, per run: {' '.join(f'{r:.3f}' for r in solo_ratios)}")
    print(f"lab/bare requests per core, together, per run:   {' '.join(f'{r:.3f}' for r in pair_ratios)}")
    ratio = statistics.median(pair_ratios)
    verdict = "met" if ratio >= 0.95 else "NOT met"
    print(f"lab/bare requests per core (median of the runs together): {ratio:.3f} (goal >= 0.95: {verdict})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchFailed as exc:
        sys.exit(str(exc))
