"""Open-model sweeps (`--rate`) against the sweep's own test target, whose capacity is known: SLOTS requests
at once, each held HOLD seconds, so at most SLOTS / HOLD answers per second and a service time of HOLD.

Each test starts its own Locust (a master and two workers) on this machine, beside the target: generator
and target share this machine's cores, and the rates stay small enough for that.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadlab.sweep.lab_view import LabView
from loadlab.sweep.results import RunDir
from loadlab.sweep.runner import SweepPlan, SweepRunner
from loadlab.sweep.spec import SweepSpec
from tests.test_sweep_run import LOCUSTFILES, Target, run_sweep, summary_of

pytestmark = pytest.mark.server

SLOTS, HOLD = 8, 0.05
CAPACITY = SLOTS / HOLD  # 160 answers per second
STEP = ["--step-time", "6s", "--warmup", "2s", "--workers", "2"]
FREEZE = 2.0


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    served = Target(SLOTS, HOLD)
    yield served
    served.stop()


@pytest.fixture(scope="module")
def open_run(target: Target, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two rates: half the target's capacity, then one and a half times it."""
    out = tmp_path_factory.mktemp("open") / "run"
    code, output = run_sweep(
        "--host", target.url, "-f", str(LOCUSTFILES / "closed_loop.py"), "--allow-any-host",
        "--rate", f"{CAPACITY / 2:g},{CAPACITY * 1.5:g}", *STEP, "--out", str(out),
    )  # fmt: skip
    return {"code": code, "output": output, "out": out, "summary": summary_of(out)}


