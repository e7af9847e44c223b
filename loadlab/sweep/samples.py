"""A step's samples: what happened inside its window second by second, not only the window's aggregate.

Locust's workers send the master what they did since their last report (requests, failures and the
response-time counts Locust keeps, by rounded ms); the lab's plugin has them report every second and keeps
each report with its arrival time since the master's stats were last reset, at `/loadlab/reports` on the
master's web UI (exporters/locust.py). At the end of a step's window the sweep reads them and writes
`samples/step-N.json` in the run folder, as the master had them.

`series()` turns them into one value per interval (1 s): requests per second, failed share and p50/p95/p99
(an open step's from each request's intended start, and its backlog).
A report covers the time since the same worker's previous one (a first report, one report interval), at an
even rate: an interval gets each report's requests in proportion to how much of the report's span it
covers, so a report that arrives a little late does not move requests from one interval to the next, and
the part of a first report from before the window is left out. The series ends where every worker's
reports still cover the window, so its last interval is not cut short by a report still on its way. An
interval's latencies are those of the reports that arrived in it (Locust's own rounded values, so its p95
is Locust's p95 of them). Samples of one window are autocorrelated (a slow second is followed by a slow
second); `loadlab compare` respects that.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loadlab.errors import UserError

SAMPLES_DIR = "samples"
INTERVAL_S = 1.0
# Seconds between a Locust worker's reports to its master: the lab's plugin (exporters/locust.py) sets it in
# every worker it is loaded in (Locust's own default is 3), so each report is one second's sample.
REPORT_INTERVAL_S = 1.0
SOURCE = "Locust worker reports (/loadlab/reports)"
FIGURES = ("rps", "fail_ratio", "p50_ms", "p95_ms", "p99_ms")


def from_master(answer: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The step's samples from the master's /loadlab/reports answer (None: the master has no such route,
    or no worker reported), times in seconds since the window began (the master's stats reset)."""
    if not answer or not isinstance(answer.get("reports"), list) or not answer["reports"]:
        return None
    start = float(answer["reset_at"])
    reports = [
        {
            "t": round(float(r["time"]) - start, 3),
            "worker": str(r.get("worker", "")),
            "requests": int(r.get("requests") or 0),
            "failures": int(r.get("failures") or 0),
            "response_times": {str(k): int(v) for k, v in (r.get("response_times") or {}).items()},
            **({"open": _open_report(r["open"])} if isinstance(r.get("open"), dict) else {}),
        }
        for r in answer["reports"]
    ]
    held = answer.get("open") if isinstance(answer.get("open"), dict) else None
    return {
        "source": SOURCE,
        "interval_s": INTERVAL_S,
        "report_interval_s": answer.get("report_interval_s"),
        "window_start": round(start, 3),  # the master's clock
        "window_s": round(float(answer["now"]) - start, 3),
        "reports": sorted(reports, key=lambda r: (r["t"], r["worker"])),
        **({"open": held} if held and float(held.get("rate") or 0) > 0 else {}),
    }


def covered_span(data: Mapping[str, Any] | None) -> float | None:
    """The seconds the window's reports cover: each report covers one report interval before it, so a
    worker's reports cover their count times the interval (the mean over the workers still reporting at
    the end). A window read a little after a report came in holds one report more than its length: its
    counts are per this span, not per the nominal window. None without reports."""
    if not data or not data.get("reports"):
        return None
    every = float(data.get("report_interval_s") or INTERVAL_S)
    counts: dict[str, int] = {}
    last: dict[str, float] = {}
    for r in data["reports"]:
        counts[r["worker"]] = counts.get(r["worker"], 0) + 1
        last[r["worker"]] = max(last.get(r["worker"], 0.0), float(r["t"]))
    latest = max(last.values())
    alive = [w for w, t in last.items() if t >= latest - 2 * every]
    return sum(counts[w] for w in alive) * every / len(alive)


_OPEN_COUNTS = ("due", "sent", "done", "late", "waiting", "in_flight", "intended_failures")


