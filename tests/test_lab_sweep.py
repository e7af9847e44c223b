"""`loadlab sweep` against the lab: the inventory's nginx, the lab's Locust master, the lab's Prometheus.

Two small steps (2 and 4 users, 15 s windows) from the master and workers `ansible-playbook lab.yml` started.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest
from click.testing import CliRunner

from loadlab.cli import main
from tests.lab_fixture import SUPERVISORCTL, run_playbook

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]


def test_a_lab_sweep_measures_each_step_with_the_labs_own_figures(lab, tmp_path, monkeypatch):
    monkeypatch.chdir(lab.lab.inventory.resolve().parent.parent)  # where a user runs it: the project folder
    out = tmp_path / "run"
    args = ["sweep", "--users", "2,4", "--step-time", "15s", "--warmup", "3s", "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--threshold", "fail_ratio<1%"])
    assert result.exit_code == 0, result.output

    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] == "pass"
    assert [s["users"] for s in summary["steps"]] == [2, 4]
    for step in summary["steps"]:
        assert step["rps"] > 0 and step["fail_ratio"] == 0.0
        # One session per user: the lab's generators hold one socket per user toward nginx.
        assert step["client_sockets"] == step["users"]
        assert step["loadgen_cpu"] > 0 and step["target_cpu"] > 0
        assert step["resources"]["source"] == "prometheus"
    run = json.loads((out / "run.json").read_text())
    assert run["mode"] == "lab"
    assert (out / "report.html").is_file() and len((out / "steps.jsonl").read_text().splitlines()) == 2
    assert list((out / "panels").glob("*.png")), "no dashboard panels from the lab's Prometheus in the report"


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


def test_a_sweep_outlives_prometheus_and_one_lab_yml_rerun_heals_the_lab(lab, tmp_path, monkeypatch):
    """Prometheus stopped after the first step: the next step keeps figures sampled on this machine and
    says so; `loadlab status` names Prometheus down until one rerun of lab.yml brings it back."""
    monkeypatch.chdir(lab.lab.inventory.resolve().parent.parent)
    out = tmp_path / "run"
    stopped = threading.Event()

    def stop_prometheus_after_the_first_step() -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            steps = out / "steps.jsonl"
            if steps.exists() and steps.read_text().strip():
                subprocess.run([*SUPERVISORCTL, "stop", "prometheus"], check=True, capture_output=True)
                stopped.set()
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=stop_prometheus_after_the_first_step)
    watcher.start()
    args = ["sweep", "--users", "2,3", "--step-time", "15s", "--warmup", "3s", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    watcher.join()
    assert stopped.is_set() and result.exit_code == 0, result.output
    first, second = json.loads((out / "summary.json").read_text())["steps"]
    assert first["resources"]["source"] == "prometheus" and "prometheus_error" not in first["resources"]
    assert (
        second["resources"]["source"] == "sampled"
        and "did not answer" in second["resources"]["prometheus_error"]
    )
    # Sampled here, the step still has the lab's figures: its apps' CPU and the generator's sockets.
    assert second["target_cpu"] > 0 and second["loadgen_cpu"] > 0 and second["client_sockets"] == 3
    assert result.output.count("did not answer") == 1, result.output  # one warning, not one per step

    down = CliRunner().invoke(main, ["status"])
    assert down.exit_code == 1 and "prometheus" in down.output.lower(), down.output
    heal = run_playbook("lab.yml")
    assert heal.returncode == 0, heal.tail()
    deadline = time.monotonic() + 60  # Prometheus answers "ready" a moment after it starts
    while (up := CliRunner().invoke(main, ["status"])).exit_code != 0 and time.monotonic() < deadline:
        time.sleep(1)
    assert up.exit_code == 0, up.output
