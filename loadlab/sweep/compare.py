"""`loadlab compare`: did a change make the stack faster or slower, and is the difference real?

Steps are matched by user count. For each matched step and figure (rps, p50/p95/p99, failed share) the
change is judged on the step's samples (samples.py: one value per second of its window), not on
the two aggregates alone: a block bootstrap of the interval means gives the change's confidence
interval and a p-value (compare_stats.py), the p-values of all figures of a comparison are corrected
together (Holm), and a change is real only where the corrected p-value is below alpha and the whole
interval lies beyond the tolerance. The target's and the generator's CPU are judged the same way on their
per-scrape samples (where the lab's Prometheus had them: `more CPU`, `less CPU`), but never make a run
faster or slower. The curves are compared too: max rps, knee, USL peak, and each step's diagnosis.

Two open runs (steps that held an arrival rate) are matched by intended rate instead: each row keeps the
`rate` and, in `users`, the step's label ('300/s'); their curves compare max rps, the knee rate and the
saturation rate. An open run is never compared with a closed one: a closed run's latency leaves out the
time requests waited to be sent (coordinated omission) and an open run's includes it, so neither the
steps nor the curves measure the same thing; such a pair is refused with one line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadlab.errors import UserError
from loadlab.sweep import analysis, samples
from loadlab.sweep.compare_stats import Difference, compare_series, judge
from loadlab.sweep.resource_model import LOADGEN, TARGET
from loadlab.sweep.results import RunDir

# figure -> higher is better
FIGURES: dict[str, bool] = {
    "rps": True,
    "p50_ms": False,
    "p95_ms": False,
    "p99_ms": False,
    "fail_ratio": False,
    "target_cpu": False,
    "loadgen_cpu": False,
}
VERDICT_WORDS = {
    "max_rps": {"better": "faster", "worse": "slower"},
    "target_cpu": {"better": "less CPU", "worse": "more CPU"},
    "loadgen_cpu": {"better": "less CPU", "worse": "more CPU"},
    "rps": {"better": "faster", "worse": "slower"},
    "p50_ms": {"better": "faster", "worse": "slower"},
    "p95_ms": {"better": "faster", "worse": "slower"},
    "p99_ms": {"better": "faster", "worse": "slower"},
    "fail_ratio": {"better": "fewer failures", "worse": "more failures"},
}


@dataclass
class Run:
    """One run folder as compare reads it."""

    path: Path
    run: dict[str, Any]
    summary: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def open(self) -> bool:
        """The run's steps held arrival rates (the open model)."""
        return analysis.is_open(self.steps)

    def step(self, users: float) -> dict[str, Any] | None:
        """The run's last step at this user count, or at this intended rate for an open run (a resumed
        run may hold a re-measured one)."""
        if self.open:
            found = [s for s in self.steps if s.get("rate") is not None and math.isclose(s["rate"], users)]
        else:
            found = [s for s in self.steps if s.get("users") == users]
        return found[-1] if found else None

    def loads(self) -> list[float]:
        """The distinct user counts of its steps (intended rates for an open run), ascending."""
        if self.open:
            return sorted({float(s["rate"]) for s in self.steps if s.get("rate") is not None})
        return sorted({s["users"] for s in self.steps})

    def series(self, step: dict[str, Any]) -> dict[str, list[float | None]] | None:
        """The step's per-interval figures: Locust's per second, CPU per scrape where Prometheus had it."""
        data = samples.read(self.path, int(step.get("index", 0)))
        if not data:
            return None
        out = samples.series(data)
        procs = (step.get("resources") or {}).get("processes") or {}
        cpu = (data.get("resources") or {}).get("processes") or {}
        for figure, role in (("target_cpu", TARGET), ("loadgen_cpu", LOADGEN)):
            mine = [values for name, values in cpu.items() if (procs.get(name) or {}).get("role") == role]
            if mine:
                out[figure] = [
                    None if any(v is None for v in column) else round(sum(column), 4)
                    for column in zip(*mine, strict=True)
                ]
        return out


