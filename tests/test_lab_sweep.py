"""`loadlab sweep` against the lab: the inventory's nginx, the lab's Locust master, the lab's Prometheus —
and the faults a lab meets during a run, on the real lab.

One sweep of three small steps (2, 4 and 6 users, 15 s windows) from the master and workers `ansible-playbook
lab.yml` started: the first is clean; during the second a Locust worker is lost (frozen with SIGSTOP until
the master counts it missing, then killed, and supervisor starts it again); before the third the lab's
Prometheus is stopped. One rerun of lab.yml heals the lab, and `loadlab report` then draws the run's panels
from the healed Prometheus. A second sweep is killed with SIGKILL and resumed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from loadlab.cli import main
from loadlab.sweep import samples
from tests.lab_fixture import ROOT, SUPERVISORCTL, LabSession, run_playbook

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]

LOADLAB = Path(sys.executable).with_name("loadlab")


def _supervisor(*args: str) -> str:
    return subprocess.run([*SUPERVISORCTL, *args], check=True, capture_output=True, text=True).stdout.strip()


def _recorded(out: Path) -> int:
    steps = out / "steps.jsonl"
    return len(steps.read_text().splitlines()) if steps.exists() else 0


@dataclass
class FaultedSweep:
    """The sweep's exit, output and files, and what was done to the lab while it ran."""

    exit_code: int
    output: str
    out: Path
    killed_worker: int
    summary: dict

    @property
    def steps(self) -> list[dict]:
        return self.summary["steps"]


@pytest.fixture(scope="module")
def faulted(lab: LabSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultedSweep]:
    out = tmp_path_factory.mktemp("lab-sweep") / "run"
    killed: list[int] = []
    failures: list[BaseException] = []

    def faults() -> None:
        try:
            deadline = time.monotonic() + 240
            while _recorded(out) < 1 and time.monotonic() < deadline:
                time.sleep(0.2)
            # Step 2 ramps (under a second at 10 users/s), warms up 3 s, then measures 15 s: 8 s after step 1
            # is on disk is a few seconds into step 2's window.
            time.sleep(8)
            # Lost, as a worker whose host froze or dropped off the network is: it stops answering the
            # master's heartbeats (a worker killed outright is restarted by supervisor within a second, and
            # Locust hands the restarted one its users again: a dip too short to show reliably).
            pid = int(_supervisor("pid", "locust-worker-1"))
            os.kill(pid, signal.SIGSTOP)
            killed.append(pid)
            stats = f"{lab.lab.locust_web_url}/stats/requests"
            while httpx.get(stats, timeout=5).json().get("worker_count") != 1 and time.monotonic() < deadline:
                time.sleep(0.5)  # the master marks it missing after three missed heartbeats
            time.sleep(4)  # short for a while, as the sweep's figures (polled each second, cached 2 s) see it
            os.kill(pid, signal.SIGKILL)  # gone for good: supervisor starts a new one, Locust hands it users
            while _recorded(out) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            _supervisor("stop", "prometheus")
        except BaseException as exc:  # noqa: BLE001 - reported by the fixture
            failures.append(exc)

    cwd = Path.cwd()
    os.chdir(ROOT)  # where a user runs it: the project folder
    try:
        watcher = threading.Thread(target=faults)
        watcher.start()
        args = ["sweep", "--users", "2,4,6", "--step-time", "15s", "--warmup", "3s", "--out", str(out)]
        args += ["--reset", "300"]  # a known starting state: the demo app's users seeded, Redis flushed
        result = CliRunner().invoke(main, [*args, "--threshold", "fail_ratio<1%"])
        watcher.join()
    finally:
        os.chdir(cwd)
    assert not failures and killed, failures
    assert result.exit_code in (0, 1), result.output  # 1: a threshold failed, never a crash
    summary = json.loads((out / "summary.json").read_text())
    yield FaultedSweep(result.exit_code, result.output, out, killed[0], summary)
    # Whatever a test did, the next module finds the lab as lab.yml leaves it.
    if subprocess.run([*SUPERVISORCTL, "status", "prometheus"], capture_output=True).returncode != 0:
        run_playbook("lab.yml")


