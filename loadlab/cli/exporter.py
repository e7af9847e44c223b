"""`loadlab exporter`: serve the lab exporter's /metrics until stopped."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import click

from loadlab.cli.usage import OneLineCommand
from loadlab.exporters.config import load_config


@click.command(cls=OneLineCommand)
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path), help="YAML file the exporter role writes."
)
@click.option("--listen", help="HOST:PORT to serve /metrics on (default 127.0.0.1:9465).")
@click.option(
    "--ports", help="Comma-separated ports with their own socket label; the rest fold into 'other'."
)
@click.option(
    "--process-group",
    "process_groups",
    multiple=True,
    metavar="NAME=REGEX",
    help="A process group matched against full command lines (repeatable; adds to the file's).",
)
@click.option(
    "--postgres-dsn", help="Connection string of the monitoring role; enables the postgres collector."
)
@click.option("--redis-url", help="redis://:PASSWORD@HOST:PORT/0; enables the redis collector.")
@click.option("--nginx-status-url", help="URL of nginx stub_status; enables the nginx collector.")
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True
)
def exporter(
    config_path: Path | None,
    listen: str | None,
    ports: str | None,
    process_groups: tuple[str, ...],
    postgres_dsn: str | None,
    redis_url: str | None,
    nginx_status_url: str | None,
    log_level: str,
) -> None:
    """Serve the lab's metrics (sockets, host, processes, PostgreSQL, Redis, nginx) for Prometheus."""
    config = load_config(
        config_path,
        listen=listen,
        ports=ports,
        process_groups=process_groups,
        postgres_dsn=postgres_dsn,
        redis_url=redis_url,
        nginx_status_url=nginx_status_url,
    )
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from loadlab.exporters.server import serve

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    serve(config, stop)
