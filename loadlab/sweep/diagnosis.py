"""What gave out first in a step, in summary.json's diagnosis vocabulary, with the figures behind each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loadlab.sweep.analysis import LATENCY_RISE_MIN_MS, LATENCY_RISE_RATIO, PROPORTIONAL_SHARE

VOCABULARY = (
    "ok",
    "generator_cpu_bound",
    "client_connection_capped",
    "target_saturated",
    "target_cpu_bound",
    "db_connections_saturated",
    "errors",
)

# A Python process (a Locust worker, one app instance) cannot use more than one core; this near is "full".
CORE_FULL = 0.85
# A process that ran or waited for a CPU this share of the window never idled: it wanted a full core.
ALWAYS_RUNNABLE = 0.9
# Client sockets "well below" the users: fewer than this share of them...
SOCKETS_SHORT_SHARE = 0.8
# ...while more requests are in flight than sockets can carry (Little's law: rps x mean response time).
IN_FLIGHT_OVER_SOCKETS = 1.25
# A connection limit is saturated at this share of its maximum.
CONNECTIONS_FULL = 0.9
# The failure ratio above which a step is diagnosed `errors`.
ERROR_RATIO = 0.01


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(float(x), nd)


def generator_cpu(step: dict[str, Any]) -> dict[str, Any] | None:
    """A Locust process near one full core, or runnable all window on a host too busy to give it one."""
    res = step.get("resources") or {}
    per_process = res.get("loadgen_cpu") or {}
    runnable = res.get("loadgen_runnable") or {}
    for name, cores in sorted(per_process.items(), key=lambda kv: -kv[1]):
        if cores >= CORE_FULL:
            return {"process": name, "cpu": _r(cores), "limit": CORE_FULL}
    for name, share in sorted(runnable.items(), key=lambda kv: -kv[1]):
        if share >= ALWAYS_RUNNABLE:
            return {
                "process": name,
                "cpu": _r(per_process.get(name)),
                "runnable": _r(share),
                "limit": ALWAYS_RUNNABLE,
                "host_cpu": res.get("host_cpu"),
            }
    return None


def connection_cap(step: dict[str, Any]) -> dict[str, Any] | None:
    """Fewer client sockets than users, while requests wait for one (more in flight than sockets)."""
    sockets, users = step.get("client_sockets"), step["users"]
    rps, avg_ms = step.get("rps"), step.get("avg_ms")
    if sockets is None or rps is None or avg_ms is None:
        return None
    in_flight = rps * avg_ms / 1000.0
    if sockets < SOCKETS_SHORT_SHARE * users and in_flight >= IN_FLIGHT_OVER_SOCKETS * max(sockets, 1):
        return {
            "users": users,
            "client_sockets": sockets,
            "in_flight": _r(in_flight, 1),
            "sockets_per_user": _r(sockets / users),
        }
    return None


def target_cpu(step: dict[str, Any]) -> dict[str, Any] | None:
    """A target process at a full core, or the target's processes filling every core of the host."""
    res = step.get("resources") or {}
    per_process = res.get("target_cpu_max_process") or {
        g: v for g, v in (res.get("target_cpu") or {}).items() if g.startswith("app-")
    }
    if per_process:
        name, cores = max(per_process.items(), key=lambda kv: kv[1])
        if cores >= CORE_FULL:
            return {"process": name, "cpu": _r(cores), "limit": CORE_FULL}
    total, host_cores = step.get("target_cpu"), res.get("host_cores")
    if total is not None and host_cores and total >= CORE_FULL * host_cores:
        return {"target_cpu": _r(total), "host_cores": host_cores, "limit": _r(CORE_FULL * host_cores)}
    return None


def db_connections(step: dict[str, Any]) -> dict[str, Any] | None:
    """PostgreSQL near max_connections, or an app instance's DB pool busy all window."""
    res = step.get("resources") or {}
    used, most = res.get("pg_connections"), res.get("pg_max_connections")
    if used is not None and most and used >= CONNECTIONS_FULL * most:
        return {"pg_connections": used, "pg_max_connections": most, "limit_share": CONNECTIONS_FULL}
    for instance, pool in (res.get("db_pool") or {}).items():
        in_use, size = pool.get("in_use_avg"), pool.get("size")
        if in_use is not None and size and in_use >= CONNECTIONS_FULL * size:
            return {"instance": instance, "pool_in_use_avg": _r(in_use, 2), "pool_size": size}
    return None


def errors(step: dict[str, Any]) -> dict[str, Any] | None:
    """Failures above one percent of requests."""
    ratio = step.get("fail_ratio")
    if ratio is not None and ratio >= ERROR_RATIO:
        return {"fail_ratio": _r(ratio, 4), "failures": step.get("failures"), "limit": ERROR_RATIO}
    return None


def saturation(step: dict[str, Any], earlier: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Against the closest lighter step: throughput did not keep up with users while latency climbed."""
    lighter = [s for s in earlier if s["users"] < step["users"] and s.get("rps") is not None]
    if not lighter or step.get("rps") is None:
        return None
    prev = max(lighter, key=lambda s: (s["users"], s.get("index", 0)))
    user_gain = step["users"] / prev["users"] - 1.0
    rps_gain = step["rps"] / prev["rps"] - 1.0 if prev["rps"] > 0 else 0.0
    if rps_gain >= PROPORTIONAL_SHARE * user_gain:
        return None
    rose = {}
    for key in ("p50_ms", "p95_ms"):
        a, b = prev.get(key), step.get(key)
        if a is not None and b is not None and b >= a * LATENCY_RISE_RATIO and b - a >= LATENCY_RISE_MIN_MS:
            rose[key] = [a, b]
    if not rose:
        return None
    return {
        "users": [prev["users"], step["users"]],
        "rps": [prev["rps"], step["rps"]],
        "rps_gain": _r(rps_gain),
        "proportional_gain": _r(user_gain),
        **{f"{k}": v for k, v in rose.items()},
    }


def diagnose(step: dict[str, Any], earlier: Sequence[dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """The step's diagnosis codes and, per code, the figures that triggered it; ['ok'] when nothing did."""
    found: dict[str, dict[str, Any]] = {}
    checks = (
        ("generator_cpu_bound", generator_cpu(step)),
        ("client_connection_capped", connection_cap(step)),
        ("target_cpu_bound", target_cpu(step)),
        ("db_connections_saturated", db_connections(step)),
        ("errors", errors(step)),
    )
    for code, evidence in checks:
        if evidence is not None:
            found[code] = evidence
    # The target is only "saturated" when the generator could have pushed harder.
    if "generator_cpu_bound" not in found and "client_connection_capped" not in found:
        evidence = saturation(step, earlier)
        if evidence is not None:
            found["target_saturated"] = evidence
    codes = [c for c in VOCABULARY if c in found] or ["ok"]
    return codes, found
