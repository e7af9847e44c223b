"""The capacity search (`--users auto`): double the users until something gives out, then narrow.

The search starts at `start` users and doubles while every step is healthy. A step is not healthy when its
diagnosis names anything but `ok` (throughput stopped growing with latency climbing, errors, a saturated
generator, host CPU, DB pool, ports, descriptors or listen queue), when a threshold without `@N` (an SLO
over every step) breaks on it, or when its throughput bent (grew by less than BEND_SHARE of the users' gain
over the closest lighter step). The first unhealthy step brackets the limit: the search then measures the
middle of [last healthy, first unhealthy] until the bracket is no wider than `resolution` of the healthy
end's users (at least one user). It stops at `max_users` when nothing gave out by then.

The next user count is computed from the finished steps alone, so `--resume` continues a search exactly
where it stopped. A threshold with `@N` is judged, as in a list sweep, on the step at exactly N users: the
search measures those steps first, and they count among its steps like any other.

An open sweep's search (RateSearchSpec, next_rate) steps the intended arrival rate the same way: it starts
at `start` per second, doubles while every step is healthy, narrows between the last healthy rate and the
first unhealthy one until the bracket is no wider than `resolution` of the healthy rate, and stops at
`max_rate`. An open step is healthy when its diagnosis is only `ok`, every threshold without `@` holds on
it, and it kept up with its arrivals (analysis.kept_up: started them on time, dropped almost none, its
backlog did not grow); a threshold `@Nrps` is judged on the step at exactly N per second, measured first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from loadlab.errors import UserError
from loadlab.inputs import finite_number
from loadlab.sweep.analysis import (
    behind_text,
    closest_lighter,
    fell_behind,
    grows_in_proportion,
    growth,
    rate_text,
)
from loadlab.sweep.diagnosis import GENERATOR_CODES
from loadlab.sweep.thresholds import Threshold

DEFAULT_START = 5
DEFAULT_MAX_USERS = 1000
DEFAULT_RESOLUTION = 0.1
DEFAULT_START_RATE = 10.0
DEFAULT_MAX_RATE = 10_000.0
# A narrowing step's rate keeps this many significant digits (425, 1010, 0.75 per second).
RATE_DIGITS = 3

# While throughput grows by at least this share of the users' gain the search keeps doubling; below it the
# curve bends (stricter than the diagnosis's target_saturated, PROPORTIONAL_SHARE), so a doubling step cannot
# slip far past the knee and the narrowing starts below it.
BEND_SHARE = 0.6
# What gave out, in words, per diagnosis code (the verdict's last clause).
_GAVE_OUT = {
    "generator_cpu_bound": "the load generator's CPU",
    "client_connection_capped": "the generator's client connections (fewer sockets than users)",
    "load_short": "the load: Locust ran fewer users than asked (a worker was lost)",
    "target_saturated": "the target: throughput stopped growing while latency climbed",
    "target_cpu_bound": "the target's CPU",
    "host_cpu_saturated": "a host's CPU",
    "db_connections_saturated": "the database connections",
    "ephemeral_ports_exhausted": "the generator's ephemeral ports",
    "fds_exhausted": "file descriptors",
    "listen_queue_overflow": "a listen queue",
    "component_down": "a component went down",
    "errors": "errors",
    "throughput_bend": f"throughput: it grew by less than {BEND_SHARE:.0%} of the users' gain",
    "generator_behind": "the load generator could not start the arrivals on time",
    "fell_behind": "the arrivals: the step did not keep up with its rate",
}


@dataclass
class SearchSpec:
    """How the capacity search runs: where it starts, where it gives up, how narrow it gets."""

    start: int = DEFAULT_START
    max_users: int = DEFAULT_MAX_USERS
    resolution: float = DEFAULT_RESOLUTION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self, max_allowed: int) -> SearchSpec:
        for name in ("start", "max_users"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= max_allowed:
                raise UserError(
                    f"search.{name}: expected a whole number of users 1..{max_allowed}, got {value!r}"
                )
        if self.start > self.max_users:
            raise UserError(f"search.start: {self.start} users is above search.max_users ({self.max_users})")
        self.resolution = parse_resolution(self.resolution, "search.resolution")
        return self


@dataclass
class RateSearchSpec:
    """How an open sweep's capacity search runs: its first intended rate, where it gives up (both arrivals
    per second), how narrow it gets (a share of the rate)."""

    start: float = DEFAULT_START_RATE
    max_rate: float = DEFAULT_MAX_RATE
    resolution: float = DEFAULT_RESOLUTION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self, max_allowed: float = 1e7) -> RateSearchSpec:
        for name in ("start", "max_rate"):
            value = getattr(self, name)
            number = finite_number(value, f"search.{name}", above=0, what="an arrival rate per second")
            if number > max_allowed:
                raise UserError(f"search.{name}: {value!r} per second is above {max_allowed:g}")
            setattr(self, name, number)
        if self.start > self.max_rate:
            raise UserError(f"search.start: {self.start:g}/s is above search.max_rate ({self.max_rate:g}/s)")
        self.resolution = parse_resolution(self.resolution, "search.resolution")
        return self


def parse_resolution(value: Any, what: str = "--resolution") -> float:
    """A share of the users: '10%', '0.1'."""
    text = str(value).strip()
    scale = 1.0
    if text.endswith("%"):
        text, scale = text[:-1], 0.01
    share = finite_number(text, what, above=0, what="a share of the users, e.g. 10% or 0.1") * scale
    if share >= 1:
        raise UserError(f"{what}: {value!r} is the whole user count or more; give e.g. 10% or 0.1")
    return share


def bend(step: dict[str, Any], steps: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Throughput fell short of BEND_SHARE of the users' gain over the closest lighter step measured."""
    prev = closest_lighter(step, steps)
    if prev is None or grows_in_proportion(prev, step, BEND_SHARE):
        return None
    return growth(prev, step)


