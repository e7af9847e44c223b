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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from operator import attrgetter
from typing import Any

from loadlab.errors import UserError
from loadlab.inputs import finite_number
from loadlab.sweep.analysis import (
    behind_text,
    closest_lighter,
    fell_behind,
    generator_side,
    grows_in_proportion,
    growth,
    rate_text,
)
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
    """Why a step is past the limit: its diagnosis codes (not `ok`), the SLOs it broke, and for a closed
    step a bend in throughput against the closest lighter step of `steps`, for an open one `fell_behind`
    when its counts say it did not keep up with its arrivals (analysis.fell_behind); [] when healthy."""
    reasons = [c for c in step.get("diagnosis") or () if c != "ok"]
    for t in thresholds:
        if t.everywhere and not t.holds(step.get(t.field)):
            reasons.append(f"threshold {t.expr}")
    if step.get("rate") is not None:
        if set(fell_behind(step)) - {"diagnosis"}:
            reasons.append("fell_behind")
    elif step.get("fail_ratio") is not None and bend(step, steps) is not None:
        reasons.append("throughput_bend")
    return reasons


def generator_limited(step: dict[str, Any] | None) -> bool:
    """The step's load generator gave out (analysis.generator_side)."""
    return step is not None and generator_side(step)


def _users(n: Any) -> str:
    return f"{n} user" if n == 1 else f"{n} users"


def _per_s(rate: float | None) -> str:
    return f"{rate_text(rate)}/s"


@dataclass(frozen=True)
class _Axis:
    """What a capacity search steps, users or (open) intended arrival rates, and how its verdict says them."""

    key: str  # the step figure: users, rate
    number: Callable[[Any], Any]  # int, float
    most: Callable[[Any], Any]  # the heaviest load a search of it may measure: its max_users, max_rate
    threshold_at: Callable[[Threshold], Any]  # the load a threshold names a step by: its at_users, at_rate
    text: Callable[[Any], str]  # a figure of it: '20', '12.5'
    unit: str  # after a bound: '', '/s'
    amount: Callable[[Any], str]  # a load where a sentence names it: '20 users', '12.5/s'
    load_prefix: str  # before an amount where a sentence says what the stack carried it at
    point: str  # what the search measures one at a time: step, rate
    p95_from: str  # where a p95 is measured from
    cpu_at_limit: bool  # a shared machine's note names both sides' CPU at the limit
    more_generator: str  # what else gives the generator room to push harder
    raise_most: str  # how to look further than the search's maximum

    def load(self, n: Any) -> str:
        return self.load_prefix + self.amount(n)

    def span(self, low: Any, high: Any) -> str:
        return f"{self.text(low)}..{self.text(high)}{self.unit}"

    def too_much(self, n: Any) -> str:
        if self.key == "users":
            return f"{_users(n)} {'was' if n == 1 else 'were'} too many"
        return f"{self.load(n)} was too much"

    def at_most(self, top: dict[str, Any], search: Any) -> str:
        """The heaviest step of a search that reached its maximum, where nothing gave out."""
        if self.key == "users":
            return f"{top.get('users')} users (the search's max_users, {self.most(search)})"
        return f"{self.load(top.get('rate'))} (the search's max_rate)"

    def middle(self, low: Any, high: Any) -> Any:
        return (low + high) // 2 if self.key == "users" else _round_rate((low + high) / 2)

    def narrow(self, low: Any, high: Any, resolution: float) -> bool:
        """The bracket [low, high] is as narrow as asked: within `resolution` of low (and for users, of one
        user)."""
        floor = 1.0 if self.key == "users" else 0.0
        return high - low <= max(floor, resolution * low)


USERS = _Axis(
    key="users", number=int, most=attrgetter("max_users"), threshold_at=attrgetter("at_users"), text=str,
    unit="", amount=_users, load_prefix="", point="step", p95_from="", cpu_at_limit=True, more_generator="",
    raise_most="--max-users",
)  # fmt: skip
RATES = _Axis(
    key="rate", number=float, most=attrgetter("max_rate"), threshold_at=attrgetter("at_rate"),
    text=rate_text, unit="/s", amount=_per_s, load_prefix="an arrival rate of ", point="rate",
    p95_from=" from intended start", cpu_at_limit=False, more_generator=", or raise --max-users",
    raise_most="the max rate",
)  # fmt: skip


