"""`loadlab grafana`: put the committed dashboards into the lab's Grafana."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from loadlab.cli.usage import OneLineGroup
from loadlab.console import console
from loadlab.grafana import (
    DEFAULT_URL,
    FOLDER_UID,
    URL_ENV,
    dashboard_models,
    resolve_settings,
    sync_dashboards,
)
from loadlab.inputs import parse_url


@click.group(cls=OneLineGroup)
def grafana() -> None:
    """Work with the lab's Grafana (dashboards are provisioned by the grafana role; this pushes edits)."""


@grafana.command()
@click.option("--url", envvar=URL_ENV, help=f"Grafana base URL [env {URL_ENV}; default: {DEFAULT_URL}].")
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the admin password [default: secrets/grafana_admin].",
)
@click.option("--user", default="admin", show_default=True, help="Grafana user to log in as.")
@click.option("--folder", default=FOLDER_UID, show_default=True, help="Folder uid the dashboards go into.")
@click.option("--dashboard", "names", multiple=True, help="Only this dashboard (repeatable), e.g. sweep.")
def sync(url: str | None, password_file: Path | None, user: str, folder: str, names: tuple[str, ...]) -> None:
    """Push dashboards/json/*.json through Grafana's HTTP API, overwriting what is there."""
    if (
        url is not None
        and click.get_current_context().get_parameter_source("url") is ParameterSource.ENVIRONMENT
    ):
        parse_url(url, f"${URL_ENV}")
    settings = resolve_settings(url, password_file, user)
    models = dashboard_models(names)
    with console.status(f"pushing {len(models)} dashboards to {settings.url}", spinner="dots"):
        synced, foreign = sync_dashboards(settings, models, folder_uid=folder)
    for dashboard in synced:
        console.print(f"{dashboard.uid}  v{dashboard.version}  {settings.url}{dashboard.url}", soft_wrap=True)
    for other in foreign:
        console.print(
            f"note: {other.get('uid')} ({other.get('title')}) is tagged loadlab in Grafana "
            "but not built by this checkout",
            soft_wrap=True,
        )
    console.print(f"synced {len(synced)} dashboards to {settings.url}", soft_wrap=True)
