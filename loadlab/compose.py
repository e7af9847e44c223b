"""The Docker Compose twin: the lab as `docker compose up`, from the same knobs and the same templates.

`loadlab compose render` reads an inventory the way every loadlab command does (ansible-inventory, so
inventory/group_vars/all.yml applies) and renders the roles' own templates (nginx.conf.j2, redis.conf.j2,
postgresql.conf.j2, pg_hba.conf.j2, prometheus.yml.j2, the Grafana and Locust templates, exporter.yml.j2)
with jinja2 and Ansible's filters, the role's defaults and its vars/main.yml, as the playbook would: the
twin only says where things are inside its containers (a container path, the address a server binds to).

What the twin is (README "The Compose twin"): one host. The target stack (nginx, one container per app
instance, PostgreSQL, Redis) runs on a Compose network, its ports published on the host's 127.0.0.1 only.
The lab exporter, Locust, Prometheus and Grafana run on the host's network, each binding its own listener
to 127.0.0.1: the exporter to read the host's processes and sockets, Locust to load nginx where the sweep
names it (127.0.0.1:8080), Prometheus and Grafana to reach them. So every lab address is the one a local
lab has, and `loadlab status` and `loadlab sweep` read the twin through its inventory (inventory/compose.yml)
like any lab; status asks the Docker Engine API for the containers instead of supervisord for programs.

Two kinds of output: compose/ holds no secret and is committed (a test checks it is what render writes);
the passwords (secrets/, generated when missing, mode 0600) reach the containers through env files and one
Compose secret under secrets/compose/, which render writes beside them and git never sees.
"""

from __future__ import annotations

import ast
import os
import re
import secrets as secrets_module
import stat
import string
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import jinja2.nativetypes
import yaml
from jinja2.runtime import Context

from loadlab.errors import UserError
from loadlab.knobs import is_template
from loadlab.lab import GROUPS, STACK_GROUPS, Host, Lab, project_dir
from loadlab.process_groups import lab_process_groups

DEFAULT_INVENTORY = Path("inventory/compose.yml")
COMPOSE_FILE = "compose.yml"
PROJECT_NAME = "loadlab"
"""Compose project name: containers are labelled com.docker.compose.project=loadlab."""

IMAGES = {
    "nginx": "nginx:1.27.4-bookworm",
    "redis": "redis:7.4.2-bookworm",
    "prometheus": "prom/prometheus:v2.53.3",
    "grafana": "grafana/grafana:11.5.2",
}
"""The projects' own images, pinned to exact versions (Debian-based where the role's config expects Debian:
nginx.conf runs its workers as www-data)."""
POSTGRES_IMAGES = {15: "postgres:15.12-bookworm", 16: "postgres:16.8-bookworm", 17: "postgres:17.4-bookworm"}
"""postgres_version (the major the Ansible lab installs from Debian) -> the official image pinned."""

CONTAINER_LAYOUT = {
    "loadlab_etc_dir": "/etc/loadlab",
    "loadlab_data_dir": "/var/lib/loadlab",
    "loadlab_log_dir": "/var/log/loadlab",
    "loadlab_run_dir": "/run",
    "loadlab_opt_dir": "/opt/loadlab",
}
"""Where things are inside the containers, whatever the inventory's host layout knobs say: the project image
(Dockerfile) puts the locustfiles in /opt/loadlab/locustfiles, configs are mounted under /etc/loadlab."""

INSIDE = "0.0.0.0"
"""What a server on the Compose network binds to inside its container (its own network namespace); only the
ports published on the host's 127.0.0.1 reach it from outside."""
HOST_NET = "127.0.0.1"
"""The address of every lab service on the host's network, as a local lab has it."""

PASSWORDS = ("postgres_app", "postgres_monitor", "redis", "grafana_admin", "postgres_superuser")
"""secrets/<name>: the Ansible lab's four (the same files, so both share them) and the superuser password
the PostgreSQL image requires (the Ansible lab's superuser logs in by peer only)."""
_PASSWORD_CHARS = string.ascii_letters + string.digits  # as the roles' password lookups generate them
_PASSWORD_LENGTH = 32

_ROLES = ("common", "nginx", "redis", "postgres", "app", "locust", "exporter", "prometheus", "grafana")


@dataclass(frozen=True)
class Knobs:
    """The twin's single host: its name and its resolved knobs (role defaults, then the inventory's)."""

    host: str
    values: Mapping[str, Any]
    lazy: Mapping[str, Any]  # role defaults and role vars that are templates: rendered when a template asks

    def get(self, name: str) -> Any:
        return self.values[name]

    def int(self, name: str) -> int:
        return int(self.values[name])


