"""Exporter configuration: the file the exporter role writes, then command-line flags over it.

Everything is validated before the exporter starts; a bad value raises UserError naming it, which the CLI
turns into one line and exit code 2.

```yaml
listen: "127.0.0.1:9465"
ports: [8080, 8001, 8002, 8003, 5433, 6380, 5557, 9466]   # own socket label; the rest fold into "other"
process_groups:   # name -> regex over the full command line; the role is the one the name implies (role_of)
  nginx: "^nginx: "
  app-8001: "loadlab\\.app .*--port 8001\\b"
  shop: {match: "^gunicorn: master \\[shop", role: target}   # or say the role (target, data, loadgen, ...)
postgres: {dsn: "host=127.0.0.1 port=5433 dbname=loadlab user=loadlab_monitor password=..."}   # optional
redis: {url: "redis://:pw@127.0.0.1:6380/0"}                                                # optional
nginx: {status_url: "http://127.0.0.1:8088/stub_status"}                                     # optional
timeout: 2          # seconds one source may take per scrape (optional)
cpu_cgroup: /sys/fs/cgroup/cpuacct/loadlab/target1   # host CPU from this cgroup, not /proc/stat (optional)
shared_machine: true   # this host shares its machine's cores with other lab hosts (optional, default false)
```
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from loadlab.errors import UserError
from loadlab.inputs import finite_number, parse_url, read_text
from loadlab.knobs import knob
from loadlab.process_groups import LAB_GROUPS, lab_process_groups

# Where no file or flag says otherwise, the exporter listens, counts ports and names process groups as on a
# one-host lab (inventory/local.yml) with the knobs of inventory/group_vars/all.yml (loadlab.knobs):
# default_listen(), default_ports(), default_process_groups(). They are read only when asked for: where the
# project was installed from a wheel (the lab's remote hosts) the knobs are not there, and the exporter role's
# config gives all three.
DEFAULT_TIMEOUT = 2.0

# What a process group is in the lab: what load is aimed at (the target), its data stores, the load generator,
# the monitoring, or other. The exporter exports each group's role; dashboards select process groups by it.
LOADGEN, TARGET, DATA, MONITOR, OTHER = "loadgen", "target", "data", "monitor", "other"
ROLES = (TARGET, DATA, LOADGEN, MONITOR, OTHER)
# group name -> role, for a group whose configuration does not say its role
_ROLE_NAMES = (
    (re.compile(r"^locust(-|$)"), LOADGEN),
    (re.compile(r"^(nginx|app-\d+|target-\d+)$"), TARGET),
    (re.compile(r"^(postgres|redis)$"), DATA),
    (re.compile(r"^(prometheus|exporter|grafana)$"), MONITOR),
)
_KEYS = (
    "listen",
    "ports",
    "process_groups",
    "postgres",
    "redis",
    "nginx",
    "timeout",
    "cpu_cgroup",
    "shared_machine",
)
_SECTIONS = {"postgres": "dsn", "redis": "url", "nginx": "status_url"}


@dataclass(frozen=True)
class ExporterConfig:
    """What the exporter reads and where it listens; a missing source section leaves that collector off."""

    listen_host: str
    listen_port: int
    ports: tuple[int, ...]
    process_groups: Mapping[str, str]
    # group -> role, for every group in process_groups (one the mapping leaves out gets role_of its name)
    process_roles: Mapping[str, str] = field(default_factory=dict)
    postgres_dsn: str | None = None
    redis_url: str | None = None
    nginx_status_url: str | None = None
    source_timeout: float = DEFAULT_TIMEOUT
    cpu_cgroup: str | None = None
    shared_machine: bool = False

    def __post_init__(self) -> None:
        roles = {name: self.process_roles.get(name) or role_of(name) for name in self.process_groups}
        object.__setattr__(self, "process_roles", roles)

    @property
    def listen(self) -> str:
        """HOST:PORT as a user writes it."""
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"


def _knob(name: str) -> Any:
    try:
        return knob(name)
    except UserError as exc:
        raise UserError(f"{exc}; give listen, ports and process_groups in the exporter's config") from None


def default_listen() -> str:
    """The exporter of a one-host lab: loopback, exporter_port."""
    return f"127.0.0.1:{_knob('exporter_port')}"


def default_ports() -> tuple[int, ...]:
    """The one-host lab's nginx, app instances, PostgreSQL, Redis, Locust master and its plugin's metrics."""
    base = int(_knob("app_base_port"))
    apps = range(base, base + int(_knob("app_instances")))
    names = ("postgres_port", "redis_port", "locust_master_port", "locust_metrics_port")
    return (int(_knob("nginx_port")), *apps, *(int(_knob(name)) for name in names))


def default_process_groups() -> dict[str, str]:
    """The process groups of a one-host lab (every lab group on this machine), one Locust worker per core as
    locust_workers defaults to."""
    etc = str(_knob("loadlab_etc_dir"))
    base = int(_knob("app_base_port"))
    return lab_process_groups(
        LAB_GROUPS,
        first_loadgen=True,
        etc_dir=etc,
        app_ports=range(base, base + int(_knob("app_instances"))),
        app_command=str(_knob("app_command")),
        lab_address="127.0.0.1",
        redis_port=_knob("redis_port"),
        locust_workers=os.cpu_count() or 1,
        exporter_config=f"{etc}/exporter.yml",
    )


def role_of(group: str) -> str:
    """The role a process group's name implies: locust-* the load generator; nginx, app-N and target-N
    the target; postgres and redis its data stores; prometheus, exporter and grafana the monitoring; else
    other."""
    return next((role for rx, role in _ROLE_NAMES if rx.search(group)), OTHER)


def parse_listen(text: Any, where: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT or :PORT (all interfaces) to (host, port)."""
    match = re.fullmatch(r"\[(?P<v6>[^\]]+)\]:(?P<p6>\d+)|(?P<host>[^:\[\]\s]*):(?P<port>\d+)", str(text))
    if not isinstance(text, str) or match is None:
        raise UserError(f"{where}: {text!r} is not HOST:PORT (e.g. 127.0.0.1:9465)")
    host = match["v6"] if match["v6"] is not None else match["host"] or "0.0.0.0"
    port = int(match["p6"] or match["port"])
    if match["v6"] is not None:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UserError(f"{where}: {host!r} is not an IPv6 address") from None
    elif not re.fullmatch(r"[A-Za-z0-9.-]+", host):
        raise UserError(f"{where}: {host!r} is not a host name or address")
    if port > 65535:
        raise UserError(f"{where}: port {port} is out of range (0-65535)")
    return host, port


