"""Reading the curve: max throughput, the knee, a Universal Scalability Law fit, a recommendation.

A closed sweep (steps of user counts) is read against users: its knee is where throughput stops growing in
proportion while latency climbs, and the USL models throughput as a function of users. An open sweep
(steps that hold an arrival rate: each step has `rate`) is read against the intended rate: a step kept up
when it started its arrivals on time and completed them as fast as they came (kept_up); the knee is the
last rate that kept up before the first that did not, and the saturation rate the first where the target
fell behind. The USL, a model of users, is not fitted to an open run.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

# Throughput "keeps growing in proportion" while the marginal gain is at least this share of the
# proportional gain (users x2 -> throughput at least x1.5 with 0.5).
PROPORTIONAL_SHARE = 0.5
# Latency "climbs" when p50 or p95 rises by this ratio and by at least LATENCY_RISE_MIN_MS.
LATENCY_RISE_RATIO = 1.2
LATENCY_RISE_MIN_MS = 2.0
# The failure ratio above which a step is diagnosed `errors`, and never recommended.
ERROR_RATIO = 0.01
# The USL fit needs at least this many distinct user counts (three parameters, one degree of freedom).
USL_MIN_POINTS = 4
# The rule of whether an open step kept up with its arrivals, in one place (arrivals_behind): it started at
# least SENT_SHARE of the arrivals that came due in its window, fewer than LATE_SHARE of those it started
# late, dropped at most DROPPED_SHARE of them, ended at least SENT_SHARE of them, and its backlog (arrivals
# due, not yet completed) grew by no more than BACKLOG_GROWTH_SHARE of the rate per second (nor
# BACKLOG_GROWTH_MIN: a few requests in flight come and go).
SENT_SHARE = 0.98
LATE_SHARE = 0.05
DROPPED_SHARE = 0.01
BACKLOG_GROWTH_SHARE = 0.02
BACKLOG_GROWTH_MIN = 1.0
# The figures of arrivals_behind that say by themselves that a step fell behind (fell_behind); those that
# say its generator did not start the arrivals on time (the diagnosis's generator_behind); those that
# together say its target did not keep up with them (target_saturated, which fell_behind counts too).
FELL_BEHIND_FIGURES = frozenset({"sent_share", "dropped_share", "backlog_growth_per_s"})
LATE_FIGURES = frozenset({"sent_share", "late_share"})
TARGET_BEHIND_FIGURES = frozenset({"done_share", "backlog_growth_per_s"})
# Diagnosis codes that say an open step fell behind its rate, whatever its counts say.
FELL_BEHIND_CODES = ("target_saturated", "generator_behind")


def is_open(steps: Sequence[dict[str, Any]]) -> bool:
    """The steps held arrival rates (an open sweep) rather than user counts."""
    return any(s.get("rate") is not None for s in steps)


def load(step: dict[str, Any]) -> float:
    """What a step asked of the stack: its intended rate (open) or its users (closed)."""
    return float(step["rate"]) if step.get("rate") is not None else step["users"]


def rate_text(rate: float | None) -> str:
    """An intended rate as people write it: 200 -> '200', 12.5 -> '12.5'."""
    return "–" if rate is None else f"{float(rate):.10g}"


def curve(steps: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per distinct user count (or intended rate, for open steps), ascending; a repeated count
    (a spike's way back) keeps its best."""
    best: dict[float, dict[str, Any]] = {}
    for s in steps:
        if s.get("rps") is None:
            continue
        u = float(s["rate"]) if s.get("rate") is not None else int(s["users"])
        if u not in best or s["rps"] > best[u]["rps"]:
            best[u] = s
    return [best[u] for u in sorted(best)]


def max_rps(steps: Sequence[dict[str, Any]]) -> float | None:
    """The highest measured throughput of any step."""
    values = [s["rps"] for s in steps if s.get("rps") is not None]
    return max(values) if values else None