@dataclass
class Rendered:
    """One render: files for compose/ (no secret in them) and files for secrets/compose/ (0600)."""

    files: dict[str, str] = field(default_factory=dict)
    secret_files: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------
# The roles' templates, rendered as Ansible would.


def project_root(inventory: Path | None = None) -> Path:
    """The project folder: where the inventory's ansible.cfg is, else the checkout this code runs from."""
    if inventory is not None:
        found = project_dir(inventory)
        if found is not None and (found / "playbooks" / "roles").is_dir():
            return found
    here = Path(__file__).resolve().parent.parent
    if (here / "playbooks" / "roles").is_dir():
        return here
    raise UserError("loadlab compose needs the project folder (playbooks/roles): run it from a checkout")


def _roles_dir(root: Path) -> Path:
    return root / "playbooks" / "roles"


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text()) or {}


class _LazyContext(Context):
    """A template context that renders a role variable (itself a template) when a template first asks for
    it, as Ansible's lazy variables do: `_prometheus_jobs` is built from `groups` and `hostvars` only then."""

    def resolve_or_missing(self, key: str) -> Any:
        value = super().resolve_or_missing(key)
        if value is jinja2.utils.missing:
            resolver = super().resolve_or_missing("__loadlab_vars")
            if isinstance(resolver, _Resolver):
                return resolver.get(key)
        return value


class _Resolver:
    """Renders lazy role variables against the plain ones, each once, in Python types (as Ansible does)."""

    def __init__(self, native: jinja2.Environment, plain: Mapping[str, Any], lazy: Mapping[str, Any]):
        self.native, self.plain, self.lazy = native, plain, lazy
        self.cache: dict[str, Any] = {}
        self.resolving: set[str] = set()

    def context(self) -> dict[str, Any]:
        return {**self.plain, "__loadlab_vars": self}

    def get(self, key: str) -> Any:
        if key in self.cache:
            return self.cache[key]
        if key not in self.lazy:
            return jinja2.utils.missing
        if key in self.resolving:
            raise UserError(f"compose render: variable {key} refers to itself")
        self.resolving.add(key)
        try:
            value = self.lazy[key]
            if is_template(value):
                value = self.native.from_string(value).render(self.context())
                if isinstance(value, str) and value[:1] in ("[", "{"):
                    value = ast.literal_eval(value)
        finally:
            self.resolving.discard(key)
        self.cache[key] = value
        return value


