"""The lab as its Ansible inventory describes it: hosts per group, their knobs, every service and its address.

The inventory is read with `ansible-inventory --list`, so what `loadlab` sees is exactly what the playbooks
see, group_vars included. A value that is a Jinja template over other knobs is rendered from them; one that
needs facts only a playbook run has (`locust_workers: "{{ ansible_facts... }}"`) reads as unknown here. A knob
the inventory leaves unset (one kept outside inventory/, where group_vars/ does not apply) reads as
inventory/group_vars/all.yml sets it (loadlab.knobs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loadlab.errors import UserError
from loadlab.inputs import parse_url, target_port
from loadlab.knobs import is_template, lab_knobs, render

GROUPS = ("lb", "app", "postgres", "redis", "loadgen", "monitor", "external")
"""Every group a lab inventory may have (inventory/local.yml, inventory/multihost.example.yml,
inventory/external.yml)."""
REQUIRED_GROUPS = ("loadgen", "monitor")
STACK_GROUPS = ("lb", "app", "postgres", "redis")
"""The lab's own target stack: all four groups, or none where the target is a service of yours (`external`:
hosts the lab runs only its exporter on, the URL load goes to in `external_target_url`)."""

DEFAULT_INVENTORY = Path("inventory/local.yml")


def _knob_range(name: str) -> tuple[int, int, str]:
    """The values a numeric knob may take: ports are TCP ports, counts are small positive numbers."""
    if name.endswith("_port"):
        return 1, 65535, "a TCP port"
    return 0, 1024, "a count"


@dataclass(frozen=True)
class Host:
    """One inventory host: the address its lab services bind to and its merged variables."""

    name: str
    address: str
    groups: frozenset[str]
    vars: Mapping[str, Any] = field(repr=False)
    # What inventory/group_vars/all.yml sets, for a knob `vars` lacks (an inventory outside inventory/).
    knobs: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def local(self) -> bool:
        """This machine: its loopback services and its supervisord are reachable without SSH."""
        return self.vars.get("ansible_connection") == "local"

    def var(self, name: str, default: Any = None) -> Any:
        """A knob's value (a template over other knobs rendered from them); unset, or known only during a
        playbook run (a fact, a lookup), it reads as `default`, else as group_vars/all.yml sets it."""
        value = self.vars.get(name)
        if is_template(value):
            known = {k: v for k, v in self.vars.items() if not is_template(v)}
            value = render(value, {**self.knobs, **known})
        if value is None:
            return default if default is not None else self.knobs.get(name)
        return value

    def int_var(self, name: str) -> int:
        """A numeric knob; a value that is not a number, or out of its range, is the inventory's mistake."""
        value = self.var(name)
        if value is None:
            raise UserError(
                f"inventory: {self.name}: {name} is not set: the lab's knobs are in inventory/group_vars/"
                "all.yml, which applies to inventories in the project's inventory/ folder"
            )
        low, high, what = _knob_range(name)
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            number = int(value)
        except (TypeError, ValueError, OverflowError):
            raise UserError(f"inventory: {self.name}: {name} is {value!r}, not a whole number") from None
        if not low <= number <= high:
            raise UserError(f"inventory: {self.name}: {name} is {number}, not {what} ({low}-{high})")
        return number

    def int_or_none(self, name: str) -> int | None:
        """A numeric knob, or None where it is a template only a playbook run resolves."""
        value = self.vars.get(name)
        if isinstance(value, bool) or is_template(value) or value is None:
            return None
        try:
            return int(value)
        except (TypeError, ValueError):
            return None

    def app_ports(self) -> list[int]:
        """Ports of this host's app instances (none when it is not an app host)."""
        if "app" not in self.groups:
            return []
        base, count = self.int_var("app_base_port"), self.int_var("app_instances")
        if base + count - 1 > 65535:
            raise UserError(
                f"inventory: {self.name}: app_base_port {base} + app_instances {count} runs past port 65535"
            )
        return list(range(base, base + count))


@dataclass(frozen=True)
class Service:
    """One lab service on one host, as `loadlab status` checks it."""

    name: str  # nginx, nginx-status, app-8001, postgres, redis, locust-master, locust-metrics, exporter, ...
    kind: str  # what kind of check answers for it
    host: Host
    address: str  # HOST:PORT, or the supervisor socket path
    loopback_only: bool = False  # bound to 127.0.0.1 on its host: reachable only from that host

    @property
    def port(self) -> int | None:
        """The TCP port, for services that have one."""
        head, _, tail = self.address.rpartition(":")
        return int(tail) if head and tail.isdigit() else None


