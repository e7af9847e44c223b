#!/usr/bin/env python3
"""Benchmark the lab's Locust overhead: requests per second per core of a bare `FastHttpUser`, of the lab's
base user with the metrics plugin, and of `wrk` as the hardware's ceiling, side by side in one run.

A static nginx (one worker, pinned to core 0) starts on a free loopback port and stops at the end. Each
generator is pinned to one other core with taskset and sends `GET /` back to back (no think time) with the
same number of users/connections. Both Locust users make the same plain `self.client.get("/")`, so the
difference is the lab's base class (one connection per user) and the plugin (scraped every second while
it runs, like Prometheus would, only more often). A generator's CPU is read from /proc between two
instants inside its steady state and divided into the requests it made between them (from Locust's
once-a-second stats history; wrk: its whole run), so the figure is requests per CPU second - per core - and
holds even when other work shares the core. Runs
alternate bare/lab --repeat times; medians are printed with the lab/bare ratio (the goal: >= 0.95).
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
    cores: float  # CPU the generator used, in cores
    per_core: float  # requests per CPU second: requests and CPU counted over the same interval


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
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout:g}s")


@contextlib.contextmanager
def static_nginx(root: Path, core: int) -> Iterator[int]:
    """nginx answering a static 200 on a free loopback port, one worker pinned to `core`."""
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads), from /proc."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def steady_cpu(pid: int, start: float, end: float) -> tuple[float, float, float]:
    """(wall start, wall end, CPU seconds) of the process between `start` and `end` seconds from now."""
    time.sleep(start)
    t0, c0 = time.time(), cpu_seconds(pid)
    time.sleep(end - start)
    return t0, time.time(), cpu_seconds(pid) - c0


def requests_at(history: list[dict[str, str]], when: float) -> float:
    """Requests Locust had made by `when`, interpolated between its once-a-second history rows."""
    rows = [(float(r["Timestamp"]), float(r["Total Request Count"])) for r in history]
    for (t0, n0), (t1, n1) in zip(rows, rows[1:], strict=False):
        if t0 <= when <= t1:
            return n0 + (n1 - n0) * (when - t0) / (t1 - t0) if t1 > t0 else n1
    raise SystemExit(f"no Locust history row around {when:.0f}")


def run_wrk(port: int, core: int, seconds: int, connections: int) -> Result:
    proc = subprocess.Popen(
        ["taskset", "-c", str(core), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
         f"http://127.0.0.1:{port}/"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    out = proc.stdout.read() if proc.stdout else ""
    _, _, usage = os.wait4(proc.pid, 0)  # wrk's own CPU over its whole run (taskset execs it in place)
    proc.returncode = 0
    total = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if total is None or rate is None:
        raise SystemExit(f"wrk printed no request count:\n{out}")
    seconds_used = usage.ru_utime + usage.ru_stime
    return Result(float(rate[1]), seconds_used / seconds, float(total[1]) / seconds_used)


def _scrape_until(port: int, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()


def run_locust(locustfile: Path, port: int, core: int, seconds: int, users: int, plugin: bool) -> Result:
    """One headless Locust process pinned to `core`; its aggregated requests/s from its own stats CSV."""
    prefix = locustfile.with_suffix("")
    metrics_port = free_port()
    env = {**os.environ, "LOCUST_LOADLAB_METRICS_PORT": str(metrics_port)}
    env.pop("LOCUST_SKIP_MONKEY_PATCH", None)
    proc = subprocess.Popen(
        ["taskset", "-c", str(core), str(BIN / "locust"), "-f", str(locustfile), "--headless",
         "--host", f"http://127.0.0.1:{port}", "-u", str(users), "-r", str(users), "-t", f"{seconds}s",
         "--only-summary", "--csv", str(prefix), "--loglevel", "WARNING"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    stop = threading.Event()
    scraper = threading.Thread(target=_scrape_until, args=(metrics_port, stop), daemon=True)
    if plugin:
        scraper.start()
    try:
        # Locust imports for a second or two before its clock starts; measure well inside the run.
        t0, t1, cpu = steady_cpu(proc.pid, 4.0, seconds - 2.0)
        _, err = proc.communicate(timeout=seconds + 60)
    finally:
        stop.set()
    with Path(f"{prefix}_stats.csv").open() as f:
        rows = list(csv.DictReader(f))
    total = next((r for r in rows if r["Name"] == "Aggregated"), None)
    if total is None or not float(total["Request Count"]):
        raise SystemExit(f"{locustfile.name}: Locust made no request\n{err[-2000:]}")
    if float(total["Failure Count"]):
        raise SystemExit(f"{locustfile.name}: {total['Failure Count']} requests failed\n{err[-2000:]}")
    with Path(f"{prefix}_stats_history.csv").open() as f:
        history = [r for r in csv.DictReader(f) if r["Name"] == "Aggregated"]
    made = requests_at(history, t1) - requests_at(history, t0)
    return Result(float(total["Requests/s"]), cpu / (t1 - t0), made / cpu if cpu > 0 else 0.0)


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
    nginx_core, generator_core = 0, 1
    with tempfile.TemporaryDirectory(prefix="loadlab-bench-") as tmp:
        root = Path(tmp)
        bare, lab = root / "bare.py", root / "lab.py"
        bare.write_text(BARE)
        lab.write_text(LAB)
        results: dict[str, list[Result]] = {"wrk": [], "bare FastHttpUser": [], "lab user + plugin": []}
        with static_nginx(root / "nginx", nginx_core) as port:
            for i in range(args.repeat):
                print(f"run {i + 1}/{args.repeat}...", file=sys.stderr, flush=True)
                results["wrk"].append(run_wrk(port, generator_core, args.seconds, args.users))
                results["bare FastHttpUser"].append(
                    run_locust(bare, port, generator_core, args.seconds, args.users, plugin=False)
                )
                results["lab user + plugin"].append(
                    run_locust(lab, port, generator_core, args.seconds, args.users, plugin=True)
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
    bare_per_core = medians["bare FastHttpUser"][2]
    wrk_per_core = medians["wrk"][2]
    for name, (rps, cores, per_core) in medians.items():
        print(
            f"| {name} | {rps:,.0f} | {cores:.2f} | {per_core:,.0f} | {per_core / bare_per_core:.3f} | "
            f"{per_core / wrk_per_core:.3f} |"
        )
    ratio = medians["lab user + plugin"][2] / bare_per_core
    verdict = "met" if ratio >= 0.95 else "NOT met"
    print(f"\nlab/bare requests per core: {ratio:.3f} (goal >= 0.95: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
