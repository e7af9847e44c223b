"""How every command and group answers a usage mistake: one line and exit 2, never Click's usage block."""

from __future__ import annotations

from typing import IO, Any

import click

from loadlab.console import err_console


class UsageLine(click.ClickException):
    """A bad flag, argument or subcommand, shown like every other user error: `error: ...`, exit 2."""

    exit_code = 2

    def show(self, file: IO[Any] | None = None) -> None:
        err_console.print(f"error: {self.format_message()}", markup=False, soft_wrap=True)


def _one_line(ctx: click.Context, exc: click.UsageError) -> UsageLine:
    message = exc.format_message().replace("\n", " ")
    if isinstance(exc, click.NoSuchOption | click.BadParameter | click.MissingParameter):
        message = f"{message.rstrip('.')} (see {ctx.command_path} --help)"
    return UsageLine(f"{ctx.command_path}: {message}")


class _OneLineUsage(click.Command):
    """Usage mistakes in this command's own arguments become one line; asking for help stays help."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            raise _one_line(ctx, exc) from None


class OneLineCommand(_OneLineUsage):
    """A command whose usage mistakes are one line (its --help is Click's as usual)."""


class OneLineGroup(_OneLineUsage, click.Group):
    """A group whose own flags, unknown subcommands and subcommands' mistakes are one line each."""

    command_class = OneLineCommand

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            raise _one_line(ctx, exc) from None


OneLineGroup.group_class = OneLineGroup