@dataclass(frozen=True)
class Lab:
    """Hosts per group and their knobs, from one inventory."""

    inventory: Path
    hosts: Mapping[str, Host]
    groups: Mapping[str, tuple[str, ...]]

    @classmethod
    def load(cls, inventory: str | os.PathLike[str] | None = None) -> Lab:
        """Read the inventory through ansible-inventory; a missing or broken one is a UserError."""
        path = Path(inventory) if inventory is not None else default_inventory()
        if not path.exists():
            raise UserError(f"inventory not found: {path}")
        return cls.from_inventory_json(_ansible_inventory_list(path), path)

    @classmethod
    def from_inventory_json(cls, data: Mapping[str, Any], inventory: Path) -> Lab:
        """Build the lab from `ansible-inventory --list` output and check it names every lab group."""
        hostvars: Mapping[str, Mapping[str, Any]] = data.get("_meta", {}).get("hostvars", {})
        groups = {name: tuple(_members(data, name)) for name in GROUPS}
        stack = [name for name in STACK_GROUPS if groups[name]]
        missing = [name for name in REQUIRED_GROUPS if not groups[name]]
        if stack or not groups["external"]:
            missing += [name for name in STACK_GROUPS if not groups[name]]
        if missing:
            raise UserError(
                f"inventory {inventory} has no host in group(s) {', '.join(missing)}; a lab needs "
                f"{', '.join(REQUIRED_GROUPS + STACK_GROUPS)}, or {', '.join(REQUIRED_GROUPS)} and your "
                "service's hosts in group external (see inventory/local.yml, inventory/external.yml)"
            )
        member_of: dict[str, set[str]] = {}
        for group, names in groups.items():
            for name in names:
                member_of.setdefault(name, set()).add(group)
        hosts: dict[str, Host] = {}
        knobs = lab_knobs(project_dir(inventory))
        for name in _members(data, "all") or list(hostvars):
            hv = hostvars.get(name, {})
            address = hv.get("lab_address")
            if not address or is_template(address):
                raise UserError(f"inventory {inventory}: host {name} has no lab_address")
            hosts[name] = Host(name, str(address), frozenset(member_of.get(name, ())), dict(hv), knobs)
        lab = cls(inventory=inventory, hosts=hosts, groups=groups)
        try:
            _ = lab.external_target_url  # named once, a URL with a valid port
            lab.services()  # every port and count knob in range, before any command relies on one
        except UserError as exc:
            raise UserError(f"{str(exc).replace('inventory:', f'inventory {inventory}:', 1)}") from None
        return lab

    def group(self, name: str) -> list[Host]:
        """The hosts of one group, in inventory order."""
        return [self.hosts[h] for h in self.groups.get(name, ())]

    @property
    def lb(self) -> Host:
        """The host whose nginx is the lab's entry point."""
        return self.group("lb")[0]

    @property
    def locust_master(self) -> Host:
        """The first loadgen host runs the Locust master."""
        return self.group("loadgen")[0]

    @property
    def monitor(self) -> Host:
        """The host running Prometheus (and Grafana)."""
        return self.group("monitor")[0]

    @property
    def nginx_url(self) -> str | None:
        """The lab's own entry point (None where the lab has no stack of its own)."""
        if not self.group("lb"):
            return None
        return f"http://{self.lb.address}:{self.lb.int_var('nginx_port')}"

    @property
    def external_target_url(self) -> str | None:
        """The URL of a service of yours the lab loads (`external_target_url` of the external group)."""
        named = {
            str(h.vars["external_target_url"]).rstrip("/")
            for h in self.group("external")
            if h.vars.get("external_target_url") and not is_template(h.vars["external_target_url"])
        }
        if not named:
            if self.group("external"):
                raise UserError(
                    "inventory: group external names no external_target_url: set it to the URL load goes to"
                )
            return None
        if len(named) > 1:
            raise UserError(
                f"inventory: the external hosts name different external_target_url values: {sorted(named)}"
            )
        url = named.pop()
        parse_url(url, "inventory: external_target_url")
        return url

    @property
    def target_url(self) -> str:
        """What load goes to: the service of yours the inventory names, else the lab's nginx."""
        url = self.external_target_url or self.nginx_url
        assert url is not None  # from_inventory_json admits no lab without one
        return url

    @property
    def external_host(self) -> Host | None:
        """The external host that serves the target URL (its address), else the first external host."""
        url = self.external_target_url
        if url is None:
            return None
        hostname = urlsplit(url).hostname
        hosts = self.group("external")
        return next((h for h in hosts if h.address == hostname), hosts[0])

    @property
    def locust_web_url(self) -> str:
        """The master's web UI and API (loopback on the master host)."""
        return f"http://127.0.0.1:{self.locust_master.int_var('locust_web_port')}"

    @property
    def prometheus_url(self) -> str:
        """The lab's Prometheus."""
        return f"http://{self.monitor.address}:{self.monitor.int_var('prometheus_port')}"

    @property
    def secrets_dir(self) -> Path:
        """secrets/ beside the inventory folder, where the playbooks generate the lab's passwords."""
        configured = next(iter(self.hosts.values())).vars.get("loadlab_secrets_dir")
        if configured and not is_template(configured):
            return Path(configured)
        return self.inventory.resolve().parent.parent / "secrets"

    @property
    def compose_file(self) -> Path | None:
        """The Compose twin's compose.yml where the inventory describes the twin (`loadlab_compose_file`,
        relative to the project folder: inventory/compose.yml), else None."""
        value = next(iter(self.hosts.values())).vars.get("loadlab_compose_file")
        if not value or is_template(value):
            return None
        path = Path(str(value))
        return path if path.is_absolute() else self.inventory.resolve().parent.parent / path

    def secret(self, name: str) -> str:
        """A generated password (secrets/<name>); missing means the lab was never brought up from here."""
        path = self.secrets_dir / name
        try:
            return path.read_text().strip()
        except OSError:
            raise UserError(f"{path} is missing: bring the lab up with `ansible-playbook lab.yml`") from None

    def services(self) -> list[Service]:
        """Every lab service with its address, in the order a user reads them: entry point to monitoring."""
        found: list[Service] = []

        def add(name: str, kind: str, host: Host, knob: str, loopback: bool = False) -> None:
            address = "127.0.0.1" if loopback else host.address
            found.append(Service(name, kind, host, f"{address}:{host.int_var(knob)}", loopback))

        for host in self.group("lb"):
            add("nginx", "nginx", host, "nginx_port")
            add("nginx-status", "nginx_status", host, "nginx_status_port", loopback=True)
        for host in self.group("app"):
            found += [Service(f"app-{p}", "app", host, f"{host.address}:{p}") for p in host.app_ports()]
        for host in self.group("postgres"):
            add("postgres", "postgres", host, "postgres_port")
        for host in self.group("redis"):
            add("redis", "redis", host, "redis_port")
        target = self.external_host
        if target is not None:
            url = self.external_target_url or ""
            address = f"{urlsplit(url).hostname}:{target_port(url)}"
            found.append(Service("target", "external", target, address))
        add("locust-master", "locust_web", self.locust_master, "locust_web_port", loopback=True)
        add("locust-metrics", "locust_metrics", self.locust_master, "locust_metrics_port")
        for host in self.hosts.values():
            add("exporter", "exporter", host, "exporter_port")
        for host in self.group("monitor"):
            add("prometheus", "prometheus", host, "prometheus_port")
        if self.compose_file is not None:  # the Compose twin: its containers, not a supervisord
            engine = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
            host = next(iter(self.hosts.values()))
            found.append(Service("containers", "compose", host, engine, loopback_only=True))
            return found
        for host in self.hosts.values():
            sock = f"{host.var('loadlab_run_dir')}/supervisor.sock"
            found.append(Service("supervisor", "supervisor", host, sock, loopback_only=True))
        return found