def gave_out(
    step: dict[str, Any], thresholds: Sequence[Threshold], steps: Sequence[dict[str, Any]] = ()
) -> list[str]:
    """Why a step is past the limit: its diagnosis codes (not `ok`), the SLOs it broke, and a bend in
    throughput against the closest lighter step of `steps`; [] when healthy."""
    reasons = [c for c in step.get("diagnosis") or () if c != "ok"]
    for t in thresholds:
        if t.everywhere and not t.holds(step.get(t.field)):
            reasons.append(f"threshold {t.expr}")
    if step.get("fail_ratio") is not None and bend(step, steps) is not None:
        reasons.append("throughput_bend")
    return reasons


def generator_limited(step: dict[str, Any] | None) -> bool:
    """The step's load generator gave out (its CPU, sockets or ports, or a full host it runs on; for an
    open step also when it could not start the arrivals on time, `generator_behind`)."""
    if step is None:
        return False
    codes = step.get("diagnosis") or ()
    full_host = ((step.get("diagnosis_evidence") or {}).get("host_cpu_saturated") or {}).get("runs_generator")
    return any(c in codes for c in (*GENERATOR_CODES, "generator_behind")) or bool(full_host)


@dataclass(frozen=True)
class Bracket:
    """Where the search stands: the healthiest-most users below the first unhealthy step."""

    good: dict[str, Any] | None  # the last healthy step below `bad` (None: not even the lightest)
    bad: dict[str, Any] | None  # the lightest unhealthy step (None: nothing gave out yet)

    @property
    def low(self) -> int:
        return int(self.good["users"]) if self.good else 0

    @property
    def high(self) -> int | None:
        return int(self.bad["users"]) if self.bad else None


def bracket(steps: Sequence[dict[str, Any]], thresholds: Sequence[Threshold]) -> Bracket:
    """The lightest unhealthy step and the heaviest healthy one below it."""
    bad = [s for s in steps if s.get("rps") is not None and gave_out(s, thresholds, steps)]
    first_bad = min(bad, key=lambda s: (s["users"], s.get("index", 0))) if bad else None
    limit = first_bad["users"] if first_bad else None
    good = [s for s in steps if not gave_out(s, thresholds, steps) and (limit is None or s["users"] < limit)]
    last_good = max(good, key=lambda s: (s["users"], s.get("index", 0))) if good else None
    return Bracket(last_good, first_bad)


def narrow_enough(low: int, high: int, resolution: float) -> bool:
    """The bracket [low, high] is as narrow as asked: within `resolution` of low's users, or one user."""
    return high - low <= max(1.0, resolution * low)