def load_run(path: Path) -> Run:
    """A run folder (run.json and at least one finished step); anything else is one line naming it."""
    if not path.is_dir():
        raise UserError(f"{path}: not a folder (give the folder a sweep wrote, e.g. results/<run>)")
    run_dir = RunDir(path)
    if not (path / "run.json").exists() and not (path / "steps.jsonl").exists():
        raise UserError(f"{path}: not a sweep run (no run.json or steps.jsonl)")
    run = run_dir.read_run()
    steps = run_dir.read_steps()
    if not steps:
        raise UserError(f"{path}: the run has no finished step to compare")
    summary = run_dir.read_summary() or {}
    if not isinstance(summary, dict):
        summary = {}
    return Run(path=path, run=run if isinstance(run, dict) else {}, summary=summary, steps=list(steps))


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def _values(series: dict[str, list[float | None]] | None, figure: str) -> list[float]:
    if series is None:
        return []
    return [float(v) for v in series.get(figure) or [] if v is not None]


def _searched(run: Run) -> bool:
    """A capacity search (`--users auto`): its user counts follow from what it measured."""
    spec = run.run.get("spec")
    return isinstance(spec, dict) and bool(spec.get("search"))


def _top(run: Run) -> dict[str, Any]:
    """The step that carried the most requests per second."""
    return max(run.steps, key=lambda s: (_num(s.get("rps")) or 0.0, -int(s.get("users", 0))))


def _setup(run: Run) -> dict[str, Any]:
    """What a run was made on, for saying plainly what differs between two runs."""
    inv = run.run.get("inventory") if isinstance(run.run.get("inventory"), dict) else {}
    spec = run.run.get("spec") if isinstance(run.run.get("spec"), dict) else {}
    hosts: dict[str, Any] = {}
    try:
        index = json.loads((run.path / "hosts.json").read_text())
        for name, entry in (index.get("hosts") or {}).items():
            hosts[name] = (entry or {}).get("cores")
    except (OSError, ValueError, AttributeError):
        pass
    return {
        "target": run.run.get("target"),
        "inventory": (inv or {}).get("path"),
        "locustfile": run.run.get("locustfile"),
        "user classes": spec.get("user_classes"),
        "window": spec.get("step_time"),
        "hosts (cores)": hosts or None,
        "git revision": (run.run.get("git") or {}).get("commit")
        if isinstance(run.run.get("git"), dict)
        else None,
    }


def _rate_label(rate: float) -> str:
    return f"{analysis.rate_text(rate)}/s"


def _common(a: Run, b: Run) -> list[float]:
    """The intended rates both open runs measured (equal to a millionth)."""
    return [r for r in a.loads() if any(math.isclose(r, x, rel_tol=1e-6) for x in b.loads())]


def _open_curves(a: Run, b: Run, common: Sequence[float]) -> dict[str, Any]:
    """Two open runs' curves: max rps, knee rate, saturation rate (knee_users and the USL stay empty)."""
    out: dict[str, Any] = {
        "max_rps": [_num(a.summary.get("max_rps")), _num(b.summary.get("max_rps"))],
        "knee_users": [None, None],
        "usl_peak_users": [None, None],
        "knee_rate": [_num(a.summary.get("knee_rate")), _num(b.summary.get("knee_rate"))],
        "saturation_rate": [_num(a.summary.get("saturation_rate")), _num(b.summary.get("saturation_rate"))],
    }
    diagnoses = []
    for rate in common:
        da, db = (a.step(rate) or {}).get("diagnosis") or [], (b.step(rate) or {}).get("diagnosis") or []
        if sorted(da) != sorted(db):
            diagnoses.append({"rate": rate, "users": _rate_label(rate), "a": da, "b": db})
    out["diagnosis_changes"] = diagnoses
    return out


def _curves(a: Run, b: Run) -> dict[str, Any]:
    def usl_peak(run: Run) -> float | None:
        usl = run.summary.get("usl") if isinstance(run.summary.get("usl"), dict) else None
        return _num((usl or {}).get("peak_users")) if usl else None

    out = {
        "max_rps": [_num(a.summary.get("max_rps")), _num(b.summary.get("max_rps"))],
        "knee_users": [_num(a.summary.get("knee_users")), _num(b.summary.get("knee_users"))],
        "usl_peak_users": [usl_peak(a), usl_peak(b)],
    }
    diagnoses = []
    for users in sorted({s["users"] for s in a.steps} & {s["users"] for s in b.steps}):
        da, db = (a.step(users) or {}).get("diagnosis") or [], (b.step(users) or {}).get("diagnosis") or []
        if sorted(da) != sorted(db):
            diagnoses.append({"users": users, "a": da, "b": db})
    out["diagnosis_changes"] = diagnoses
    return out


