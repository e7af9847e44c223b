"""The two ways a loadlab command stops short, each shown as one line (exit code 2), never a traceback.

- `UserError`: the input is wrong and the user can fix it (a flag, a spec, an inventory, a run folder).
- `LabError`: the input is fine but the lab or the target is not usable now (a service down, a host out
  of reach, a master that does not answer).

Both are `LoadlabError`, which is what the commands catch; only the CLI turns one into a process exit.
"""

from __future__ import annotations


class LoadlabError(Exception):
    """A reason to stop that the user reads as one line; the command exits with `exit_code`."""

    exit_code = 2


class UserError(LoadlabError):
    """A problem in what the user gave: the line says what to change."""


class LabError(LoadlabError):
    """The lab or the target is not usable right now: the line says what is down or out of reach."""