@pytest.fixture(scope="module")
def closed_run(target: Target, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The closed model above capacity: twice as many users as the target serves at once."""
    out = tmp_path_factory.mktemp("closed") / "run"
    code, output = run_sweep(
        "--host", target.url, "-f", str(LOCUSTFILES / "closed_loop.py"), "--allow-any-host",
        "--users", str(2 * SLOTS), *STEP, "--spawn-rate", "50", "--out", str(out),
    )  # fmt: skip
    return {"code": code, "output": output, "out": out, "summary": summary_of(out)}


@pytest.mark.timeout(240)
def test_half_the_capacity_reports_the_service_time(open_run: dict) -> None:
    assert open_run["code"] == 0, open_run["output"]
    summary = open_run["summary"]
    assert summary["model"] == "open"
    half = summary["steps"][0]
    assert half["rate"] == CAPACITY / 2
    assert half["diagnosis"] == ["ok"], half["diagnosis_evidence"]
    # Every arrival was sent on time and answered in the target's service time, from its intended start.
    assert half["sent"] >= 0.98 * half["intended"]
    assert half["dropped"] <= 0.02 * half["intended"]
    assert half["rps"] == pytest.approx(CAPACITY / 2, rel=0.1)
    assert HOLD * 1000 <= half["p50_ms"] <= HOLD * 1000 * 1.4
    assert half["p99_ms"] <= HOLD * 1000 * 2
    assert half["response_p50_ms"] <= half["p50_ms"]
    # The samples carry the open figures, second by second.
    data = json.loads((open_run["out"] / half["samples"]).read_text())
    assert data["open"]["rate"] == CAPACITY / 2
    assert all("open" in r for r in data["reports"])


@pytest.mark.timeout(240)
def test_one_and_a_half_times_the_capacity_is_target_saturated_with_a_growing_backlog(open_run: dict) -> None:
    over = open_run["summary"]["steps"][1]
    assert over["rate"] == CAPACITY * 1.5
    assert "target_saturated" in over["diagnosis"], over["diagnosis_evidence"]
    assert "generator_behind" not in over["diagnosis"]
    # The target answers at its capacity; the rest of the arrivals queue, and the queue grows by about
    # the difference every second.
    assert over["rps"] == pytest.approx(CAPACITY, rel=0.15)
    assert over["backlog"]["growth_per_s"] >= 0.4 * (over["rate"] - CAPACITY)
    assert over["backlog"]["end"] > over["backlog"]["start"]
    # Latency from intended start holds the queue: far beyond the service time.
    assert over["p99_ms"] >= 10 * HOLD * 1000
    assert over["p99_ms"] > over["response_p99_ms"]


@pytest.mark.timeout(240)
def test_the_closed_model_hides_the_queue_and_the_report_says_which_model_ran(
    open_run: dict, closed_run: dict
) -> None:
    assert closed_run["code"] == 0, closed_run["output"]
    closed = closed_run["summary"]["steps"][0]
    over = open_run["summary"]["steps"][1]
    # Users that wait for their answers send less as the target slows: latency stays near the service time
    # times the users per slot, however far past its capacity the target is asked to go.
    assert closed["p99_ms"] <= 3 * HOLD * 1000 * (2 * SLOTS) / SLOTS
    assert over["p99_ms"] >= 3 * closed["p99_ms"]
    assert closed_run["summary"]["model"] == "closed"
    closed_html = (closed_run["out"] / "report.html").read_text()
    open_html = (open_run["out"] / "report.html").read_text()
    assert "closed model" in closed_html.lower()
    assert "coordinated omission" in closed_html.lower()
    assert "open model" in open_html.lower()


def _plan(
    target: Target, out: Path, rate: float, window: float, action=None, max_users: int = 1000
) -> SweepPlan:
    spec = SweepSpec(
        name="open", users=[], model="open", rates=[rate], step_time=window, warmup=2.0, max_users=max_users
    ).validate()
    return SweepPlan(
        spec=spec,
        mode="standalone",
        host=target.url,
        out=out,
        lab=LabView(inventory=None),
        locustfile=str(LOCUSTFILES / "closed_loop.py"),
        workers=2,
        allow_any_host=True,
        command=["pytest"],
        during_window=action,
    )


def _run(plan: SweepPlan) -> dict:
    run_dir = RunDir(plan.out)
    run_dir.create()
    run_dir.write_run(plan.run_record())
    summary, interrupted = SweepRunner(plan, run_dir, []).run()
    assert interrupted is None
    return summary


@pytest.mark.timeout(240)
def test_a_two_second_freeze_shows_in_the_open_p99_and_its_arrivals_are_late(tmp_path: Path) -> None:
    frozen = Target(SLOTS, HOLD, "--freeze", f"{FREEZE:g}")
    try:
        window = 9.0

        def freeze(_window: float) -> None:  # a third of the way into the window
            threading.Event().wait(window / 3)
            os.kill(frozen.proc.pid, signal.SIGUSR1)

        summary = _run(_plan(frozen, tmp_path / "run", CAPACITY / 2, window, freeze))
    finally:
        frozen.stop()
    (step,) = summary["steps"]
    # The arrivals due during the freeze waited for it to end: a quarter of the window's arrivals were late,
    # and the step's p99 from intended start holds most of the 2 s.
    assert step["late"] >= 0.15 * step["intended"], step
    assert step["p99_ms"] >= 0.7 * FREEZE * 1000, step
    assert step["lateness_p99_ms"] >= 0.5 * FREEZE * 1000, step
    # Nothing was lost: the backlog drained after the freeze. The target held the users, not the pool's size.
    assert step["dropped"] <= 0.05 * step["intended"], step
    assert "generator_behind" not in step["diagnosis"], step["diagnosis_evidence"]
    held = step["diagnosis_evidence"]["target_saturated"]["users_held_by_target"]
    assert held["carries_per_s"] > step["rate"]


@pytest.mark.timeout(240)
def test_a_generator_too_small_for_the_rate_is_generator_behind(tmp_path: Path) -> None:
    wide = Target(100, HOLD)  # far more slots than the generator's users: the target is never the limit
    try:
        # Two users carry at most 2 / HOLD = 40 iterations per second: a rate of 100 cannot be sent.
        summary = _run(_plan(wide, tmp_path / "run", 100.0, 6.0, max_users=2))
    finally:
        wide.stop()
    (step,) = summary["steps"]
    assert "generator_behind" in step["diagnosis"], step["diagnosis_evidence"]
    assert "target_saturated" not in step["diagnosis"]
    evidence = step["diagnosis_evidence"]["generator_behind"]
    assert "no free user" in evidence["why"] and "--max-users" in evidence["why"]
    assert evidence["users_needed"] >= 100 * HOLD  # Little's law: the rate times the service time
    assert step["users"] == 2
    assert step["sent_rate"] == pytest.approx(2 / HOLD, rel=0.15)
    assert step["response_p50_ms"] <= HOLD * 1000 * 1.4  # the target answered in its service time


@pytest.mark.timeout(300)
def test_a_capacity_search_over_rates_brackets_the_known_capacity(target: Target, tmp_path: Path) -> None:
    spec = tmp_path / "search.yml"
    spec.write_text(
        f"rates: auto\nsearch: {{start: {CAPACITY / 2:g}, max_rate: {CAPACITY * 4:g}, resolution: 50%}}\n"
        "step_time: 6s\nwarmup: 2s\nworkers: 2\n"
    )
    out = tmp_path / "run"
    code, output = run_sweep(
        "--spec", str(spec), "--host", target.url, "-f", str(LOCUSTFILES / "closed_loop.py"),
        "--allow-any-host", "--out", str(out),
    )  # fmt: skip
    assert code == 0, output
    summary = summary_of(out)
    assert summary["model"] == "open"
    rates = [s["rate"] for s in sorted(summary["steps"], key=lambda s: s["index"])]  # as measured
    assert rates[:2] == [CAPACITY / 2, CAPACITY]  # doubling from the start while the steps keep up...
    capacity = summary["capacity"]
    # ...and the search ends with the known capacity between the last rate that kept up and the first
    # that did not, the latter named as the target's limit.
    assert capacity["rate"] <= CAPACITY * 1.1 <= capacity["first_bad_rate"] * 1.1, capacity
    assert capacity["first_bad_rate"] <= CAPACITY * 2
    assert not capacity["generator_limited"], capacity
    assert f"{capacity['rate']:g}" in capacity["text"]