def next_users(
    search: SearchSpec, steps: Sequence[dict[str, Any]], thresholds: Sequence[Threshold]
) -> int | None:
    """The user count of the next step, from the finished steps; None when the search is over."""
    measured = {int(s["users"]) for s in steps}
    # The steps @N thresholds are judged on come first: measured later, one could reopen a finished search.
    pending = sorted({t.at_users for t in thresholds if t.at_users is not None} - measured)
    if pending:
        return pending[0]
    b = bracket(steps, thresholds)
    if b.high is None:  # growing: double from the last healthy step, up to max_users
        users = search.start if b.good is None else min(2 * b.low, search.max_users)
        nxt = users if users not in measured else None  # measured: max_users was reached, healthy
    elif b.good is None and generator_limited(b.bad):
        nxt = None  # the generator could not load even the first step: fewer users tell nothing of the target
    elif narrow_enough(b.low, b.high, search.resolution):
        nxt = None
    else:
        nxt = (b.low + b.high) // 2
        nxt = nxt if nxt not in measured and b.low < nxt < b.high else None
    return nxt


def gave_out_open(step: dict[str, Any], thresholds: Sequence[Threshold]) -> list[str]:
    """Why an open step is past the limit: its diagnosis codes (not `ok`), the SLOs it broke, and
    `fell_behind` when its counts say it did not keep up with its arrivals (analysis.fell_behind); []
    when healthy."""
    reasons = [c for c in step.get("diagnosis") or () if c != "ok"]
    for t in thresholds:
        if t.everywhere and not t.holds(step.get(t.field)):
            reasons.append(f"threshold {t.expr}")
    if set(fell_behind(step)) - {"diagnosis"}:
        reasons.append("fell_behind")
    return reasons


@dataclass(frozen=True)
class RateBracket:
    """Where an open search stands: the highest healthy rate below the lowest unhealthy one."""

    good: dict[str, Any] | None
    bad: dict[str, Any] | None

    @property
    def low(self) -> float:
        return float(self.good["rate"]) if self.good else 0.0

    @property
    def high(self) -> float | None:
        return float(self.bad["rate"]) if self.bad else None


def rate_bracket(steps: Sequence[dict[str, Any]], thresholds: Sequence[Threshold]) -> RateBracket:
    """The lowest-rate unhealthy open step and the highest-rate healthy one below it."""
    rated = [s for s in steps if s.get("rate") is not None]
    bad = [s for s in rated if s.get("rps") is not None and gave_out_open(s, thresholds)]
    first_bad = min(bad, key=lambda s: (s["rate"], s.get("index", 0))) if bad else None
    limit = first_bad["rate"] if first_bad else None
    good = [s for s in rated if not gave_out_open(s, thresholds) and (limit is None or s["rate"] < limit)]
    last_good = max(good, key=lambda s: (s["rate"], s.get("index", 0))) if good else None
    return RateBracket(last_good, first_bad)


def _round_rate(rate: float) -> float:
    """A rate to RATE_DIGITS significant digits: 412.5 -> 412.0, 0.8125 -> 0.812."""
    if rate <= 0:
        return rate
    return float(f"{rate:.{RATE_DIGITS}g}")


def next_rate(
    search: RateSearchSpec, steps: Sequence[dict[str, Any]], thresholds: Sequence[Threshold]
) -> float | None:
    """The intended rate (arrivals per second) of the next open step, from the finished steps; None when
    the search is over. Mirrors next_users: `@Nrps` thresholds' rates first, then doubling from the last
    healthy rate up to max_rate, then halving the bracket until it is within `resolution`."""
    measured = [float(s["rate"]) for s in steps if s.get("rate") is not None]

    def seen(rate: float) -> bool:
        return any(math.isclose(rate, m) for m in measured)

    pending = sorted({t.at_rate for t in thresholds if t.at_rate is not None and not seen(t.at_rate)})
    if pending:
        return pending[0]
    b = rate_bracket(steps, thresholds)
    if b.high is None:  # keeping up: double from the last healthy rate, up to max_rate
        rate = search.start if b.good is None else min(2 * b.low, search.max_rate)
        return None if seen(rate) else rate  # measured: max_rate was reached, healthy
    if b.good is None and generator_limited(b.bad):
        return (
            None  # the generator could not hold even the first rate: lower rates tell nothing of the target
        )
    if b.high - b.low <= search.resolution * b.low:
        return None
    nxt = _round_rate((b.low + b.high) / 2)
    return nxt if not seen(nxt) and b.low < nxt < b.high else None


