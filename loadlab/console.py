"""The one console every command writes through, and the one way a command fails (`fail`, for the CLI)."""

from __future__ import annotations

import sys
from typing import NoReturn

from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 2) -> NoReturn:
    """End the command with one line saying what to change."""
    err_console.print(f"error: {message}", markup=False, soft_wrap=True)
    sys.exit(code)


def progress_enabled() -> bool:
    """Progress bars only where a person watches a terminal."""
    return console.is_terminal
