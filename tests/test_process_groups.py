"""Which command line is which lab process, defined once (loadlab/process_groups.py) and read by the exporter
role, the teardown, the Compose twin, the exporter's own defaults and the tests."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import jinja2.nativetypes
import pytest
import yaml

from loadlab.exporters.config import load_config
from loadlab.knobs import lab_knobs
from loadlab.process_groups import (
    LAB_GROUPS,
    app_instance,
    lab_process_groups,
    lab_process_pattern,
    lab_process_patterns,
)
from tests.lab_fixture import LAB_PROCESS_PATTERN

ROOT = Path(__file__).resolve().parent.parent
KNOBS = lab_knobs()
ETC = KNOBS["loadlab_etc_dir"]
PORTS = range(KNOBS["app_base_port"], KNOBS["app_base_port"] + KNOBS["app_instances"])
OWN_APP = "uvicorn ordersvc.app:app --host {address} --port {port} --no-access-log"

# The one-host lab with the default knobs and two Locust workers: what its exporter's config names. Changing
# a name or a regex changes every metric, dashboard and diagnosis that shows it.
DEFAULT_GROUPS = {
    "nginx": r"^nginx: master process .*/etc/loadlab/",
    "app-8001": r"loadlab\.app .*--port 8001\b",
    "app-8002": r"loadlab\.app .*--port 8002\b",
    "app-8003": r"loadlab\.app .*--port 8003\b",
    "postgres": r"^(\S*/bin/postgres --config-file=/etc/loadlab/|postgres: loadlab: )",
    "redis": r"^\S*redis-server \S+:6380\b",
    "locust-master": r"locust --config \S*/locust/master\.conf\b",
    "locust-worker-1": r"locust --config \S*/locust/worker-1\.conf\b",
    "locust-worker-2": r"locust --config \S*/locust/worker-2\.conf\b",
    "prometheus": r"prometheus --config\.file=/etc/loadlab/prometheus/",
    "exporter": r"loadlab exporter --config /etc/loadlab/exporter\.yml$",
}

# Command lines of the lab's processes as `ps` shows them on a running lab (the venv's python, Debian's
# binaries; redis-server's is its process title).
VENV = "/opt/loadlab/venv/bin/python"
SAMPLES = {
    "nginx": f"nginx: master process /usr/sbin/nginx -c {ETC}/nginx/nginx.conf -e /var/log/loadlab/error.log",
    "app-8001": f"{VENV} -m loadlab.app --host 127.0.0.1 --port 8001",
    "app-8002": f"{VENV} -m loadlab.app --host 127.0.0.1 --port 8002",
    "app-8003": f"{VENV} -m loadlab.app --host 127.0.0.1 --port 8003",
    "postgres": f"/usr/lib/postgresql/15/bin/postgres --config-file={ETC}/postgres/postgresql.conf",
    "redis": "/usr/bin/redis-server 127.0.0.1:6380",
    "locust-master": f"{VENV} -m locust --config {ETC}/locust/master.conf",
    "locust-worker-1": f"{VENV} -m locust --config {ETC}/locust/worker-1.conf",
    "locust-worker-2": f"{VENV} -m locust --config {ETC}/locust/worker-2.conf",
    "prometheus": f"/usr/bin/prometheus --config.file={ETC}/prometheus/prometheus.yml "
    "--storage.tsdb.path=/var/lib/loadlab/prometheus --web.listen-address=127.0.0.1:9490",
    "exporter": f"{VENV} /opt/loadlab/venv/bin/loadlab exporter --config {ETC}/exporter.yml",
}
# Lab processes that belong to a group through their parent, or to no group.
OTHER_LAB_PROCESSES = [
    f"/usr/bin/python3 /usr/bin/supervisord -c {ETC}/supervisord.conf",
    "postgres: loadlab: checkpointer ",
    "postgres: loadlab: loadlab loadlab 127.0.0.1(44454) idle",
    f"/usr/share/grafana/bin/grafana server --homepath /usr/share/grafana --config {ETC}/grafana/grafana.ini",
]
OWN_APP_PROCESSES = [
    "/opt/loadlab/app-venv/bin/python /opt/loadlab/app-venv/bin/uvicorn ordersvc.app:app --host 127.0.0.1 "
    f"--port {port} --no-access-log"
    for port in PORTS
]
# Processes of this machine that are not the lab's: the tests' own servers, a shell, a Locust of a sweep.
NOT_LAB = [
    "/work/main/.venv/bin/python -m loadlab.app --host 127.0.0.1 --port 15751",
    "nginx: master process /usr/sbin/nginx -p /tmp/loadlab-nginx-x -c /tmp/loadlab-nginx-x/nginx.conf",
    "nginx: worker process",
    "/usr/lib/postgresql/15/bin/postgres -D /tmp/loadlab-pg-x/data -p 17991 -k /tmp/loadlab-pg-x/sock",
    "/usr/bin/redis-server 127.0.0.1:16379",
    "/work/main/.venv/bin/python -m locust -f locustfiles/scaling.py --master --web-port 34419",
    f"supervisorctl -c {ETC}/supervisord.conf status",
    "/usr/bin/prometheus --config.file=/tmp/prom-x/prometheus.yml",
]


def _groups(**overrides) -> dict[str, str]:
    """The groups of the one-host lab with the default knobs, overrides on top."""
    args = dict(
        groups=LAB_GROUPS,
        first_loadgen=True,
        etc_dir=ETC,
        app_ports=PORTS,
        app_command=KNOBS["app_command"],
        lab_address="127.0.0.1",
        redis_port=KNOBS["redis_port"],
        locust_workers=2,
        exporter_config=f"{ETC}/exporter.yml",
    )
    args.update(overrides)
    return lab_process_groups(args.pop("groups"), **args)


def _patterns(**overrides) -> list[str]:
    args = dict(
        supervisor_conf=KNOBS["loadlab_supervisor_conf"],
        redis_port=KNOBS["redis_port"],
        app_ports=PORTS,
        app_command=KNOBS["app_command"],
        lab_address="127.0.0.1",
    )
    args.update(overrides)
    return lab_process_patterns(ETC, **args)


def test_the_default_lab_has_the_groups_its_metrics_and_dashboards_name():
    assert _groups() == DEFAULT_GROUPS
    assert list(_groups()) == list(DEFAULT_GROUPS)  # the order the exporter's config lists them in


def test_each_group_matches_its_own_process_and_no_other():
    groups = _groups()
    for name, line in SAMPLES.items():
        assert [g for g, rx in groups.items() if re.search(rx, line)] == [name], line
    for line in OTHER_LAB_PROCESSES + NOT_LAB:
        assert not [g for g, rx in groups.items() if re.search(rx, line) and g != "postgres"], line
    assert re.search(groups["postgres"], "postgres: loadlab: loadlab loadlab 127.0.0.1(44454) idle")


def test_a_host_has_the_groups_of_its_inventory_groups():
    assert list(_groups(groups=["lb"])) == ["nginx", "exporter"]
    assert list(_groups(groups=["loadgen"], first_loadgen=False, locust_workers=3)) == [
        "locust-worker-1",
        "locust-worker-2",
        "locust-worker-3",
        "exporter",
    ]
    assert list(_groups(groups=[])) == ["exporter"]  # a host of your own service (group external)
    assert list(_groups(groups=["app"], app_ports=[9001])) == ["app-9001", "exporter"]


def test_your_own_app_is_named_by_its_command_line_and_port():
    groups = _groups(app_command=OWN_APP)
    assert groups["app-8001"] == app_instance(OWN_APP, "127.0.0.1", 8001)
    for port, line in zip(PORTS, OWN_APP_PROCESSES, strict=True):
        assert [g for g, rx in groups.items() if re.search(rx, line)] == [f"app-{port}"]
    assert not re.search(groups["app-8001"], OWN_APP_PROCESSES[0].replace("--no-access-log", "--reload"))


def test_every_lab_process_matches_the_teardown_pattern_and_nothing_else_does():
    pattern = lab_process_pattern(_patterns())
    for line in [*SAMPLES.values(), *OTHER_LAB_PROCESSES]:
        assert re.search(pattern, line), line
    for line in NOT_LAB + OWN_APP_PROCESSES:
        assert not re.search(pattern, line), line
    own = lab_process_pattern(_patterns(app_command=OWN_APP))
    assert all(re.search(own, line) for line in OWN_APP_PROCESSES)


def test_the_tests_look_for_every_lab_process_the_teardown_stops():
    for line in [*SAMPLES.values(), *OTHER_LAB_PROCESSES, *OWN_APP_PROCESSES]:
        assert re.search(LAB_PROCESS_PATTERN, line), line
    for line in NOT_LAB:
        assert not re.search(LAB_PROCESS_PATTERN, line), line


def test_the_exporter_without_a_config_names_the_one_host_labs_groups():
    groups = dict(load_config(None).process_groups)
    workers = [g for g in groups if g.startswith("locust-worker-")]
    assert groups == _groups(locust_workers=len(workers))


# --- the playbooks read the same definition --------------------------------------------------------------


def _filters() -> dict:
    path = ROOT / "playbooks" / "filter_plugins" / "loadlab_filters.py"
    spec = importlib.util.spec_from_file_location("loadlab_filters", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()


def _render(expression: str, context: dict):
    """A role variable as Ansible renders it: one expression, its value in Python types."""
    env = jinja2.nativetypes.NativeEnvironment(undefined=jinja2.StrictUndefined)
    env.filters.update(_filters())
    return env.from_string(expression).render(context)


def test_ansible_reaches_the_definition_through_the_filter_plugin():
    assert _filters() == {
        "loadlab_process_groups": lab_process_groups,
        "loadlab_process_patterns": lab_process_patterns,
    }
    assert "filter_plugins = playbooks/filter_plugins" in (ROOT / "ansible.cfg").read_text()


@pytest.mark.parametrize("app_command", ["", OWN_APP])
def test_the_exporter_role_computes_the_groups_from_the_definition(app_command):
    role_vars = yaml.safe_load((ROOT / "playbooks/roles/exporter/vars/main.yml").read_text())
    context = {
        **KNOBS,
        "app_command": app_command,
        "lab_address": "127.0.0.1",
        "locust_workers": "2",
        "inventory_hostname": "localhost",
        "group_names": list(LAB_GROUPS),
        "groups": {name: ["localhost"] for name in ("all", *LAB_GROUPS)},
    }
    context["_exporter_conf"] = _render(role_vars["_exporter_conf"], context)
    assert _render(role_vars["_exporter_lab_groups"], context) == _groups(app_command=app_command)


def test_the_teardown_stops_what_the_definition_names():
    play = yaml.safe_load((ROOT / "playbooks/teardown.yml").read_text())[0]
    context = {**KNOBS, "lab_address": "127.0.0.1"}
    patterns = _render(play["vars"]["_teardown_patterns"], context)
    assert patterns == _patterns()


# --- one definition --------------------------------------------------------------------------------------

# Fragments only a process-group regex has (escaped dots, \S, the lab's config paths in a pattern).
_PATTERN_FRAGMENTS = (
    r"redis-server \S+:",
    r"nginx: master process .*",
    r"loadlab\.app .*--port",
    r"--config\.file=",
    r"\S*/locust/worker-",
    r"postgres: loadlab: ",
    r"supervisord .*",
)
_DEFINITION = ROOT / "loadlab" / "process_groups.py"


def _string_constants(source: str) -> list[str]:
    """The string literals of Python source, docstrings left out."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def restated_patterns(path: Path, text: str) -> list[str]:
    """Where a file spells out a process-group regex of its own instead of asking the definition."""
    texts = _string_constants(text) if path.suffix == ".py" else [text]
    return [f"{path.name}: {f}" for f in _PATTERN_FRAGMENTS if any(f in t for t in texts)]