def _axis(search: SearchSpec | RateSearchSpec) -> _Axis:
    return RATES if isinstance(search, RateSearchSpec) else USERS


@dataclass(frozen=True)
class Bracket:
    """Where the search stands: the heaviest healthy step below the lightest unhealthy one, by users (or, on
    the axis RATES, by intended rate)."""

    good: dict[str, Any] | None  # the last healthy step below `bad` (None: not even the lightest)
    bad: dict[str, Any] | None  # the lightest unhealthy step (None: nothing gave out yet)
    axis: _Axis = USERS

    @property
    def low(self) -> Any:
        return self.axis.number(self.good[self.axis.key] if self.good else 0)

    @property
    def high(self) -> Any:
        return self.axis.number(self.bad[self.axis.key]) if self.bad else None


def bracket(steps: Sequence[dict[str, Any]], thresholds: Sequence[Threshold], axis: _Axis = USERS) -> Bracket:
    """The lightest unhealthy step and the heaviest healthy one below it."""
    key = axis.key
    loaded = [s for s in steps if s.get(key) is not None]
    bad = [s for s in loaded if s.get("rps") is not None and gave_out(s, thresholds, steps)]
    first_bad = min(bad, key=lambda s: (s[key], s.get("index", 0))) if bad else None
    limit = first_bad[key] if first_bad else None
    good = [s for s in loaded if not gave_out(s, thresholds, steps) and (limit is None or s[key] < limit)]
    last_good = max(good, key=lambda s: (s[key], s.get("index", 0))) if good else None
    return Bracket(last_good, first_bad, axis)


def _round_rate(rate: float) -> float:
    """A rate to RATE_DIGITS significant digits: 412.5 -> 412.0, 0.8125 -> 0.812."""
    if rate <= 0:
        return rate
    return float(f"{rate:.{RATE_DIGITS}g}")


def _next_load(
    search: SearchSpec | RateSearchSpec, steps: Sequence[dict[str, Any]], thresholds: Sequence[Threshold]
) -> Any:
    """The load of the next step, from the finished steps; None when the search is over."""
    axis = _axis(search)
    measured = [axis.number(s[axis.key]) for s in steps if s.get(axis.key) is not None]

    def seen(load: float) -> bool:
        return any(math.isclose(load, m) for m in measured)

    # The steps @N thresholds are judged on come first: measured later, one could reopen a finished search.
    named = (axis.threshold_at(t) for t in thresholds)
    pending = sorted({n for n in named if n is not None and not seen(n)})
    if pending:
        return pending[0]
    b = bracket(steps, thresholds, axis)
    if b.high is None:  # growing: double from the last healthy step, up to the search's maximum
        load = search.start if b.good is None else min(2 * b.low, axis.most(search))
        return None if seen(load) else load  # measured: the maximum was reached, healthy
    if b.good is None and generator_limited(b.bad):
        # The generator could not load even the first step: lighter ones tell nothing of the target.
        return None
    if axis.narrow(b.low, b.high, search.resolution):
        return None
    nxt = axis.middle(b.low, b.high)
    return nxt if not seen(nxt) and b.low < nxt < b.high else None


def next_users(
    search: SearchSpec, steps: Sequence[dict[str, Any]], thresholds: Sequence[Threshold]
) -> int | None:
    """The user count of the next step, from the finished steps; None when the search is over."""
    return _next_load(search, steps, thresholds)


def next_rate(
    search: RateSearchSpec, steps: Sequence[dict[str, Any]], thresholds: Sequence[Threshold]
) -> float | None:
    """The intended rate (arrivals per second) of the next open step, from the finished steps; None when
    the search is over. As next_users: `@Nrps` thresholds' rates first, then doubling from the last
    healthy rate up to max_rate, then halving the bracket until it is within `resolution`."""
    return _next_load(search, steps, thresholds)


