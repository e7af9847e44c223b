"""`loadlab report`: regenerate report.html and its PNG plots from a finished (or interrupted) sweep run."""

from __future__ import annotations

from pathlib import Path

import click

from loadlab.cli.usage import OneLineCommand
from loadlab.console import console
from loadlab.errors import UserError


@click.command(cls=OneLineCommand)
@click.argument("run_dir", metavar="RUN_DIR")
@click.option(
    "--panels/--no-panels", default=True, help="Render the lab dashboards' panels from Prometheus too."
)
def report(run_dir: str, panels: bool) -> None:
    """Write RUN_DIR/report.html with throughput, CPU and socket plots and the capacity table (an open
    run's against the intended rate, with latency from intended start and the dropped and late arrivals)."""
    from loadlab.sweep.report import write_report

    try:
        path = write_report(Path(run_dir), panels=panels)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise UserError(f"cannot write the report into {run_dir}:{where} {exc.strerror or exc}") from None
    console.print(f"report: {path}", markup=False)
