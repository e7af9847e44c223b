"""The open model inside Locust: arrivals at an intended rate instead of users that wait for each answer.

A closed model (N users, each sending its next request when the last one answered) slows down with the
target: when the target stalls, fewer requests are sent and the stall barely shows in the percentiles
(coordinated omission). Here each worker holds its share of an intended arrival rate. Arrivals are due on a
schedule — evenly paced by default, as wrk2 and k6's arrival-rate executors pace them, so a step's latency
reflects the target and not the burstiness of its arrivals; Poisson on request (independent clients) — and
a free user of the worker's pool takes the next arrival when it is due and runs one task iteration for it.
The locustfile is not edited: every TaskSet's next task waits for an arrival, and its wait_time is not
used while a rate is held.

Definitions (per worker; the master adds the workers' reports):
- intended start: when an arrival was due. An iteration that started more than LATE_AFTER_S after it is
  `late`; an arrival that finds no free user waits its turn, and its lateness is part of its latency.
- latency from intended start: each request's send-to-answer time plus its iteration's lateness.
- `due`: arrivals whose intended start has passed; `sent`: iterations started; `done`: iterations ended.
  The backlog is due - done (arrivals not yet answered: waiting for a user, or in flight).
- an arrival still waiting when the rate changes (the next step) is never sent: the sweep counts those of
  its window as `dropped`.

The master takes the rate at POST /loadlab/open (`rate`, `arrivals`) and sends each worker an even share;
rate 0 is the closed model again (Locust as it is). Nested TaskSets: each task of the innermost TaskSet is
one iteration (running a nested TaskSet is not one).
"""

from __future__ import annotations

import random
import time
import weakref
from collections import deque
from typing import Any

import gevent
import gevent.lock
from locust import events
from locust.runners import STATE_MISSING, MasterRunner, WorkerRunner
from locust.stats import bucket_response_time
from locust.user.task import TaskSet

LATE_AFTER_S = 0.010
ARRIVALS = ("even", "poisson")
DEFAULT_ARRIVALS = "even"
OPEN_PATH = "/loadlab/open"
MESSAGE = "loadlab_open"


class Arrivals:
    """One worker's share of the intended arrivals, and what became of them since the last report."""

    def __init__(self) -> None:
        self.rate = 0.0
        self.arrivals = DEFAULT_ARRIVALS
        self.generation = 0
        self._lock = gevent.lock.Semaphore()  # one user at a time waits for the next arrival, in order
        self._rng = random.Random()
        self._due: deque[float] = deque()  # intended starts not yet taken, in order (monotonic clock)
        self._last = 0.0  # the last intended start generated
        self._lateness: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self.sent = 0  # totals since the rate was set
        self.done = 0
        self._due_before = 0  # arrivals due at the last report
        self._report: dict[str, Any] = self._empty()

    @staticmethod
    def _empty() -> dict[str, Any]:
        return {"sent": 0, "done": 0, "late": 0, "lateness": {}, "intended": {}, "intended_failures": 0}

    @property
    def active(self) -> bool:
        return self.rate > 0

    def configure(self, rate: float, arrivals: str = DEFAULT_ARRIVALS, seed: int | None = None) -> None:
        """Hold `rate` arrivals per second from now on (0: closed model); arrivals still waiting drop."""
        self.rate = max(0.0, float(rate))
        self.arrivals = arrivals if arrivals in ARRIVALS else DEFAULT_ARRIVALS
        self._rng.seed(seed)
        self.generation += 1
        self._due.clear()
        self._last = time.monotonic()
        self.sent = self.done = self._due_before = 0
        self._report = self._empty()

    def _gap(self) -> float:
        if self.arrivals == "poisson":
            return self._rng.expovariate(self.rate)
        return 1.0 / self.rate

    def _extend(self, until: float) -> None:
        while not self._due or self._last <= until:
            self._last += self._gap()
            self._due.append(self._last)

    def waiting(self, now: float | None = None) -> int:
        """Arrivals due and not yet taken by a user."""
        if not self.active:
            return 0
        now = time.monotonic() if now is None else now
        self._extend(now)
        n = 0
        for due in self._due:
            if due > now:
                break
            n += 1
        return n

    def take(self) -> float | None:
        """Wait for the next arrival, take it and return how late it started (seconds); None when the rate
        was lifted meanwhile (the closed model again)."""
        with self._lock:
            while True:
                if not self.active:
                    return None
                generation = self.generation
                self._extend(time.monotonic())
                wait = self._due[0] - time.monotonic()
                if wait > 0:
                    gevent.sleep(wait)
                if generation == self.generation and self._due:
                    break  # still the same schedule: the arrival is due now
            due = self._due.popleft()
        lateness = max(0.0, time.monotonic() - due)
        self.sent += 1
        self._report["sent"] += 1
        if lateness > LATE_AFTER_S:
            self._report["late"] += 1
        ms = bucket_response_time(lateness * 1000)
        self._report["lateness"][ms] = self._report["lateness"].get(ms, 0) + 1
        return lateness

    def run(self, taskset: TaskSet, run_task: Any) -> None:
        """One iteration: the next task of `taskset` once an arrival is due, its lateness on its requests."""
        generation = self.generation
        lateness = self.take()
        if lateness is None:
            run_task(taskset)
            return
        current = gevent.getcurrent()
        self._lateness[current] = lateness
        try:
            run_task(taskset)
        finally:
            self._lateness.pop(current, None)
            if generation == self.generation:
                self.done += 1
                self._report["done"] += 1

    def on_request(self, response_time: float | None, exception: Any) -> None:
        """A request ended: its latency from intended start (its iteration's lateness added)."""
        if not self.active or response_time is None:
            return
        lateness = self._lateness.get(gevent.getcurrent(), 0.0)
        ms = bucket_response_time(float(response_time) + lateness * 1000)
        self._report["intended"][ms] = self._report["intended"].get(ms, 0) + 1
        if exception is not None:
            self._report["intended_failures"] += 1

    def report(self) -> dict[str, Any] | None:
        """What happened since the last report (None in the closed model with nothing to tell)."""
        if not self.active and not any(self._report[k] for k in ("sent", "done")):
            return None
        now = time.monotonic()
        waiting = self.waiting(now)
        due_total = self.sent + waiting
        out = {
            **self._report,
            "rate": self.rate,
            "arrivals": self.arrivals,
            "due": due_total - self._due_before,
            "waiting": waiting,
            "in_flight": self.sent - self.done,
            "lateness": {str(k): v for k, v in sorted(self._report["lateness"].items())},
            "intended": {str(k): v for k, v in sorted(self._report["intended"].items())},
        }
        self._due_before = due_total
        self._report = self._empty()
        return out