def closest_lighter(step: dict[str, Any], steps: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The step of `steps` with the most users below `step`'s (the latest of equals), if any; for an open
    step, the one with the highest intended rate below its rate."""
    if step.get("rate") is not None:
        lighter = [
            s
            for s in steps
            if s.get("rate") is not None and s["rate"] < step["rate"] and s.get("rps") is not None
        ]
        if not lighter or step.get("rps") is None:
            return None
        return max(lighter, key=lambda s: (s["rate"], s.get("index", 0)))
    lighter = [s for s in steps if s["users"] < step["users"] and s.get("rps") is not None]
    if not lighter or step.get("rps") is None:
        return None
    return max(lighter, key=lambda s: (s["users"], s.get("index", 0)))


def latency_rise(prev: dict[str, Any], cur: dict[str, Any]) -> dict[str, list[float]]:
    """The percentiles (p50, p95) that climbed from `prev` to `cur`: by LATENCY_RISE_RATIO, or for a step
    with fewer extra users by PROPORTIONAL_SHARE of the users' gain (a saturated closed system's latency
    grows in proportion to its users), and by at least LATENCY_RISE_MIN_MS."""
    user_gain, _ = gains(prev, cur)
    ratio = 1.0 + min(LATENCY_RISE_RATIO - 1.0, PROPORTIONAL_SHARE * user_gain)
    rose: dict[str, list[float]] = {}
    for key in ("p50_ms", "p95_ms"):
        a, b = prev.get(key), cur.get(key)
        if a is None or b is None:
            continue
        if b >= a * ratio and b - a >= LATENCY_RISE_MIN_MS:
            rose[key] = [a, b]
    return rose


def gains(prev: dict[str, Any], cur: dict[str, Any]) -> tuple[float, float | None]:
    """How much the users and the throughput grew from `prev` to `cur`, as shares (1.0: doubled); the
    throughput's gain is None from a step that carried nothing."""
    user_gain = cur["users"] / prev["users"] - 1.0
    rps_gain = cur["rps"] / prev["rps"] - 1.0 if prev["rps"] > 0 else None
    return user_gain, rps_gain


def grows_in_proportion(prev: dict[str, Any], cur: dict[str, Any], share: float = PROPORTIONAL_SHARE) -> bool:
    """Throughput kept up with the users: its gain is at least `share` of theirs (from a step that carried
    nothing, any throughput is growth)."""
    user_gain, rps_gain = gains(prev, cur)
    if rps_gain is None:
        return cur["rps"] > 0
    return rps_gain >= share * user_gain


def saturated(prev: dict[str, Any], cur: dict[str, Any]) -> dict[str, Any] | None:
    """The knee rule between a closed step and a lighter one: throughput did not grow in proportion to the
    users while latency climbed. The figures that say so (users, rps, both gains, the percentiles that
    rose), or None."""
    if grows_in_proportion(prev, cur):
        return None
    rose = latency_rise(prev, cur)
    return {**growth(prev, cur), **rose} if rose else None


def growth(prev: dict[str, Any], cur: dict[str, Any]) -> dict[str, Any]:
    """From `prev` to `cur`, as a bend's evidence names them: the users, the throughput, its gain and the
    users' (the gain that would have been proportional)."""
    user_gain, rps_gain = gains(prev, cur)
    return {
        "users": [prev["users"], cur["users"]],
        "rps": [prev["rps"], cur["rps"]],
        "rps_gain": round(rps_gain or 0.0, 3),
        "proportional_gain": round(user_gain, 3),
    }


