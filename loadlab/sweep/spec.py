"""What a sweep runs: steps, timing, user classes, thresholds, target; from flags or a spec file.

A spec file (scripts/sweeps/NAME.yml) is a mapping of these fields; any other field is refused:

    name: capacity            # run name (default: the file name)
    description: ...          # free text
    users: [5, 10, 20, 40]    # user count of each step, in order (a spike: [1, 50, 1]); or `auto`:
    search:                   #   a capacity search (loadlab/sweep/search.py), with these optional knobs
      start: 5                #   users of its first step; it doubles while the steps are healthy
      max_users: 1000         #   where it stops when nothing gave out
      resolution: 10%         #   it narrows until the bracket is this share of the users (or one user)
    step_time: 60s            # measured window per step (30s, 2m, 1m30s); whole 1 s Locust report intervals
    warmup: 15s               # after every user runs, before the window opens (at least 1 s with workers)
    spawn_rate: 10            # users started or stopped per second between steps
    user_classes: [MaxRpsUser]  # Locust user classes (default: all the locustfile's)
    thresholds: [p95<200ms, fail_ratio<1%, rps>100@40]
    target: lab               # or a URL: a standalone run with our own Locust
    locustfile: locustfiles/max_rps.py  # standalone runs only; relative to here or to the repository
    workers: 2                # standalone runs only (default: this machine's cores)
    reset: 1000               # lab runs of the demo app: empty and seed its users, flush Redis first

An open-model sweep gives `rates` instead of `users` (exporters/locust_open.py holds each rate):

    rates: [100, 200, 400]    # intended arrivals (task iterations) per second of each step; or `auto`:
    search: {start: 10, max_rate: 10000, resolution: 10%}  # a capacity search over rates
    arrivals: even            # even (the default: paced like wrk2 and k6) or poisson (independent clients)
    max_users: 1000           # the most users the pool behind a rate may grow to (Little's law sizes it)

Flags given with --spec override its fields; --threshold adds to its thresholds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from loadlab.errors import UserError
from loadlab.inputs import finite_number, parse_duration, parse_url, read_text
from loadlab.sweep.search import RateSearchSpec, SearchSpec, next_rate, next_users
from loadlab.sweep.thresholds import Threshold, parse_threshold

DEFAULT_STEP_TIME = 30.0
DEFAULT_WARMUP = 5.0
DEFAULT_SPAWN_RATE = 10.0
MAX_USERS = 100_000
MAX_RATE = 1_000_000.0
DEFAULT_POOL_MAX = 1000  # the open model's users behind a rate, at most (--max-users)
ARRIVALS = ("even", "poisson")


def is_auto(value: Any) -> bool:
    """`users: auto` / `--users auto`: a capacity search instead of a list of steps."""
    return isinstance(value, str) and value.strip().lower() == "auto"


def parse_rates(text: str | list | int | float, name: str = "rates") -> list[float]:
    """Intended arrival rates (per second) of an open sweep's steps, from '100,200,400' or a list."""
    example = f"{name}: expected arrivals per second like 100,200,400"
    if isinstance(text, bool):
        raise UserError(f"{example}, got {text!r}")
    items = text if isinstance(text, list) else str(text).split(",")
    rates: list[float] = []
    for item in items:
        raw = item.strip() if isinstance(item, str) else item
        if isinstance(raw, str):
            try:
                raw = float(raw.removesuffix("/s"))
            except ValueError:
                raise UserError(f"{name}: {item!r} is not a number of arrivals per second") from None
        rate = finite_number(raw, name, above=0, what="a positive number of arrivals per second")
        if rate > MAX_RATE:
            raise UserError(f"{name}: {item!r} is out of range (up to {MAX_RATE:g} per second)")
        rates.append(rate)
    if not rates:
        raise UserError(f"{name}: give at least one step, e.g. --rate 100,200,400")
    return rates