def compare(a: Run, b: Run, *, alpha: float = 0.05, tolerance: float = 0.02, seed: int = 0) -> dict[str, Any]:
    """B against A: per matched step and figure, the change, its interval and verdict; the curves; what
    differs in the setup. Two capacity searches are compared on their peaks too (`max_rps`, each on the
    samples of its busiest step); other runs without a common user count are refused. Two open runs are
    matched by intended rate; an open run against a closed one is refused."""
    if a.open != b.open:
        opened, closed = (b, a) if b.open else (a, b)
        raise UserError(
            f"{opened.path} is an open-model run (arrival rates) and {closed.path} a closed one (user "
            "counts): a closed run's latency leaves out the time requests waited to be sent, so compare "
            "runs of one model"
        )
    if a.open:
        return _compare_open(a, b, alpha=alpha, tolerance=tolerance, seed=seed)
    users_a = sorted({s["users"] for s in a.steps})
    users_b = sorted({s["users"] for s in b.steps})
    common = sorted(set(users_a) & set(users_b))
    if not common and not (_searched(a) and _searched(b)):
        raise UserError(
            f"{b.path} has no step with a user count of {a.path} "
            f"({a.name}: {','.join(map(str, users_a))}; {b.name}: {','.join(map(str, users_b))}): "
            "compare runs that share user counts (capacity searches are compared on their curves)"
        )
    peak = None
    if _searched(a) and _searched(b):
        # Capacity searches step where their measurements led them: their peaks are compared, each on the
        # samples of the step that carried the most.
        peak = {"users": f"{_top(a)['users']}/{_top(b)['users']}"}
    rows = _judged_rows(a, b, peak, [({"users": u}, u) for u in common], alpha, tolerance, seed)
    order = ["max_rps", *FIGURES]
    rows.sort(key=lambda r: (isinstance(r["users"], int), str(r["users"]).zfill(9), order.index(r["figure"])))
    differs, revisions = _setup_differs(a, b)
    return {
        "a": str(a.path),
        "b": str(b.path),
        "alpha": alpha,
        "tolerance": tolerance,
        "common_users": common,
        "only_a": [u for u in users_a if u not in common],
        "only_b": [u for u in users_b if u not in common],
        "rows": rows,
        "curves": _curves(a, b),
        "differs": differs,
        "revisions": revisions,
        "verdict": overall(rows),
    }


def _judged_rows(
    a: Run,
    b: Run,
    peak: dict[str, Any] | None,
    matched: Sequence[tuple[dict[str, Any], float]],
    alpha: float,
    tolerance: float,
    seed: int,
) -> list[dict[str, Any]]:
    """A row per figure of each load both runs measured (`matched`: where the row stands, the load), after a
    `max_rps` row where `peak` says where two searches' busiest steps stand; each change judged on the
    steps' samples, all of them corrected together."""
    rows: list[dict[str, Any]] = []
    diffs: list[Difference] = []
    better: list[bool] = []
    # (where the rows stand, A's step, B's step, (the row's figure, the step's figure, higher is better))
    step_figures = [(figure, figure, higher) for figure, higher in FIGURES.items()]
    pairs = [(where, a.step(load), b.step(load), step_figures) for where, load in matched]
    if peak is not None:
        pairs.insert(0, (peak, _top(a), _top(b), [("max_rps", "rps", True)]))
    for where, sa, sb, figures in pairs:
        assert sa is not None and sb is not None
        series_a, series_b = a.series(sa), b.series(sb)
        for figure, key, higher in figures:
            diffs.append(
                compare_series(
                    _values(series_a, key), _values(series_b, key), higher_is_better=higher, seed=seed
                )
            )
            rows.append({**where, "figure": figure, "a": _num(sa.get(key)), "b": _num(sb.get(key))})
            better.append(higher)
    judged = judge(diffs, higher_is_better=better, alpha=alpha, tolerance=tolerance)
    for row, diff in zip(rows, judged, strict=True):
        row.update(diff.to_dict())
        row["verdict"] = VERDICT_WORDS[row["figure"]].get(diff.verdict, diff.verdict)
        if not diff.n_a or not diff.n_b:
            row["verdict"] = "no samples"  # a step from before samples, or CPU without the lab's Prometheus
    return rows


