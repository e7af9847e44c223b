"""`loadlab runs [FOLDER]`: the finished sweeps a results folder has indexed, oldest first; `--plot FIGURE`
charts one figure of theirs over that history."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from loadlab.cli.usage import OneLineCommand
from loadlab.console import console
from loadlab.errors import UserError

PLOTTABLE = ("max_rps", "knee_users", "knee_rate", "saturation_rate")


@click.command(cls=OneLineCommand)
@click.argument("folder", default="results", metavar="[FOLDER]")
@click.option("--last", type=click.IntRange(min=1), help="Only the last N runs.")
@click.option(
    "--plot",
    type=click.Choice(PLOTTABLE),
    help="Chart this figure over the runs into FOLDER/runs_<figure>.png.",
)
def runs(folder: str, last: int | None, plot: str | None) -> None:
    """The runs FOLDER/index.jsonl lists: id, when, git revision, target, steps, max rps, knee, verdict.
    An open run's steps are its intended rates (100,200/s) and its knee the last rate that kept up."""
    from loadlab.sweep.history import read

    history = read(Path(folder))
    entries = history.entries[-last:] if last else history.entries
    if not entries:
        console.print(f"no finished run indexed in {history.index} yet", markup=False)
        return
    # Columns a reader compares; one target for every run is said once, above the table.
    targets = {str(e.get("target") or "-") for e in entries}
    gated = any(e.get("baseline") for e in entries)
    title = f"runs in {folder}" + (f" (target {targets.pop()})" if len(targets) == 1 else "")
    table = Table(title=title, title_justify="left")
    opened = any(e.get("model") == "open" for e in entries)
    steps = "steps" if opened else "users"
    names = ["run", "finished", "revision", *(["target"] if len(targets) > 1 else []), steps, "max rps"]
    names += ["knee", "verdict", *(["gate"] if gated else [])]
    for name in names:
        table.add_column(name, overflow="fold")
    for e in entries:
        git = e.get("git") or {}
        row = [e["id"], str(e.get("finished_at", "-"))[:16].replace("T", " "),
               (git.get("commit") or "-")[:7] + ("+" if git.get("dirty") else "")]  # fmt: skip
        if len(targets) > 1:
            row.append(str(e.get("target") or "-"))
        row += [_steps(e, opened), str(e.get("max_rps", "-"))]
        row += [_knee(e), str(e.get("verdict", "-"))]
        if gated:
            row.append((e.get("baseline") or {}).get("verdict") or "-")
        table.add_row(*row)
    console.print(table)
    if history.skipped:
        skipped = f"{history.skipped} line(s) of {history.index} were not runs and were skipped"
        console.print(skipped, markup=False)
    if plot:
        path = Path(folder) / f"runs_{plot}.png"
        try:
            _plot(entries, plot, path)
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
        console.print(f"plot: {path}", markup=False)


def _steps(entry: dict, labelled: bool) -> str:
    """The run's steps: its user counts ('2,4,8', '2,4,8 users' beside open runs) or rates ('100,200/s')."""
    if entry.get("model") == "open":
        return (
            ",".join(f"{r:g}" if isinstance(r, int | float) else str(r) for r in entry.get("rates") or [])
            + "/s"
        )
    users = ",".join(str(u) for u in entry.get("users") or [])
    return f"{users} users" if labelled and users else users


def _knee(entry: dict) -> str:
    """The knee: users, or for an open run the last rate that kept up ('200/s')."""
    if entry.get("model") == "open":
        rate = entry.get("knee_rate")
        return f"{rate:g}/s" if isinstance(rate, int | float) else "-"
    return str(entry.get("knee_users", "-"))


def _plot(entries: list[dict], figure: str, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4), dpi=100)
    ax = fig.subplots()
    xs = list(range(len(entries)))
    ys = [e.get(figure) if isinstance(e.get(figure), int | float) else float("nan") for e in entries]
    ax.plot(xs, ys, marker="o")
    ax.set_xticks(xs, [e["id"] for e in entries], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(figure.replace("_", " "))
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"{figure.replace('_', ' ')} over the runs", loc="left")
    fig.tight_layout()
    fig.savefig(path)
