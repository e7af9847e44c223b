"""What a sweep needs to know about the lab: its entry point, Locust master, Prometheus, and local ports."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loadlab.errors import LoadlabError, UserError
from loadlab.inputs import parse_duration, target_port
from loadlab.knobs import lab_knobs
from loadlab.lab import Lab
from loadlab.remote import is_this_machine
from loadlab.sweep.resources import is_local_address


@dataclass
class LabView:
    """The lab's entry point, its Locust master and its Prometheus, as one sweep sees them."""

    inventory: str | None
    nginx: list[tuple[str, int]] = field(default_factory=list)  # (address, port) of each lb host
    apps: list[tuple[str, int]] = field(default_factory=list)  # (address, port) of every app instance
    external_url: str | None = None  # a service of yours the inventory names (external_target_url)
    server_hosts: list[str] = field(default_factory=list)  # inventory names of the hosts serving the target
    app_ports: list[int] = field(default_factory=list)
    postgres_port: int | None = None
    redis_port: int | None = None
    locust_web_url: str | None = None  # None when the master is another host: reached through SSH
    locust_master: str | None = None  # the inventory name of the master's host
    # Without an inventory: as inventory/group_vars/all.yml sets them (None where it is not here).
    locust_web_port: int | None = field(default_factory=lambda: _lab_default("locust_web_port"))
    locust_master_port: int | None = field(default_factory=lambda: _lab_default("locust_master_port"))
    default_user_classes: list[str] = field(default_factory=list)  # a run that names none
    prometheus_url: str | None = None
    scrape_interval: float | None = field(default_factory=lambda: _default_scrape_interval())
    grafana_url: str | None = None
    etc_dir: str | None = field(default_factory=lambda: _lab_default("loadlab_etc_dir"))
    error: str | None = None  # why the inventory could not be read
    lab: Lab | None = field(default=None, repr=False)  # the inventory's hosts, for the remote-access layer

    @property
    def nginx_url(self) -> str | None:
        """The lab target: the first lb host's nginx."""
        if not self.nginx:
            return None
        addr, port = self.nginx[0]
        return f"http://{addr}:{port}"

    @property
    def target_url(self) -> str | None:
        """What a lab sweep loads: the service of yours the inventory names, else the lab's nginx."""
        return self.external_url or self.nginx_url

    def targets(self) -> list[str]:
        """Every URL the inventory names as a lab target, for messages."""
        nginx = [f"http://{a}:{p}" for a, p in self.nginx]
        return nginx + ([self.external_url] if self.external_url else [])

    def names_target(self, url: str) -> bool:
        """True when `url` is a lab target named by the inventory: an lb host's nginx, one app instance, or
        the external_target_url of a service of yours (address and port)."""
        port, wanted = target_port(url), _addresses(urlsplit(url).hostname or "")
        named = [*self.nginx, *self.apps]
        if self.external_url:
            named.append((urlsplit(self.external_url).hostname or "", target_port(self.external_url)))
        return any(port == p and wanted & _addresses(a) for a, p in named)

    def check_target(self, url: str, remedy: str = "") -> None:
        """Refuse, in one line, to load a URL the inventory does not name as a lab target (names_target):
        the line lists the targets it does name, then `remedy`."""
        if self.names_target(url):
            return
        named = ", ".join(self.targets()) or f"none ({self.error or 'no lb hosts'})"
        raise UserError(f"refusing to load {url}: it is not a lab target in the inventory ({named}){remedy}")

    def local_ports(self) -> dict[int, str]:
        """Lab ports on this machine -> process group name, for in-process CPU sampling."""
        ports: dict[int, str] = {}
        for address, port in self.nginx:
            if is_local_address(address):
                ports[port] = "nginx"
        for port in self.app_ports:
            ports[port] = f"app-{port}"
        if self.postgres_port:
            ports[self.postgres_port] = "postgres"
        if self.redis_port:
            ports[self.redis_port] = "redis"
        return ports

    def exporter_config(self) -> Path | None:
        """The lab exporter's config on this machine, if the exporter role wrote one here."""
        if self.etc_dir is None:
            return None
        for name in ("exporter.yml", "exporter.yaml", "exporter/config.yml"):
            path = Path(self.etc_dir) / name
            if path.is_file():
                return path
        return None


def _lab_default(name: str) -> Any:
    """A knob as inventory/group_vars/all.yml sets it, for a view without an inventory."""
    return lab_knobs().get(name)


def _default_scrape_interval() -> float | None:
    value = _lab_default("prometheus_scrape_interval")
    return parse_duration(value, "group_vars/all.yml: prometheus_scrape_interval") if value else None


def _addresses(host: str) -> set[str]:
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except OSError:
        return {host}


def read_lab(inventory: str | None) -> LabView:
    """The lab as the inventory describes it (loadlab.lab); `error` says why when it cannot be read."""
    try:
        lab = Lab.load(inventory)
    except LoadlabError as exc:
        return LabView(inventory=inventory, error=str(exc))
    return view_of(lab)


def view_of(lab: Lab) -> LabView:
    """What the sweep needs from the lab: the target, the Locust master, Prometheus, and local ports."""
    view = LabView(inventory=str(lab.inventory), lab=lab)
    view.nginx = [(h.address, h.int_var("nginx_port")) for h in lab.group("lb")]
    view.external_url = lab.external_target_url
    view.server_hosts = [h.name for h in lab.group("external" if view.external_url else "lb")]
    view.apps = [(h.address, port) for h in lab.group("app") for port in h.app_ports()]
    for host in lab.group("app"):
        if is_local_address(host.address):
            view.app_ports += host.app_ports()
    for host in lab.group("postgres"):
        if is_local_address(host.address):
            view.postgres_port = host.int_var("postgres_port")
    for host in lab.group("redis"):
        if is_local_address(host.address):
            view.redis_port = host.int_var("redis_port")
    master = lab.locust_master
    view.etc_dir = str(master.var("loadlab_etc_dir"))
    view.locust_web_port = master.int_var("locust_web_port")
    view.locust_master_port = master.int_var("locust_master_port")
    view.default_user_classes = [str(c) for c in master.var("locust_default_user_classes") or []]
    view.locust_master = master.name
    if is_this_machine(master):
        view.locust_web_url = lab.locust_web_url  # the web API listens on the master host's loopback
    monitor = lab.monitor
    view.prometheus_url = lab.prometheus_url
    view.scrape_interval = parse_duration(
        monitor.var("prometheus_scrape_interval"), f"inventory: {monitor.name}: prometheus_scrape_interval"
    )
    view.grafana_url = f"http://{monitor.address}:{monitor.int_var('grafana_port')}"
    return view
