"""`loadlab collect`: every lab host's logs, sockets, kernel settings and configs beside a run's figures."""

from __future__ import annotations

from pathlib import Path

import click

from loadlab.cli.usage import OneLineCommand
from loadlab.console import console


@click.command(cls=OneLineCommand)
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(path_type=Path))
@click.option(
    "-i",
    "--inventory",
    type=click.Path(path_type=Path),
    default=None,
    help="Ansible inventory of the lab (default: the one the run's run.json names).",
)
def collect(run_dir: Path, inventory: Path | None) -> None:
    """Gather every host's state during the run into RUN_DIR/hosts/<host>/, indexed by RUN_DIR/hosts.json.

    Exit 0 when the run folder was written, also when a host could not be reached (hosts.json says so).
    """
    from loadlab.collect import HOSTS_INDEX, collect_run

    def note(line: str) -> None:
        console.print(line, markup=False, soft_wrap=True)

    index = collect_run(run_dir, inventory, note=note)
    hosts = index["hosts"]
    down = sorted(name for name, host in hosts.items() if not host["reachable"])
    partly = sorted(name for name, host in hosts.items() if host["reachable"] and host["error"])
    whole = len(hosts) - len(down) - len(partly)
    console.print(
        f"hosts: {whole} of {len(hosts)} collected into {run_dir / HOSTS_INDEX}"
        + (f"; not reachable: {', '.join(down)}" if down else "")
        + (f"; incomplete: {', '.join(partly)}" if partly else ""),
        markup=False,
        soft_wrap=True,
    )
    if (run_dir / "report.html").exists():
        console.print(f"to show them in the report: loadlab report {run_dir}", markup=False, soft_wrap=True)
