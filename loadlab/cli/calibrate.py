"""`loadlab calibrate`: provoke each known bottleneck on the lab and check that the sweep names it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from loadlab.cli.usage import OneLineCommand
from loadlab.console import console
from loadlab.errors import UserError
from loadlab.inputs import parse_duration


@click.command(cls=OneLineCommand)
@click.option("-i", "--inventory", help="Ansible inventory of the lab (default inventory/local.yml).")
@click.option("--out", help="Folder for the cases' runs (default results/<timestamp>-calibrate/).")
@click.option("--step-time", default="15s", show_default=True, help="Measured window of each case.")
@click.option("--warmup", default="5s", show_default=True, help="Warm-up before each window.")
@click.option("--case", "only", multiple=True, help="Run only this case (repeatable).")
def calibrate(
    inventory: str | None, out: str | None, step_time: str, warmup: str, only: tuple[str, ...]
) -> None:
    """Run known bottlenecks on the lab's own stack, one after the other, and check that the sweep's
    diagnosis names each one and blames nothing else. Exit 0 when every case passes, 1 when one fails."""
    from loadlab.calibrate import Calibration

    if out is not None and not out.strip():
        raise UserError("--out: empty; give a folder, e.g. results/calibrate")
    calibration = Calibration(
        inventory,
        Path(out) if out else None,
        parse_duration(step_time, "--step-time"),
        parse_duration(warmup, "--warmup"),
        list(only),
        note=lambda line: console.print(line, markup=False, soft_wrap=True),
    )
    results = calibration.run()
    _print(results)
    console.print(f"cases and their runs: {calibration.out}", markup=False, soft_wrap=True)
    if not all(r["passed"] for r in results):
        raise SystemExit(1)


def _print(results: list[dict[str, Any]]) -> None:
    """One row per case: what was provoked, what the sweep diagnosed, pass or FAIL (plain, for logs too)."""
    rows = [("case", "expected", "diagnosed", "result")]
    for r in results:
        verdict = "pass" if r["passed"] else "FAIL"
        if r["missing"]:
            verdict += f" (missing {', '.join(r['missing'])})"
        if r["blamed_wrongly"]:
            verdict += f" (also blamed {', '.join(r['blamed_wrongly'])})"
        rows.append((r["case"], ", ".join(r["expects"]), ", ".join(r["diagnosed"]), verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        line = "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3]
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    passed = sum(r["passed"] for r in results)
    console.print(f"calibrate: {passed} of {len(results)} cases passed", markup=False, soft_wrap=True)
