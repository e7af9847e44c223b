"""The sweep's hold on Locust: start or reach the master, ramp to a user count, wait out a phase with
Locust's live figures on the progress line, and, for an open step, hold a rate with a pool of users sized
by Little's law. The runner decides what to measure and when; this module only drives Locust."""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

from loadlab.errors import LabError
from loadlab.sweep.diagnosis import GROWTH_GAIN
from loadlab.sweep.locust_driver import EndpointStats, LocalLocust, LocustWeb
from loadlab.sweep.progress import SweepProgress
from loadlab.sweep.spec import SweepSpec

POLL = 0.25
# A lab's master (often on another host, through SSH) is asked again for this long when the way to it fails.
LAB_RETRY = 30.0
STATS_CACHE = 2.0  # seconds Locust's web UI caches /stats/requests (locust.web.DEFAULT_CACHE_TIME)
# Locust's live figures on the terminal: current rps and p95 over its last ~10 s.
_LIVE_P95 = "response_time_percentile_0.95"
# The open model's pool: Little's law (users = rate x time each iteration holds a user), with this headroom,
# on the latency seen (the last open step's send-to-answer p95; the first step assumes FIRST_LATENCY_S).
POOL_HEADROOM = 1.5
FIRST_LATENCY_S = 0.1
# After the warm-up, arrivals still waiting for a free user beyond this share of a second's arrivals mean
# the pool is short: it grows (Little's law on the latency seen, at least doubling) and warms up again,
# at most POOL_GROWTHS times, never past --max-users.
WAITING_SHORT = 0.1
POOL_GROWTHS = 4


