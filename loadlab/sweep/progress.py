"""The sweep on the terminal: a live line (step, users, phase, rps, p95) for people, plain lines for logs."""

from __future__ import annotations

from typing import Any

from rich.live import Live
from rich.text import Text

from loadlab.console import console, progress_enabled


def _fmt(value: float | None, unit: str = "", nd: int = 0) -> str:
    return "-" if value is None else f"{value:.{nd}f}{unit}"


def _of(index: int, total: int | None) -> str:
    return f"{index + 1}/{total if total is not None else '?'}"


def step_line(step: dict[str, Any], total: int | None) -> str:
    """One finished step as a line people read and logs keep."""
    fail = step.get("fail_ratio")
    load = f"{step['users']} users"
    if step.get("rate") is not None:  # an open step: the rate held, and what became of its arrivals
        load = (
            f"{step['rate']:g}/s ({step['users']} users)  sent {_fmt(step.get('sent_rate'), '/s', 1)}  "
            f"dropped {_fmt(step.get('dropped'))}  late {_fmt(step.get('late'))}"
        )
    return (
        f"step {_of(step['index'], total)}  {load}  {_fmt(step.get('rps'), ' rps', 1)}  "
        f"p50 {_fmt(step.get('p50_ms'), ' ms')}  p95 {_fmt(step.get('p95_ms'), ' ms')}  "
        f"p99 {_fmt(step.get('p99_ms'), ' ms')}  fail {_fmt(None if fail is None else fail * 100, '%', 2)}  "
        f"sockets {_fmt(step.get('client_sockets'))}  gen cpu {_fmt(step.get('loadgen_cpu'), '', 2)}  "
        f"target cpu {_fmt(step.get('target_cpu'), '', 2)}  {','.join(step.get('diagnosis') or [])}"
    )


class SweepProgress:
    """Shows where the sweep is; a rich live line on a terminal, otherwise one plain line per phase."""

    def __init__(self, total_steps: int | None, live: bool | None = None) -> None:
        """`total_steps` is None in a capacity search: its steps follow from what it measures."""
        self.total = total_steps
        self.live_enabled = progress_enabled() if live is None else live
        self._live: Live | None = None
        self._last_phase: tuple[int, str] | None = None
        self._state: dict[str, Any] = {}

    def __enter__(self) -> SweepProgress:
        if self.live_enabled:
            self._live = Live(Text(""), console=console, refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def update(
        self,
        index: int,
        users: int,
        phase: str,
        elapsed: float | None = None,
        length: float | None = None,
        live_users: int | None = None,
        rps: float | None = None,
        p95: float | None = None,
        rate: float | None = None,
    ) -> None:
        """Report the current phase (ramping, warm-up, measuring) and Locust's live figures; an open step
        shows its rate beside the users behind it."""
        load = f"{users} users" if rate is None else f"{rate:g}/s ({users} users)"
        if self._live is not None:
            clock = f" {elapsed:.0f}/{length:.0f}s" if elapsed is not None and length else ""
            running = f" ({live_users} running)" if live_users is not None and live_users != users else ""
            text = Text.assemble(
                (f"step {_of(index, self.total)}", "bold"),
                f"  {load}{running}  ",
                (f"{phase}{clock}", "cyan"),
                f"  live {_fmt(rps, ' rps', 1)}  p95 {_fmt(p95, ' ms')}",
            )
            self._live.update(text)
        elif self._last_phase != (index, phase):
            self._last_phase = (index, phase)
            console.print(
                f"step {_of(index, self.total)}: {load}, {phase}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )

    def step_done(self, step: dict[str, Any]) -> None:
        """Print the finished step's figures (stays on screen above the live line)."""
        console.print(step_line(step, self.total), markup=False, highlight=False, soft_wrap=True)

    def note(self, message: str) -> None:
        console.print(message, markup=False, highlight=False, soft_wrap=True)
