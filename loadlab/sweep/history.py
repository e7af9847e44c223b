"""The runs a results folder has seen: `index.jsonl` beside the run folders, one line per finished sweep.

A line says what the run was (id, folder, when it finished, the project's git revision and the target's
where known, target, mode, inventory, spec name, its model and user counts, and an open run's intended
rates) and what it found (max rps, knee — an open run's knee and saturation rates —, verdict, and the
baseline gate's verdict when it had one), so `loadlab runs` lists the history and charts a figure
over it without opening every run. Lines are appended, never rewritten; one that cannot be read is
skipped and counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadlab.errors import UserError
from loadlab.sweep.results import now_iso

INDEX = "index.jsonl"


def entry(path: Path, run: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """The index line of one finished run."""
    spec = run.get("spec") if isinstance(run.get("spec"), dict) else {}
    inventory = run.get("inventory") if isinstance(run.get("inventory"), dict) else {}
    git = run.get("git") if isinstance(run.get("git"), dict) else {}
    baseline = summary.get("baseline") if isinstance(summary.get("baseline"), dict) else None
    steps = summary.get("steps") or []
    model = summary.get("model") or ("open" if any(s.get("rate") is not None for s in steps) else "closed")
    rates = (
        {
            "rates": [s.get("rate") for s in steps],
            "knee_rate": summary.get("knee_rate"),
            "saturation_rate": summary.get("saturation_rate"),
        }
        if model == "open"
        else {}
    )
    return {
        "id": path.name,
        "path": str(path.resolve()),
        "finished_at": now_iso(),
        "git": {"commit": git.get("commit"), "dirty": git.get("dirty")},
        "target_revision": (run.get("target_git") or {}).get("commit")
        if isinstance(run.get("target_git"), dict)
        else None,
        "target": run.get("target"),
        "mode": run.get("mode"),
        "inventory": (inventory or {}).get("path"),
        "spec": spec.get("name"),
        "model": model,
        "users": [s.get("users") for s in steps],
        **rates,
        "max_rps": summary.get("max_rps"),
        "knee_users": summary.get("knee_users"),
        "verdict": summary.get("verdict"),
        "baseline": baseline and {"run": baseline.get("run"), "verdict": baseline.get("verdict")},
    }


def record(path: Path, run: dict[str, Any], summary: dict[str, Any]) -> Path:
    """Append the run to its results folder's index (the folder that holds the run folder)."""
    index = path.resolve().parent / INDEX
    line = json.dumps(entry(path, run, summary), separators=(",", ":")) + "\n"
    try:
        with index.open("a", encoding="utf-8") as f:
            f.write(line)
    except OSError as exc:
        raise UserError(f"cannot add the run to {index}: {exc.strerror or exc}") from None
    return index


@dataclass
class History:
    """An index as read: its entries in the order they finished, and how many lines were not entries."""

    index: Path
    entries: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0


def read(folder: Path) -> History:
    """The index of a results folder; a folder that is not there is one line naming it."""
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder (give the folder your runs are in, e.g. results)")
    history = History(folder / INDEX)
    try:
        text = history.index.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return history
    except OSError as exc:
        raise UserError(f"cannot read {history.index}: {exc.strerror or exc}") from None
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            history.skipped += 1
            continue
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            history.entries.append(item)
        else:
            history.skipped += 1
    # A run resumed after it finished is indexed again: its latest line stands, where it finished last.
    latest = {e.get("path", e["id"]): i for i, e in enumerate(history.entries)}
    history.entries = [e for i, e in enumerate(history.entries) if latest[e.get("path", e["id"])] == i]
    return history