def _readers() -> list[Path]:
    files = [p for ext in ("yml", "j2", "py") for p in ROOT.glob(f"playbooks/**/*.{ext}")]
    files += [*ROOT.glob("loadlab/**/*.py"), *ROOT.glob("exporters/*.py"), ROOT / "tests" / "lab_fixture.py"]
    return sorted(p for p in files if p != _DEFINITION)


def test_no_other_file_spells_out_a_lab_process_pattern():
    found = [hit for path in _readers() for hit in restated_patterns(path, path.read_text())]
    assert found == []
    assert restated_patterns(_DEFINITION, _DEFINITION.read_text())  # the fragments are the definition's


def test_restated_patterns_finds_a_copy():
    teardown = (ROOT / "playbooks" / "teardown.yml").read_text()
    doctored = teardown + "\n    _teardown_extra: ['^\\S*redis-server \\S+:{{ redis_port }}\\b']\n"
    assert restated_patterns(Path("teardown.yml"), doctored) == [r"teardown.yml: redis-server \S+:"]
    fixture = 'PATTERN = r"^nginx: master process .*/etc/loadlab/"\n'
    assert restated_patterns(Path("lab_fixture.py"), fixture) == ["lab_fixture.py: nginx: master process .*"]
    documented = '"""The exporter names `^nginx: master process .*` as nginx."""\n'
    assert restated_patterns(Path("doc.py"), documented) == []