class LocustControl:
    """One sweep's Locust: its own (start_local) or the lab's master (connect), driven through the web API.

    `load` holds what Locust ran through the measured window (time, users, workers), `rate` the rate the
    step in progress holds (an open sweep), and `pool_growth` the pools its warm-up tried."""

    def __init__(
        self, spec: SweepSpec, progress: SweepProgress, host: str, user_classes: list[str] | None
    ) -> None:
        self.spec = spec
        self.progress = progress
        self.host = host  # what the users load
        self.user_classes = user_classes  # the classes a lab master is asked to pick; None: its own
        self.local: LocalLocust | None = None
        self.web: LocustWeb | None = None
        self.distributed = True  # the master has workers (a master without runs its users itself)
        self.load: list[tuple[float, int | None, int | None]] = []
        self.rate: float | None = None
        self.pool_growth: list[dict[str, Any]] = []
        self._stopped = False

    # -- the master ----------------------------------------------------------------------------------

    def start_local(self, locustfile: str, workers: int, logs: Path) -> None:
        """This sweep's own Locust: a master and `workers` workers on this machine, logs in `logs`."""
        self.local = LocalLocust(locustfile, workers, self.spec.user_classes, logs)
        self.web = self.local.start()

    def connect(self, url: str, where: str) -> None:
        """The lab's master at `url` (`where` names it in messages): it answers and has its workers."""
        web = LocustWeb(url, retry_for=LAB_RETRY)
        if not web.answers():
            raise LabError(
                f"the lab's Locust master does not answer at {where}: is the lab up? (loadlab status)"
            )
        stats = web.live()
        if "workers" in stats and not stats.get("worker_count"):
            raise LabError(f"the lab's Locust master at {where} has no workers connected")
        self.distributed = "workers" in stats
        self.web = web

    def choose_model(self) -> None:
        """An open sweep needs workers that hold the rate; a closed one lifts a rate a killed sweep may have
        left on the lab's master (a master without the plugin has none to lift)."""
        assert self.web is not None
        if self.spec.open and not self.distributed:
            raise LabError(
                "an open sweep needs a Locust master with workers (the lab's, or the sweep's own); this "
                "master runs its users itself"
            )
        if not self.spec.open:
            with contextlib.suppress(LabError):
                self.web.hold(0, "even")

    def pids(self) -> dict[str, int] | None:
        """This sweep's own Locust processes (name -> pid); None for the lab's master."""
        return None if self.local is None else self.local.pids()

    def stop(self) -> None:
        """Stop the users and the Locust this sweep started (the lab's goes back to the closed model);
        safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        if self.web is not None:
            if self.spec.open:
                with contextlib.suppress(LabError):
                    self.web.hold(0, "even")
            with contextlib.suppress(LabError):
                self.web.stop()
            self.web.close()
        if self.local is not None:
            self.local.stop()

    # -- live figures --------------------------------------------------------------------------------

    def check(self) -> None:
        """Fail if a Locust process this sweep started died under it."""
        if self.local is not None:
            self.local.check()

    def live(self) -> dict[str, Any]:
        """The master's live figures (LocustWeb.live); when it does not answer, a dead Locust process is
        named first."""
        assert self.web is not None
        try:
            return self.web.live()
        except LabError:
            self.check()
            raise

    def workers(self) -> int:
        return max(1, int(self.live().get("worker_count") or 1))

    # -- one step ------------------------------------------------------------------------------------

    def ramp(self, index: int, users: int, before: int, spawn_rate: float | None = None) -> None:
        """Swarm to `users` (from `before`) and wait until Locust runs them all."""
        assert self.web is not None
        spawn_rate = spawn_rate or self.spec.spawn_rate
        answer = self.web.swarm(users, spawn_rate, self.host, self.user_classes)
        if self.user_classes and "user_classes" not in answer:
            raise LabError(
                "the lab's Locust master cannot pick user classes (start it with --class-picker) "
                f"and this sweep asks for {', '.join(self.user_classes)}"
            )
        limit = max(users, before) / spawn_rate * 1.5 + 30.0
        started = time.monotonic()
        while True:
            self.check()
            stats = self.live()
            self.progress.update(
                index,
                users,
                "ramping",
                live_users=stats.get("user_count"),
                rps=stats.get("current_rps"),
                rate=self.rate,
            )
            if stats.get("state") == "running" and stats.get("user_count") == users:
                return
            # Locust caches /stats/requests for 2 s: a state from before the swarm may still show.
            if stats.get("state") in ("stopped", "missing") and time.monotonic() - started > STATS_CACHE + 1:
                raise LabError(f"Locust stopped while ramping to {users} users (state {stats.get('state')})")
            if "workers" in stats and not stats.get("worker_count"):
                raise LabError("every Locust worker left the master")
            if time.monotonic() - started > limit:
                raise LabError(
                    f"Locust did not reach {users} users within {limit:.0f}s "
                    f"(it runs {stats.get('user_count')})"
                )
            time.sleep(POLL)

    def wait(self, index: int, users: int, phase: str, seconds: float, begin: float) -> None:
        """Wait out `phase` (`seconds` from `begin`, monotonic), with Locust's live figures on the progress
        line; while measuring, what Locust runs goes into `load` once a second."""
        while (elapsed := time.monotonic() - begin) < seconds:
            self.check()
            stats = self.live()
            if "workers" in stats and not stats.get("worker_count"):
                raise LabError("every Locust worker left the master")
            rps = stats.get("current_rps")
            p95 = (stats.get("current_response_time_percentiles") or {}).get(_LIVE_P95)
            total = (stats.get("stats") or [{}])[-1]
            if phase == "measuring":
                workers = stats.get("worker_count") if "workers" in stats else None
                self.load.append((elapsed, stats.get("user_count"), workers))
            if phase == "measuring" and elapsed > STATS_CACHE + 0.5 and total.get("num_requests"):
                # The window so far (since the reset), which is what the step will record.
                rps = total["num_requests"] / elapsed
                p95 = total.get("response_time_percentile_0.95")
            self.progress.update(
                index,
                users,
                phase,
                elapsed=elapsed,
                length=seconds,
                live_users=stats.get("user_count"),
                rps=rps,
                p95=p95,
                rate=self.rate,
            )
            time.sleep(min(1.0, max(0.05, seconds - (time.monotonic() - begin))))

    def begin_window(self) -> None:
        """Locust's stats from now on cover only the measured window."""
        assert self.web is not None
        self.web.reset()
        self.load = []

    def reports(self) -> dict[str, Any] | None:
        """The workers' reports since the window began (None without the lab's plugin in the master)."""
        assert self.web is not None
        return self.web.reports()

    def window_stats(self) -> tuple[list[EndpointStats], EndpointStats | None]:
        """The window's figures per endpoint and aggregated."""
        assert self.web is not None
        return self.web.window()

    def errors(self, most: int = 10) -> list[dict[str, Any]]:
        """The window's first `most` distinct errors."""
        return [
            {k: e.get(k) for k in ("method", "name", "error", "occurrences")}
            for e in (self.live().get("errors") or [])[:most]
        ]

    # -- the open model ------------------------------------------------------------------------------

    def pool(self, rate: float, latency_s: float) -> int:
        """Users behind `rate` (Little's law on `latency_s`, with headroom), a multiple of the workers (each
        holds an even share of the rate), at most --max-users."""
        workers = self.workers()
        cap = max(workers, self.spec.max_users // workers * workers)
        wanted = rate * latency_s * POOL_HEADROOM
        if not wanted < cap:
            return cap
        need = max(workers, math.ceil(wanted))
        return min(math.ceil(need / workers) * workers, cap)

    def open_ramp(
        self, index: int, rate: float, warmup: float, seen_p95_ms: float | None, before: int
    ) -> int:
        """Hold `rate`, start the pool behind it and warm up for `warmup` seconds. While arrivals wait for a
        free user after the warm-up, the pool grows (Little's law on the latency seen, at least doubling)
        and warms up again — until none waits, the pool is at --max-users, or more users got no more
        iterations done (then the target is what holds them, and the open model measures the queue).
        `seen_p95_ms` is the last open step's send-to-answer p95, if any. Returns the pool's users."""
        assert self.web is not None
        self.rate = rate
        self.web.hold(rate, self.spec.arrivals)
        pool = self.pool(rate, seen_p95_ms / 1000.0 if seen_p95_ms else FIRST_LATENCY_S)
        cap = self.pool(rate, math.inf)
        self.pool_growth = []
        while True:
            # Idle users wait for arrivals and send nothing, so the pool starts at once.
            self.ramp(index, pool, before, spawn_rate=max(self.spec.spawn_rate, float(pool)))
            since = time.time()
            self.wait(index, pool, "warm-up", warmup, time.monotonic())
            waiting, done_rate = open_state(self.web.reports() or {}, since)
            self.pool_growth.append({"users": pool, "done_per_s": done_rate, "waiting": waiting})
            if waiting <= rate * WAITING_SHORT or pool >= cap or len(self.pool_growth) > POOL_GROWTHS:
                return pool
            previous = self.pool_growth[-2]["done_per_s"] if len(self.pool_growth) > 1 else None
            if previous is not None and done_rate is not None and done_rate < GROWTH_GAIN * previous:
                return pool  # more users got no more done: the target holds them
            p95 = (self.live().get("current_response_time_percentiles") or {}).get(_LIVE_P95)
            grown = max(self.pool(rate, (p95 or 0) / 1000.0), min(2 * pool, cap))
            self.progress.note(
                f"step {index + 1}: {waiting} arrivals waited for a free user among {pool}: "
                f"the pool grows to {grown}"
            )
            pool = grown


def open_state(answer: dict[str, Any], since: float) -> tuple[int, float | None]:
    """From the master's reports: arrivals waiting for a free user now (each worker's latest report), and
    iterations done per second in the reports since `since` (wall clock)."""
    latest: dict[str, dict[str, Any]] = {}
    done, first, last = 0, None, None
    for r in answer.get("reports") or []:
        opened = r.get("open")
        if not isinstance(opened, dict):
            continue
        latest[str(r.get("worker"))] = opened
        if float(r.get("time") or 0) >= since:
            done += int(opened.get("done") or 0)
            first = float(r["time"]) if first is None else first
            last = float(r["time"])
    waiting = sum(int(o.get("waiting") or 0) for o in latest.values())
    span = (last - since) if last is not None else 0.0
    return waiting, (round(done / span, 1) if span > 0 else None)