def _members(data: Mapping[str, Any], group: str) -> list[str]:
    """Hosts of a group and of its child groups, each once, in inventory order."""
    found: list[str] = []
    entry = data.get(group, {})
    for name in entry.get("hosts", []):
        if name not in found:
            found.append(name)
    for child in entry.get("children", []):
        for name in _members(data, child):
            if name not in found:
                found.append(name)
    return found


def default_inventory() -> Path:
    """inventory/local.yml of the project this command runs in (the current folder or one above it)."""
    here = Path.cwd()
    for folder in (here, *here.parents):
        candidate = folder / DEFAULT_INVENTORY
        if candidate.is_file() and (folder / "lab.yml").is_file():
            return candidate
    raise UserError("no inventory: run from the loadlab project folder or pass -i INVENTORY")


def ansible_tool(name: str) -> str:
    """An Ansible command from this Python's environment (the project venv) or else from PATH."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise UserError(f"{name} is not installed: install the project (`make venv`)")
    return found


def project_dir(inventory: Path) -> Path | None:
    """The project folder an inventory in <project>/inventory/ belongs to (where ansible.cfg is)."""
    folder = inventory.resolve().parent.parent
    return folder if (folder / "ansible.cfg").is_file() else None


def _ansible_inventory_list(path: Path) -> dict[str, Any]:
    env = dict(os.environ, ANSIBLE_INVENTORY_UNPARSED_FAILED="True", ANSIBLE_NOCOLOR="1")
    try:
        out = subprocess.run(
            [ansible_tool("ansible-inventory"), "--list", "-i", str(path.resolve())],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env,
            cwd=project_dir(path),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"cannot read inventory {path}: {exc}") from None
    if out.returncode != 0:
        raise UserError(f"cannot read inventory {path}: {_inventory_error(out.stderr)}")
    try:
        return json.loads(out.stdout)
    except ValueError:
        raise UserError(f"cannot read inventory {path}: ansible-inventory printed no JSON") from None


def _inventory_error(stderr: str) -> str:
    """The one line of ansible-inventory's output that says what is wrong."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line == "<<< caused by >>>" and i + 1 < len(lines):
            return lines[i + 1]
    errors = [line.removeprefix("[ERROR]:").strip() for line in lines if line.startswith("[ERROR]")]
    return errors[-1] if errors else (lines[-1] if lines else "ansible-inventory failed")
