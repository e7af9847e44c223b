"""One sweep from start to finish: Locust up, each step ramped, warmed up, measured and written, Locust down.

A step's figures come from its measured window only: Locust's stats are reset when the window opens
and read when it closes, and resources are read for the same window. Each finished step is on disk
(steps.jsonl, steps.csv, summary.json) before the next starts, so Ctrl-C, a kill or a crash loses at
most the step in progress, and `--resume` continues after the last finished one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from loadlab.errors import LabError, LoadlabError, UserError
from loadlab.grafana import StepAnnotator
from loadlab.lab import Host, Lab, project_dir
from loadlab.remote import RemoteHosts
from loadlab.sweep import resources as res
from loadlab.sweep import samples
from loadlab.sweep.diagnosis import diagnose
from loadlab.sweep.lab_view import LabView
from loadlab.sweep.locust_control import LocustControl
from loadlab.sweep.locust_driver import WORKER_REPORT_INTERVAL, EndpointStats
from loadlab.sweep.progress import SweepProgress
from loadlab.sweep.resource_model import step_figures, with_generator
from loadlab.sweep.results import RunDir, git_revision, now_iso, summarize, versions
from loadlab.sweep.spec import SweepSpec

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 3.0
CLOCK_WARN_MS = 50.0  # a host clock further off than this shifts step windows and log slices on it


class Interrupted(Exception):
    """The sweep was asked to stop (SIGINT or SIGTERM); finished steps are kept."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class SweepPlan:
    """Everything a run needs, as run.json records it."""

    spec: SweepSpec
    mode: str  # "lab": the lab's nginx and Locust master; "standalone": our own Locust against --host
    host: str
    out: Path
    lab: LabView
    locustfile: str | None = None
    workers: int | None = None
    allow_any_host: bool = False
    command: list[str] = field(default_factory=list)
    target_revision: str | None = None  # --target-revision: what the target ran, as the user names it
    # Called in a thread as each step's window opens, with the window's length (loadlab calibrate stops a
    # component mid-step with it); not part of run.json.
    during_window: Callable[[float], None] | None = None

    @property
    def port(self) -> int:
        return res.target_port(self.host)

    def run_record(self) -> dict[str, Any]:
        """run.json: how to reproduce the numbers (and how --resume continues them)."""
        return {
            "id": self.out.name,
            "command": self.command,
            "started_at": now_iso(),
            "mode": self.mode,
            "target": self.host,
            "locustfile": self.locustfile,
            "workers": self.workers,
            "allow_any_host": self.allow_any_host,
            "spec": self.spec.to_dict(),
            "inventory": {
                "path": str(Path(self.lab.inventory).resolve()) if self.lab.inventory else None,
                "nginx": [f"{a}:{p}" for a, p in self.lab.nginx],
                **({"external": self.lab.external_url} if self.lab.external_url else {}),
                "locust_web_url": self.lab.locust_web_url,
                "locust_master": {
                    "host": self.lab.locust_master,
                    "web": f"127.0.0.1:{self.lab.locust_web_port}",
                    "through_ssh": self.lab.locust_master is not None and self.lab.locust_web_url is None,
                },
                "prometheus_url": self.lab.prometheus_url,
                "error": self.lab.error,
            },
            "git": git_revision(),
            "target_git": self._target_revision(),
            "versions": versions(),
            "cwd": os.getcwd(),
        }

    def _target_revision(self) -> dict[str, Any] | None:
        """The target's revision where it is known: as --target-revision names it, else the git checkout
        of the lab's own app (app_source a folder in a git repository); None otherwise."""
        if self.target_revision:
            return {"commit": self.target_revision, "from": "--target-revision"}
        inventory = self.lab.lab
        if inventory is None or self.mode != "lab":
            return None
        for host in inventory.group("app"):
            source = host.var("app_source")
            if source and host.var("app_command"):
                base = project_dir(inventory.inventory) or Path.cwd()
                folder = Path(str(source)) if Path(str(source)).is_absolute() else base / str(source)
                if folder.is_dir():
                    found = git_revision(folder)
                    if found.get("commit"):
                        return {**found, "from": str(source)}
        return None