def parse_ports(values: Any, where: str) -> tuple[int, ...]:
    """A list of TCP ports (1-65535), or a comma-separated string of them."""
    if isinstance(values, str):
        values = [v.strip() for v in values.split(",") if v.strip()]
    if not isinstance(values, Sequence):
        raise UserError(f"{where}: expected a list of ports, got {values!r}")
    ports = []
    for i, value in enumerate(values):
        try:
            port = int(value)
            if isinstance(value, bool) or str(port) != str(value).strip() or not 1 <= port <= 65535:
                raise ValueError
        except (TypeError, ValueError):
            raise UserError(f"{where}[{i}]: {value!r} is not a TCP port (1-65535)") from None
        ports.append(port)
    return tuple(dict.fromkeys(ports))


def parse_process_groups(groups: Any, where: str) -> tuple[dict[str, str], dict[str, str]]:
    """(name -> regular expression searched in the full command line, name -> role).

    A group is a regular expression, its role the one its name implies (role_of), or a mapping
    {match: REGEX, role: ROLE} that says the role (left out, the name's)."""
    if not isinstance(groups, Mapping):
        raise UserError(f"{where}: expected a mapping of group name to regular expression")
    regexes, roles = {}, {}
    for name, spec in groups.items():
        if not isinstance(name, str) or not name.strip():
            raise UserError(f"{where}: group name {name!r} is not a non-empty string")
        rx, rx_where, role = spec, f"{where}.{name}", role_of(name)
        if isinstance(spec, Mapping):
            unknown = [k for k in spec if k not in ("match", "role")]
            if unknown:
                raise UserError(f"{where}.{name}: unknown key {unknown[0]!r} (known: match, role)")
            if "match" not in spec:
                raise UserError(f"{where}.{name}: missing 'match', the regular expression of the group")
            rx, rx_where = spec["match"], f"{where}.{name}.match"
            role = spec.get("role", role)
            if role not in ROLES:
                raise UserError(f"{where}.{name}.role: {role!r} is not a role (one of {', '.join(ROLES)})")
        if not isinstance(rx, str):
            raise UserError(f"{rx_where}: {rx!r} is not a regular expression string")
        try:
            re.compile(rx)
        except re.error as exc:
            raise UserError(f"{rx_where}: {rx!r} is not a valid regular expression ({exc})") from None
        regexes[name], roles[name] = rx, role
    return regexes, roles