def parse_users(text: str | list | int) -> list[int]:
    """User counts per step from '10,20,40' or a YAML list; order is kept (a spike goes 1,50,1)."""
    if isinstance(text, bool):
        raise UserError(f"users: expected a list of user counts like 10,20,40, got {text!r}")
    if isinstance(text, int):
        items: list[Any] = [text]
    elif isinstance(text, str):
        items = [p.strip() for p in text.split(",")]
    elif isinstance(text, list):
        items = text
    else:
        raise UserError(f"users: expected a list of user counts like 10,20,40, got {text!r}")
    users: list[int] = []
    for item in items:
        if isinstance(item, bool):
            raise UserError(f"users: {item!r} is not a whole number of users")
        try:
            n = int(item) if isinstance(item, int) or str(item).isdigit() else None
        except ValueError:
            n = None
        if n is None:
            raise UserError(f"users: {item!r} is not a whole number of users (expected e.g. 10,20,40)")
        if not 1 <= n <= MAX_USERS:
            raise UserError(f"users: {n} is out of range (1..{MAX_USERS})")
        users.append(n)
    if not users:
        raise UserError("users: give at least one step, e.g. --users 10,20,40")
    return users


@dataclass
class SweepSpec:
    """One sweep: the steps and how each is measured."""

    name: str
    users: list[int]  # empty in a capacity search, whose steps follow from what it measured
    step_time: float = DEFAULT_STEP_TIME
    warmup: float = DEFAULT_WARMUP
    spawn_rate: float = DEFAULT_SPAWN_RATE
    user_classes: list[str] = field(default_factory=list)
    thresholds: list[str] = field(default_factory=list)
    target: str | None = None
    locustfile: str | None = None
    workers: int | None = None
    description: str = ""
    search: SearchSpec | RateSearchSpec | None = None
    reset: int | None = None  # seed the demo app with this many users first (loadlab/sweep/reset.py)
    model: str = "closed"  # "open": each step holds an arrival rate (rates) instead of a user count
    rates: list[float] = field(default_factory=list)  # the open model's steps (empty in a search)
    arrivals: str = "even"
    max_users: int = DEFAULT_POOL_MAX  # the open model's pool, at most

    @property
    def open(self) -> bool:
        return self.model == "open"

    def __post_init__(self) -> None:
        if isinstance(self.search, dict):  # as run.json records it
            is_rate = "max_rate" in self.search
            self.search = RateSearchSpec(**self.search) if is_rate else SearchSpec(**self.search)

    def parsed_thresholds(self) -> list[Threshold]:
        """The thresholds, parsed (they were validated when the spec was built)."""
        return [parse_threshold(t) for t in self.thresholds]

    def to_dict(self) -> dict[str, Any]:
        """The spec as run.json records it (resume rebuilds it from there)."""
        return asdict(self)

    def next_step(self, steps: Sequence[dict[str, Any]]) -> tuple[int, int] | None:
        """(index, users) of the next step to measure after the finished `steps`; None when all are done."""
        if self.search is None:
            done = {s["index"] for s in steps}
            loads: list[Any] = self.rates if self.open else self.users
            return next(((i, u) for i, u in enumerate(loads) if i not in done), None)
        if isinstance(self.search, RateSearchSpec):
            load: Any = next_rate(self.search, steps, self.parsed_thresholds())
        else:
            load = next_users(self.search, steps, self.parsed_thresholds())
        if load is None:
            return None
        return max((int(s["index"]) for s in steps), default=-1) + 1, load

    def planned_steps(self, steps: Sequence[dict[str, Any]]) -> int:
        """Steps the run will have: the list's length, or in a search those finished plus the next one."""
        if self.search is None:
            return len(self.rates if self.open else self.users)
        return len(steps) + (self.next_step(steps) is not None)

    def describe_steps(self) -> str:
        """The steps in words, for the terminal."""
        if self.open and self.search is None:
            return (
                f"open model: steps of {','.join(f'{r:g}' for r in self.rates)} arrivals/s ({self.arrivals} "
                f"arrivals, up to {self.max_users} users behind them)"
            )
        if self.search is None:
            return f"steps {','.join(map(str, self.users))} users"
        s = self.search
        if isinstance(s, RateSearchSpec):
            return (
                f"open model: a capacity search from {s.start:g} arrivals/s, doubling until something gives "
                f"out (at most {s.max_rate:g}/s), then narrowing to {s.resolution:.0%} of the rate "
                f"({self.arrivals} arrivals, up to {self.max_users} users behind them)"
            )
        return (
            f"a capacity search from {s.start} users, doubling until something gives out (at most "
            f"{s.max_users}), then narrowing to {s.resolution:.0%} of the users"
        )

    def validate(self) -> SweepSpec:
        """Refuse a spec that cannot run, with one line naming the field."""
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            raise UserError(f"name: {self.name!r} must be letters, digits, '.', '_' or '-'")
        if self.model not in ("open", "closed"):
            raise UserError(f"model: {self.model!r} is neither open nor closed")
        if isinstance(self.search, RateSearchSpec) != self.open and self.search is not None:
            raise UserError("search: an open sweep searches rates (rates: auto), a closed one users")
        if isinstance(self.search, RateSearchSpec):
            self.users, self.rates = [], []
            self.search.validate(MAX_RATE)
        elif self.search is not None:
            self.users = []
            self.rates = []
            self.search.validate(MAX_USERS)
        elif self.open:
            self.users = []
            self.rates = parse_rates(list(self.rates))
        else:
            parse_users(list(self.users))
        if self.arrivals not in ARRIVALS:
            raise UserError(f"arrivals: {self.arrivals!r}: expected even or poisson")
        if isinstance(self.max_users, bool) or not isinstance(self.max_users, int):
            raise UserError(f"max_users: expected a whole number of users, got {self.max_users!r}")
        if not 1 <= self.max_users <= MAX_USERS:
            raise UserError(f"max_users: {self.max_users} is out of range (1..{MAX_USERS})")
        self.step_time = parse_duration(self.step_time, "step_time")
        self.warmup = parse_duration(self.warmup, "warmup")
        if self.step_time < 1:
            raise UserError(f"step_time: must be at least 1s, got {self.step_time:g}s")
        self.spawn_rate = finite_number(
            self.spawn_rate, "spawn_rate", above=0, what="a positive number of users per second"
        )
        if self.workers is not None and (
            isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1
        ):
            raise UserError(f"workers: must be a whole number, at least 1, got {self.workers!r}")
        for expr in self.thresholds:
            threshold = parse_threshold(expr)
            if threshold.at_rate is not None and not self.open:
                raise UserError(f"threshold {expr!r}: @N rps names a rate, and this sweep steps users")
            if threshold.at_users is not None and self.open:
                raise UserError(
                    f"threshold {expr!r}: an open sweep's steps are rates: write @{threshold.at_users}rps"
                )
            if (
                self.search is None
                and threshold.at_rate is not None
                and not any(abs(r - threshold.at_rate) <= 1e-9 * r for r in self.rates)
            ):
                steps = ",".join(f"{r:g}" for r in self.rates)
                raise UserError(
                    f"threshold {expr!r}: no step has the rate {threshold.at_rate:g}/s (steps: {steps})"
                )
            if (
                self.search is None
                and threshold.at_users is not None
                and threshold.at_users not in self.users
            ):
                steps = ",".join(str(u) for u in self.users)
                raise UserError(
                    f"threshold {expr!r}: no step has {threshold.at_users} users (steps: {steps})"
                )
        for cls in self.user_classes:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", cls):
                raise UserError(f"user_classes: {cls!r} is not a Python class name")
        if self.target is not None and self.target != "lab":
            parse_url(self.target, "target")
        if self.reset is not None and (
            isinstance(self.reset, bool) or not isinstance(self.reset, int) or not 0 <= self.reset <= MAX_SEED
        ):
            raise UserError(f"reset: the users to seed, a whole number 0..{MAX_SEED}; got {self.reset!r}")
        return self