def _environment(native: bool, root: Path) -> jinja2.Environment:
    """jinja2 as Ansible's template module sets it up: trim_blocks, the trailing newline kept, Ansible's
    filters and tests (Jinja's own builtins where both have one), any undefined variable an error."""
    from ansible.plugins.filter import core, mathstuff, urlsplit
    from ansible.plugins.test import core as test_core
    from ansible.plugins.test import files as test_files

    cls = jinja2.nativetypes.NativeEnvironment if native else jinja2.Environment
    env = cls(
        loader=jinja2.FileSystemLoader(str(_roles_dir(root))),
        trim_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    builtin_filters, builtin_tests = dict(env.filters), dict(env.tests)
    for module in (core, mathstuff, urlsplit):
        env.filters.update(module.FilterModule().filters())
    env.filters.update(builtin_filters)
    env.tests.update(test_core.TestModule().tests())
    env.tests.update(test_files.TestModule().tests())
    env.tests.update(builtin_tests)
    env.context_class = _LazyContext
    return env


class Templates:
    """The roles' templates and variables, rendered for the twin's single host."""

    def __init__(self, root: Path, knobs: Knobs) -> None:
        self.root = root
        self.knobs = knobs
        self.env = _environment(False, root)
        self.native = _environment(True, root)
        groups: dict[str, list[str]] = {name: [knobs.host] for name in ("all", *GROUPS)}
        groups["external"] = []
        self.base = {
            **knobs.values,
            **CONTAINER_LAYOUT,
            "groups": groups,
            "inventory_hostname": knobs.host,
            "hostvars": {knobs.host: {**knobs.values, **CONTAINER_LAYOUT, "lab_address": HOST_NET}},
            "lab_address": HOST_NET,
        }

    def value(self, name: str, **overrides: Any) -> Any:
        """A role variable (vars/main.yml, or a templated default) as the role computes it for this host."""
        resolver = _Resolver(self.native, {**self.base, **overrides}, self.knobs.lazy)
        value = resolver.get(name)
        if value is jinja2.utils.missing:
            raise UserError(f"compose render: no role defines {name}")
        return value

    def render(self, role: str, template: str, **overrides: Any) -> str:
        """playbooks/roles/<role>/templates/<template>, its header saying it was rendered for the twin."""
        managed = f"Rendered by `loadlab compose render` from playbooks/roles/{role}/templates/{template}"
        plain = {**self.base, "ansible_managed": managed, **overrides}
        resolver = _Resolver(self.native, plain, self.knobs.lazy)
        try:
            return self.env.get_template(f"{role}/templates/{template}").render(resolver.context())
        except jinja2.UndefinedError as exc:
            raise UserError(f"compose render: {role}/templates/{template}: {exc}") from None


def _role_variables(root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(plain role defaults, templated role defaults and role vars) of every role the twin renders from."""
    plain: dict[str, Any] = {}
    lazy: dict[str, Any] = {}
    for role in _ROLES:
        for name, value in _read_yaml(_roles_dir(root) / role / "defaults" / "main.yml").items():
            (lazy if is_template(value) else plain)[name] = value
    for role in _ROLES:  # role vars win over defaults, as in Ansible
        for name, value in _read_yaml(_roles_dir(root) / role / "vars" / "main.yml").items():
            lazy[name] = value
            plain.pop(name, None)
    return plain, lazy


# ---------------------------------------------------------------------------------------------------------
# The knobs, through the inventory.


def twin_host(lab: Lab) -> Host:
    """The one host the twin is: in every group of the lab's own stack, the load generators and monitoring."""
    if lab.group("external"):
        raise UserError(
            "the Compose twin runs the lab's own stack; an inventory with group external (a service of "
            "yours) has no twin: load your service with the Ansible lab"
        )
    hosts = {h.name for g in (*STACK_GROUPS, "loadgen", "monitor") for h in lab.group(g)}
    if len(hosts) != 1:
        raise UserError(
            f"the Compose twin is one host, and inventory {lab.inventory} spreads the lab over "
            f"{', '.join(sorted(hosts))}: render from an inventory with one host in every group "
            "(inventory/compose.yml)"
        )
    host = lab.hosts[hosts.pop()]
    if host.address != HOST_NET:
        raise UserError(
            f"inventory {lab.inventory}: {host.name} has lab_address {host.address}; the Compose twin's "
            f"services are on this machine's {HOST_NET} (inventory/compose.yml)"
        )
    for knob, why in (
        (
            "app_command",
            "runs the lab's demo app only (your own app: the Ansible lab, app_source/app_command)",
        ),
        ("app_source", "runs the lab's demo app only"),
        ("locust_locustfiles_dir", "runs the locustfiles built into the project image (locustfiles/)"),
    ):
        if host.vars.get(knob) and not is_template(host.vars.get(knob)):
            raise UserError(f"inventory {lab.inventory}: {knob} is set; the Compose twin {why}")
    return host


def resolve_knobs(lab: Lab, root: Path) -> Knobs:
    """Role defaults, then the inventory's values (group_vars/all.yml and the inventory's own), as Ansible
    orders them; a value that is still a template (a fact, a password lookup) stays lazy."""
    host = twin_host(lab)
    plain, lazy = _role_variables(root)
    values = dict(plain)
    lazy = dict(lazy)
    for name, value in host.vars.items():
        if name.startswith("ansible_"):
            continue
        if is_template(value):
            if name not in values:
                lazy.setdefault(name, value)
            continue
        values[name] = value
        lazy.pop(name, None)
    workers = values.get("locust_workers")
    if workers is None or isinstance(workers, bool) or not str(workers).isdigit() or int(workers) < 1:
        raise UserError(
            f"inventory {lab.inventory}: locust_workers is {host.vars.get('locust_workers')!r}; the Compose "
            "twin needs a number (its compose.yml is committed, so it cannot follow this machine's cores)"
        )
    version = int(values.get("postgres_version", 15))
    if version not in POSTGRES_IMAGES:
        raise UserError(
            f"inventory {lab.inventory}: postgres_version {version} has no pinned image for the Compose twin "
            f"(known: {', '.join(map(str, POSTGRES_IMAGES))})"
        )
    for name in ("app_command", "app_source", "locust_locustfiles_dir"):
        values[name] = ""
    return Knobs(host.name, values, lazy)


def project_version(root: Path) -> str:
    """The project's version (pyproject.toml): the tag of the image built from its wheel."""
    with (root / "pyproject.toml").open("rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


# ---------------------------------------------------------------------------------------------------------
# compose.yml and its config files.


def _healthcheck(test: list[str], interval: str = "5s", retries: int = 30, start: str = "10s") -> dict:
    return {"test": test, "interval": interval, "timeout": "3s", "retries": retries, "start_period": start}


def _python_probe(code: str) -> list[str]:
    return ["CMD", "python", "-c", code]


def _http_probe(url: str) -> list[str]:
    return _python_probe(f"import urllib.request; urllib.request.urlopen({url!r}, timeout=2)")


def _published(port: int) -> dict[str, Any]:
    return {"target": port, "published": str(port), "host_ip": "127.0.0.1", "protocol": "tcp"}


_KEY_ORDER = (
    "image", "build", "user", "command", "working_dir", "environment", "env_file", "secrets", "volumes",
    "tmpfs", "ports", "network_mode", "pid", "cap_add", "depends_on", "shm_size", "sysctls", "ulimits",
    "stop_signal", "stop_grace_period", "healthcheck", "restart",
)  # fmt: skip


def _ordered(service: Mapping[str, Any]) -> dict[str, Any]:
    """A service's keys in one order for every service: what runs, where, then how it is kept running."""
    unknown = [key for key in service if key not in _KEY_ORDER]
    assert not unknown, unknown
    return {key: service[key] for key in _KEY_ORDER if key in service}


class _Dumper(yaml.SafeDumper):
    """Plain YAML: every service spelled out, no anchors and aliases for what services share."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def render(lab: Lab, out_dir: Path, passwords: Mapping[str, str] | None = None) -> Rendered:
    """Everything the twin needs: compose/ files (always) and, given the passwords, secrets/compose/ files.

    out_dir is where compose.yml will be: the paths it names (the env files, the dashboards, the build
    context) are relative to it, as Compose reads them.
    """
    root = project_root(lab.inventory)
    knobs = resolve_knobs(lab, root)
    templates = Templates(root, knobs)
    out_dir = out_dir.resolve()
    secrets_dir = lab.secrets_dir.resolve() / "compose"
    k = knobs.values
    app_ports = list(
        range(knobs.int("app_base_port"), knobs.int("app_base_port") + knobs.int("app_instances"))
    )
    workers = list(range(1, knobs.int("locust_workers") + 1))
    image = f"loadlab:{project_version(root)}"
    build = {"context": _rel(root, out_dir), "dockerfile": "Dockerfile"}
    env_file = {
        name: f"{_rel(secrets_dir, out_dir)}/{name}.env" for name in ("app", "postgres", "redis", "grafana")
    }
    etc = CONTAINER_LAYOUT["loadlab_etc_dir"]
    out = Rendered()
    files = out.files

    # --- the target stack, on the Compose network ---
    files["nginx/nginx.conf"] = templates.render(
        "nginx",
        "nginx.conf.j2",
        lab_address=INSIDE,
        loadlab_log_dir="/var/log/nginx",
        _nginx_temp_dir="/var/cache/nginx",
        _nginx_error_log="stderr",
        _nginx_status_address=INSIDE,
        _nginx_upstreams=[f"app-{port}:{port}" for port in app_ports],
    )
    files["redis/redis.conf"] = templates.render(
        "redis", "redis.conf.j2", lab_address=INSIDE, redis_password=None
    )
    pg = {
        "lab_address": INSIDE,
        "_postgres_data_dir": "/var/lib/postgresql/data",
        "_postgres_conf_dir": f"{etc}/postgres",
        "_postgres_socket_dir": "/var/run/postgresql",
        # The app containers and the host (through the published port) reach PostgreSQL from the Compose
        # network's own subnet; `samenet` admits exactly that, as the role admits the app hosts' addresses.
        "_postgres_hba_app_sources": ["samenet"],
        "_postgres_hba_monitor_sources": ["samenet"],
    }
    files["postgres/postgresql.conf"] = templates.render("postgres", "postgresql.conf.j2", **pg)
    files["postgres/pg_hba.conf"] = templates.render("postgres", "pg_hba.conf.j2", **pg)
    files["postgres/initdb/10-loadlab.sh"] = _initdb_script(k)

    # --- on the host's network: Locust, Prometheus, Grafana (the exporter's config holds passwords) ---
    files["locust/master.conf"] = templates.render("locust", "master.conf.j2")
    for n in workers:
        files[f"locust/worker-{n}.conf"] = templates.render("locust", "worker.conf.j2", item=n)
    files["prometheus/prometheus.yml"] = templates.render("prometheus", "prometheus.yml.j2")
    grafana = {
        "_grafana_conf_dir": f"{etc}/grafana",
        "_grafana_data_dir": "/var/lib/grafana",
        # Grafana expands $__env{...} in its ini file: the password stays in secrets/compose/grafana.env.
        "_grafana_admin_password": "$__env{LOADLAB_GRAFANA_ADMIN_PASSWORD}",
    }
    files["grafana/grafana.ini"] = templates.render("grafana", "grafana.ini.j2", **grafana)
    files["grafana/provisioning/datasources/loadlab.yml"] = templates.render(
        "grafana", "datasource.yml.j2", **grafana
    )
    files["grafana/provisioning/dashboards/loadlab.yml"] = templates.render(
        "grafana", "dashboards.yml.j2", **grafana
    )

    services: dict[str, Any] = {}
    common = {
        "restart": "unless-stopped",
        "ulimits": {"nofile": {"soft": k["loadlab_nofile"], "hard": k["loadlab_nofile"]}},
    }
    sysctls = {name: str(value) for name, value in (k.get("common_sysctls") or {}).items()}
    stack = {**common, "sysctls": sysctls}

    services["postgres"] = {
        "image": POSTGRES_IMAGES[int(k["postgres_version"])],
        "command": ["postgres", f"--config-file={etc}/postgres/postgresql.conf"],
        "env_file": [env_file["postgres"]],
        "volumes": [
            "postgres:/var/lib/postgresql/data",
            f"./postgres/postgresql.conf:{etc}/postgres/postgresql.conf:ro",
            f"./postgres/pg_hba.conf:{etc}/postgres/pg_hba.conf:ro",
            "./postgres/initdb:/docker-entrypoint-initdb.d:ro",
        ],
        "ports": [_published(knobs.int("postgres_port"))],
        "shm_size": "256mb",
        # SIGINT is PostgreSQL's fast shutdown, as the role's supervisor program stops it.
        "stop_signal": "SIGINT",
        "stop_grace_period": "60s",
        "healthcheck": _healthcheck(
            [
                "CMD",
                "pg_isready",
                "--host=127.0.0.1",
                f"--port={k['postgres_port']}",
                f"--username={k['postgres_monitor_user']}",
                f"--dbname={k['postgres_db']}",
            ],
            start="30s",
        ),
        **stack,
    }
    services["redis"] = {
        "image": IMAGES["redis"],
        "user": "redis",
        # One process: sh hands over to redis-server (exec), which replaces its command line with its
        # title, so the password given here does not stay in `ps`.
        "command": [
            "sh",
            "-c",
            f'exec redis-server {etc}/redis/redis.conf --requirepass "$$LOADLAB_REDIS_PASSWORD"',
        ],
        "env_file": [env_file["redis"]],
        "volumes": [f"./redis/redis.conf:{etc}/redis/redis.conf:ro"],
        "tmpfs": [f"{CONTAINER_LAYOUT['loadlab_data_dir']}/redis"],
        "ports": [_published(knobs.int("redis_port"))],
        "healthcheck": _healthcheck(["CMD-SHELL", f"redis-cli -p {k['redis_port']} ping | grep -q PONG"]),
        **stack,
    }
    for port in app_ports:
        services[f"app-{port}"] = {
            "image": image,
            "build": build,
            "command": ["python", "-m", "loadlab.app", "--host", INSIDE, "--port", str(port)],
            "env_file": [env_file["app"]],
            "environment": {
                "LOADLAB_DB_POOL_SIZE": str(k["app_db_pool_size"]),
                "LOADLAB_DB_POOL_TIMEOUT": str(k["app_db_pool_timeout"]),
                "LOADLAB_CACHE_TTL": str(k["app_cache_ttl"]),
                "LOADLAB_INSTANCE": f"app-{port}",
            },
            "ports": [_published(port)],
            "depends_on": {
                "postgres": {"condition": "service_healthy"},
                "redis": {"condition": "service_healthy"},
            },
            "stop_grace_period": "15s",
            "healthcheck": _healthcheck(_http_probe(f"http://127.0.0.1:{port}/health")),
            **stack,
        }
    services["nginx"] = {
        "image": IMAGES["nginx"],
        "command": ["nginx", "-c", f"{etc}/nginx/nginx.conf", "-e", "stderr"],
        "environment": {"NGINX_ENTRYPOINT_QUIET_LOGS": "1"},
        "volumes": [f"./nginx/nginx.conf:{etc}/nginx/nginx.conf:ro"],
        "ports": [_published(knobs.int("nginx_port")), _published(knobs.int("nginx_status_port"))],
        "depends_on": {f"app-{port}": {"condition": "service_healthy"} for port in app_ports},
        "healthcheck": _healthcheck(
            ["CMD", "curl", "-fsS", "-o", "/dev/null", f"http://127.0.0.1:{k['nginx_port']}/lb-ping"]
        ),
        **stack,
    }

    # --- on the host's network ---
    host_net = {**common, "network_mode": "host"}
    services["exporter"] = {
        "image": image,
        "build": build,
        "command": ["loadlab", "exporter", "--config", f"{etc}/exporter.yml"],
        # As in the Ansible lab the exporter runs as root: every process's open files and sockets. The
        # host's PID namespace shows it every container's processes; the host's network namespace, the
        # host's sockets (README "The Compose twin": what it cannot see from there).
        "user": "0",
        "pid": "host",
        "cap_add": ["SYS_PTRACE"],
        "secrets": [{"source": "exporter_config", "target": f"{etc}/exporter.yml"}],
        "healthcheck": _healthcheck(_http_probe(f"http://127.0.0.1:{k['exporter_port']}/metrics")),
        **host_net,
    }
    locust = {
        "image": image,
        "build": build,
        "working_dir": f"{CONTAINER_LAYOUT['loadlab_opt_dir']}/locustfiles",
        **host_net,
    }
    services["locust-master"] = {
        **locust,
        "command": ["python", "-m", "locust", "--config", f"{etc}/locust/master.conf"],
        "volumes": [f"./locust/master.conf:{etc}/locust/master.conf:ro"],
        "healthcheck": _healthcheck(_http_probe(f"http://127.0.0.1:{k['locust_web_port']}/")),
    }
    master_port = k["locust_master_port"]
    for n in workers:
        services[f"locust-worker-{n}"] = {
            **locust,
            "command": ["python", "-m", "locust", "--config", f"{etc}/locust/worker-{n}.conf"],
            "volumes": [f"./locust/worker-{n}.conf:{etc}/locust/worker-{n}.conf:ro"],
            "depends_on": {"locust-master": {"condition": "service_healthy"}},
            # A worker has no port of its own: it is healthy while its master accepts it.
            "healthcheck": _healthcheck(
                _python_probe(
                    f"import socket; socket.create_connection(('127.0.0.1', {master_port}), 2).close()"
                )
            ),
        }
    services["prometheus"] = {
        "image": IMAGES["prometheus"],
        "command": [
            f"--config.file={etc}/prometheus/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
            f"--storage.tsdb.retention.time={k['prometheus_retention']}",
            f"--web.listen-address={HOST_NET}:{k['prometheus_port']}",
        ],
        "volumes": [
            "prometheus:/prometheus",
            f"./prometheus/prometheus.yml:{etc}/prometheus/prometheus.yml:ro",
        ],
        "healthcheck": _healthcheck(
            ["CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{k['prometheus_port']}/-/ready"]
        ),
        **host_net,
    }
    dashboards = _rel(root / "dashboards" / "json", out_dir)
    services["grafana"] = {
        "image": IMAGES["grafana"],
        "environment": {"GF_PATHS_CONFIG": f"{etc}/grafana/grafana.ini"},
        "env_file": [env_file["grafana"]],
        "volumes": [
            "grafana:/var/lib/grafana",
            f"./grafana/grafana.ini:{etc}/grafana/grafana.ini:ro",
            f"./grafana/provisioning:{etc}/grafana/provisioning:ro",
            # The same dashboards the grafana role provisions: dashboards/json as committed.
            f"{dashboards}:{etc}/grafana/dashboards:ro",
        ],
        "depends_on": {"prometheus": {"condition": "service_healthy"}},
        "healthcheck": _healthcheck(
            ["CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{k['grafana_port']}/api/health"],
            start="30s",
        ),
        **host_net,
    }
    model = {
        "name": PROJECT_NAME,
        "services": {name: _ordered(service) for name, service in services.items()},
        "volumes": {"postgres": {}, "prometheus": {}, "grafana": {}},
        "secrets": {"exporter_config": {"file": f"{_rel(secrets_dir, out_dir)}/exporter.yml"}},
    }
    files[COMPOSE_FILE] = _compose_header() + yaml.dump(
        model, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=110
    )

    if passwords is not None:
        out.secret_files = _secret_files(templates, knobs, passwords)
    return out


def _compose_header() -> str:
    return "".join(
        f"# {line}\n"
        for line in (
            "The lab's Docker Compose twin. Rendered by `loadlab compose render` from the knobs",
            "(inventory/compose.yml, inventory/group_vars/all.yml) and the roles' templates: do not edit.",
            "  loadlab compose render                       # this folder; secrets/compose/ (0600)",
            "  docker compose -f compose/compose.yml up -d  # build the project image, start every service",
            "  loadlab status -i inventory/compose.yml      # every service; its container (Docker API)",
            "The target stack runs on the Compose network, its ports published on 127.0.0.1 only; the",
            "exporter, Locust, Prometheus and Grafana use the host's network and bind 127.0.0.1 themselves",
            '(README "The Compose twin").',
        )
    )


def _initdb_script(k: Mapping[str, Any]) -> str:
    """The lab's database and users, as the postgres role creates them (tasks/database.yml). The official
    image runs it once, on an empty data volume, as the postgres user over the local socket."""
    return f"""# Rendered by `loadlab compose render`: do not edit. The lab's database and users, as the
# postgres role creates them (playbooks/roles/postgres/tasks/database.yml). The PostgreSQL image sources
# this once, when its data volume is empty; the passwords come from secrets/compose/postgres.env
# (secrets/postgres_app, secrets/postgres_monitor). After they change: `docker compose down -v`, up again.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${{POSTGRES_USER:-postgres}}" --dbname postgres \\
  --set app_user={k["postgres_app_user"]} --set monitor_user={k["postgres_monitor_user"]} \\
  --set db={k["postgres_db"]} \\
  --set app_password="$LOADLAB_POSTGRES_APP_PASSWORD" \\
  --set monitor_password="$LOADLAB_POSTGRES_MONITOR_PASSWORD" <<'SQL'
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password';
CREATE ROLE :"monitor_user" LOGIN PASSWORD :'monitor_password';
GRANT pg_monitor TO :"monitor_user";
CREATE DATABASE :"db" OWNER :"app_user";
SQL
"""


def exporter_config(templates: Templates, postgres_monitor: str, redis: str) -> str:
    """The exporter's config (exporter.yml.j2, with the role's own process groups and ports): on the host's
    network it reaches PostgreSQL, Redis and stub_status at their published ports on 127.0.0.1."""
    passwords = {"postgres_monitor_password": postgres_monitor, "redis_password": redis}
    k = templates.knobs
    etc = CONTAINER_LAYOUT["loadlab_etc_dir"]
    groups = lab_process_groups(
        (*STACK_GROUPS, "loadgen", "monitor"),
        first_loadgen=True,
        etc_dir=etc,
        app_ports=range(k.int("app_base_port"), k.int("app_base_port") + k.int("app_instances")),
        app_command="",  # the twin runs the demo app (twin_host)
        lab_address=HOST_NET,
        redis_port=k.int("redis_port"),
        locust_workers=k.int("locust_workers"),
        exporter_config=f"{etc}/exporter.yml",
        # The image's entrypoint starts the postmaster as `postgres --config-file=...` (no /bin/ path
        # before it); its children carry the cluster name as in the lab.
        postgres_program=r"\S*postgres",
    )
    return templates.render("exporter", "exporter.yml.j2", _exporter_lab_groups=groups, **passwords)


def _secret_files(templates: Templates, knobs: Knobs, pw: Mapping[str, str]) -> dict[str, str]:
    """secrets/compose/: one env file per service that needs a password, and the exporter's config."""
    k = knobs.values
    database_url = (
        f"postgresql://{k['postgres_app_user']}:{pw['postgres_app']}@postgres:{k['postgres_port']}/"
        f"{k['postgres_db']}"
    )
    redis_url = f"redis://:{pw['redis']}@redis:{k['redis_port']}/0"

    def env(values: Mapping[str, str]) -> str:
        return "".join(f"{name}={value}\n" for name, value in values.items())

    return {
        "app.env": env({"LOADLAB_DATABASE_URL": database_url, "LOADLAB_REDIS_URL": redis_url}),
        "postgres.env": env(
            {
                "POSTGRES_PASSWORD": pw["postgres_superuser"],
                "LOADLAB_POSTGRES_APP_PASSWORD": pw["postgres_app"],
                "LOADLAB_POSTGRES_MONITOR_PASSWORD": pw["postgres_monitor"],
            }
        ),
        "redis.env": env({"LOADLAB_REDIS_PASSWORD": pw["redis"], "REDISCLI_AUTH": pw["redis"]}),
        "grafana.env": env({"LOADLAB_GRAFANA_ADMIN_PASSWORD": pw["grafana_admin"]}),
        "exporter.yml": exporter_config(templates, pw["postgres_monitor"], pw["redis"]),
    }


# ---------------------------------------------------------------------------------------------------------
# Writing, checking, passwords.


def _write_private(path: Path, text: str) -> None:
    """A file only its owner reads (0600), whatever the umask, replacing what was there."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def ensure_passwords(secrets_dir: Path) -> dict[str, str]:
    """secrets/<name> for every password the twin uses: read where the lab (or an earlier render) made it,
    generated where missing (32 letters and digits, as the roles' lookups make them), mode 0600."""
    secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    found: dict[str, str] = {}
    for name in PASSWORDS:
        path = secrets_dir / name
        if path.is_file():
            value = path.read_text().strip().split(" ")[0]
            if value:
                if stat.S_IMODE(path.stat().st_mode) & 0o077:
                    os.chmod(path, 0o600)  # a password only its owner reads
                found[name] = value
                continue
        value = "".join(secrets_module.choice(_PASSWORD_CHARS) for _ in range(_PASSWORD_LENGTH))
        _write_private(path, value + "\n")
        found[name] = value
    return found


def stale_files(out_dir: Path, wanted: Mapping[str, str]) -> list[str]:
    """Files under out_dir that differ from the render, are missing, or are left over from an older one."""
    stale = [name for name, text in wanted.items() if _read(out_dir / name) != text]
    extra = (
        [p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file()]
        if out_dir.is_dir()
        else []
    )
    return sorted(set(stale) | {name for name in extra if name not in wanted})


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def write_files(out_dir: Path, files: Mapping[str, str]) -> list[str]:
    """Write the render under out_dir, removing files an older render left; the names written."""
    for name in stale_files(out_dir, files):
        path = out_dir / name
        if name not in files:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[name])
    for folder in sorted((p for p in out_dir.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    return sorted(files)


def write_secret_files(secrets_dir: Path, files: Mapping[str, str]) -> Path:
    """secrets/compose/: 0700, each file 0600."""
    folder = secrets_dir / "compose"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    for name, text in files.items():
        _write_private(folder / name, text)
    return folder


def default_out_dir(lab: Lab) -> Path:
    """Where the inventory says the twin's compose.yml is (loadlab_compose_file), else compose/."""
    compose_file = lab.compose_file
    if compose_file is not None:
        return compose_file.parent
    return project_root(lab.inventory) / "compose"


# ---------------------------------------------------------------------------------------------------------
# The running twin, through the Docker Engine API (`loadlab status`).


@dataclass(frozen=True)
class Container:
    """One service's container as the Engine reports it."""

    service: str
    state: str  # running, exited, restarting, created, ...
    health: str | None  # healthy, unhealthy, starting; None where the service has no healthcheck
    exit_code: int | None = None


def compose_services(compose_file: Path) -> tuple[str, list[str]]:
    """(project name, service names) of a rendered compose.yml."""
    try:
        model = yaml.safe_load(compose_file.read_text()) or {}
    except OSError:
        raise UserError(f"{compose_file} is missing: run `loadlab compose render`") from None
    except yaml.YAMLError:
        raise UserError(f"{compose_file} is not valid YAML: run `loadlab compose render`") from None
    return str(model.get("name") or compose_file.parent.name), list(model.get("services") or {})


def docker_host() -> str:
    """The Engine the docker client talks to: DOCKER_HOST, else the default socket."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def containers(project: str, timeout: float = 5.0) -> dict[str, list[Container]]:
    """The project's containers per Compose service: GET /version, /containers/json filtered by the
    project's label, then /containers/{id}/json for each (its state and health)."""
    import docker

    client = docker.DockerClient(base_url=docker_host(), timeout=timeout)
    try:
        found: dict[str, list[Container]] = {}
        for c in client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"}):
            state = c.attrs.get("State") or {}
            service = c.labels.get("com.docker.compose.service", c.name)
            health = (state.get("Health") or {}).get("Status")
            found.setdefault(service, []).append(
                Container(service, str(state.get("Status", "?")), health, state.get("ExitCode"))
            )
        return found
    finally:
        client.close()


@dataclass(frozen=True)
class TwinState:
    """What the Engine says about the twin's services, against what compose.yml names."""

    expected: list[str]
    found: Mapping[str, list[Container]]

    def problems(self) -> Iterator[str]:
        for service in self.expected:
            mine = self.found.get(service, [])
            if not mine:
                yield f"{service} not created"
            for c in mine:
                if c.state != "running":
                    code = f" ({c.exit_code})" if c.state == "exited" and c.exit_code is not None else ""
                    yield f"{service} {c.state}{code}"
                elif c.health not in (None, "healthy"):
                    yield f"{service} {c.health}"

    @property
    def running(self) -> int:
        return sum(1 for s in self.expected for c in self.found.get(s, []) if c.state == "running")

    @property
    def healthy(self) -> int:
        return sum(1 for s in self.expected for c in self.found.get(s, []) if c.health == "healthy")


def twin_state(
    compose_file: Path, read: Callable[[str], Mapping[str, list[Container]]] = containers
) -> TwinState:
    project, expected = compose_services(compose_file)
    return TwinState(expected, read(project))


def locust_worker_count(compose_file: Path) -> int:
    """Workers the twin's master should see: its locust-worker-N services."""
    _, services = compose_services(compose_file)
    return sum(1 for name in services if re.fullmatch(r"locust-worker-\d+", name))