def rate_outcome(
    search: RateSearchSpec, steps: Sequence[dict[str, Any]], thresholds: Sequence[Threshold]
) -> dict[str, Any]:
    """An open search's `capacity`: the highest intended rate the stack kept up with, the rps it carried
    there, and what gave out first at the next rate measured."""
    b = rate_bracket(steps, thresholds)
    out: dict[str, Any] = {
        "search": search.to_dict(),
        "steps": len(steps),
        "rate": b.low if b.good else None,
        "users": b.good.get("users") if b.good else None,
        "rps": b.good.get("rps") if b.good else None,
        "p95_ms": b.good.get("p95_ms") if b.good else None,
        "first_bad_rate": b.high,
        "gave_out": gave_out_open(b.bad, thresholds) if b.bad else [],
        "limit_found": b.bad is not None,
        "narrow": b.bad is not None and (b.high or 0) - b.low <= search.resolution * b.low,
    }
    out["generator_limited"] = generator_limited(b.bad)
    out["shared_machine"] = bool(((b.bad or b.good or {}).get("resources") or {}).get("shared_machine"))
    out["text"] = _rate_verdict(out, b, search)
    return out


def _per_s(rate: float | None) -> str:
    return f"{rate_text(rate)}/s"


def _rate_verdict(out: dict[str, Any], b: RateBracket, search: RateSearchSpec) -> str:
    targets = _hosts(b.good or b.bad, "target")
    where = f" on {', '.join(targets)}" if targets else ""
    top = b.good or {}
    if b.bad is None:
        if b.low < search.max_rate:
            return (
                f"nothing gave out up to an arrival rate of {_per_s(top.get('rate'))} "
                f"({top.get('rps')} rps), where the search stopped short of a limit and of its max_rate "
                f"({_per_s(search.max_rate)})"
            )
        return (
            f"nothing gave out up to an arrival rate of {_per_s(top.get('rate'))} (the search's max_rate): "
            f"this stack{where} carried {top.get('rps')} rps there; raise the max rate to look further"
        )
    what = _what(out["gave_out"], b.bad)
    gens = _hosts(b.bad, "loadgen")
    shared = bool(set(gens) & set(targets)) or out["shared_machine"]
    if not out["generator_limited"]:
        if b.good is None:
            return f"even an arrival rate of {_per_s(b.high)} was too much: {what}"
        text = (
            f"this stack{where} carries about {b.good.get('rps')} rps at an arrival rate of {_per_s(b.low)} "
            f"(p95 {b.good.get('p95_ms')} ms from intended start); what gives out first, "
            f"at {_per_s(b.high)}: {what}"
        )
        if shared:
            text += (
                f". Locust shares {', '.join(sorted(set(gens) & set(targets)) or targets)}'s cores with the "
                "target here, so part of that limit is the generator's; the multi-host lab (README 'The lab "
                "across hosts') measures the target alone"
            )
    else:
        if b.good is None:
            text = f"the load generator gave out at the first rate, {_per_s(b.high)} ({b.bad.get('rps')} rps)"
        else:
            text = (
                f"this stack{where} carried at least {b.good.get('rps')} rps at an arrival rate of "
                f"{_per_s(b.low)} (p95 {b.good.get('p95_ms')} ms from intended start)"
            )
        text += (
            f"; what gives out first, at {_per_s(b.high)}: {what}. "
            "That held the load generator back, so the target's own limit lies beyond this figure"
        )
        if shared:
            text += (
                ": the generator shares the target's cores here; put Locust on hosts of its own "
                "(the multi-host lab, README 'The lab across hosts') to measure the target alone"
            )
        else:
            text += ": add Locust workers or loadgen hosts, or raise --max-users"
    if b.good is not None and not out["narrow"]:
        text += (
            f" (the bracket {rate_text(b.low)}..{rate_text(b.high)}/s is wider than asked: "
            "the search was cut short)"
        )
    return text


def outcome(
    search: SearchSpec | RateSearchSpec, steps: Sequence[dict[str, Any]], thresholds: Sequence[Threshold]
) -> dict[str, Any]:
    """summary.json's `capacity`: what the stack carried, at how many users, and what gave out first (an
    open search's: at which intended rate, rate_outcome)."""
    if isinstance(search, RateSearchSpec):
        return rate_outcome(search, steps, thresholds)
    b = bracket(steps, thresholds)
    out: dict[str, Any] = {
        "search": search.to_dict(),
        "steps": len(steps),
        "users": b.low if b.good else None,
        "rps": b.good.get("rps") if b.good else None,
        "p95_ms": b.good.get("p95_ms") if b.good else None,
        "first_bad_users": b.high,
        "gave_out": gave_out(b.bad, thresholds, steps) if b.bad else [],
        "limit_found": b.bad is not None,
        "narrow": b.bad is not None and narrow_enough(b.low, b.high or 0, search.resolution),
    }
    out["generator_limited"] = generator_limited(b.bad)
    out["shared_machine"] = bool(((b.bad or b.good or {}).get("resources") or {}).get("shared_machine"))
    out["text"] = _verdict(out, b, search)
    return out


