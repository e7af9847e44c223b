"""Pass/fail gates on step figures: 'p95<200ms', 'rps>500@50', 'fail_ratio<1%'."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from loadlab.console import UserError
from loadlab.inputs import finite_number

# metric in the expression -> field of a step record
METRICS = {
    "p50": "p50_ms",
    "p90": "p90_ms",
    "p95": "p95_ms",
    "p99": "p99_ms",
    "rps": "rps",
    "fail_ratio": "fail_ratio",
}
_LATENCY = {"p50", "p90", "p95", "p99"}
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_EXPR = re.compile(
    r"^\s*(?P<metric>[a-z_0-9]+)\s*(?P<op><=|>=|<|>)\s*(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|%)?"
    r"\s*(?:@\s*(?P<at>\d+))?\s*$"
)


@dataclass(frozen=True)
class Threshold:
    """One gate: a metric, a comparison and a limit, over every step or at one step."""

    expr: str
    metric: str
    op: str
    limit: float  # in the step record's unit: ms for latency, ratio 0..1 for fail_ratio
    at_users: int | None = None

    @property
    def field(self) -> str:
        return METRICS[self.metric]

    def holds(self, value: float | None) -> bool:
        """True when the figure meets the gate; a missing figure does not."""
        return value is not None and _OPS[self.op](value, self.limit)


def parse_threshold(expr: str) -> Threshold:
    """Parse one expression; a typo is a user error naming the expression."""
    m = _EXPR.match(expr) if isinstance(expr, str) else None
    if not m:
        raise UserError(
            f"threshold {expr!r}: expected METRIC<VALUE[@USERS], "
            "e.g. 'p95<200ms', 'rps>100', 'fail_ratio<0.01'"
        )
    metric, op, unit = m["metric"], m["op"], m["unit"]
    value = finite_number(m["value"], f"threshold {expr!r}")
    if metric not in METRICS:
        raise UserError(f"threshold {expr!r}: unknown metric {metric!r} (known: {', '.join(METRICS)})")
    if metric in _LATENCY:
        if unit is None:
            fix = f"{m['metric']}{op}{m['value']}ms"
            raise UserError(f"threshold {expr!r}: give latency a unit: write {fix} (or s)")
        if unit == "%":
            raise UserError(f"threshold {expr!r}: latency is in ms or s, not %")
        value = value * 1000.0 if unit == "s" else value
    elif metric == "fail_ratio":
        if unit in ("ms", "s"):
            raise UserError(f"threshold {expr!r}: fail_ratio is a ratio (0.01) or a percentage (1%)")
        value = value / 100.0 if unit == "%" else value
        if value > 1:
            raise UserError(f"threshold {expr!r}: fail_ratio is between 0 and 1 (or write 5%)")
    elif unit is not None:
        raise UserError(f"threshold {expr!r}: rps takes no unit")
    at = int(m["at"]) if m["at"] is not None else None
    if at is not None and at < 1:
        raise UserError(f"threshold {expr!r}: @{at} names no step (user counts start at 1)")
    return Threshold(expr=expr.strip(), metric=metric, op=op, limit=value, at_users=at)


def evaluate(thresholds: Sequence[Threshold], steps: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each gate against the finished steps: passed, and the steps that broke it with their figure."""
    results: list[dict[str, Any]] = []
    for t in thresholds:
        considered = [s for s in steps if t.at_users is None or s["users"] == t.at_users]
        failed = [
            {"step": s.get("index"), "users": s["users"], "value": s.get(t.field)}
            for s in considered
            if not t.holds(s.get(t.field))
        ]
        results.append(
            {
                "expr": t.expr,
                "passed": bool(considered) and not failed,
                "metric": t.metric,
                "limit": t.limit,
                "at_users": t.at_users,
                "failed_steps": failed,
                "checked_steps": len(considered),
            }
        )
    return results


def verdict(results: Sequence[dict[str, Any]]) -> str:
    """'pass' when every gate held (or there were none), else 'fail'."""
    return "pass" if all(r["passed"] for r in results) else "fail"
