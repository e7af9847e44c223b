"""`loadlab sweep` against the lab: the inventory's nginx, the lab's Locust master, the lab's Prometheus.

Two small steps (2 and 4 users, 15 s windows) from the master and workers `ansible-playbook lab.yml` started.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from loadlab.cli import main
from tests.lab_fixture import run_playbook

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