def _hosts(step: dict[str, Any] | None, role: str) -> list[str]:
    procs = ((step or {}).get("resources") or {}).get("processes") or {}
    return sorted({name.split("/", 1)[0] for name, p in procs.items() if p.get("role") == role})


def _what(codes: Sequence[str], step: dict[str, Any]) -> str:
    evidence = step.get("diagnosis_evidence") or {}
    parts = []
    for code in codes:
        words = _GAVE_OUT.get(code, code)
        if code == "fell_behind":
            parts.append(f"{words} ({behind_text(fell_behind(step))})")
            continue
        ev = evidence.get(code) or {}
        where = ev.get("process") or ev.get("host") or ev.get("component")
        parts.append(f"{words} ({code}{' on ' + str(where) if where else ''})")
    return "; ".join(parts)


def _users(n: Any) -> str:
    return f"{n} user" if n == 1 else f"{n} users"


def _verdict(out: dict[str, Any], b: Bracket, search: SearchSpec) -> str:
    targets = _hosts(b.good or b.bad, "target")
    where = f" on {', '.join(targets)}" if targets else ""
    if b.bad is None and b.low < search.max_users:
        top = b.good or {}
        return (
            f"nothing gave out up to {_users(top.get('users'))} ({top.get('rps')} rps), where the search "
            f"stopped short of a limit and of its max_users ({search.max_users})"
        )
    if b.bad is None:
        top = b.good or {}
        return (
            f"nothing gave out up to {top.get('users')} users (the search's max_users, {search.max_users}): "
            f"this stack{where} carried {top.get('rps')} rps there; raise --max-users to look further"
        )
    what = _what(out["gave_out"], b.bad)
    gens = _hosts(b.bad, "loadgen")
    shared = bool(set(gens) & set(targets)) or out["shared_machine"]
    if not out["generator_limited"]:
        if b.good is None:
            return f"even {_users(b.high)} {'was' if b.high == 1 else 'were'} too many: {what}"
        text = (
            f"this stack{where} carries about {b.good.get('rps')} rps at {_users(b.low)} "
            f"(p95 {b.good.get('p95_ms')} ms); what gives out first, at {_users(b.high)}: {what}"
        )
        if out["gave_out"] == ["throughput_bend"] and (b.bad.get("rps") or 0) > (b.good.get("rps") or 0):
            text += f" (it still made {b.bad.get('rps')} rps there: the knee lies between)"
        if shared:
            cpu = [
                f"{label} {b.bad.get(figure):.2f} cores"
                for label, figure in (("generator", "loadgen_cpu"), ("target", "target_cpu"))
                if b.bad.get(figure) is not None
            ]
            text += (
                f". Locust shares {', '.join(sorted(set(gens) & set(targets)) or targets)}'s cores with the "
                f"target here ({', '.join(cpu)} at {_users(b.high)}), so part of that limit is the "
                "generator's; the multi-host lab (README 'The lab across hosts') measures the target alone"
            )
    else:
        if b.good is None:
            text = f"the load generator gave out at the first step, {_users(b.high)} ({b.bad.get('rps')} rps)"
        else:
            text = (
                f"this stack{where} carried at least {b.good.get('rps')} rps at {_users(b.low)} "
                f"(p95 {b.good.get('p95_ms')} ms)"
            )
        text += (
            f"; what gives out first, at {_users(b.high)}: {what}. "
            "That held the load generator back, so the target's own limit lies beyond this figure"
        )
        if shared:
            text += (
                ": the generator shares the target's cores here; put Locust on hosts of its own "
                "(the multi-host lab, README 'The lab across hosts') to measure the target alone"
            )
        else:
            text += ": add Locust workers or loadgen hosts"
    if b.good is not None and not out["narrow"]:
        text += f" (the bracket {b.low}..{b.high} is wider than asked: the search was cut short)"
    return text
