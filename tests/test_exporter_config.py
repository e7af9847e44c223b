"""Exporter configuration: the file, flags over it, and one line + exit 2 for every bad value."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from loadlab.cli import main
from loadlab.errors import UserError
from loadlab.exporters.config import default_ports, load_config, role_of
from loadlab.knobs import lab_knobs

GOOD = """
listen: "127.0.0.1:9465"
ports: [8080, 8001]
process_groups:
  nginx: "^nginx: "
  app-8001: "loadlab\\\\.app .*--port 8001\\\\b"
postgres: {dsn: "host=127.0.0.1 port=5433 dbname=loadlab user=loadlab_monitor password=x"}
redis: {url: "redis://:pw@127.0.0.1:6380/0"}
nginx: {status_url: "http://127.0.0.1:8088/stub_status"}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exporter.yml"
    path.write_text(text)
    return path


def test_file_as_the_role_writes_it(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 9465)
    assert config.ports == (8080, 8001)
    assert config.process_groups == {"nginx": "^nginx: ", "app-8001": r"loadlab\.app .*--port 8001\b"}
    assert config.process_roles == {"nginx": "target", "app-8001": "target"}
    assert config.postgres_dsn.startswith("host=127.0.0.1 port=5433")
    assert config.redis_url == "redis://:pw@127.0.0.1:6380/0"
    assert config.nginx_status_url == "http://127.0.0.1:8088/stub_status"


def test_flags_override_the_file(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, GOOD),
        listen="[::1]:9999",
        ports="9000, 9001",
        process_groups=["nginx=^nginx", "extra=foo"],
        redis_url="redis://127.0.0.1:7000/0",
    )
    assert (config.listen_host, config.listen_port, config.listen) == ("::1", 9999, "[::1]:9999")
    assert config.ports == (9000, 9001)
    assert config.process_groups["nginx"] == "^nginx"
    assert config.process_groups["extra"] == "foo"
    assert config.redis_url == "redis://127.0.0.1:7000/0"


def test_missing_sections_leave_collectors_off_and_defaults_apply(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "listen: ':9465'\n"))
    assert config.listen_host == "0.0.0.0"
    assert config.ports == default_ports()
    assert (config.postgres_dsn, config.redis_url, config.nginx_status_url) == (None, None, None)
    assert "nginx" in config.process_groups
    assert load_config(write(tmp_path, "")).listen == "127.0.0.1:9465"


def test_the_defaults_are_the_one_host_labs_from_its_knobs(tmp_path: Path) -> None:
    knobs = lab_knobs()
    config = load_config(None)
    assert config.listen == f"127.0.0.1:{knobs['exporter_port']}"
    assert config.ports[0] == knobs["nginx_port"] and knobs["redis_port"] in config.ports
    assert config.process_groups["redis"] == rf"^\S*redis-server \S+:{knobs['redis_port']}\b"


def test_where_the_knobs_are_not_installed_the_config_says_everything(tmp_path: Path, monkeypatch) -> None:
    """On a host installed from a wheel there is no inventory/group_vars/all.yml: the role's config, which
    always gives listen, ports and process_groups, is all the exporter needs."""
    monkeypatch.setattr("loadlab.knobs.CHECKOUT", tmp_path / "wheel")
    config = load_config(write(tmp_path, GOOD))
    assert config.listen == "127.0.0.1:9465" and config.ports == (8080, 8001)
    with pytest.raises(
        UserError, match="exporter_port is not set, .* not installed here; give listen, ports"
    ):
        load_config(write(tmp_path, "ports: [8080]\n"))


def test_a_group_says_its_role_or_its_name_implies_one(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            "process_groups:\n"
            "  shop: {match: '^gunicorn: master \\[shop', role: target}\n"
            "  shopdb: {match: '^mysqld ', role: data}\n"
            "  redis: {match: '^redis-server '}\n"
            "  postgres: '^postgres '\n"
            "  java: 'java .*batch'\n",
        ),
        process_groups=[
            "locust-worker-9=locust .*worker",
            "prometheus=^/usr/bin/prometheus",
            "shop=gunicorn",
        ],
    )
    assert config.process_groups["shop"] == "gunicorn"  # the flag's regex, the file's role
    assert config.process_groups["shopdb"] == "^mysqld "
    assert config.process_groups["redis"] == "^redis-server "
    assert config.process_roles == {
        "shop": "target",
        "shopdb": "data",
        "redis": "data",  # a mapping without a role: the name's
        "postgres": "data",
        "java": "other",
        "locust-worker-9": "loadgen",  # --process-group NAME=REGEX: the name's
        "prometheus": "monitor",
    }
    # no process_groups in the file: the lab's defaults, each with its name's role
    defaults = load_config(write(tmp_path, ""))
    assert set(defaults.process_roles) == set(defaults.process_groups)
    assert {role_of(g) for g in defaults.process_groups} == {"target", "data", "loadgen", "monitor"}
    assert all(defaults.process_roles[g] == role_of(g) for g in defaults.process_groups)


