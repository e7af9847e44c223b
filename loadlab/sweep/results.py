"""A run's folder: steps.jsonl (appended as each step finishes), steps.csv, summary.json, run.json."""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from loadlab.console import UserError
from loadlab.sweep import analysis
from loadlab.sweep.thresholds import Threshold, evaluate, verdict

STEPS_JSONL = "steps.jsonl"
STEPS_CSV = "steps.csv"
SUMMARY = "summary.json"
RUN = "run.json"

CSV_COLUMNS = [
    "index",
    "users",
    "rps",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "avg_ms",
    "requests",
    "failures",
    "fail_ratio",
    "client_sockets",
    "loadgen_cpu",
    "target_cpu",
    "diagnosis",
    "window_s",
    "window_start",
    "window_end",
]

# The per-step fields summary.json carries (the documented contract first, then the additions).
SUMMARY_STEP_FIELDS = [
    "users",
    "rps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "fail_ratio",
    "client_sockets",
    "loadgen_cpu",
    "target_cpu",
    "diagnosis",
    "index",
    "p90_ms",
    "max_ms",
    "avg_ms",
    "requests",
    "failures",
    "window_s",
    "window_start",
    "window_end",
    "diagnosis_evidence",
    "endpoints",
    "resources",
]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def git_revision(cwd: Path | None = None) -> dict[str, Any]:
    """The checkout the sweep ran from: commit (None before the first) and whether it had local changes."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], capture_output=True, text=True, timeout=10, cwd=cwd, check=False
            )
        except OSError:
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


def versions() -> dict[str, str | None]:
    """The software that produced the numbers."""

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "loadlab": version("loadlab"),
        "locust": version("locust"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


class RunDir:
    """Where a sweep writes; every finished step is on disk before the next one starts."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def create(self) -> None:
        """A fresh run folder; refuse one that already holds a run (that is what --resume is for)."""
        if self.read_steps():
            raise UserError(
                f"{self.path} already holds a run: continue it with --resume {self.path} or pick --out"
            )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create {self.path}: {exc.strerror or exc}") from None

    def write_run(self, run: dict[str, Any]) -> None:
        _atomic_write(self.path / RUN, json.dumps(run, indent=2, sort_keys=False) + "\n")

    def read_run(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / RUN).read_text())
        except FileNotFoundError:
            raise UserError(f"{self.path} is not a sweep run (no {RUN})") from None
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read {self.path / RUN}: {exc}") from None

    def read_steps(self, repair: bool = False) -> list[dict[str, Any]]:
        """Finished steps in order; a line cut short by a kill is dropped (and removed when `repair`)."""
        path = self.path / STEPS_JSONL
        if not path.exists():
            return []
        steps: list[dict[str, Any]] = []
        good_lines: list[str] = []
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                step = json.loads(line)
            except ValueError:
                continue
            if isinstance(step, dict) and "users" in step:
                steps.append(step)
                good_lines.append(line)
        if repair and len(good_lines) != len([ln for ln in path.read_text().splitlines() if ln.strip()]):
            _atomic_write(path, "".join(ln + "\n" for ln in good_lines))
        return steps

    def append_step(self, step: dict[str, Any], all_steps: Sequence[dict[str, Any]]) -> None:
        """Append one finished step (flushed to disk) and rewrite steps.csv."""
        with open(self.path / STEPS_JSONL, "a") as f:
            f.write(json.dumps(step, sort_keys=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.write_csv(all_steps)

    def write_csv(self, steps: Sequence[dict[str, Any]]) -> None:
        lines: list[list[Any]] = []
        for s in steps:
            row = {k: s.get(k) for k in CSV_COLUMNS}
            row["diagnosis"] = ";".join(s.get("diagnosis") or [])
            lines.append(["" if row[k] is None else row[k] for k in CSV_COLUMNS])
        tmp = self.path / f".{STEPS_CSV}.tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_COLUMNS)
            writer.writerows(lines)
        os.replace(tmp, self.path / STEPS_CSV)

    def write_summary(self, summary: dict[str, Any]) -> None:
        _atomic_write(self.path / SUMMARY, json.dumps(summary, indent=2) + "\n")

    def read_summary(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / SUMMARY).read_text())
        except (OSError, ValueError):
            return {}


def summarize(
    steps: Sequence[dict[str, Any]],
    thresholds: Sequence[Threshold],
    planned_steps: int,
    interrupted: str | None = None,
) -> dict[str, Any]:
    """summary.json: the contract's fields (steps, max_rps, knee_users, usl, thresholds, verdict) first."""
    knee = analysis.knee(steps)
    checks = evaluate(thresholds, steps)
    p95_gate = next(
        (t.limit for t in thresholds if t.metric == "p95" and t.at_users is None and t.op in ("<", "<=")),
        None,
    )
    max_rps = analysis.max_rps(steps)
    return {
        "steps": [{k: s.get(k) for k in SUMMARY_STEP_FIELDS if k in s} for s in steps],
        "max_rps": max_rps,
        "knee_users": knee["users"],
        "usl": analysis.usl_fit(steps),
        "thresholds": [{"expr": c["expr"], "passed": c["passed"], **c} for c in checks],
        "verdict": verdict(checks),
        "knee": knee,
        "max_rps_users": next((s["users"] for s in steps if s.get("rps") == max_rps), None),
        "recommendation": analysis.recommendation(steps, knee["users"], p95_gate),
        "complete": len(steps) >= planned_steps and interrupted is None,
        "planned_steps": planned_steps,
        "finished_steps": len(steps),
        "interrupted": interrupted,
    }
