"""Pass/fail gates on step figures: 'p95<200ms', 'rps>500@50', 'fail_ratio<1%', 'p99<200ms@300rps'.

`@N` judges the step at exactly N users (a closed sweep); `@Nrps` (or `@N/s`) the step at exactly the
intended arrival rate N per second (an open sweep). A gate without `@` holds on every step.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from loadlab.errors import UserError
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
    r"\s*(?:@\s*(?P<at>[^@]*?))?\s*$"
)
# What may follow '@': a user count, or an arrival rate with its unit.
_AT = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>rps|req/s|/s)?$")


@dataclass(frozen=True)
class Threshold:
    """One gate: a metric, a comparison and a limit, over every step or at one step."""

    expr: str
    metric: str
    op: str
    limit: float  # in the step record's unit: ms for latency, ratio 0..1 for fail_ratio
    at_users: int | None = None
    at_rate: float | None = None  # judged on the open step at exactly this intended rate (per second)

    @property
    def field(self) -> str:
        return METRICS[self.metric]

    @property
    def everywhere(self) -> bool:
        """The gate holds on every step (an SLO), not at one named step."""
        return self.at_users is None and self.at_rate is None

    def judges(self, step: dict[str, Any]) -> bool:
        """The gate is judged on this step: every step, or the one at its user count (closed steps only:
        an open step's users are the pool that served its rate) or at its intended rate."""
        if self.at_rate is not None:
            return step.get("rate") is not None and math.isclose(float(step["rate"]), self.at_rate)
        if self.at_users is not None:
            return step.get("rate") is None and step["users"] == self.at_users
        return True

    def holds(self, value: float | None) -> bool:
        """True when the figure meets the gate; a missing figure does not."""
        return value is not None and _OPS[self.op](value, self.limit)


def parse_threshold(expr: str) -> Threshold:
    """Parse one expression; a typo is a user error naming the expression."""
    m = _EXPR.match(expr) if isinstance(expr, str) else None
    if not m:
        raise UserError(
            f"threshold {expr!r}: expected METRIC<VALUE[@USERS|@RATErps], "
            "e.g. 'p95<200ms', 'rps>100', 'fail_ratio<0.01', 'p99<200ms@300rps'"
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
    at_users, at_rate = _at(expr, m["at"])
    return Threshold(expr=expr.strip(), metric=metric, op=op, limit=value, at_users=at_users, at_rate=at_rate)


def _at(expr: str, text: str | None) -> tuple[int | None, float | None]:
    """The step after '@': (users, None) for '@50', (None, rate) for '@300rps' or '@300/s'."""
    if text is None:
        return None, None
    m = _AT.match(text.strip())
    if not m:
        raise UserError(
            f"threshold {expr!r}: @{text} names no step: write @USERS (@50) or an arrival rate (@300rps)"
        )
    if m["unit"] is not None:
        rate = finite_number(m["n"], f"threshold {expr!r}")
        if rate <= 0:
            raise UserError(f"threshold {expr!r}: @{text} names no step (arrival rates are above 0)")
        return None, rate
    if "." in m["n"]:
        raise UserError(
            f"threshold {expr!r}: @{text} names no step "
            f"(user counts are whole; for a rate write @{m['n']}rps)"
        )
    users = int(m["n"])
    if users < 1:
        raise UserError(f"threshold {expr!r}: @{users} names no step (user counts start at 1)")
    return users, None


def evaluate(thresholds: Sequence[Threshold], steps: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each gate against the finished steps: passed, and the steps that broke it with their figure."""
    results: list[dict[str, Any]] = []
    for t in thresholds:
        considered = [s for s in steps if t.judges(s)]
        failed = [
            {"step": s.get("index"), "users": s["users"], "value": s.get(t.field)}
            | ({"rate": s["rate"]} if s.get("rate") is not None else {})
            for s in considered
            if not t.holds(s.get(t.field))
        ]
        result = {
            "expr": t.expr,
            "passed": bool(considered) and not failed,
            "metric": t.metric,
            "limit": t.limit,
            "at_users": t.at_users,
            "failed_steps": failed,
            "checked_steps": len(considered),
        }
        if t.at_rate is not None:
            result["at_rate"] = t.at_rate
        results.append(result)
    return results


def verdict(results: Sequence[dict[str, Any]]) -> str:
    """'pass' when every gate held (or there were none), else 'fail'."""
    return "pass" if all(r["passed"] for r in results) else "fail"
