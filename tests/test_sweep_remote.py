"""A lab sweep run from the controller whose Locust master is another host: its web API (bound to that
host's loopback) is driven through an SSH forward, each host's clock is recorded, and the hosts are
collected into the run folder at the end. The "other host" is a real sshd on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadlab.sweep.locust_driver import LocalLocust
from tests import ssh_server
from tests.ssh_server import SshServer
from tests.test_sweep_run import LOCUSTFILES, STEP, Target, capacity_target, lab_knobs, run_sweep, summary_of

sshd = ssh_server.sshd  # the fixtures
capacity_target = capacity_target  # noqa: PLW0127
pytestmark = pytest.mark.server  # sshd, a sweep target, Locust


@pytest.mark.timeout(180)
def test_a_sweep_drives_a_master_on_another_host_through_ssh(
    sshd: SshServer, capacity_target: Target, tmp_path: Path
) -> None:
    lab_locust = LocalLocust(str(LOCUSTFILES / "closed_loop.py"), 1, [], tmp_path / "lab-locust")
    web = lab_locust.start()
    try:
        knobs = {
            **lab_knobs(capacity_target, lab_locust, tmp_path / "etc"),
            "loadlab_log_dir": str(tmp_path / "log"),
        }
        here = "localhost: {lab_address: 127.0.0.1, ansible_connection: local}"
        master = f"loadgen1: {{lab_address: 127.0.0.1, {sshd.inventory_vars()}}}"
        groups = "".join(
            f"    {g}: {{hosts: {{{master if g == 'loadgen' else here}}}}}\n"
            for g in ("lb", "app", "postgres", "redis", "loadgen", "monitor")
        )
        inventory = tmp_path / "inventory.yml"
        inventory.write_text(f"all:\n  vars: {json.dumps(knobs)}\n  children:\n{groups}")
        out = tmp_path / "run"

        code, output = run_sweep("-i", str(inventory), "--users", "2", *STEP, "--out", str(out))

        assert code == 0, output
        assert "Locust master on loadgen1" in output and "through SSH" in output
        assert summary_of(out)["steps"][0]["rps"] > 0
        run = json.loads((out / "run.json").read_text())
        assert run["inventory"]["locust_master"] == {
            "host": "loadgen1",
            "web": f"127.0.0.1:{lab_locust.web_port}",
            "through_ssh": True,
        }
        clocks = run["clocks"]["hosts"]
        assert set(clocks) == {"localhost", "loadgen1"}
        assert all(abs(c["offset_ms"]) < 1000 for c in clocks.values())  # one clock: no warning expected
        assert "warning: host clocks differ" not in output
        hosts = json.loads((out / "hosts.json").read_text())["hosts"]
        assert hosts["loadgen1"]["reachable"] and hosts["localhost"]["reachable"]
        assert (out / "hosts" / "loadgen1" / "ss.txt").exists()
        assert "collect loadgen1:" in output
        assert '<a href="hosts/loadgen1/">loadgen1</a>' in (out / "report.html").read_text()
        assert web.answers() and web.stats()["state"] == "stopped"  # the sweep stopped its users
    finally:
        web.close()
        lab_locust.stop()
