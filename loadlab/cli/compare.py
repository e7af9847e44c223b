"""`loadlab compare RUN_A RUN_B [RUN_C ...]`: each later run against the first, step by step, with the noise
of each step's samples; writes compare.json and compare.html."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from loadlab.cli.usage import OneLineCommand
from loadlab.console import console
from loadlab.errors import UserError
from loadlab.inputs import finite_number, parse_share


def _fmt(value: Any, figure: str) -> str:
    if value is None:
        return "-"
    if figure == "fail_ratio":
        return f"{100 * value:.2f}%"
    if figure.endswith("_ms"):
        return f"{value:g} ms"
    return f"{value:g}"


def _change(row: dict[str, Any]) -> str:
    change = row.get("change")
    if change is None:
        return "-"
    relative = row.get("relative", True)
    text = f"{100 * change:+.1f}%" if relative else f"{change:+.3g}"
    low, high = row.get("ci_low"), row.get("ci_high")
    if low is not None and high is not None:
        text += (
            f" [{100 * low:+.1f}, {100 * high:+.1f}]"
            if row.get("relative", True)
            else f" [{low:+.3g}, {high:+.3g}]"
        )
    return text


def render(result: dict[str, Any]) -> Table:
    table = Table(title=f"{Path(result['b']).name} against {Path(result['a']).name}", title_justify="left")
    rates = any(row.get("rate") is not None for row in result["rows"])
    for name in ("rate" if rates else "users", "figure", "A", "B", "change [95% interval]", "verdict"):
        table.add_column(name, overflow="fold")
    for row in result["rows"]:
        verdict = row["verdict"]
        color = {"slower": "red", "more failures": "red", "faster": "green", "fewer failures": "green"}
        shown = f"[{color[verdict]}]{verdict}[/]" if verdict in color else verdict
        table.add_row(
            _load(row), row["figure"], _fmt(row["a"], row["figure"]), _fmt(row["b"], row["figure"]),
            _change(row), shown,
        )  # fmt: skip
    return table


def _load(row: dict[str, Any]) -> str:
    """A step's load: its rate (an open run's) or its users."""
    return f"{row['rate']:g}/s" if row.get("rate") is not None else f"{row['users']} users"


def _curve_lines(result: dict[str, Any]) -> list[str]:
    c = result["curves"]
    lines = []
    for key, label in (
        ("max_rps", "max rps"),
        ("knee_users", "knee (users)"),
        ("usl_peak_users", "USL peak"),
        ("knee_rate", "knee (rate)"),
        ("saturation_rate", "fell behind at (rate)"),
    ):
        if key not in c:
            continue
        a, b = c[key]
        if a is not None or b is not None:
            lines.append(f"{label}: {'-' if a is None else f'{a:g}'} -> {'-' if b is None else f'{b:g}'}")
    for d in c["diagnosis_changes"]:
        lines.append(f"{_load(d)}: diagnosis {','.join(d['a']) or '-'} -> {','.join(d['b']) or '-'}")
    return lines


@click.command(cls=OneLineCommand)
@click.argument("runs", nargs=-1, metavar="RUN_A RUN_B [RUN_C ...]")
@click.option(
    "--alpha", default="0.05", show_default=True, help="Chance of calling a difference real by luck."
)
@click.option(
    "--tolerance",
    default="2%",
    show_default=True,
    help="Changes smaller than this are never called real (2% or 0.02).",
)
@click.option(
    "--last",
    type=click.IntRange(min=2),
    help="Instead of RUN_A RUN_B ...: the last N runs of --results' index, the oldest of them first.",
)
@click.option("--results", default="results", show_default=True, help="Where --last finds index.jsonl.")
@click.option(
    "--out", default=None, help="Folder for compare.json and compare.html (default results/compare-…)."
)
def compare(
    runs: tuple[str, ...], alpha: str, tolerance: str, last: int | None, results: str, out: str | None
) -> None:
    """Each run after the first against the first: per step and figure the change, its interval and
    whether it is real (faster, slower, no real difference); the curves; what differs in the setup."""
    from loadlab.sweep.compare import compare as compare_runs
    from loadlab.sweep.compare import load_run
    from loadlab.sweep.compare_report import write_html

    if last is not None:
        from loadlab.sweep.history import read

        if runs:
            raise UserError("--last picks the runs from the index: give no RUN folders with it")
        entries = read(Path(results)).entries[-last:]
        if len(entries) < 2:
            raise UserError(f"--last {last}: {results}/index.jsonl lists {len(entries)} finished run(s)")
        runs = tuple(e["path"] for e in entries)
    if len(runs) < 2:
        raise UserError("compare needs two runs or more: loadlab compare RUN_A RUN_B (or --last N)")
    a_level = finite_number(alpha, "--alpha", above=0, maximum=0.5, what="a probability")
    tol = parse_share(tolerance, "--tolerance")
    loaded = [load_run(Path(r)) for r in runs]
    results = [compare_runs(loaded[0], b, alpha=a_level, tolerance=tol) for b in loaded[1:]]
    folder = Path(out) if out else Path("results") / f"compare-{datetime.now():%Y%m%d-%H%M%S}"
    for result in results:
        for key, (a, b) in result["differs"].items():
            console.print(f"[yellow]differs[/] {key}: {a} | {b}", highlight=False)
        if result["only_a"] or result["only_b"]:
            console.print(
                f"steps in one run only: {Path(result['a']).name} {result['only_a']}, "
                f"{Path(result['b']).name} {result['only_b']}",
                highlight=False,
            )
        console.print(render(result))
        for line in _curve_lines(result):
            console.print(line, highlight=False, markup=False)
        console.print(f"verdict: {result['verdict']}", highlight=False, markup=False)
    try:
        path = write_html(folder, loaded, results)
    except OSError as exc:
        raise UserError(f"--out {folder}: cannot write ({exc.strerror or exc})") from None
    console.print(f"compare: {path}", markup=False, highlight=False)