def check_reachable(url: str) -> None:
    """Fail fast, in one line, when nothing answers at the target's address."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", res.target_port(url)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            return
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise LabError(f"target {url} is unreachable: {reason}") from None


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGINT and SIGTERM become Interrupted in the main thread, so cleanup runs in `finally`."""

    def handler(signum: int, _frame: Any) -> None:
        # Later signals during cleanup are ignored: the cleanup stops Locust, which is what they ask for.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _round(x: float | None, nd: int = 1) -> float | int | None:
    """Rounded; a whole number stays an int (Locust's percentiles are whole milliseconds)."""
    if x is None:
        return None
    value = round(float(x), nd)
    return int(value) if value.is_integer() else value


def _figures(entry: EndpointStats, seconds: float) -> dict[str, Any]:
    """Window figures of one stats row (an endpoint or the aggregate)."""
    n = entry.requests
    return {
        "requests": n,
        "failures": entry.failures,
        "rps": round(n / seconds, 2) if seconds > 0 else None,
        "fail_ratio": round(entry.failures / n, 5) if n else 0.0,
        "p50_ms": _round(entry.pct("50%")) if n else None,
        "p90_ms": _round(entry.pct("90%")) if n else None,
        "p95_ms": _round(entry.pct("95%")) if n else None,
        "p99_ms": _round(entry.pct("99%")) if n else None,
        "max_ms": _round(entry.max_ms) if n else None,
        "avg_ms": _round(entry.avg_ms, 2) if n else None,
    }


def load_held(
    users: int, samples: list[tuple[float, int | None, int | None]], window: float
) -> dict[str, Any]:
    """What Locust ran through the window, from the master's live figures polled each second: the users
    (least seen and time-weighted mean) and, distributed, the workers connected (at the start and least).
    A worker lost mid-window takes its users with it: the step's load was short of `users`."""
    seen = [(t, u, w) for t, u, w in samples if u is not None]
    load: dict[str, Any] = {"users": users}
    if not seen:
        return load
    # Each sample holds until the next (the last one to the window's end).
    weighted = sum(
        u * (t_next - t) for (t, u, _), (t_next, _, _) in zip(seen, [*seen[1:], (window, 0, 0)], strict=True)
    )
    span = window - seen[0][0]
    load["users_min"] = min(u for _, u, _ in seen)
    load["users_mean"] = round(weighted / span, 1) if span > 0 else float(seen[0][1])
    workers = [w for _, _, w in seen if w is not None]
    if workers:
        load["workers_start"] = workers[0]
        load["workers_min"] = min(workers)
    return load


class _Annotator:
    """Grafana step regions in a lab run, best effort: StepAnnotator never raises and warns once."""

    def __init__(self, plan: SweepPlan) -> None:
        self.run_id = plan.out.name
        lab_grafana = plan.mode == "lab" and plan.lab.grafana_url is not None
        self._impl = StepAnnotator.from_lab(inventory_url=plan.lab.grafana_url) if lab_grafana else None

    def step(self, index: int, users: int, start: float, end: float | None = None, text: str = "") -> None:
        if self._impl is not None:
            self._impl.annotate_step(self.run_id, index + 1, users, start, end, text=text)