@pytest.mark.parametrize(
    ("group", "role"),
    [
        ("nginx", "target"),
        ("app-8001", "target"),
        ("target-2", "target"),
        ("postgres", "data"),
        ("redis", "data"),
        ("locust-master", "loadgen"),
        ("locust-worker-3", "loadgen"),
        ("prometheus", "monitor"),
        ("exporter", "monitor"),
        ("gunicorn", "other"),
        ("nginx-extra", "other"),
    ],
)
def test_role_of_a_group_name(group: str, role: str) -> None:
    assert role_of(group) == role


BAD_FILES = [
    ("ports: [8080, abc]", r"ports\[1\]: 'abc' is not a TCP port"),
    ("ports: [70000]", r"ports\[0\]: 70000 is not a TCP port"),
    ("ports: 8080", r"ports: expected a list of ports"),
    ("listen: localhost", r"listen: 'localhost' is not HOST:PORT"),
    ("listen: '127.0.0.1:99999'", r"listen: port 99999 is out of range"),
    ("listen: '[nope]:80'", r"listen: 'nope' is not an IPv6 address"),
    ("process_groups: {app: '('}", r"process_groups\.app: '\(' is not a valid regular expression"),
    ("process_groups: [a, b]", r"process_groups: expected a mapping"),
    (
        "process_groups: {shop: {match: gunicorn, role: frontend}}",
        r"process_groups\.shop\.role: 'frontend' is not a role \(one of target, data, loadgen, monitor, "
        r"other\)",
    ),
    ("process_groups: {shop: {role: target}}", r"process_groups\.shop: missing 'match'"),
    (
        "process_groups: {shop: {match: '(', role: target}}",
        r"process_groups\.shop\.match: '\(' is not a valid",
    ),
    ("process_groups: {shop: {match: x, kind: target}}", r"process_groups\.shop: unknown key 'kind'"),
    ("portz: [1]", r"unknown key 'portz'"),
    ("postgres: {dsn: nonsense}", r"postgres\.dsn: not a valid PostgreSQL connection string"),
    ("postgres: {dsn: 'host=x port=abc'}", r"postgres\.dsn: port 'abc' is not a TCP port"),
    ("postgres: {url: 'x'}", r"postgres: expected a mapping with exactly one key, 'dsn'"),
    (
        "redis: {url: 'http://127.0.0.1:6380'}",
        r"redis\.url: 'http://127.0.0.1:6380' must start with redis://",
    ),
    ("redis: {url: 'redis://127.0.0.1:port/0'}", r"redis\.url: .* has an invalid port"),
    ("nginx: {status_url: 'ftp://x/stub'}", r"nginx\.status_url: 'ftp://x/stub' must start with http://"),
    ("timeout: -1", r"timeout: -1 is not a number of seconds"),
    ("cpu_cgroup: cpuacct/h1", r"cpu_cgroup: 'cpuacct/h1' is not an absolute path"),
    ("cpu_cgroup: /nonexistent/cg", r"cpu_cgroup: /nonexistent/cg is not a cpuacct cgroup"),
    ("shared_machine: maybe", r"shared_machine: 'maybe' is not true or false"),
    ("ports: [1, 2", r"not valid YAML at line"),
    ("- a\n- b", r"expected a mapping at the top level"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES, ids=[m for _, m in BAD_FILES])
def test_bad_file_value_is_one_line_and_exit_2(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text + "\n")
    result = CliRunner().invoke(main, ["exporter", "--config", str(path)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: config {path}: ")
    assert re.search(message, lines[0]), lines[0]
    with pytest.raises(UserError):
        load_config(path)


BAD_FLAGS = [
    (["--ports", "8080,x"], r"--ports\[1\]: 'x' is not a TCP port"),
    (["--listen", "9465"], r"--listen: '9465' is not HOST:PORT"),
    (["--process-group", "noequals"], r"--process-group: 'noequals' is not NAME=REGEX"),
    (["--process-group", "a=("], r"--process-group\.a: '\(' is not a valid regular expression"),
    (["--postgres-dsn", "nonsense"], r"--postgres-dsn: not a valid PostgreSQL connection string"),
    (["--redis-url", "127.0.0.1:6380"], r"--redis-url: .* must start with redis://"),
    (["--nginx-status-url", "localhost:8088"], r"--nginx-status-url: .* must start with http://"),
    (["--config", "/nonexistent/exporter.yml"], r"config /nonexistent/exporter.yml: cannot read it"),
]


@pytest.mark.parametrize(("args", "message"), BAD_FLAGS, ids=[a[0] for a, _ in BAD_FLAGS])
def test_bad_flag_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["exporter", *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.search(message, lines[0]), lines[0]


def test_busy_listen_address_is_one_line_and_exit_2() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "from loadlab.cli import main; main()",
                "exporter",
                "--listen",
                f"127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert "Traceback" not in done.stderr