MAX_SEED = 10_000_000

_SPEC_FIELDS = {
    "name",
    "description",
    "users",
    "step_time",
    "warmup",
    "spawn_rate",
    "user_classes",
    "thresholds",
    "target",
    "locustfile",
    "workers",
    "search",
    "reset",
    "rates",
    "arrivals",
    "max_users",
}


def _as_str_list(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise UserError(f"{key}: expected a list of strings, got {value!r}")
    if not all(items) or (isinstance(value, str) and not items):
        raise UserError(f"{key}: {value!r} holds an empty name")
    return items


def spec_from_mapping(data: dict[str, Any], default_name: str) -> SweepSpec:
    """Build a spec from a parsed YAML mapping, naming the bad field on error."""
    unknown = sorted(set(data) - _SPEC_FIELDS)
    if unknown:
        raise UserError(f"unknown field {unknown[0]!r} (known: {', '.join(sorted(_SPEC_FIELDS))})")
    if "users" in data and "rates" in data:
        raise UserError("users and rates: give one (users: a closed sweep; rates: an open one)")
    if "users" not in data and "rates" not in data:
        raise UserError(
            "missing field 'users' (the user count of each step, e.g. [10, 20, 40]) or 'rates' "
            "(arrivals per second of each step, an open sweep)"
        )
    name = str(data.get("name") or default_name)
    if "rates" in data:
        if is_auto(data["rates"]):
            spec = SweepSpec(
                name=name, users=[], model="open", search=_search(RateSearchSpec, data.get("search"))
            )
        elif "search" in data:
            raise UserError("search: only with `rates: auto` or `users: auto` (a capacity search)")
        else:
            spec = SweepSpec(name=name, users=[], model="open", rates=parse_rates(data["rates"]))
    elif is_auto(data["users"]):
        spec = SweepSpec(name=name, users=[], search=_search(SearchSpec, data.get("search")))
    elif "search" in data:
        raise UserError("search: only with `users: auto` (a capacity search)")
    else:
        spec = SweepSpec(name=name, users=parse_users(data["users"]))
    if "step_time" in data:
        spec.step_time = parse_duration(data["step_time"], "step_time")
    if "warmup" in data:
        spec.warmup = parse_duration(data["warmup"], "warmup")
    if "spawn_rate" in data:
        spec.spawn_rate = finite_number(
            data["spawn_rate"], "spawn_rate", above=0, what="a positive number of users per second"
        )
    if "user_classes" in data:
        spec.user_classes = _as_str_list(data["user_classes"], "user_classes")
    if "thresholds" in data:
        spec.thresholds = _as_str_list(data["thresholds"], "thresholds")
    if data.get("target") is not None:
        if not isinstance(data["target"], str):
            raise UserError(f"target: expected 'lab' or a URL, got {data['target']!r}")
        spec.target = data["target"]
    if "name" in data and (not isinstance(data["name"], str) or not data["name"]):
        raise UserError(f"name: expected letters, digits, '.', '_' or '-', got {data['name']!r}")
    if data.get("locustfile") is not None:
        if not isinstance(data["locustfile"], str):
            raise UserError(f"locustfile: expected a path, got {data['locustfile']!r}")
        spec.locustfile = data["locustfile"]
    if data.get("workers") is not None:
        workers = data["workers"]
        if isinstance(workers, bool) or not isinstance(workers, int):
            raise UserError(f"workers: expected a whole number, got {workers!r}")
        spec.workers = workers
    if "description" in data:
        spec.description = str(data["description"] or "")
    if "arrivals" in data:
        spec.arrivals = str(data["arrivals"])
    if "max_users" in data:
        if not spec.open:
            raise UserError("max_users: only with `rates` (an open sweep); a search takes search.max_users")
        spec.max_users = data["max_users"]
    return spec


def _search(kind: type[SearchSpec | RateSearchSpec], data: Any) -> SearchSpec | RateSearchSpec:
    """A spec's `search` mapping as the search it describes (users, or for an open sweep arrival rates)."""
    if data is None:
        return kind()
    known = [f.name for f in fields(kind)]
    if not isinstance(data, dict):
        raise UserError(f"search: expected a mapping ({', '.join(known)}), got {data!r}")
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise UserError(f"search: unknown field {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return kind(**data)


def load_spec(path: Path) -> SweepSpec:
    """Read a spec file (scripts/sweeps/NAME.yml); every bad field is one line and exit 2."""
    text = read_text(path, "spec")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where} is not valid YAML") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of spec fields (users, step_time, ...)")
    try:
        spec = spec_from_mapping(data, path.stem).validate()
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    if spec.locustfile:
        spec.locustfile = ",".join(_beside(path, part) for part in spec.locustfile.split(","))
    return spec


def _beside(spec_path: Path, locustfile: str) -> str:
    """A spec's relative locustfile: from the current folder, else from a folder above the spec (the repo)."""
    given = Path(locustfile)
    if given.is_absolute() or given.exists():
        return locustfile
    for folder in spec_path.resolve().parents:
        if (folder / given).is_file():
            return str(folder / given)
    return locustfile