def _open_report(o: Mapping[str, Any]) -> dict[str, Any]:
    """A worker's open-model report as kept (exporters/locust_open.py: Arrivals.report)."""
    return {
        **{k: int(o.get(k) or 0) for k in _OPEN_COUNTS},
        "rate": float(o.get("rate") or 0.0),
        "lateness": {str(k): int(v) for k, v in (o.get("lateness") or {}).items()},
        "intended": {str(k): int(v) for k, v in (o.get("intended") or {}).items()},
    }


def _backlog_at(reports: list[dict[str, Any]]) -> list[tuple[float, int]]:
    """(time, arrivals due and not yet answered over all workers) after each report, from each worker's
    latest report (waiting for a free user, or in flight)."""
    latest: dict[str, int] = {}
    out = []
    for r in reports:
        if "open" in r:
            latest[r["worker"]] = r["open"]["waiting"] + r["open"]["in_flight"]
            out.append((float(r["t"]), sum(latest.values())))
    return out


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (t, value) points; None with fewer than two distinct times."""
    if len({t for t, _ in points}) < 2:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (v - mv) for t, v in points) / den


def open_figures(data: Mapping[str, Any], window_s: float) -> dict[str, Any] | None:
    """An open step's figures from its samples (rates per `window_s`, the span its reports cover): arrivals
    due in the window (`intended`), iterations sent,
    ended (`done`) and late, `dropped` (due in the window and never sent), how late they started (p99), the
    latency from intended start (p50..max, ms) and the backlog at the window's start and end and its slope;
    None where no worker reported open figures."""
    reports = [r for r in data.get("reports") or [] if "open" in r]
    if not reports:
        return None
    totals = {k: sum(r["open"][k] for r in reports) for k in ("due", "sent", "done", "late")}
    lateness: dict[int, int] = {}
    intended: dict[int, int] = {}
    for r in reports:
        for ms, n in r["open"]["lateness"].items():
            lateness[int(ms)] = lateness.get(int(ms), 0) + n
        for ms, n in r["open"]["intended"].items():
            intended[int(ms)] = intended.get(int(ms), 0) + n
    answered = sum(intended.values())
    started = sum(lateness.values())
    backlog = _backlog_at(sorted(reports, key=lambda r: r["t"]))
    workers = {r["worker"] for r in reports}
    # The backlog counts once every worker has reported: before that it misses the others' part.
    seen: set[str] = set()
    full = []
    for (t, value), r in zip(backlog, sorted(reports, key=lambda r: r["t"]), strict=True):
        seen.add(r["worker"])
        if seen == workers:
            full.append((t, value))
    growth = slope(full)
    return {
        "late_after_ms": (data.get("open") or {}).get("late_after_ms"),
        "intended": totals["due"],
        "sent": totals["sent"],
        "sent_rate": round(totals["sent"] / window_s, 2) if window_s > 0 else None,
        "due_rate": round(totals["due"] / window_s, 2) if window_s > 0 else None,
        "done": totals["done"],
        "dropped": max(0, totals["due"] - totals["sent"]),
        "late": totals["late"],
        "lateness_p99_ms": percentile(lateness, started, 0.99) if started else None,
        **{
            name: (percentile(intended, answered, q) if answered else None)
            for name, q in (("p50_ms", 0.5), ("p90_ms", 0.9), ("p95_ms", 0.95), ("p99_ms", 0.99))
        },
        "max_ms": max(intended) if intended else None,
        "backlog": {
            "start": full[0][1] if full else None,
            "end": full[-1][1] if full else None,
            "growth_per_s": round(growth, 2) if growth is not None else None,
        },
    }


def path_of(run_dir: Path, index: int) -> Path:
    """samples/step-N.json of the step with this index (N counts from 1, as the progress lines do)."""
    return run_dir / SAMPLES_DIR / f"step-{index + 1}.json"


def write(run_dir: Path, index: int, data: Mapping[str, Any]) -> None:
    """The step's samples, written whole (a temporary file renamed over the old one)."""
    path = path_of(run_dir, index)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(exist_ok=True)
        tmp.write_text(json.dumps(data, separators=(",", ":")) + "\n")
        tmp.replace(path)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def read(run_dir: Path, index: int) -> dict[str, Any] | None:
    """A step's samples as written, or None where the step has none (a run from before samples, a
    master without the lab's plugin); a damaged file is the user's to know about."""
    path = path_of(run_dir, index)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a samples file this code wrote ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("reports"), list):
        raise UserError(f"{path}: not a samples file this code wrote (no reports)")
    return data


