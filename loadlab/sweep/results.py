"""A run's folder: steps.jsonl (appended as each step finishes), steps.csv, summary.json, run.json."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from loadlab.errors import UserError
from loadlab.inputs import read_text
from loadlab.sweep import analysis
from loadlab.sweep.samples import SAMPLES_DIR
from loadlab.sweep.search import RateSearchSpec, SearchSpec
from loadlab.sweep.search import outcome as capacity_outcome
from loadlab.sweep.spec import SweepSpec
from loadlab.sweep.thresholds import Threshold, evaluate, verdict

STEPS_JSONL = "steps.jsonl"
STEPS_CSV = "steps.csv"
SUMMARY = "summary.json"
RUN = "run.json"
REPORT = "report.html"
STEPS_DAMAGED = "steps.damaged.jsonl"
# A folder holding any of these holds (part of) a run: a new run there would mix or overwrite it.
RUN_FILES = (RUN, STEPS_JSONL, SUMMARY, STEPS_CSV, REPORT)
# Step fields that are figures: a number or null, anything else is a damaged record.
_NUMERIC_STEP_FIELDS = (
    "rps", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "avg_ms", "requests", "failures", "fail_ratio",
    "client_sockets", "server_sockets", "loadgen_cpu", "target_cpu", "window_s", "warmup_s", "window_start",
    "window_end", "intended", "sent", "sent_rate", "dropped", "late", "lateness_p99_ms", "response_p50_ms",
    "response_p95_ms", "response_p99_ms",
)  # fmt: skip

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
    "server_sockets",
    "loadgen_cpu",
    "target_cpu",
    "diagnosis",
    "window_s",
    "window_start",
    "window_end",
]
# An open sweep's steps.csv adds these (a closed sweep's keeps CSV_COLUMNS): the intended rate first,
# then what was sent of it, then Locust's own send-to-answer percentiles and the backlog.
OPEN_CSV_COLUMNS = ["index", "rate", "users", "rps", "intended", "sent", "sent_rate", "dropped", "late",
                    "lateness_p99_ms"]  # fmt: skip
OPEN_CSV_TAIL = ["response_p50_ms", "response_p95_ms", "response_p99_ms", "backlog_start", "backlog_end",
                 "backlog_growth_per_s"]  # fmt: skip


def csv_columns(steps: Sequence[dict[str, Any]]) -> list[str]:
    """steps.csv's header: CSV_COLUMNS, and for an open sweep its rate, arrival and backlog columns too
    (p50_ms..p99_ms are then from each request's intended start, response_* from its send)."""
    if not analysis.is_open(steps):
        return CSV_COLUMNS
    rest = [c for c in CSV_COLUMNS if c not in OPEN_CSV_COLUMNS]
    cut = rest.index("requests")
    return [*OPEN_CSV_COLUMNS, *rest[:cut], *OPEN_CSV_TAIL, *rest[cut:]]


# The per-step fields summary.json carries (the documented contract first, then the additions); a field a
# step lacks (a closed step has no `rate`) is left out.
SUMMARY_STEP_FIELDS = [
    "rate",
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
    "server_sockets",
    "loadgen_cpu_busiest",
    "loadgen_cpu_busiest_host",
    "target_cpu_busiest",
    "target_cpu_busiest_host",
    "window_s",
    "window_start",
    "window_end",
    "diagnosis_evidence",
    "endpoints",
    "resources",
    "load",
    "ssh_reconnects",
    "samples",
    "intended",
    "sent",
    "sent_rate",
    "dropped",
    "late",
    "lateness_p99_ms",
    "response_p50_ms",
    "response_p95_ms",
    "response_p99_ms",
    "backlog",
    "open",
]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def _step_problem(step: Any) -> str | None:
    """Why a parsed steps.jsonl line is not a step record this code wrote, or None when it is one."""
    if not isinstance(step, dict):
        return "not a JSON object"
    users = step.get("users")
    if isinstance(users, bool) or not isinstance(users, int) or users < 1:
        return f"users is {users!r}"
    index = step.get("index")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int) or index < 0):
        return f"index is {index!r}"
    rate = step.get("rate")
    if rate is not None and (
        isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate) or rate <= 0
    ):
        return f"rate is {rate!r}"
    for key in _NUMERIC_STEP_FIELDS:
        value = step.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return f"{key} is {value!r}, not a number"
    diagnosis = step.get("diagnosis")
    if diagnosis is not None and not (
        isinstance(diagnosis, list) and all(isinstance(d, str) for d in diagnosis)
    ):
        return f"diagnosis is {diagnosis!r}"
    for key, kind in (
        ("endpoints", list),
        ("errors", list),
        ("resources", dict),
        ("backlog", dict),
        ("open", dict),
    ):
        if step.get(key) is not None and not isinstance(step[key], kind):
            return f"{key} is {type(step[key]).__name__}, not {kind.__name__}"
    return None


