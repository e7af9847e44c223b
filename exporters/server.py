"""The lab exporter: every source's collector behind one registry, each timed, each with its own `_up`.

A source that fails drops its own families and reports `loadlab_<source>_up 0`; the other collectors still
answer. The log says once when a source goes down and once when it comes back, not on every scrape.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from loadlab.errors import UserError

if TYPE_CHECKING:
    from loadlab.exporters.config import ExporterConfig

log = logging.getLogger("loadlab.exporter")


class SourceCollector(Protocol):
    """A collector for one source; `name` is the source in `loadlab_<name>_up`."""

    name: str

    def collect(self) -> Iterable[Metric]: ...


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class LabExporter(Collector):
    """Runs each source's collector once per scrape; scrapes are serialised so sources see one reader."""

    def __init__(self, collectors: Iterable[SourceCollector], logger: logging.Logger = log) -> None:
        self.collectors = list(collectors)
        self.log = logger
        self._up: dict[str, bool | None] = {c.name: None for c in self.collectors}
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        families: list[Metric] = []
        durations = GaugeMetricFamily(
            "loadlab_scrape_duration_seconds",
            "Time each collector took in this scrape.",
            labels=["collector"],
        )
        up_families = []
        with self._lock:
            for collector in self.collectors:
                start = time.perf_counter()
                try:
                    got = list(collector.collect())
                except Exception as exc:
                    ok = False
                    self._note_failure(collector.name, exc)
                else:
                    ok = True
                    families.extend(got)
                    self._note_success(collector.name)
                durations.add_metric([collector.name], time.perf_counter() - start)
                up_families.append(
                    GaugeMetricFamily(
                        f"loadlab_{collector.name}_up",
                        f"1 if the {collector.name} source answered this scrape, else 0.",
                        value=1 if ok else 0,
                    )
                )
        yield from families
        yield from up_families
        yield durations

    def _note_failure(self, name: str, exc: Exception) -> None:
        if self._up[name] is not False:
            self.log.warning("%s: source down: %s", name, _one_line(exc))
            self.log.debug("%s: what failed", name, exc_info=exc)
        self._up[name] = False

    def _note_success(self, name: str) -> None:
        if self._up[name] is False:
            self.log.info("%s: source recovered", name)
        self._up[name] = True

    def close(self) -> None:
        """Release what the sources hold open (database and Redis connections)."""
        for collector in self.collectors:
            source = getattr(collector, "source", None)
            close = getattr(source, "close", None)
            if callable(close):
                close()


def build_collectors(config: ExporterConfig) -> list[SourceCollector]:
    """One collector per enabled source, in the order their families appear."""
    from loadlab.exporters.host import HostCollector
    from loadlab.exporters.processes import ProcessesCollector
    from loadlab.exporters.sockets import SocketsCollector

    collectors: list[SourceCollector] = [
        SocketsCollector(config.ports),
        HostCollector(cpu_cgroup=config.cpu_cgroup, shared_machine=config.shared_machine),
        ProcessesCollector(config.process_groups, roles=config.process_roles),
    ]
    if config.postgres_dsn:
        from loadlab.exporters.postgres import PostgresCollector, PostgresSource

        collectors.append(PostgresCollector(PostgresSource(config.postgres_dsn, config.source_timeout)))
    if config.redis_url:
        from loadlab.exporters.redis import RedisCollector, RedisSource

        collectors.append(RedisCollector(RedisSource(config.redis_url, config.source_timeout)))
    if config.nginx_status_url:
        from loadlab.exporters.nginx import NginxCollector, NginxSource

        collectors.append(NginxCollector(NginxSource(config.nginx_status_url, config.source_timeout)))
    return collectors


def build_registry(config: ExporterConfig) -> tuple[CollectorRegistry, LabExporter]:
    """A fresh registry holding the lab exporter (no default process/platform collectors)."""
    registry = CollectorRegistry()
    exporter = LabExporter(build_collectors(config))
    registry.register(exporter)
    return registry, exporter


def serve(config: ExporterConfig, stop: threading.Event) -> None:
    """Serve /metrics where the config says until `stop` is set."""
    registry, exporter = build_registry(config)
    try:
        httpd, thread = start_http_server(config.listen_port, config.listen_host, registry=registry)
    except OSError as exc:
        raise UserError(f"cannot listen on {config.listen}: {exc.strerror or exc}") from None
    host, port = httpd.server_address[:2]
    shown = f"[{host}]" if ":" in str(host) else host
    log.info(
        "serving http://%s:%s/metrics; sources: %s",
        shown,
        port,
        ", ".join(c.name for c in exporter.collectors),
    )
    try:
        stop.wait()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        exporter.close()
        log.info("stopped")