def percentile(counts: Mapping[int, int], total: int, q: float) -> int:
    """Locust's percentile of rounded response times (locust.stats.calculate_response_time_percentile,
    restated so this process need not import Locust, which patches the standard library with gevent)."""
    wanted = int(total * q)
    seen = 0
    for ms in sorted(counts, reverse=True):
        seen += counts[ms]
        if total - seen <= wanted:
            return ms
    return 0


def series(data: Mapping[str, Any]) -> dict[str, list[float | None]]:
    """One value per whole interval of the window: {"t": interval ends, "rps", "fail_ratio", "p50_ms",
    "p95_ms", "p99_ms"}; an interval that answered nothing has no failed share and no latency (None)."""
    interval = float(data.get("interval_s") or INTERVAL_S)
    every = float(data.get("report_interval_s") or interval)
    reports = sorted(data.get("reports") or [], key=lambda r: r["t"])
    # The seconds every worker's reports cover: up to the earliest last report of the workers still
    # reporting at the end (a worker lost mid-window stops counting, it does not cut the series short).
    last: dict[str, float] = {}
    for r in reports:
        last[r["worker"]] = float(r["t"])
    latest = max(last.values(), default=0.0)
    covered = min((t for t in last.values() if t >= latest - 2 * every), default=0.0)
    n = int(math.floor(min(covered, float(data.get("window_s") or covered)) / interval + 1e-9))
    requests = [0.0] * n
    failures = [0.0] * n
    latencies: list[dict[int, int]] = [{} for _ in range(n)]
    previous: dict[str, float] = {}
    for r in reports:
        end = float(r["t"])
        # A worker's first report covers one report interval, partly before the window (Locust's workers
        # are not told of the master's reset): only its share inside the window counts.
        begin = min(previous.get(r["worker"], end - every), end)
        previous[r["worker"]] = end
        span = end - begin
        for k in range(max(0, int(begin // interval)), min(n, int(end // interval) + 1)):
            if k < 0:
                continue
            lo, hi = max(begin, k * interval), min(end, (k + 1) * interval)
            share = (hi - lo) / span if span > 0 else (1.0 if lo <= end <= hi else 0.0)
            if share > 0:
                requests[k] += r["requests"] * share
                failures[k] += r["failures"] * share
        k = max(0, math.ceil(end / interval - 1e-9) - 1)  # the interval it arrived in; its end belongs to it
        if k < n:
            # An open step's latencies are from each request's intended start, as its aggregate's are.
            times = r["open"]["intended"] if "open" in r else r["response_times"]
            for ms, count in times.items():
                latencies[k][int(ms)] = latencies[k].get(int(ms), 0) + int(count)
    out: dict[str, list[float | None]] = {"t": [], **{f: [] for f in FIGURES}}
    for k in range(n):
        out["t"].append((k + 1) * interval)
        out["rps"].append(round(requests[k] / interval, 3))
        out["fail_ratio"].append(round(failures[k] / requests[k], 4) if requests[k] > 0 else None)
        answered = sum(latencies[k].values())
        for name, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
            out[name].append(float(percentile(latencies[k], answered, q)) if answered else None)
    backlog = _backlog_at(reports)
    if backlog:  # an open step: the backlog at each interval's end (the latest report before it)
        out["backlog"] = [
            float(next((v for t, v in reversed(backlog) if t <= end), backlog[0][1])) for end in out["t"]
        ]
    return out