def _as_planned(planned: Any, step: dict[str, Any]) -> bool:
    """The record measured the planned step: its intended rate (open) or its user count (closed)."""
    if step.get("rate") is not None:
        return isinstance(planned, int | float) and math.isclose(float(planned), float(step["rate"]))
    return planned == step["users"]


@dataclass
class StepLines:
    """steps.jsonl as read: the good step records (in step order) and every line that is not one."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    good: list[str] = field(default_factory=list)  # the good records' lines, as written
    damaged: list[tuple[int, str, str]] = field(default_factory=list)  # (line number, line, why)
    cut_tail: bool = False  # the last line is cut short without its newline: a kill during the write

    def pending(self, planned: int) -> list[int]:
        """Step indices with no good record, in step order: what a resumed run measures."""
        done = {s["index"] for s in self.steps}
        return [i for i in range(planned) if i not in done]


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

    def check_fresh(self, flag: str = "--out") -> None:
        """Refuse a file, a folder holding any part of a run, or one we cannot write in; writes nothing."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{flag} {self.path}: is a file, not a folder")
        found = [name for name in (*RUN_FILES, SAMPLES_DIR) if (self.path / name).exists()]
        if found:
            raise UserError(
                f"{flag} {self.path} already holds a run ({', '.join(found)}): continue it with "
                f"--resume {self.path} or pick another {flag}"
            )
        self.check_writable(flag)

    def check_writable(self, flag: str) -> None:
        """Try a scratch file where the run will write (the folder, or the nearest one that exists)."""
        folder = next((p for p in (self.path, *self.path.parents) if p.exists()), Path("."))
        if not folder.is_dir():
            raise UserError(f"{flag} {self.path}: {folder} is a file, not a folder")
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise UserError(f"{flag} {self.path}: cannot write in {folder} ({exc.strerror or exc})") from None

    def create(self) -> None:
        """A fresh run folder; refuse one that already holds a run (that is what --resume is for)."""
        self.check_fresh()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create {self.path}: {exc.strerror or exc}") from None

    def snapshot(self) -> dict[str, bytes | None]:
        """The bytes of every file a resume may rewrite (None: absent), for restore() after a failure."""
        saved: dict[str, bytes | None] = {}
        for name in (*RUN_FILES, STEPS_DAMAGED):
            try:
                saved[name] = (self.path / name).read_bytes()
            except FileNotFoundError:
                saved[name] = None
            except OSError as exc:
                raise UserError(f"cannot read {self.path / name}: {exc.strerror or exc}") from None
        return saved

    def restore(self, saved: dict[str, bytes | None]) -> None:
        """Put the files back as snapshot() read them: a command that failed leaves the run as it found it."""
        for name, data in saved.items():
            path = self.path / name
            if data is None:
                path.unlink(missing_ok=True)
            elif not path.exists() or path.read_bytes() != data:
                tmp = path.with_name(f".{name}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)

    def write_run(self, run: dict[str, Any]) -> None:
        _atomic_write(self.path / RUN, json.dumps(run, indent=2, sort_keys=False) + "\n")

    def read_run(self) -> dict[str, Any]:
        """run.json, checked enough that resume and report can rely on its shape."""
        path = self.path / RUN
        if not path.is_file():
            raise UserError(f"{self.path} is not a sweep run (no {RUN})")
        try:
            run = json.loads(read_text(path, "run record"))
        except ValueError as exc:
            raise UserError(f"run record {path}: not valid JSON ({exc})") from None
        if not isinstance(run, dict):
            raise UserError(f"run record {path}: expected a JSON object, got {type(run).__name__}")
        expected: dict[str, tuple[type, ...]] = {
            "spec": (dict,), "inventory": (dict, type(None)), "mode": (str,), "target": (str, type(None)),
            "locustfile": (str, type(None)), "workers": (int, type(None)), "command": (list,),
            "resumes": (list,), "allow_any_host": (bool,),
        }  # fmt: skip
        for key, kinds in expected.items():
            if key in run and (
                not isinstance(run[key], kinds) or isinstance(run[key], bool) != (bool in kinds)
            ):
                raise UserError(f"run record {path}: {key} is {run[key]!r}; the run record is damaged")
        if run.get("mode", "lab") not in ("lab", "standalone"):
            raise UserError(f"run record {path}: mode is {run['mode']!r}; the run record is damaged")
        if "spec" in run:
            self.read_spec(run)
        return run

    def read_spec(self, run: dict[str, Any]) -> SweepSpec:
        """The spec run.json recorded, validated like a spec file."""
        try:
            return SweepSpec(**run["spec"]).validate()
        except (KeyError, TypeError) as exc:
            raise UserError(f"run record {self.path / RUN}: unreadable spec ({exc})") from None
        except UserError as exc:
            raise UserError(f"run record {self.path / RUN}: spec {exc}") from None

    def scan_steps(self, planned: Sequence[int] | None = None) -> StepLines:
        """Every line of steps.jsonl sorted into good step records and damaged lines; writes nothing.

        With `planned` (the spec's user counts, or its rates for an open sweep) a record is good only where
        its index names a planned step with the same user count (intended rate) and no earlier line recorded
        that step.
        """
        path = self.path / STEPS_JSONL
        scan = StepLines()
        if not path.exists():
            return scan
        text = read_text(path, "steps file")
        lines = text.splitlines(keepends=True)
        for number, raw in enumerate(lines, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            try:
                step = json.loads(line)
            except ValueError:
                why = "cut short" if number == len(lines) and not raw.endswith("\n") else "not JSON"
                scan.cut_tail = scan.cut_tail or why == "cut short"
                scan.damaged.append((number, line, why))
                continue
            why = _step_problem(step)
            if why is None:
                step.setdefault("index", len(scan.steps))
                index = step["index"]
                if planned is not None and (index >= len(planned) or not _as_planned(planned[index], step)):
                    what = (
                        f"rate {step['rate']}/s" if step.get("rate") is not None else f"{step['users']} users"
                    )
                    why = f"step {index} with {what} is not in the run's plan"
                elif any(s["index"] == index for s in scan.steps):
                    why = f"a second record of step {index}"
            if why is not None:
                scan.damaged.append((number, line, why))
                continue
            scan.steps.append(step)
            scan.good.append(line)
        order = sorted(range(len(scan.steps)), key=lambda i: scan.steps[i]["index"])
        scan.steps = [scan.steps[i] for i in order]
        scan.good = [scan.good[i] for i in order]
        return scan

    def read_steps(self) -> list[dict[str, Any]]:
        """Finished steps in step order; a damaged line is an error, except a last line cut by a kill."""
        scan = self.scan_steps()
        for number, _line, why in scan.damaged:
            if why != "cut short":
                raise UserError(
                    f"steps file {self.path / STEPS_JSONL}: line {number} is damaged ({why}); "
                    f"`loadlab sweep --resume {self.path}` keeps it aside and measures that step again"
                )
        return scan.steps

    def set_aside(self, scan: StepLines) -> None:
        """Move damaged lines to steps.damaged.jsonl (appended, never dropped) and keep the good ones."""
        if not scan.damaged:
            return
        try:
            with open(self.path / STEPS_DAMAGED, "a", encoding="utf-8") as f:
                f.write("".join(line + "\n" for _n, line, _why in scan.damaged))
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise UserError(f"cannot write {self.path / STEPS_DAMAGED}: {exc.strerror or exc}") from None
        _atomic_write(self.path / STEPS_JSONL, "".join(line + "\n" for line in scan.good))

    def append_step(self, step: dict[str, Any], all_steps: Sequence[dict[str, Any]]) -> None:
        """Append one finished step (flushed to disk) and rewrite steps.csv."""
        with open(self.path / STEPS_JSONL, "a", encoding="utf-8") as f:
            f.write(json.dumps(step, sort_keys=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.write_csv(all_steps)

    def write_csv(self, steps: Sequence[dict[str, Any]]) -> None:
        columns = csv_columns(steps)
        lines: list[list[Any]] = []
        for s in steps:
            row = {k: s.get(k) for k in columns}
            row["diagnosis"] = ";".join(s.get("diagnosis") or [])
            backlog = s.get("backlog") if isinstance(s.get("backlog"), dict) else {}
            for key in ("start", "end", "growth_per_s"):
                if f"backlog_{key}" in row:
                    row[f"backlog_{key}"] = backlog.get(key)
            lines.append(["" if row[k] is None else row[k] for k in columns])
        tmp = self.path / f".{STEPS_CSV}.tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            writer.writerows(lines)
        os.replace(tmp, self.path / STEPS_CSV)

    def write_summary(self, summary: dict[str, Any]) -> None:
        _atomic_write(self.path / SUMMARY, json.dumps(summary, indent=2) + "\n")

    def read_summary(self) -> dict[str, Any]:
        """summary.json; none yet reads as empty, a damaged one is an error naming it."""
        path = self.path / SUMMARY
        if not path.exists():
            return {}
        try:
            summary = json.loads(read_text(path, "summary"))
        except ValueError as exc:
            raise UserError(f"summary {path}: not valid JSON ({exc}); delete it to rebuild it") from None
        shapes = {"steps": list, "thresholds": list, "usl": dict, "knee": dict, "recommendation": dict}
        if not isinstance(summary, dict):
            raise UserError(f"summary {path}: expected a JSON object; delete it to rebuild it")
        for key, kind in shapes.items():
            value = summary.get(key)
            if value is not None and (
                not isinstance(value, kind) or (kind is list and not all(isinstance(v, dict) for v in value))
            ):
                raise UserError(f"summary {path}: {key} is damaged; delete it to rebuild it")
        return summary


def summarize(
    steps: Sequence[dict[str, Any]],
    thresholds: Sequence[Threshold],
    planned_steps: int,
    interrupted: str | None = None,
    search: SearchSpec | RateSearchSpec | None = None,
) -> dict[str, Any]:
    """summary.json: `model` ('closed' for steps of user counts, 'open' for steps of arrival rates), then the
    contract's fields (steps, max_rps, knee_users, usl, thresholds, verdict); a capacity search adds
    `capacity` (what the stack carried and what gave out first). An open sweep's summary has `knee_rate`,
    `saturation_rate` and `max_rps_rate` in place of knee_users and max_rps_users, and no USL fit (null)."""
    if analysis.is_open(steps):
        return _summarize_open(steps, thresholds, planned_steps, interrupted, search)
    knee = analysis.knee(steps)
    checks = evaluate(thresholds, steps)
    p95_gate = _p95_gate(thresholds)
    max_rps = analysis.max_rps(steps)
    summary = {
        "model": "closed",
        "steps": [{k: s.get(k) for k in SUMMARY_STEP_FIELDS if k in s} for s in steps],
        "max_rps": max_rps,
        "knee_users": knee["users"],
        "usl": analysis.usl_fit(steps),
        "thresholds": [{"expr": c["expr"], "passed": c["passed"], **c} for c in checks],
        "verdict": verdict(checks),
        "knee": knee,
        "max_rps_users": next((s["users"] for s in steps if s.get("rps") == max_rps), None),
        "recommendation": analysis.recommendation(steps, knee["users"], p95_gate, checks),
        **_progress(steps, planned_steps, interrupted),
    }
    if search is not None:
        # One answer: the search's verdict is the run's recommendation.
        capacity = summary["capacity"] = capacity_outcome(search, steps, thresholds)
        summary["recommendation"] = _search_recommendation(capacity, "users")
    return summary


def _progress(steps: Sequence[dict[str, Any]], planned_steps: int, interrupted: str | None) -> dict[str, Any]:
    """How far the run got: every summary's complete, planned_steps, finished_steps, interrupted."""
    return {
        "complete": len(steps) >= planned_steps and interrupted is None,
        "planned_steps": planned_steps,
        "finished_steps": len(steps),
        "interrupted": interrupted,
    }


def _search_recommendation(capacity: dict[str, Any], load: str) -> dict[str, Any]:
    """A capacity search's one answer as the run's recommendation; `load` is users or rate."""
    return {load: capacity[load], **{k: capacity[k] for k in ("rps", "p95_ms", "text")}}


def _p95_gate(thresholds: Sequence[Threshold]) -> float | None:
    """The p95 every step must stay under (a `p95<X` threshold without @), for the recommendation."""
    return next(
        (t.limit for t in thresholds if t.metric == "p95" and t.everywhere and t.op in ("<", "<=")),
        None,
    )


def _summarize_open(
    steps: Sequence[dict[str, Any]],
    thresholds: Sequence[Threshold],
    planned_steps: int,
    interrupted: str | None,
    search: SearchSpec | RateSearchSpec | None,
) -> dict[str, Any]:
    """summary.json of an open sweep: steps by intended rate, the knee and saturation rates, no USL."""
    ordered = sorted(steps, key=lambda s: (float(s["rate"]), s.get("index", 0)))
    knee = analysis.open_knee(steps)
    checks = evaluate(thresholds, steps)
    max_rps = analysis.max_rps(steps)
    summary: dict[str, Any] = {
        "model": "open",
        "steps": [{k: s.get(k) for k in SUMMARY_STEP_FIELDS if k in s} for s in ordered],
        "max_rps": max_rps,
        "knee_rate": knee["rate"],
        "saturation_rate": analysis.saturation_rate(steps),
        "usl": None,  # the USL models throughput against users; an open run reports saturation_rate
        "thresholds": [{"expr": c["expr"], "passed": c["passed"], **c} for c in checks],
        "verdict": verdict(checks),
        "knee": knee,
        "max_rps_rate": next((s["rate"] for s in ordered if s.get("rps") == max_rps), None),
        "recommendation": analysis.recommendation(steps, None, _p95_gate(thresholds), checks),
        **_progress(steps, planned_steps, interrupted),
    }
    if search is not None:
        capacity = summary["capacity"] = capacity_outcome(search, steps, thresholds)
        summary["recommendation"] = _search_recommendation(capacity, "rate")
    return summary