def _setup_differs(a: Run, b: Run) -> tuple[dict[str, list[Any]], list[Any]]:
    """What differs between the two runs' setups, and their git revisions."""
    setup_a, setup_b = _setup(a), _setup(b)
    differs = {
        k: [setup_a[k], setup_b[k]] for k in setup_a if setup_a[k] != setup_b[k] and k != "git revision"
    }
    return differs, [setup_a["git revision"], setup_b["git revision"]]


def _compare_open(a: Run, b: Run, *, alpha: float, tolerance: float, seed: int) -> dict[str, Any]:
    """Two open runs, step by step at each intended rate both measured (and two open searches on their
    peaks, as compare does for user counts)."""
    rates_a, rates_b = a.loads(), b.loads()
    common = _common(a, b)
    searched = _searched(a) and _searched(b)
    if not common and not searched:
        raise UserError(
            f"{b.path} has no step at an arrival rate of {a.path} "
            f"({a.name}: {','.join(map(_rate_label, rates_a))}; "
            f"{b.name}: {','.join(map(_rate_label, rates_b))}): compare open runs that share rates"
        )
    peak = None
    if searched:
        peak = {"users": f"{_rate_label(_top(a)['rate'])} vs {_rate_label(_top(b)['rate'])}", "rate": None}
    matched = [({"users": _rate_label(rate), "rate": rate}, rate) for rate in common]
    rows = _judged_rows(a, b, peak, matched, alpha, tolerance, seed)
    order = ["max_rps", *FIGURES]
    rows.sort(key=lambda r: (r["rate"] is not None, r["rate"] or 0.0, order.index(r["figure"])))
    differs, revisions = _setup_differs(a, b)
    return {
        "model": "open",
        "a": str(a.path),
        "b": str(b.path),
        "alpha": alpha,
        "tolerance": tolerance,
        "common_rates": common,
        "only_a": [r for r in rates_a if r not in common],
        "only_b": [r for r in rates_b if not any(math.isclose(r, c, rel_tol=1e-6) for c in common)],
        "rows": rows,
        "curves": _open_curves(a, b, common),
        "differs": differs,
        "revisions": revisions,
        "verdict": overall(rows),
    }


def overall(rows: Sequence[dict[str, Any]]) -> str:
    """slower where any judged figure is worse, faster where some are better and none worse, else same."""
    words = {r["verdict"] for r in rows}
    if words & {"slower", "more failures"}:
        return "slower"
    if words & {"faster", "fewer failures"}:
        return "faster"
    return "no real difference"


GATED = ("rps", "p95_ms")


def gate(baseline: Run, run: Run, max_regression: float, alpha: float = 0.05) -> dict[str, Any]:
    """`sweep --baseline`: the run against its baseline with max_regression as the tolerance; a regression is
    a step whose rps or p95 is slower by more than that, and the test says the difference is real. The
    record summary.json keeps as `baseline`."""
    result = compare(baseline, run, alpha=alpha, tolerance=max_regression)
    keys = ("users", "figure", "a", "b", "change", "ci_low", "ci_high", "p_adjusted")
    regressions = [
        {k: r.get(k) for k in keys} | ({"rate": r["rate"]} if r.get("rate") is not None else {})
        for r in result["rows"]
        if r["figure"] in GATED and r["verdict"] == "slower"
    ]
    common = {"common_rates": result["common_rates"]} if result.get("model") == "open" else {}
    return {
        "run": str(baseline.path),
        "max_regression": max_regression,
        "alpha": alpha,
        "common_users": result.get("common_users", []),
        **common,
        "verdict": "regression" if regressions else "pass",
        "compare_verdict": result["verdict"],
        "max_rps": result["curves"]["max_rps"],
        "regressions": regressions,
    }