def knee(steps: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The last user count before throughput stops growing in proportion while latency climbs.

    Without such a bend inside the sweep the knee is the largest count measured (found=False): the
    stack carried everything asked of it.
    """
    points = curve(steps)
    if not points:
        return {"users": None, "found": False}
    for prev, cur in zip(points, points[1:], strict=False):
        if saturated(prev, cur):
            return {
                "users": prev["users"],
                "found": True,
                "next_users": cur["users"],
                "rps": prev["rps"],
                "next_rps": cur["rps"],
                "p95_ms": prev.get("p95_ms"),
                "next_p95_ms": cur.get("p95_ms"),
            }
    last = points[-1]
    return {"users": last["users"], "found": False, "rps": last["rps"], "p95_ms": last.get("p95_ms")}


def _count(value: Any) -> bool:
    return isinstance(value, int | float)


def arrivals_behind(step: dict[str, Any]) -> dict[str, Any]:
    """Where an open step's counts broke the rule of keeping up with its arrivals, figure by figure ({} when
    none did): it started too few of the arrivals due (`sent_share`) or too many of them late
    (`late_share`), dropped too many (`dropped_share`), ended too few (`done_share`), or its backlog kept
    growing (`backlog_growth_per_s`). A figure the step lacks is not held against it."""
    out: dict[str, Any] = {}
    intended = step.get("intended")
    if _count(intended) and intended > 0:
        sent = step.get("sent")
        if _count(sent) and sent < SENT_SHARE * intended:
            out["sent_share"] = round(sent / intended, 4)
        done = step.get("done")
        if _count(done) and done < SENT_SHARE * intended:
            out["done_share"] = round(done / intended, 4)
        dropped = step.get("dropped")
        if _count(dropped) and dropped > DROPPED_SHARE * intended:
            out["dropped_share"] = round(dropped / intended, 4)
    sent, late = step.get("sent"), step.get("late")
    if _count(sent) and sent > 0 and _count(late) and late / sent >= LATE_SHARE:
        out["late_share"] = round(late / sent, 4)
    growth = (step.get("backlog") or {}).get("growth_per_s")
    rate = step.get("rate")
    if _count(growth) and _count(rate) and growth > max(BACKLOG_GROWTH_MIN, BACKLOG_GROWTH_SHARE * rate):
        out["backlog_growth_per_s"] = growth
    return out


def fell_behind(step: dict[str, Any]) -> dict[str, Any]:
    """Why an open step did not keep up with its rate, figure by figure ({} when it kept up): it started
    too few of its arrivals (`sent_share`), dropped too many (`dropped_share`), its backlog kept growing
    (`backlog_growth_per_s`: arrivals_behind), or its diagnosis says the target or the generator fell
    behind (`diagnosis`)."""
    out = {k: v for k, v in arrivals_behind(step).items() if k in FELL_BEHIND_FIGURES}
    codes = [c for c in step.get("diagnosis") or () if c in FELL_BEHIND_CODES]
    if codes:
        out["diagnosis"] = codes
    return out


def kept_up(step: dict[str, Any]) -> bool:
    """The open step started its arrivals and completed them as fast as they came (fell_behind is empty)."""
    return not fell_behind(step)


def generator_side(step: dict[str, Any]) -> bool:
    """The step's load generator held it back: its CPU, sockets, users or ports, a full host it runs on,
    or (open) it could not start the arrivals on time."""
    from loadlab.sweep.diagnosis import GENERATOR_CODES  # diagnosis reads this module

    codes = step.get("diagnosis") or ()
    full_host = ((step.get("diagnosis_evidence") or {}).get("host_cpu_saturated") or {}).get("runs_generator")
    return any(c in codes for c in (*GENERATOR_CODES, "generator_behind")) or bool(full_host)


def behind_text(behind: dict[str, Any]) -> str:
    """fell_behind's figures in words: 'sent 93% of its arrivals, backlog grew 12/s'."""
    parts = []
    if "sent_share" in behind:
        parts.append(f"sent {behind['sent_share']:.0%} of its arrivals")
    if "dropped_share" in behind:
        parts.append(f"dropped {behind['dropped_share']:.1%} of them")
    if "backlog_growth_per_s" in behind:
        parts.append(f"its backlog grew {behind['backlog_growth_per_s']:.3g}/s")
    parts += behind.get("diagnosis") or []
    return ", ".join(parts)


def open_knee(steps: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The last intended rate whose step kept up before the first that did not (found=True; `rate` is None
    when even the lightest fell behind), with why that one fell behind and on which side (`generator` or
    `target`). Without such a step the knee is the highest rate measured (found=False)."""
    points = curve(steps)
    if not points:
        return {"rate": None, "found": False}
    prev: dict[str, Any] | None = None
    for cur in points:
        behind = fell_behind(cur)
        if behind:
            return {
                "rate": None if prev is None else prev["rate"],
                "found": True,
                "next_rate": cur["rate"],
                "rps": None if prev is None else prev["rps"],
                "next_rps": cur["rps"],
                "p95_ms": None if prev is None else prev.get("p95_ms"),
                "next_p95_ms": cur.get("p95_ms"),
                "fell_behind": behind,
                "side": "generator" if generator_side(cur) else "target",
            }
        prev = cur
    last = points[-1]
    return {"rate": last["rate"], "found": False, "rps": last["rps"], "p95_ms": last.get("p95_ms")}


def saturation_rate(steps: Sequence[dict[str, Any]]) -> float | None:
    """The first intended rate whose step did not keep up because the target fell behind (its generator
    started the arrivals: no generator-side code); None when the target kept up with every rate."""
    for p in curve(steps):
        if fell_behind(p) and not generator_side(p):
            return p["rate"]
    return None


def usl_throughput(n: np.ndarray | float, lam: float, sigma: float, kappa: float) -> np.ndarray | float:
    """Gunther's Universal Scalability Law: X(N) = lambda N / (1 + sigma (N-1) + kappa N (N-1))."""
    return lam * n / (1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0))