def parse_group_flags(flags: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """--process-group NAME=REGEX values to (name -> regex, name -> role), the role the name's."""
    groups = {}
    for flag in flags:
        name, sep, rx = flag.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--process-group: {flag!r} is not NAME=REGEX")
        groups[name.strip()] = rx
    return parse_process_groups(groups, "--process-group")


def check_dsn(dsn: Any, where: str) -> str:
    """A libpq connection string or URI that libpq can parse."""
    from psycopg import conninfo

    if not isinstance(dsn, str) or not dsn.strip():
        raise UserError(f"{where}: expected a PostgreSQL connection string")
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except Exception as exc:
        raise UserError(f"{where}: not a valid PostgreSQL connection string ({str(exc).strip()})") from None
    for port in str(params.get("port", "5432")).split(","):
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise UserError(f"{where}: port {port!r} is not a TCP port (1-65535)")
    return dsn


def check_url(url: Any, where: str, schemes: tuple[str, ...]) -> str:
    """A URL with one of the schemes, a host (unix sockets excepted) and a valid port."""
    parse_url(url, where, schemes)
    return url


def check_timeout(value: Any, where: str) -> float:
    """Seconds, more than 0 and at most 60."""
    return finite_number(value, where, above=0, maximum=60, what="a number of seconds in (0, 60]")


def check_cpu_cgroup(value: Any, where: str) -> str:
    """A cgroup v1 cpuacct directory (it holds cpuacct.usage) whose processes are this host's."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise UserError(f"{where}: {value!r} is not an absolute path (e.g. /sys/fs/cgroup/cpuacct/lab/host1)")
    if not (Path(value) / "cpuacct.usage").is_file():
        raise UserError(f"{where}: {value} is not a cpuacct cgroup (no cpuacct.usage in it); create it first")
    return value


def check_bool(value: Any, where: str) -> bool:
    """true or false, as YAML writes them."""
    if not isinstance(value, bool):
        raise UserError(f"{where}: {value!r} is not true or false")
    return value


def read_file(path: Path) -> dict[str, Any]:
    """The YAML mapping in the config file."""
    text = read_text(path, "config")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"config {path}: not valid YAML{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config {path}: expected a mapping at the top level")
    unknown = [k for k in data if k not in _KEYS]
    if unknown:
        raise UserError(f"config {path}: unknown key {unknown[0]!r} (known: {', '.join(_KEYS)})")
    return data


def load_config(
    path: Path | None = None,
    *,
    listen: str | None = None,
    ports: str | None = None,
    process_groups: Sequence[str] = (),
    postgres_dsn: str | None = None,
    redis_url: str | None = None,
    nginx_status_url: str | None = None,
) -> ExporterConfig:
    """The file (if any), then each flag that was given over it, all validated."""
    data = read_file(path) if path is not None else {}
    where = f"config {path}" if path is not None else ""

    def at(key: str) -> str:
        return f"{where}: {key}"

    # The file's values are checked even where a flag replaces them; the lab's defaults are read only where
    # neither says.
    address = parse_listen(data["listen"], at("listen")) if "listen" in data else None
    if listen is not None:
        address = parse_listen(listen, "--listen")
    host, port = address or parse_listen(default_listen(), "the lab's exporter_port")
    port_list = parse_ports(data["ports"], at("ports")) if "ports" in data else None
    if ports is not None:
        port_list = parse_ports(ports, "--ports")
    if port_list is None:
        port_list = default_ports()
    groups, roles = (
        parse_process_groups(data["process_groups"], at("process_groups"))
        if "process_groups" in data
        else (default_process_groups(), {})
    )
    flag_groups, flag_roles = parse_group_flags(process_groups)
    groups.update(flag_groups)
    # a flag sets a group's regex; a role the file gave that group stays
    roles = {**flag_roles, **roles}

    flags = {
        "postgres": ("--postgres-dsn", postgres_dsn),
        "redis": ("--redis-url", redis_url),
        "nginx": ("--nginx-status-url", nginx_status_url),
    }
    sources: dict[str, tuple[Any, str]] = {}
    for section, key in _SECTIONS.items():
        value = data.get(section)
        if value is not None:
            if not isinstance(value, dict) or set(value) != {key}:
                raise UserError(f"{at(section)}: expected a mapping with exactly one key, {key!r}")
            sources[section] = (value[key], at(f"{section}.{key}"))
        flag, flag_value = flags[section]
        if flag_value is not None:
            sources[section] = (flag_value, flag)
    dsn, dsn_where = sources.get("postgres", (None, ""))
    url, url_where = sources.get("redis", (None, ""))
    status, status_where = sources.get("nginx", (None, ""))
    return ExporterConfig(
        listen_host=host,
        listen_port=port,
        ports=port_list,
        process_groups=groups,
        process_roles=roles,
        postgres_dsn=check_dsn(dsn, dsn_where) if dsn is not None else None,
        redis_url=check_url(url, url_where, ("redis", "rediss", "unix")) if url is not None else None,
        nginx_status_url=check_url(status, status_where, ("http", "https")) if status is not None else None,
        source_timeout=check_timeout(data["timeout"], at("timeout"))
        if "timeout" in data
        else DEFAULT_TIMEOUT,
        cpu_cgroup=check_cpu_cgroup(data["cpu_cgroup"], at("cpu_cgroup")) if data.get("cpu_cgroup") else None,
        shared_machine=check_bool(data["shared_machine"], at("shared_machine"))
        if "shared_machine" in data
        else False,
    )
