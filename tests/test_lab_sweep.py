"""`loadlab sweep` against the lab: the inventory's nginx, the lab's Locust master, the lab's Prometheus.

Two small steps (2 and 4 users, 15 s windows) from the master and workers `ansible-playbook lab.yml` started.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from loadlab.cli import main

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
    assert list((out / "panels").glob("*.png")), "the report has no dashboard panels from the lab's Prometheus"
