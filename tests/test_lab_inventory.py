"""Reading the lab from its inventory (loadlab.lab), and `loadlab status` on inventories that are wrong."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from loadlab.cli import main
from loadlab.errors import UserError
from loadlab.lab import Lab

ROOT = Path(__file__).resolve().parent.parent
GROUPS = ("lb", "app", "postgres", "redis", "loadgen", "monitor")
LOCAL = ROOT / "inventory" / "local.yml"
MULTIHOST = ROOT / "inventory" / "multihost.example.yml"


def _inventory(tmp_path: Path, text: str, group_vars: bool = True) -> Path:
    """An inventory in <tmp>/inventory/, beside a copy of the project's group_vars like a user's own."""
    folder = tmp_path / "inventory"
    folder.mkdir()
    if group_vars:
        shutil.copytree(ROOT / "inventory" / "group_vars", folder / "group_vars")
    path = folder / "lab.yml"
    path.write_text(text)
    return path


def test_local_inventory_puts_every_service_on_this_machine():
    lab = Lab.load(LOCAL)
    assert list(lab.hosts) == ["localhost"]
    assert all(lab.groups[g] == ("localhost",) for g in GROUPS)
    host = lab.hosts["localhost"]
    assert host.local and host.address == "127.0.0.1"
    addresses = {s.name: s.address for s in lab.services()}
    assert addresses == {
        "nginx": "127.0.0.1:8080",
        "nginx-status": "127.0.0.1:8088",
        "app-8001": "127.0.0.1:8001",
        "app-8002": "127.0.0.1:8002",
        "app-8003": "127.0.0.1:8003",
        "postgres": "127.0.0.1:5433",
        "redis": "127.0.0.1:6380",
        "locust-master": "127.0.0.1:8089",
        "locust-metrics": "127.0.0.1:9466",
        "exporter": "127.0.0.1:9465",
        "prometheus": "127.0.0.1:9490",
        "supervisor": "/run/loadlab/supervisor.sock",
    }
    assert lab.nginx_url == "http://127.0.0.1:8080"
    assert lab.locust_web_url == "http://127.0.0.1:8089"
    assert lab.prometheus_url == "http://127.0.0.1:9490"
    assert lab.secrets_dir == ROOT / "secrets"


def test_multihost_example_places_services_by_group():
    lab = Lab.load(MULTIHOST)
    by_name: dict[str, list[str]] = {}
    for service in lab.services():
        by_name.setdefault(service.name, []).append(service.host.name)
    assert by_name["nginx"] == ["target1"]
    assert by_name["app-8004"] == ["target2"]  # target2 runs 4 instances, target1 the default 3
    assert by_name["app-8001"] == ["target1", "target2"]
    assert by_name["postgres"] == by_name["redis"] == ["data1"]
    assert by_name["locust-master"] == ["loadgen1"]
    assert by_name["prometheus"] == ["monitor1"]
    assert sorted(by_name["exporter"]) == sorted(lab.hosts)  # one exporter per host
    assert lab.nginx_url == "http://10.0.0.11:8080"
    assert not any(h.local for h in lab.hosts.values())


def test_templated_knobs_read_as_unknown():
    lab = Lab.load(MULTIHOST)
    assert lab.hosts["loadgen2"].int_or_none("locust_workers") == 4
    # loadgen1 keeps the default, the host's cores: a fact only a playbook run knows.
    assert lab.hosts["loadgen1"].int_or_none("locust_workers") is None


def test_inventory_without_group_vars_falls_back_to_the_documented_defaults(tmp_path):
    path = _inventory(
        tmp_path,
        """
all:
  hosts:
    box: {lab_address: 192.0.2.10, nginx_port: 9000}
  children:
    lb: {hosts: {box: }}
    app: {hosts: {box: }}
    postgres: {hosts: {box: }}
    redis: {hosts: {box: }}
    loadgen: {hosts: {box: }}
    monitor: {hosts: {box: }}
""",
        group_vars=False,
    )
    lab = Lab.load(path)
    assert lab.nginx_url == "http://192.0.2.10:9000"
    assert [s.port for s in lab.services() if s.name.startswith("app-")] == [8001, 8002, 8003]


def test_a_knob_left_unset_where_no_group_vars_are_is_named(tmp_path, monkeypatch):
    """A project installed from a wheel has no inventory/group_vars/all.yml to read the knobs' values from."""
    monkeypatch.setattr("loadlab.knobs.CHECKOUT", tmp_path / "wheel")
    groups = "\n".join(f"    {g}: {{hosts: {{box: }}}}" for g in GROUPS)
    path = _inventory(
        tmp_path, f"all:\n  hosts:\n    box: {{lab_address: 192.0.2.10}}\n  children:\n{groups}\n", False
    )
    with pytest.raises(
        UserError, match=r"box: nginx_port is not set: the lab's knobs are in inventory/group_vars"
    ):
        Lab.load(path)


def test_a_knob_that_is_a_template_over_other_knobs_reads_as_rendered(tmp_path):
    text = LOCAL.read_text().replace(
        "      lab_address: 127.0.0.1\n", "      lab_address: 127.0.0.1\n      loadlab_etc_dir: /srv/lab\n"
    )
    lab = Lab.load(_inventory(tmp_path, text))
    host = lab.hosts["localhost"]
    assert host.var("loadlab_supervisor_conf") == "/srv/lab/supervisord.conf"  # group_vars/all.yml's template
    assert host.var("locust_workers") is None  # the host's cores: only a playbook run knows them


def test_missing_group_is_named(tmp_path):
    path = _inventory(
        tmp_path,
        """
all:
  hosts:
    box: {lab_address: 127.0.0.1}
  children:
    lb: {hosts: {box: }}
    app: {hosts: {box: }}
    postgres: {hosts: {box: }}
    redis: {hosts: {box: }}
    loadgen: {hosts: {box: }}
""",
    )
    with pytest.raises(UserError, match=r"no host in group\(s\) monitor"):
        Lab.load(path)


def test_host_without_lab_address_is_named(tmp_path):
    groups = "\n".join(f"    {g}: {{hosts: {{box: }}}}" for g in GROUPS)
    path = _inventory(tmp_path, f"all:\n  hosts:\n    box: {{}}\n  children:\n{groups}\n")
    with pytest.raises(UserError, match="host box has no lab_address"):
        Lab.load(path)


def test_unreadable_inventories_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="inventory not found"):
        Lab.load(tmp_path / "nope.yml")
    broken = tmp_path / "broken.yml"
    broken.write_text("all: [\n")
    with pytest.raises(UserError, match="cannot read inventory"):
        Lab.load(broken)


def test_secret_missing_says_how_to_make_it(tmp_path):
    path = _inventory(tmp_path, LOCAL.read_text())
    with pytest.raises(UserError, match=r"secrets/redis is missing: bring the lab up"):
        Lab.load(path).secret("redis")


@pytest.mark.parametrize("name", ["nope.yml", "broken.yml"])
def test_status_with_a_bad_inventory_is_one_line_and_exit_2(tmp_path, name):
    (tmp_path / "broken.yml").write_text("all: [\n")
    result = CliRunner().invoke(main, ["status", "-i", str(tmp_path / name)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "Traceback" not in result.output