def test_a_clean_lab_step_is_measured_with_the_labs_own_figures(faulted: FaultedSweep):
    first = faulted.steps[0]
    assert first["users"] == 2 and first["rps"] > 0 and first["fail_ratio"] == 0.0
    assert first["diagnosis"] == ["ok"], first["diagnosis_evidence"]
    # One session per user: the lab's generators hold one socket per user toward nginx.
    assert first["client_sockets"] == first["users"]
    assert first["loadgen_cpu"] > 0 and first["target_cpu"] > 0
    assert first["resources"]["source"] == "prometheus" and "prometheus_error" not in first["resources"]
    assert first["load"] == {**first["load"], "users_min": 2, "workers_start": 2, "workers_min": 2}
    run = json.loads((faulted.out / "run.json").read_text())
    assert run["mode"] == "lab"
    assert (faulted.out / "report.html").is_file() and _recorded(faulted.out) == 3
    # The run started from the state --reset made, and says so.
    reset = run["reset"]
    assert reset["postgres"] == {"host": "localhost", "table": "users", "rows": 300}
    assert reset["redis"] == {"host": "localhost", "flushed": True, "keys": 0}
    # Each step kept its samples: the master's workers' reports, one a second each.
    data = samples.read(faulted.out, first["index"])
    assert data is not None and len({r["worker"] for r in data["reports"]}) == first["load"]["workers_min"]
    per_second = samples.series(data)
    assert sum(per_second["rps"]) / len(per_second["rps"]) == pytest.approx(first["rps"], rel=0.15)


def test_a_worker_lost_mid_step_makes_the_step_say_its_load_was_short(faulted: FaultedSweep):
    second = faulted.steps[1]
    assert second["users"] == 4
    load = second["load"]
    # The master counted one worker fewer and ran the dead worker's users no more.
    assert load["workers_start"] == 2 and load["workers_min"] == 1, load
    assert load["users_min"] < 4 and load["users_mean"] < 4, load
    assert "load_short" in second["diagnosis"] and "target_saturated" not in second["diagnosis"]
    assert second["diagnosis_evidence"]["load_short"]["workers"] == {"at_start": 2, "least": 1}
    assert "load_short" in faulted.output
    # The next step ran every user again on every worker, the restarted one included.
    third = faulted.steps[2]
    assert third["load"]["users_min"] == 6 and third["load"]["workers_min"] == 2, third["load"]
    assert int(_supervisor("pid", "locust-worker-1")) != faulted.killed_worker


def test_a_sweep_outlives_prometheus_and_says_which_steps_it_sampled(faulted: FaultedSweep):
    third = faulted.steps[2]
    assert third["resources"]["source"] == "sampled"
    assert "did not answer" in third["resources"]["prometheus_error"]
    # Sampled here, the step still has the lab's figures: its apps' CPU and the generator's sockets.
    assert third["target_cpu"] > 0 and third["loadgen_cpu"] > 0 and third["client_sockets"] == 6
    assert faulted.output.count("did not answer") == 1, faulted.output  # one warning, not one per step


def test_one_lab_yml_rerun_heals_the_lab_and_the_report_then_draws_the_runs_panels(faulted: FaultedSweep):
    """Prometheus is still stopped from the sweep; nginx and Redis are stopped too (processes supervisor
    restarts by itself, a killed worker or app instance, need no rerun)."""
    _supervisor("stop", "nginx", "redis")
    down = CliRunner().invoke(main, ["status"])
    assert down.exit_code == 1, down.output
    named = " ".join(down.output.split()).rsplit("not healthy:", 1)[-1]  # the table wraps; this line names
    assert {"nginx", "prometheus", "redis"} <= {n.split("@")[0] for n in named.replace(",", " ").split()}, (
        down.output
    )
    heal = run_playbook("lab.yml")
    assert heal.returncode == 0, heal.tail()
    deadline = time.monotonic() + 60  # Prometheus answers "ready" a moment after it starts
    while (up := CliRunner().invoke(main, ["status"])).exit_code != 0 and time.monotonic() < deadline:
        time.sleep(1)
    assert up.exit_code == 0, up.output
    report = CliRunner().invoke(main, ["report", str(faulted.out)])
    assert report.exit_code == 0, report.output
    assert list((faulted.out / "panels").glob("*.png")), "no dashboard panels from the healed Prometheus"
    assert "load_short" in (faulted.out / "report.html").read_text()