class SweepRunner:
    """Runs a plan's remaining steps and writes the run folder: each step's timing (ramp, warm-up, the
    measured window) and its resources here, Locust driven through LocustControl."""

    def __init__(self, plan: SweepPlan, run_dir: RunDir, steps: list[dict[str, Any]]) -> None:
        self.plan = plan
        self.spec = plan.spec
        self.run_dir = run_dir
        self.steps = steps
        self._kept = len(steps)  # steps on disk before this command (a resume's)
        self.prometheus: res.PrometheusWindow | None = None
        self.sampler: res.Sampler | None = None
        self._lab_locust: tuple[float, dict[str, psutil.Process]] | None = None
        self._stopped = False
        self._remotes: RemoteHosts | None = None
        self._collectors: list[Any] = []
        self._told_prometheus = False
        self.progress = SweepProgress(None if self.spec.search else self.spec.planned_steps([]))
        self.annotator = _Annotator(plan)
        lab_mode = plan.mode == "lab"
        self.locust = LocustControl(
            self.spec,
            self.progress,
            plan.host,
            (self.spec.user_classes or plan.lab.default_user_classes) if lab_mode else None,
        )

    # -- setup ---------------------------------------------------------------------------------------

    @property
    def window(self) -> float:
        """The measured window: whole worker report intervals, so each worker's reports cover it exactly."""
        if not self.locust.distributed:
            return self.spec.step_time
        return math.ceil(self.spec.step_time / WORKER_REPORT_INTERVAL - 1e-9) * WORKER_REPORT_INTERVAL

    @property
    def warmup(self) -> float:
        """Warm-up after ramping; at least one report interval, so ramp requests stay out of the window."""
        return max(self.spec.warmup, WORKER_REPORT_INTERVAL if self.locust.distributed else 0.0)

    def _connect_locust(self) -> None:
        plan = self.plan
        if plan.mode == "standalone":
            assert plan.locustfile is not None and plan.workers is not None
            logs = plan.out / "locust"
            if self._kept:  # a resume: its Locust logs beside the first run's, which stay as they were
                logs = next(
                    logs / f"resume-{n}" for n in range(1, 10_000) if not (logs / f"resume-{n}").exists()
                )
            self.progress.note(f"starting Locust: 1 master, {plan.workers} workers ({plan.locustfile})")
            self.locust.start_local(plan.locustfile, plan.workers, logs)
            return
        url = where = plan.lab.locust_web_url
        if url is None:  # the master's web API is on its host's loopback: reach it through SSH
            url = self._forward_to_master()
            where = f"127.0.0.1:{plan.lab.locust_web_port} on {plan.lab.locust_master} (through SSH)"
        self.locust.connect(url, where)

    def _reconnects(self) -> dict[str, int]:
        """Per host this sweep reaches over SSH: how often its connection dropped and was opened again."""
        if self._remotes is None:
            return {}
        return {name: remote.reconnects for name, remote in self._remotes.items()}

    def _remote_hosts(self) -> RemoteHosts:
        """The lab's hosts over the remote-access layer (SSH), opened on first use, closed by run()."""
        lab = self.plan.lab.lab
        if lab is None:
            raise UserError(self.plan.lab.error or "the lab's inventory could not be read")
        if self._remotes is None:
            self._remotes = RemoteHosts(lab)
        return self._remotes

    def _forward_to_master(self) -> str:
        """A local URL for the Locust master's web API on another host, through an SSH forward."""
        lab = self.plan.lab
        remote = self._remote_hosts()[lab.locust_master or ""]
        forward = remote.forward("127.0.0.1", lab.locust_web_port)
        self.progress.note(
            f"Locust master on {lab.locust_master}: web API 127.0.0.1:{lab.locust_web_port} there, "
            f"through SSH ({remote.target}) at 127.0.0.1:{forward.port} here"
        )
        return f"http://127.0.0.1:{forward.port}"

    def _read_clocks(self) -> None:
        """Each host's clock against this machine's, into run.json: windows and log slices rely on them."""
        lab = self.plan.lab.lab
        if self.plan.mode != "lab" or lab is None:
            return
        remotes = self._remote_hosts()

        def read(host: Host) -> dict[str, Any]:
            try:
                reading = remotes[host].clock_offset()
            except LabError as exc:
                return {"error": str(exc)}
            return {"offset_ms": round(reading.offset * 1000, 1), "rtt_ms": round(reading.rtt * 1000, 1)}

        with ThreadPoolExecutor(max_workers=8) as pool:
            hosts = dict(zip(lab.hosts, pool.map(read, lab.hosts.values()), strict=True))
        run = self.run_dir.read_run()
        run["clocks"] = {"measured_at": now_iso(), "warn_above_ms": CLOCK_WARN_MS, "hosts": hosts}
        self.run_dir.write_run(run)
        off = [
            f"{name} {h['offset_ms']:+.0f} ms"
            for name, h in hosts.items()
            if abs(h.get("offset_ms") or 0.0) > CLOCK_WARN_MS
        ]
        if off:
            self.progress.note(
                f"warning: host clocks differ from this machine's by over {CLOCK_WARN_MS:g} ms "
                f"({', '.join(off)}): step windows and log slices on them are off by as much"
            )
        lost = sorted(name for name, h in hosts.items() if "error" in h)
        if lost:
            self.progress.note(f"clock not read on {', '.join(lost)}: not reachable over SSH")

    def _collect_hosts(self) -> None:
        """`loadlab collect` at the end of a lab run: best effort, it never changes the sweep's outcome."""
        if self.plan.mode != "lab" or self.plan.lab.lab is None:
            return
        from loadlab.collect import HOSTS_DIR, collect_run

        self.progress.note(
            f"collecting each host's logs, sockets and configs into {self.plan.out / HOSTS_DIR}"
        )
        try:
            collect_run(self.plan.out, self.plan.lab.inventory, note=self.progress.note)
        except Exception as exc:  # noqa: BLE001 - the run's figures stand without the hosts' folders
            self.progress.note(f"hosts not collected ({exc}); later: loadlab collect {self.plan.out}")

    def _locust_procs(self) -> dict[str, psutil.Process]:
        own = self.locust.pids()
        if own is not None:
            out = {}
            for name, pid in own.items():
                with contextlib.suppress(psutil.Error):
                    out[name] = psutil.Process(pid)
            return out
        if self._lab_locust is None or time.monotonic() - self._lab_locust[0] > _CachedListeners.REFRESH:
            found = res.locust_processes(self.plan.lab.locust_web_port, self.plan.lab.locust_master_port)
            self._lab_locust = (time.monotonic(), found)
        return self._lab_locust[1]

    def _setup_resources(self) -> str:
        plan = self.plan
        lab = plan.lab
        inventory = lab.lab  # the inventory's hosts (None without one)
        # A standalone sweep aimed at the lab's nginx reads the lab like a lab sweep does: the target's and
        # the lab's figures from the lab's Prometheus; only its own Locust is sampled here.
        lab_target = plan.mode == "lab" or (plan.mode == "standalone" and lab.names_target(plan.host))
        if lab_target and lab.prometheus_url:
            prom = res.PrometheusWindow(
                lab.prometheus_url,
                plan.port,
                lab.scrape_interval,
                loadgen_hosts=[h.name for h in inventory.group("loadgen")] if inventory else None,
                lb_hosts=lab.server_hosts if inventory else None,
            )
            if prom.ready() and prom.covers(self.window):
                self.prometheus = prom
                # Sampled beside it, lightly (no collectors, once a second): this sweep's own Locust, and
                # the step's figures should Prometheus stop answering during the run.
                self.sampler = self._sampler(lab_target, light=True)
                if plan.mode == "lab":
                    return f"Prometheus at {lab.prometheus_url}"
                return (
                    f"the lab's Prometheus at {lab.prometheus_url} for the lab, "
                    "in-process sampling for this sweep's Locust"
                )
            prom.close()
        self.sampler = self._sampler(lab_target)
        return "in-process sampling" + (" with the lab exporter's collectors" if self._collectors else "")

    def _sampler(self, lab_target: bool, light: bool = False) -> res.Sampler:
        """Sampling on this machine: this sweep's Locust, and the lab's processes here when it loads the
        lab (with the lab exporter's PostgreSQL, Redis and nginx collectors and the apps' pools unless
        `light`)."""
        plan, lab = self.plan, self.plan.lab
        inventory = lab.lab
        local_target = res.is_local_address(urlsplit(plan.host).hostname or "")
        self._collectors: list[Any] = []
        app_metrics: dict[str, str] = {}
        if lab_target:  # the lab's processes on this machine, as the lab's exporter would group them
            ports = lab.local_ports()
            target_ports = {p: n for p, n in ports.items() if n == "nginx" or n.startswith("app-")}
            other_ports = {p: n for p, n in ports.items() if p not in target_ports}
            if not light:
                self._collectors = _exporter_collectors(lab)
                app_metrics = _local_app_metrics(inventory)
        else:
            target_ports = {plan.port: f"target-{plan.port}"} if local_target else {}
            other_ports = {}
        return res.Sampler(
            plan.port,
            locust=self._locust_procs,
            target=_CachedListeners(target_ports),
            others=_CachedListeners(other_ports),
            collectors=self._collectors,
            host=res.this_host(inventory),
            count_server_sockets=local_target,
            app_metrics=app_metrics,
            interval=1.0 if light else res.SAMPLE_INTERVAL,
        )

    def _prometheus_figures(self, start: float, end: float, sampled: dict[str, Any]) -> dict[str, Any]:
        """The window from Prometheus; when it no longer answers, the step keeps what was sampled here, and
        says so (`source` sampled, `prometheus_error`)."""
        assert self.prometheus is not None
        figures = self.prometheus.measure(start, end) if self.prometheus.ready() else {}
        if figures.get("processes"):
            return with_generator(figures, sampled) if self.plan.mode == "standalone" else figures
        why = (
            f"Prometheus at {self.prometheus.url} did not answer for this window: "
            "its figures were sampled on this machine instead"
        )
        if not self._told_prometheus:
            self.progress.note(f"warning: {why}")
            self._told_prometheus = True
        return {**sampled, "prometheus_error": why}

    # -- one step ------------------------------------------------------------------------------------

    def _warm_up(self, index: int, load: float) -> int:
        """Ramp to the step's users (an open step: hold its rate with a pool behind it) and warm up;
        returns the users Locust runs."""
        before = self.steps[-1]["users"] if self.steps else 0
        if self.spec.open:
            previous = next((s for s in reversed(self.steps) if s.get("rate") is not None), None)
            seen = (previous or {}).get("response_p95_ms")
            return self.locust.open_ramp(index, float(load), self.warmup, seen, before)
        users = int(load)
        self.locust.ramp(index, users, before)
        self.locust.wait(index, users, "warm-up", self.warmup, time.monotonic())
        return users

    def _measure(self, index: int, load: float) -> dict[str, Any]:
        users = self._warm_up(index, load)
        window = self.window
        self.locust.begin_window()
        reconnects = self._reconnects()
        t0_wall, t0 = time.time(), time.monotonic()
        if self.sampler is not None:
            self.sampler.start()
        self.annotator.step(index, users, t0_wall)
        action = None
        if self.plan.during_window is not None:
            action = threading.Thread(target=self.plan.during_window, args=(window,), name="during-window")
            action.start()
        self.locust.wait(index, users, "measuring", window, t0)
        if action is not None:
            action.join(timeout=window + 60)
        reports = samples.from_master(self.locust.reports())  # the window's samples, as the aggregate's
        endpoints, total = self.locust.window_stats()
        t1_wall = time.time()
        overrun = time.monotonic() - t0 - window
        if overrun > WORKER_REPORT_INTERVAL:
            # The master answered late (asked again across a cut link): Locust's figures cover the longer
            # span, so the rates are per the time that actually passed, and the step says so.
            self.progress.note(f"warning: step {index + 1}: its window ran {overrun:.0f}s long")
            window = round(window + overrun, 1)
        sampled = self.sampler.stop() if self.sampler is not None else {}
        prometheus = self.prometheus is not None
        figures = self._prometheus_figures(t0_wall, t1_wall, sampled) if prometheus else sampled
        errors = self.locust.errors()
        span = samples.covered_span(reports)
        if span is not None and abs(span - window) > 0.01 * window:
            # The workers' reports cover a little more or less than the window (one report more or less,
            # by when the window was read): the step's counts are per the time they cover.
            window = round(span, 3)
        opened = samples.open_figures(reports, window) if self.spec.open and reports else None
        if self.spec.open and opened is None:
            raise LabError(
                f"step {index + 1}: the Locust workers reported no open-model figures (is the lab's Locust "
                "plugin, loadlab.exporters.locust, loaded on every worker?)"
            )
        step = self._record(index, users, window, t0_wall, t1_wall, endpoints, total, figures, errors, opened)
        if (
            reports is not None
            and self.prometheus is not None
            and step["resources"].get("source") == "prometheus"
        ):
            reports["resources"] = self.prometheus.series(t0_wall, t1_wall)
        elif reports is not None and self.sampler is not None:
            reports["resources"] = self.sampler.series()
        if reports is not None:
            samples.write(self.run_dir.path, index, reports)
            step["samples"] = samples.path_of(Path("."), index).as_posix()
        dropped = {
            h: n - reconnects.get(h, 0) for h, n in self._reconnects().items() if n > reconnects.get(h, 0)
        }
        if dropped:
            # The SSH connection to these hosts dropped in the window and was opened again: the step went on.
            step["ssh_reconnects"] = dropped
            self.progress.note(
                f"warning: step {index + 1}: the SSH connection to {', '.join(sorted(dropped))} "
                "dropped and was opened again; the step went on"
            )
        self.annotator.step(index, users, t0_wall, t1_wall, text=", ".join(step["diagnosis"]))
        return step

    def _record(
        self,
        index: int,
        users: int,
        window: float,
        t0: float,
        t1: float,
        endpoints: list[EndpointStats],
        total: EndpointStats | None,
        figures: dict[str, Any],
        errors: list[dict[str, Any]],
        opened: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        agg = (
            _figures(total, window)
            if total is not None
            else _figures(EndpointStats("", "", 0, 0, None, None), window)
        )
        scalars = step_figures(figures)
        step: dict[str, Any] = {"index": index}
        if opened is not None:
            # An open step: its percentiles are from each request's intended start (its aggregate's and
            # its samples'); Locust's own send-to-answer ones stay beside them.
            step["rate"] = self.locust.rate
            for q in ("p50", "p95", "p99"):
                agg[f"response_{q}_ms"] = agg[f"{q}_ms"]
            agg.update({k: opened[k] for k in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")})
        step |= {
            "users": users,
            "rps": _round(agg["rps"], 1),
            "p50_ms": agg["p50_ms"],
            "p90_ms": agg["p90_ms"],
            "p95_ms": agg["p95_ms"],
            "p99_ms": agg["p99_ms"],
            "max_ms": agg["max_ms"],
            "avg_ms": agg["avg_ms"],
            "requests": agg["requests"],
            "failures": agg["failures"],
            "fail_ratio": agg["fail_ratio"],
            "client_sockets": scalars["client_sockets"],
            "server_sockets": scalars["server_sockets"],
            "loadgen_cpu": scalars["loadgen_cpu"],
            "loadgen_cpu_busiest": scalars["loadgen_cpu_busiest"],
            "loadgen_cpu_busiest_host": scalars["loadgen_cpu_busiest_host"],
            "target_cpu": scalars["target_cpu"],
            "target_cpu_busiest": scalars["target_cpu_busiest"],
            "target_cpu_busiest_host": scalars["target_cpu_busiest_host"],
            "load": load_held(users, self.locust.load, window),
            "window_s": window,
            "warmup_s": self.warmup,
            "window_start": round(t0, 3),
            "window_end": round(t1, 3),
            "endpoints": [{"method": e.method, "name": e.name, **_figures(e, window)} for e in endpoints],
            "errors": errors,
            "resources": figures,
        }
        if opened is not None:
            step |= {
                **{f"response_{q}_ms": agg[f"response_{q}_ms"] for q in ("p50", "p95", "p99")},
                **{k: opened[k] for k in ("intended", "sent", "sent_rate", "done", "dropped", "late")},
                "lateness_p99_ms": opened["lateness_p99_ms"],
                "backlog": opened["backlog"],
                "open": {
                    "arrivals": self.spec.arrivals,
                    "late_after_ms": opened["late_after_ms"],
                    "max_users": self.spec.max_users,
                    "pool_cap": self.locust.pool(self.locust.rate or 0.0, math.inf),
                    "pool_growth": self.locust.pool_growth,
                },
            }
        codes, evidence = diagnose(step, [s for s in self.steps if s["index"] < index])
        step["diagnosis"] = codes
        step["diagnosis_evidence"] = evidence
        return step

    # -- the run -------------------------------------------------------------------------------------

    def write_summary(self, interrupted: str | None = None) -> dict[str, Any]:
        summary = summarize(
            self.steps,
            self.spec.parsed_thresholds(),
            self.spec.planned_steps(self.steps),
            interrupted,
            search=self.spec.search,
        )
        summary["run"] = {"id": self.plan.out.name, "mode": self.plan.mode, "target": self.plan.host}
        self.run_dir.write_summary(summary)
        return summary

    def run(self) -> tuple[dict[str, Any], str | None]:
        """Run the remaining steps; the summary and the name of the signal that stopped it, if one did."""
        interrupted: str | None = None
        with _signals_raise():
            try:
                self._read_clocks()
                self._connect_locust()
                self.locust.choose_model()
                source = self._setup_resources()
                self.progress.note(
                    f"{run_name(self.spec.name)}: {self.plan.host}, {self.spec.describe_steps()}, "
                    f"window {self.window:g}s after {self.warmup:g}s warm-up, resources from {source}"
                )
                with self.progress:
                    # A resumed run measures the steps it lacks; a search picks each step from those done.
                    while (nxt := self.spec.next_step(self.steps)) is not None:
                        step = self._measure(*nxt)
                        self.steps.append(step)
                        self.steps.sort(key=lambda s: s["index"])
                        self.run_dir.append_step(step, self.steps)
                        self.write_summary()
                        self.progress.step_done(step)
            except Interrupted as exc:
                interrupted = str(exc)
            except LoadlabError as exc:
                self._shutdown()
                if not self._kept or len(self.steps) > self._kept:
                    # A resume that measured nothing leaves the run as it was (the command puts it back).
                    self.write_summary(f"error: {exc}")
                    self._collect_hosts()
                if self.steps:
                    # The same kind of error (the input, or the lab), with where the finished steps are.
                    raise (LabError if isinstance(exc, LabError) else UserError)(
                        f"{exc} ({len(self.steps)} finished steps kept in {self.plan.out}; "
                        f"continue with: loadlab sweep --resume {self.plan.out})"
                    ) from None
                raise
            finally:
                self._shutdown()
                if self._remotes is not None:
                    self._remotes.close()
        summary = self.write_summary(interrupted)
        if interrupted is None:
            self._collect_hosts()
        elif self.plan.mode == "lab":
            self.progress.note(f"hosts not collected (interrupted); later: loadlab collect {self.plan.out}")
        return summary, interrupted

    def _shutdown(self) -> None:
        """Stop the users and the Locust this sweep started; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        if self.sampler is not None:
            with contextlib.suppress(Exception):
                self.sampler.stop()
        self.locust.stop()
        if self.prometheus is not None:
            self.prometheus.close()


def run_name(name: str) -> str:
    """'sweep' for the default name, else 'sweep NAME'."""
    return "sweep" if name == "sweep" else f"sweep {name}"


class _CachedListeners:
    """Processes listening on some ports (and their children); the listeners are looked up once per window."""

    REFRESH = 15.0

    def __init__(self, ports: dict[int, str]) -> None:
        self.ports = ports
        self._at = -math.inf
        self._roots: dict[str, list[psutil.Process]] = {}

    def __call__(self) -> dict[str, list[psutil.Process]]:
        if not self.ports:
            return {}
        if time.monotonic() - self._at > self.REFRESH:
            self._roots = res.listening_processes(self.ports)
            self._at = time.monotonic()
        out: dict[str, list[psutil.Process]] = {}
        for name, procs in self._roots.items():
            seen: dict[int, psutil.Process] = {}
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    if proc.is_running():
                        seen[proc.pid] = proc
                        for child in proc.children(recursive=True):
                            seen[child.pid] = child
            out[name] = list(seen.values())
        return out


def _local_app_metrics(inventory: Lab | None) -> dict[str, str]:
    """app-PORT -> /metrics URL of each app instance on this machine (their DB pool figures)."""
    if inventory is None:
        return {}
    return {
        f"app-{port}": f"http://{h.address}:{port}/metrics"
        for h in inventory.group("app")
        if res.is_local_address(h.address)
        for port in h.app_ports()
    }


def _exporter_collectors(lab: LabView) -> list[Any]:
    """The lab exporter's PostgreSQL, Redis and nginx collectors, built from its config on this host."""
    path = lab.exporter_config()
    if path is None:
        return []
    try:
        from loadlab.exporters.config import load_config
        from loadlab.exporters.server import build_collectors

        config = load_config(path)
        return [
            c for c in build_collectors(config) if getattr(c, "name", "") in ("postgres", "redis", "nginx")
        ]
    except Exception as exc:  # noqa: BLE001 - without them the step still has CPU and sockets
        log.warning("lab exporter collectors unavailable (%s): PostgreSQL/Redis/nginx figures left out", exc)
        return []
