"""The `loadlab` command: one subcommand per module in this package."""

from __future__ import annotations

import importlib

import click

from loadlab.cli.usage import OneLineGroup
from loadlab.console import fail
from loadlab.errors import LoadlabError

# name -> module holding a click command of that name
_COMMANDS = {
    "status": "loadlab.cli.status",
    "exporter": "loadlab.cli.exporter",
    "sweep": "loadlab.cli.sweep",
    "report": "loadlab.cli.report",
    "grafana": "loadlab.cli.grafana",
    "collect": "loadlab.cli.collect",
    "calibrate": "loadlab.cli.calibrate",
    "compare": "loadlab.cli.compare",
    "runs": "loadlab.cli.runs",
    "compose": "loadlab.cli.compose",
}


class _LazyGroup(OneLineGroup):
    """Imports a subcommand only when it runs, so `loadlab status` does not pay for matplotlib."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module = _COMMANDS.get(name)
        if module is None:
            return None
        return getattr(importlib.import_module(module), name.replace("-", "_"))

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except LoadlabError as exc:
            fail(str(exc), exc.exit_code)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="loadlab")
def main() -> None:
    """loadlab: how much load does the stack carry, and what gives out first?"""
