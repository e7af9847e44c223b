"""`loadlab calibrate` on the lab: every provoked bottleneck is named, nothing else is blamed, and the lab is
as it was afterwards (every service healthy). Its cases are standalone
sweeps with a locustfile of their own against the lab's nginx, so they also show that such a sweep reads the
lab's figures from the lab's Prometheus.

The cases share this machine's two cores with the lab and with each other's Locust: the test asserts what
calibrate asserts, which tolerates `host_cpu_saturated` beside the provoked code.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from loadlab.cli import main

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]


def test_calibrate_names_every_provoked_bottleneck_and_leaves_the_lab_as_it_was(lab, tmp_path, monkeypatch):
    monkeypatch.chdir(lab.lab.inventory.resolve().parent.parent)
    out = tmp_path / "calibrate"
    result = CliRunner().invoke(
        main, ["calibrate", "--out", str(out), "--step-time", "15s", "--warmup", "2s"]
    )
    cases = json.loads((out / "calibrate.json").read_text())["cases"]
    table = {c["case"]: (c["diagnosed"], c["passed"]) for c in cases}
    assert result.exit_code == 0, (result.output[-3000:], table)
    names = {"db_pool", "target_cpu", "generator_cpu", "shared_pool", "component_down", "lb_down"}
    assert set(table) == names
    assert all(passed for _codes, passed in table.values()), table
    assert "calibrate: 6 of 6 cases passed" in result.output
    # Each stopped component is named with its host and the errors are laid at its door.
    for case, component in (("component_down", "postgres"), ("lb_down", "nginx")):
        evidence = next(c for c in cases if c["case"] == case)["evidence"]
        assert evidence["component_down"]["component"].endswith(f"/{component}"), evidence
        assert evidence["errors"].get("attributed_to") == [evidence["component_down"]["component"]], evidence
    # A user's own locustfile (calibrate's) against the lab's nginx reads the lab's figures: the apps' CPU
    # and DB pools from the lab's Prometheus, the generator sampled where this sweep's Locust ran.
    pool = json.loads((out / "db_pool" / "summary.json").read_text())["steps"][0]
    res = pool["resources"]
    assert res["source"] == "prometheus" and res["generator_source"] == "sampled"
    apps = {n: p["cpu"] for n, p in res["processes"].items() if "/app-" in n}
    assert len(apps) == len(lab.lab.group("app")[0].app_ports()) and all(c > 0 for c in apps.values()), apps
    assert pool["target_cpu"] > 0 and pool["loadgen_cpu"] > 0
    assert pool["client_sockets"] == pool["users"]
    assert "/app-" in json.dumps(pool["diagnosis_evidence"]["db_connections_saturated"])
    # The lab is as it was: every service healthy.
    status = CliRunner().invoke(main, ["status"])
    assert status.exit_code == 0, status.output