ARRIVAL = Arrivals()

_run_task = TaskSet.execute_next_task
_wait_time = TaskSet.wait_time


def _execute_next_task(self: TaskSet) -> None:
    """A TaskSet's next task: as Locust runs it, or — while a rate is held — once an arrival is due (a
    nested TaskSet is not an iteration of its own: its tasks are)."""
    if not ARRIVAL.active:
        _run_task(self)
        return
    following = self._task_queue[0] if self._task_queue else None
    if isinstance(following, type) and issubclass(following, TaskSet):
        _run_task(self)
    else:
        ARRIVAL.run(self, _run_task)


def _paced_wait_time(self: TaskSet) -> float:
    return 0.0 if ARRIVAL.active else _wait_time(self)


TaskSet.execute_next_task = _execute_next_task  # type: ignore[method-assign]
TaskSet.wait_time = _paced_wait_time  # type: ignore[method-assign]


@events.request.add_listener
def _on_request(response_time: float | None = None, exception: Any = None, **_: Any) -> None:
    ARRIVAL.on_request(response_time, exception)


class OpenState:
    """The master's: the rate it holds, and the sum of the workers' open figures (for /metrics)."""

    def __init__(self) -> None:
        self.rate = 0.0
        self.arrivals = DEFAULT_ARRIVALS
        self.workers = 0
        self.since = time.time()
        self.totals = {"due": 0, "sent": 0, "done": 0, "late": 0, "intended_failures": 0}
        self.intended: dict[int, int] = {}
        self.waiting: dict[str, int] = {}
        self.in_flight: dict[str, int] = {}

    def add(self, worker: str, report: dict[str, Any]) -> None:
        for key in self.totals:
            self.totals[key] += int(report.get(key) or 0)
        for ms, n in (report.get("intended") or {}).items():
            self.intended[int(ms)] = self.intended.get(int(ms), 0) + int(n)
        self.waiting[worker] = int(report.get("waiting") or 0)
        self.in_flight[worker] = int(report.get("in_flight") or 0)

    def as_json(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "arrivals": self.arrivals,
            "workers": self.workers,
            "since": self.since,
            "late_after_ms": LATE_AFTER_S * 1000,
        }


OPEN = OpenState()


def _workers(runner: MasterRunner) -> list[str]:
    return [cid for cid, node in runner.clients.items() if node.state != STATE_MISSING]


def hold(runner: Any, rate: float, arrivals: str) -> dict[str, Any]:
    """The master sends each connected worker its even share of `rate` (0: back to the closed model)."""
    workers = _workers(runner) if isinstance(runner, MasterRunner) else []
    OPEN.rate, OPEN.arrivals, OPEN.workers, OPEN.since = float(rate), arrivals, len(workers), time.time()
    OPEN.waiting.clear()
    OPEN.in_flight.clear()
    share = float(rate) / len(workers) if workers else float(rate)
    for i, client_id in enumerate(workers):
        runner.send_message(MESSAGE, {"rate": share, "arrivals": arrivals, "seed": i + 1}, client_id)
    if not isinstance(runner, MasterRunner):  # a local runner holds the rate itself
        ARRIVAL.configure(share, arrivals, seed=1)
    return OPEN.as_json()


@events.init.add_listener
def _open_model(environment: Any, runner: Any = None, web_ui: Any = None, **_: Any) -> None:
    if isinstance(runner, WorkerRunner):
        runner.register_message(
            MESSAGE,
            lambda environment, msg, **_: ARRIVAL.configure(
                msg.data.get("rate", 0.0), msg.data.get("arrivals", DEFAULT_ARRIVALS), msg.data.get("seed")
            ),
        )
        environment.events.report_to_master.add_listener(_report_to_master)
        return
    if web_ui is None or runner is None:
        return
    from flask import jsonify, request

    def open_route() -> Any:
        form = request.get_json(silent=True) or request.form
        try:
            rate = float(form.get("rate", 0))
        except (TypeError, ValueError):
            return jsonify({"success": False, "message": "rate: not a number"}), 400
        arrivals = str(form.get("arrivals") or DEFAULT_ARRIVALS)
        if rate < 0 or rate != rate or rate == float("inf") or arrivals not in ARRIVALS:
            return jsonify({"success": False, "message": "rate >= 0 and arrivals even or poisson"}), 400
        return jsonify({"success": True, **hold(runner, rate, arrivals)})

    guard = getattr(web_ui, "auth_required_if_enabled", None)
    web_ui.app.add_url_rule(
        OPEN_PATH, "loadlab_open", guard(open_route) if guard else open_route, methods=["POST"]
    )


def _report_to_master(client_id: str, data: dict[str, Any], **_: Any) -> None:
    report = ARRIVAL.report()
    if report is not None:
        data["loadlab_open"] = report