def outcome(
    search: SearchSpec | RateSearchSpec, steps: Sequence[dict[str, Any]], thresholds: Sequence[Threshold]
) -> dict[str, Any]:
    """summary.json's `capacity`: what the stack carried, at how many users (an open search's: at which
    intended rate, with the users its pool held there), and what gave out first."""
    axis = _axis(search)
    b = bracket(steps, thresholds, axis)
    out: dict[str, Any] = {
        "search": search.to_dict(),
        "steps": len(steps),
        axis.key: b.low if b.good else None,
    }
    # An open search's answer is a rate: the users its pool held there come after it.
    out.setdefault("users", b.good.get("users") if b.good else None)
    out.update(
        {
            "rps": b.good.get("rps") if b.good else None,
            "p95_ms": b.good.get("p95_ms") if b.good else None,
            f"first_bad_{axis.key}": b.high,
            "gave_out": gave_out(b.bad, thresholds, steps) if b.bad else [],
            "limit_found": b.bad is not None,
            "narrow": b.bad is not None and axis.narrow(b.low, b.high or 0, search.resolution),
            "generator_limited": generator_limited(b.bad),
            "shared_machine": bool(((b.bad or b.good or {}).get("resources") or {}).get("shared_machine")),
        }
    )
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


def _verdict(out: dict[str, Any], b: Bracket, search: SearchSpec | RateSearchSpec) -> str:
    axis = b.axis
    targets = _hosts(b.good or b.bad, "target")
    where = f" on {', '.join(targets)}" if targets else ""
    if b.bad is None:
        top = b.good or {}
        if b.low < axis.most(search):
            most = axis.text(axis.most(search)) + axis.unit
            return (
                f"nothing gave out up to {axis.load(top.get(axis.key))} ({top.get('rps')} rps), where the "
                f"search stopped short of a limit and of its max_{axis.key} ({most})"
            )
        return (
            f"nothing gave out up to {axis.at_most(top, search)}: this stack{where} carried {top.get('rps')} "
            f"rps there; raise {axis.raise_most} to look further"
        )
    what = _what(out["gave_out"], b.bad)
    gens = _hosts(b.bad, "loadgen")
    shared = bool(set(gens) & set(targets)) or out["shared_machine"]
    if not out["generator_limited"]:
        if b.good is None:
            return f"even {axis.too_much(b.high)}: {what}"
        text = (
            f"this stack{where} carries about {b.good.get('rps')} rps at {axis.load(b.low)} "
            f"(p95 {b.good.get('p95_ms')} ms{axis.p95_from}); what gives out first, "
            f"at {axis.amount(b.high)}: {what}"
        )
        if out["gave_out"] == ["throughput_bend"] and (b.bad.get("rps") or 0) > (b.good.get("rps") or 0):
            text += f" (it still made {b.bad.get('rps')} rps there: the knee lies between)"
        if shared:
            cpu = [
                f"{label} {b.bad.get(figure):.2f} cores"
                for label, figure in (("generator", "loadgen_cpu"), ("target", "target_cpu"))
                if b.bad.get(figure) is not None
            ]
            at_limit = f" ({', '.join(cpu)} at {axis.amount(b.high)})" if axis.cpu_at_limit else ""
            text += (
                f". Locust shares {', '.join(sorted(set(gens) & set(targets)) or targets)}'s cores with the "
                f"target here{at_limit}, so part of that limit is the generator's; the multi-host lab "
                "(README 'The lab across hosts') measures the target alone"
            )
    else:
        if b.good is None:
            text = (
                f"the load generator gave out at the first {axis.point}, {axis.amount(b.high)} "
                f"({b.bad.get('rps')} rps)"
            )
        else:
            text = (
                f"this stack{where} carried at least {b.good.get('rps')} rps at {axis.load(b.low)} "
                f"(p95 {b.good.get('p95_ms')} ms{axis.p95_from})"
            )
        text += (
            f"; what gives out first, at {axis.amount(b.high)}: {what}. "
            "That held the load generator back, so the target's own limit lies beyond this figure"
        )
        if shared:
            text += (
                ": the generator shares the target's cores here; put Locust on hosts of its own "
                "(the multi-host lab, README 'The lab across hosts') to measure the target alone"
            )
        else:
            text += f": add Locust workers or loadgen hosts{axis.more_generator}"
    if b.good is not None and not out["narrow"]:
        text += f" (the bracket {axis.span(b.low, b.high)} is wider than asked: the search was cut short)"
    return text