def usl_fit(steps: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Fit sigma (contention) and kappa (coherency) to the measured curve; None with too few steps."""
    pts = [s for s in steps if s.get("rps") is not None and s["rps"] > 0]
    if len({int(s["users"]) for s in pts}) < USL_MIN_POINTS:
        return None
    n = np.array([float(s["users"]) for s in pts])
    x = np.array([float(s["rps"]) for s in pts])
    lam0 = float(np.max(x[n == n.min()] / n.min()))
    best: tuple[float, np.ndarray] | None = None
    for sigma0, kappa0 in ((0.05, 1e-4), (0.3, 1e-3), (0.01, 1e-6), (0.8, 1e-2)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                params, _ = curve_fit(
                    usl_throughput,
                    n,
                    x,
                    p0=(lam0, sigma0, kappa0),
                    bounds=([1e-9, 0.0, 0.0], [np.inf, 1.0, np.inf]),
                    maxfev=20000,
                )
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((usl_throughput(n, *params) - x) ** 2))
        if best is None or sse < best[0]:
            best = (sse, params)
    if best is None:
        return None
    sse, (lam, sigma, kappa) = best
    sst = float(np.sum((x - x.mean()) ** 2))
    r2 = 1.0 - sse / sst if sst > 0 else 1.0
    peak_users: int | None
    if kappa > 1e-12 and sigma < 1.0:
        n_star = math.sqrt((1.0 - sigma) / kappa)
        peak_users = max(1, round(n_star))
        peak_rps = float(usl_throughput(n_star, lam, sigma, kappa))
    else:
        # No coherency penalty: throughput approaches lambda/sigma and never turns down.
        peak_users = None
        peak_rps = float(lam / sigma) if sigma > 1e-6 else None
    return {
        "sigma": round(float(sigma), 6),
        "kappa": round(float(kappa), 8),
        "lambda": round(float(lam), 3),
        "peak_users": peak_users,
        "peak_rps": round(peak_rps, 1) if peak_rps is not None else None,
        "r2": round(r2, 4),
        "points": len(pts),
    }


def _p95_limit(good: dict[str, Any], p95_limit_ms: float | None) -> float | None:
    """The p95 a recommendation promises: the gate's, else the recommended step's rounded up a little."""
    if p95_limit_ms is not None:
        return p95_limit_ms
    if good.get("p95_ms") is not None:
        return float(_nice_ceiling(float(good["p95_ms"]) * 1.05))
    return None


def _nice_ceiling(ms: float) -> int:
    """Round a latency up to a figure people quote: 37 -> 40, 212 -> 250, 1340 -> 1500."""
    if ms <= 0:
        return 1
    magnitude = 10 ** math.floor(math.log10(ms))
    for step in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 10):
        if ms <= step * magnitude:
            return int(math.ceil(step * magnitude))
    return int(math.ceil(ms))


def _named(step: dict[str, Any]) -> str:
    """A step's load as a recommendation names it: '20 users', or for an open step '400 req/s'."""
    return f"{rate_text(step['rate'])} req/s" if step.get("rate") is not None else f"{step['users']} users"


def _failed_at(checks: Sequence[dict[str, Any]], open_run: bool) -> dict[float, list[str]]:
    """Each load (a user count, or an open run's intended rate) -> the thresholds its step failed."""
    failed: dict[float, list[str]] = {}
    for check in checks:
        for f in check.get("failed_steps") or ():
            at = f.get("rate") if open_run else f["users"]
            if at is not None:
                failed.setdefault(float(at) if open_run else int(at), []).append(check["expr"])
    return failed


def _why_not(p: dict[str, Any], failed: dict[float, list[str]], p95_limit_ms: float | None) -> str | None:
    """Why a step cannot be recommended (an open one fell behind its rate; it had errors, failed a
    threshold, broke the p95 gate), or None."""
    behind = fell_behind(p) if p.get("rate") is not None else {}
    if behind:
        side = "the load generator" if generator_side(p) else "the target"
        return f"did not keep up ({side}: {behind_text(behind)})"
    ratio = p.get("fail_ratio") or 0.0
    if ratio >= ERROR_RATIO or "errors" in (p.get("diagnosis") or ()):
        return f"had errors (fail {ratio:.1%})"
    if failed.get(load(p)):
        return f"failed {', '.join(failed[load(p)])}"
    if p95_limit_ms is not None and (p.get("p95_ms") is None or p["p95_ms"] >= p95_limit_ms):
        return f"had p95 {p.get('p95_ms')} ms"
    return None


def next_user_counts(points: Sequence[dict[str, Any]]) -> list[int]:
    """Where to look for a knee the sweep did not reach: two more steps, doubling from the largest."""
    top = int(points[-1]["users"])
    return [2 * top, 4 * top]


def next_rates(points: Sequence[dict[str, Any]]) -> list[float]:
    """Where to look for the limit an open sweep did not reach: two more rates, doubling from the highest."""
    top = float(points[-1]["rate"])
    return [2 * top, 4 * top]


def _no_knee(good: dict[str, Any], points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The recommendation of a sweep whose every step was healthy: no limit found, and where to look next."""
    if good.get("rate") is None:
        key, suggest, p95_from = "users", next_user_counts(points), ""
        reached = f"throughput still grew up to {_named(good)}, the largest step"
        tries = f"{suggest[0]} and {suggest[1]} users"
    else:
        key, suggest, p95_from = "rate", next_rates(points), " from intended start"
        reached = f"every step kept up to {_named(good)}, the highest rate"
        tries = f"{rate_text(suggest[0])} and {rate_text(suggest[1])} req/s"
    return {
        key: None,
        "knee_found": False,
        f"measured_{key}": good[key],
        "next_users" if key == "users" else "next_rates": suggest,
        "text": f"no knee found: {reached} ({good['rps']:.0f} rps, p95 {good.get('p95_ms')} ms{p95_from}), "
        f"so the limit lies beyond this sweep; try {tries} next",
    }


def recommendation(
    steps: Sequence[dict[str, Any]],
    knee_users: int | None,
    p95_limit_ms: float | None = None,
    checks: Sequence[dict[str, Any]] = (),
) -> dict[str, Any] | None:
    """'stay at or below N users for p95 under X ms' only from what was measured: the last healthy step
    (no errors, every threshold held, under the p95 gate) below the first unhealthy one, never past the knee;
    without a knee or an unhealthy step the sweep found no limit, and says where to look next.

    Open steps give 'stay at or below R req/s': the highest rate of the run of healthy steps from the
    lightest (kept up with its arrivals too; p95 from each request's intended start). The knee of an open
    run is its first unhealthy rate (`knee_users` is not used); when every step was healthy the sweep found
    no limit, and says which rates to try next (`next_rates`)."""
    open_run = is_open(steps)
    points = curve(steps)
    if not points:
        return None
    key = "rate" if open_run else "users"
    good, bad, reason = None, None, None
    failed = _failed_at(checks, open_run)
    for p in points:  # ascending users (rates): the run of healthy steps from the bottom
        reason = _why_not(p, failed, p95_limit_ms)
        if reason is not None:
            bad = p
            break
        good = p
    if good is None:
        return {
            key: None,
            "p95_ms": p95_limit_ms,
            "text": f"no step can be recommended: the lightest, {_named(points[0])}, {reason}",
        }
    bend = {"found": False} if open_run else knee(steps)
    if bend["found"] and knee_users is not None and good["users"] > knee_users:
        # Past the knee more users only wait longer: recommend the knee even when every gate still holds.
        good = next((p for p in points if p["users"] == knee_users), good)
    elif bad is None and not bend["found"]:
        return _no_knee(good, points)
    limit = _p95_limit(good, p95_limit_ms)
    if limit is None:
        return None
    text = f"stay at or below {_named(good)} for p95 under {limit:g} ms (about {good['rps']:.0f} rps)"
    if bad is not None and bad[key] > good[key] and (not bend["found"] or bad["users"] <= bend["next_users"]):
        text += f"; {_named(bad)} {reason}"
    return {key: good[key], "p95_ms": limit, "rps": good["rps"], "text": text}