def test_a_lab_sweep_killed_with_sigkill_resumes_without_losing_a_step(lab: LabSession, tmp_path: Path):
    """SIGKILL leaves the lab's Locust swarming with no sweep attached; --resume takes the master over,
    keeps the step on disk byte for byte, measures the rest, and stops the swarm at the end."""
    out = tmp_path / "run"
    cmd = [str(LOADLAB), "sweep", "--users", "2,3", "--step-time", "6s", "--warmup", "3s", "--out", str(out)]
    sweep = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while _recorded(out) < 1 and time.monotonic() < deadline and sweep.poll() is None:
            time.sleep(0.1)
        sweep.send_signal(signal.SIGKILL)
        sweep.wait(timeout=10)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert _recorded(out) == 1
    kept = (out / "steps.jsonl").read_bytes()
    master = lab.lab.locust_web_url
    assert httpx.get(f"{master}/stats/requests", timeout=5).json()["state"] == "running"  # left swarming

    resumed = subprocess.run(
        [str(LOADLAB), "sweep", "--resume", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert (out / "steps.jsonl").read_bytes().startswith(kept)
    assert [s["users"] for s in json.loads((out / "summary.json").read_text())["steps"]] == [2, 3]
    deadline = time.monotonic() + 10
    while httpx.get(f"{master}/stats/requests", timeout=5).json()["state"] != "stopped":
        assert time.monotonic() < deadline, "the resumed sweep left the lab's Locust swarming"
        time.sleep(0.5)


def test_the_sweep_playbook_runs_a_spec_on_the_loadgen_host_and_fetches_the_run(lab, tmp_path):
    """`ansible-playbook playbooks/sweep.yml -e sweep=basic`, shortened, brings the run folder back."""
    extra = json.dumps(
        {
            "sweep": "basic",
            "sweep_results_dir": str(tmp_path),
            "sweep_args": ["--users", "3", "--step-time", "6s", "--warmup", "3s"],
        }
    )
    run = run_playbook("playbooks/sweep.yml", "-e", extra)
    assert run.returncode == 0, run.tail()
    (folder,) = tmp_path.iterdir()
    assert folder.name.endswith("-basic")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["verdict"] == "pass" and [s["users"] for s in summary["steps"]] == [3]
    assert (folder / "report.html").is_file() and (folder / "run.json").is_file()


def test_an_open_lab_sweep_holds_its_rate_on_the_labs_locust_and_hands_the_closed_model_back(
    lab: LabSession, tmp_path: Path
):
    """`--rate` in the lab: the lab's own master and workers hold the arrivals (their plugin), and the
    master is back in the closed model afterwards."""
    out = tmp_path / "open"
    result = CliRunner().invoke(
        main, ["sweep", "--rate", "60", "--step-time", "6s", "--warmup", "2s", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "open"
    (step,) = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert step["rate"] == 60
    assert step["diagnosis"] == ["ok"], step["diagnosis_evidence"]
    assert step["sent"] >= 0.98 * step["intended"] > 0
    assert step["dropped"] <= 0.02 * step["intended"]
    assert step["p50_ms"] >= step["response_p50_ms"]
    kept = json.loads((out / step["samples"]).read_text())
    assert kept["open"]["rate"] == 60 and all("open" in r for r in kept["reports"])
    master = lab.lab.locust_web_url
    assert httpx.get(f"{master}/loadlab/reports", timeout=5).json()["open"]["rate"] == 0
