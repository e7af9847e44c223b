"""`loadlab sweep`: step load through user counts and say what the stack carries and what gives out first."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from loadlab.cli.usage import OneLineCommand
from loadlab.console import console, err_console
from loadlab.errors import LoadlabError, UserError
from loadlab.inputs import finite_number, parse_duration, parse_share, parse_url
from loadlab.sweep.search import RateSearchSpec, SearchSpec, parse_resolution
from loadlab.sweep.spec import (
    MAX_USERS,
    SweepSpec,
    is_auto,
    load_spec,
    parse_rates,
    parse_users,
)

WORKERS_PER_CORE = 4  # beyond this, workers fight over the cores and the generator measures itself

_SHAPING = ("users", "step_time", "warmup", "spawn_rate", "out", "threshold", "spec", "host", "locustfile",
            "workers", "user_classes", "name", "max_users", "resolution", "reset", "rate",
            "arrivals")  # fmt: skip


def _build_spec(opts: dict[str, Any]) -> SweepSpec:
    """The spec file (if any) with the flags over it; a bad value given as a flag is named as that flag."""
    try:
        return _merge_spec(opts)
    except UserError as exc:
        field, sep, rest = str(exc).partition(":")
        if sep and field in _SHAPING and opts.get(field) is not None:
            raise UserError(f"--{field.replace('_', '-')}:{rest}") from None
        raise


def _merge_spec(opts: dict[str, Any]) -> SweepSpec:
    """The spec file (if any) with the flags over it; flags' thresholds add to the file's."""
    if opts["spec"]:
        path = Path(opts["spec"])
        if not path.is_file():
            raise UserError(f"--spec {path}: no such file (the shipped specs are in scripts/sweeps/)")
        spec = load_spec(path)
    elif opts["users"] is not None or opts["rate"] is not None:
        spec = SweepSpec(name="sweep", users=[1])
    else:
        raise UserError(
            "give the steps: --users 10,20,40, --users auto (a capacity search), --rate 100,200 (an open "
            "sweep) or --spec scripts/sweeps/NAME.yml"
        )
    if opts["users"] is not None and opts["rate"] is not None:
        raise UserError("--users and --rate: give one (users: a closed sweep; rate: an open one)")
    if opts["users"] is not None:
        if is_auto(opts["users"]):
            spec.users = []
            spec.search = spec.search if isinstance(spec.search, SearchSpec) else SearchSpec()
        else:
            spec.users, spec.search = parse_users(opts["users"]), None
        spec.model, spec.rates = "closed", []
    if opts["rate"] is not None:
        spec.model, spec.users = "open", []
        if is_auto(opts["rate"]):
            spec.rates = []
            spec.search = spec.search if isinstance(spec.search, RateSearchSpec) else RateSearchSpec()
        else:
            spec.rates, spec.search = parse_rates(opts["rate"], "--rate"), None
    if opts["arrivals"] is not None:
        if not spec.open:
            raise UserError("--arrivals is for an open sweep: add --rate 100,200,...")
        spec.arrivals = opts["arrivals"]
    if opts["max_users"] is not None and spec.open:
        if not 1 <= opts["max_users"] <= MAX_USERS:
            raise UserError(f"--max-users: {opts['max_users']} is out of range (1..{MAX_USERS})")
        spec.max_users = opts["max_users"]
        opts = {**opts, "max_users": None}
    for flag in ("max_users", "resolution"):
        if opts[flag] is not None and spec.search is None:
            raise UserError(
                f"--{flag.replace('_', '-')} is for a capacity search (--users auto or --rate auto)"
                + (" or an open sweep (--rate)" if flag == "max_users" else "")
            )
    if opts["max_users"] is not None:
        assert spec.search is not None
        if not 1 <= opts["max_users"] <= MAX_USERS:
            raise UserError(f"--max-users: {opts['max_users']} is out of range (1..{MAX_USERS})")
        spec.search.max_users = opts["max_users"]
        spec.search.start = min(spec.search.start, opts["max_users"])
    if opts["resolution"] is not None:
        assert spec.search is not None
        spec.search.resolution = parse_resolution(opts["resolution"])
    if opts["step_time"] is not None:
        spec.step_time = parse_duration(opts["step_time"], "--step-time")
    if opts["warmup"] is not None:
        spec.warmup = parse_duration(opts["warmup"], "--warmup")
    if opts["reset"] is not None:
        spec.reset = opts["reset"]
    if opts["spawn_rate"] is not None:
        spec.spawn_rate = finite_number(
            opts["spawn_rate"], "--spawn-rate", above=0, what="users per second, e.g. 10"
        )
    if opts["user_classes"] is not None:
        classes = [c.strip() for c in opts["user_classes"].split(",")]
        if not all(classes):
            raise UserError(f"--user-classes: {opts['user_classes']!r} holds an empty class name")
        spec.user_classes = classes
    if opts["name"] is not None:
        if not opts["name"].strip():
            raise UserError("--name: empty; give letters, digits, '.', '_' or '-'")
        spec.name = opts["name"]
    if opts["host"] is not None:
        parse_url(opts["host"], "--host")
        spec.target = opts["host"]
    if opts["locustfile"] is not None:
        if not opts["locustfile"].strip():
            raise UserError("-f: empty; give a locustfile, e.g. locustfiles/simple.py")
        spec.locustfile = opts["locustfile"]
    if opts["workers"] is not None:
        spec.workers = opts["workers"]
    spec.thresholds = [*spec.thresholds, *opts["threshold"]]
    return spec.validate()


def _plan_from_flags(opts: dict[str, Any]):  # -> SweepPlan
    from loadlab.sweep.lab_view import LabView, read_lab
    from loadlab.sweep.runner import SweepPlan

    spec = _build_spec(opts)
    standalone = spec.target not in (None, "lab")
    if standalone:
        if not spec.locustfile:
            raise UserError(
                "--host needs -f LOCUSTFILE: a standalone sweep starts its own Locust with those users"
            )
        check_locustfiles(spec.locustfile, "-f")
    else:
        if opts["locustfile"]:
            raise UserError(
                "-f is for standalone sweeps (with --host); the lab's Locust master runs its own files"
            )
        if opts["workers"] is not None:
            raise UserError(
                "--workers is for standalone sweeps (with --host); the lab's workers are already up"
            )
    inventory = opts["inventory"]
    if inventory is not None and not Path(inventory).exists():
        raise UserError(f"-i {inventory}: no such inventory")
    need_lab = not standalone or not opts["allow_any_host"]
    lab = read_lab(inventory) if need_lab else LabView(inventory=inventory)
    if standalone:
        host = spec.target
        assert host is not None
        if not opts["allow_any_host"]:
            lab.check_target(host, "; pass --allow-any-host to load it anyway")
        workers = check_workers(spec.workers or os.cpu_count() or 1, opts["allow_many_workers"])
    else:
        if lab.target_url is None:
            raise UserError(lab.error or "no lab target: the inventory names no nginx host (lb group)")
        host = lab.target_url
        workers = None
    name = spec.name
    if opts["out"] is not None and not opts["out"].strip():
        raise UserError("--out: empty; give a folder for the run, e.g. results/mine")
    out = Path(opts["out"]) if opts["out"] else Path("results") / f"{datetime.now():%Y%m%d-%H%M%S}-{name}"
    return SweepPlan(
        spec=spec,
        mode="standalone" if standalone else "lab",
        host=host,
        out=out,
        lab=lab,
        locustfile=",".join(str(Path(p).resolve()) for p in spec.locustfile.split(","))
        if standalone
        else None,
        workers=workers,
        allow_any_host=bool(opts["allow_any_host"]),
        command=_command_line(opts),
        target_revision=_target_revision(opts["target_revision"]),
    )


def _target_revision(text: str | None) -> str | None:
    if text is None:
        return None
    if not text.strip() or len(text) > 200 or not text.isprintable():
        raise UserError("--target-revision: give the target's version or commit, e.g. v1.4.2 or 3f2c1e9")
    return text.strip()


def _command_line(opts: dict[str, Any]) -> list[str]:
    """The command as given, rebuilt from the parsed options (for run.json)."""
    flags = {"locustfile": "-f", "inventory": "-i"}
    argv = ["loadlab", "sweep"]
    for key, value in opts.items():
        flag = flags.get(key, f"--{key.replace('_', '-')}")
        if value is None or value is False or value == ():
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, tuple):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv


def _plan_from_run(path: Path, opts: dict[str, Any]):  # -> tuple[SweepPlan, RunDir, list, dict]
    from loadlab.sweep.lab_view import LabView, read_lab
    from loadlab.sweep.results import RunDir
    from loadlab.sweep.runner import SweepPlan

    given = [f"--{k.replace('_', '-')}" for k in _SHAPING if opts.get(k) not in (None, (), False)]
    if given:
        raise UserError(f"--resume takes every setting from {path}/run.json; drop {', '.join(given)}")
    run_dir = RunDir(path)
    run = run_dir.read_run()
    spec = run_dir.read_spec(run)
    scan = run_dir.scan_steps(None if spec.search else (spec.rates if spec.open else spec.users))
    inventory = opts["inventory"] or (run.get("inventory") or {}).get("path")
    if inventory is not None and not isinstance(inventory, str):
        raise UserError(f"run record {path}/run.json: inventory path is {inventory!r}; pass -i INVENTORY")
    standalone = run.get("mode") == "standalone"
    if standalone and spec.next_step(scan.steps) is not None:
        if not run.get("locustfile") or not run.get("target"):
            raise UserError(f"run record {path}/run.json: a standalone run without target or locustfile")
        parse_url(run["target"], f"run record {path}/run.json: target")
        check_locustfiles(run["locustfile"], "the run's locustfile")
        check_workers(run.get("workers") or os.cpu_count() or 1, opts["allow_many_workers"])
    run_dir.check_writable("--resume")
    lab = (
        read_lab(inventory)
        if (not standalone or not run.get("allow_any_host"))
        else LabView(inventory=inventory)
    )
    host = run["target"] if standalone else lab.target_url
    if host is None:
        raise UserError(lab.error or "no lab target: the inventory names no nginx host (lb group)")
    if standalone and not run.get("allow_any_host"):
        lab.check_target(host)
    plan = SweepPlan(
        spec=spec,
        mode=run.get("mode", "lab"),
        host=host,
        out=path,
        lab=lab,
        locustfile=run.get("locustfile"),
        workers=run.get("workers"),
        allow_any_host=bool(run.get("allow_any_host")),
        command=run.get("command", []),
    )
    return plan, run_dir, scan, run


def check_locustfiles(locustfiles: str, flag: str) -> None:
    """Each locustfile exists and compiles: a typo is found before a run folder or Locust exists."""
    from loadlab.inputs import read_text

    for part in locustfiles.split(","):
        path = Path(part)
        if not path.is_file():
            raise UserError(f"{flag} {part}: no such locustfile")
        try:
            compile(read_text(path, "locustfile"), str(path), "exec")
        except SyntaxError as exc:
            raise UserError(f"{flag} {part}: line {exc.lineno}: {exc.msg}; fix the locustfile") from None
        except ValueError as exc:
            raise UserError(f"{flag} {part}: not Python source ({exc})") from None


def check_workers(workers: int, allow_many: bool) -> int:
    """At most four workers per core of this machine, unless the user says they mean more."""
    limit = WORKERS_PER_CORE * (os.cpu_count() or 1)
    if workers > limit and not allow_many:
        raise UserError(
            f"--workers {workers}: more than {limit} ({WORKERS_PER_CORE} per core here); "
            "pass --allow-many-workers to run them anyway"
        )
    return workers


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    usl = summary.get("usl")
    if summary.get("model") == "open":
        at = summary.get("max_rps_rate")
        knee, saturation = summary.get("knee_rate"), summary.get("saturation_rate")
        console.print(
            f"open model: max {summary.get('max_rps')} rps"
            + (f" at {at:g}/s intended; " if at is not None else "; ")
            + (f"kept up to {knee:g}/s" if knee is not None else "no rate kept up")
            + (f"; fell behind at {saturation:g}/s" if saturation is not None else "; nothing fell behind"),
            markup=False,
            soft_wrap=True,
        )
    else:
        console.print(
            f"max {summary.get('max_rps')} rps at {summary.get('max_rps_users')} users; "
            f"knee {summary.get('knee_users')} users"
            + ("" if (summary.get("knee") or {}).get("found") else " (no bend inside the sweep)"),
            markup=False,
            soft_wrap=True,
        )
    if usl:
        console.print(
            f"USL: sigma {usl['sigma']}, kappa {usl['kappa']}, peak {usl['peak_rps']} rps "
            f"at {usl['peak_users']} users",
            markup=False,
            soft_wrap=True,
        )
    rec = summary.get("recommendation")
    if rec:
        console.print(rec["text"], markup=False, soft_wrap=True)
    for t in summary.get("thresholds") or []:
        console.print(f"threshold {t['expr']}: {'pass' if t['passed'] else 'FAIL'}", markup=False)
    console.print(f"verdict: {summary.get('verdict')}  ({out})", markup=False)


@click.command(cls=OneLineCommand)
@click.option(
    "--users",
    help="User count of each step, e.g. 10,20,40 (a spike: 1,50,1), or 'auto': a capacity search that "
    "doubles the users until something gives out, then narrows.",
)
@click.option(
    "--rate",
    help="Open model: intended arrivals per second of each step, e.g. 100,200,400 (task iterations per "
    "second over all workers; latency is measured from each request's intended start).",
)
@click.option(
    "--arrivals",
    type=click.Choice(["even", "poisson"]),
    help="Open model: evenly paced arrivals (default) or Poisson (independent clients).",
)
@click.option(
    "--max-users",
    type=int,
    help="Capacity search: stop here when nothing gave out (default 1000). Open model: the most users "
    "behind the rate (default 1000).",
)
@click.option(
    "--resolution", help="Capacity search: narrow until the bracket is this share of the users (default 10%)."
)
@click.option("--step-time", help="Measured window per step, e.g. 30s, 2m (default 30s).")
@click.option("--warmup", help="Time after all users are running before the window opens (default 5s).")
@click.option("--spawn-rate", help="Users started (or stopped) per second between steps (default 10).")
@click.option("--out", help="Run folder (default results/<timestamp>-<name>/).")
@click.option(
    "--threshold", multiple=True, help="Gate, repeatable: 'p95<200ms', 'rps>100@50', 'fail_ratio<1%'."
)
@click.option("--spec", help="Sweep spec file (scripts/sweeps/NAME.yml); flags override its fields.")
@click.option("--resume", help="Continue the run in this folder after its last finished step.")
@click.option("--host", help="Target URL: a standalone sweep with our own Locust (needs -f).")
@click.option("-f", "--locustfile", help="Locustfile for a standalone sweep.")
@click.option(
    "--workers", type=int, help="Locust workers of a standalone sweep (default: this machine's cores)."
)
@click.option("--allow-any-host", is_flag=True, help="Allow a target that is not the inventory's nginx.")
@click.option(
    "--allow-many-workers",
    is_flag=True,
    help=f"Allow more than {WORKERS_PER_CORE} workers per core of this machine.",
)
@click.option("-i", "--inventory", help="Ansible inventory (default inventory/local.yml).")
@click.option(
    "--user-classes",
    help="Locust user classes to run, comma-separated (default: the lab's locust_default_user_classes; "
    "standalone: all the locustfile's).",
)
@click.option("--name", help="Name of the run (default: the spec's name, else 'sweep').")
@click.option(
    "--reset",
    type=int,
    help="Lab runs of the demo app: empty its users and seed this many, flush Redis, before the first step.",
)
@click.option(
    "--target-revision",
    help="What the target runs (a version or commit), kept in run.json and the index; your own app's git "
    "checkout is found by itself.",
)
@click.option(
    "--baseline",
    help="A run to gate on: exit 1 when this run's rps or p95 is really worse at a user count both have.",
)
@click.option(
    "--max-regression",
    help="With --baseline: how much worse is tolerated before the gate fails (default 5%).",
)
def sweep(**opts: Any) -> None:
    """Step load through user counts; write steps, summary.json and report.html; gate on thresholds.

    Exit 0 when every threshold holds (and the run is no real regression on --baseline), 1 when one
    failed, 2 on bad input or when the target or Locust cannot be used; a run stopped by Ctrl-C or SIGTERM
    exits 128+signal with its finished steps kept.
    """
    from loadlab.sweep.results import RunDir
    from loadlab.sweep.runner import SweepRunner, check_reachable

    baseline = _baseline(opts)

    scan = None
    if opts["resume"] is not None:
        plan, run_dir, scan, run = _plan_from_run(Path(opts["resume"]), opts)
        steps = scan.steps
        if plan.spec.next_step(steps) is None:
            console.print(
                f"{run_dir.path}: every step already finished; refreshing the summary", markup=False
            )
        run.setdefault("resumes", []).append({"command": _command_line(opts), "after_steps": len(steps)})
    else:
        plan = _plan_from_flags(opts)
        run_dir = RunDir(plan.out)
        run_dir.check_fresh()
        steps = []
        run = None
    remaining = plan.spec.next_step(steps) is not None
    reset_lab = None
    if plan.spec.reset is not None and run is None:  # a resume keeps the state its steps were measured on
        from loadlab.sweep.reset import check_resettable

        if plan.mode != "lab" and not plan.lab.names_target(plan.host):
            raise UserError("--reset resets the lab's own data: it is for sweeps of the lab")
        reset_lab = check_resettable(plan.lab.lab)
    if baseline is not None and plan.spec.search is None:
        key = "rate" if plan.spec.open else "users"
        planned = set(plan.spec.rates if plan.spec.open else plan.spec.users)
        if planned and not planned & {s.get(key) for s in baseline[0].steps}:
            what = "rates" if plan.spec.open else "user counts"
            raise UserError(
                f"--baseline {baseline[0].path}: none of its {what} is one of this sweep's "
                f"({', '.join(f'{v:g}' for v in sorted(planned))}); a gate compares steps with the same {key}"
            )
    if remaining:
        check_reachable(plan.host)
    # Every check passed: only now is anything in the run folder written. A resume that fails before it
    # measured a step puts back every file it rewrote (the run record, lines set aside, the summary).
    saved = run_dir.snapshot() if scan is not None else None
    kept = len(steps)
    try:
        if run is None:
            reset = None
            if reset_lab is not None:
                from loadlab.sweep.reset import reset_lab as do_reset

                reset = do_reset(reset_lab, int(plan.spec.reset or 0))
                console.print(
                    f"reset: {reset['postgres']['rows']} users seeded on {reset['postgres']['host']}, "
                    f"Redis on {reset['redis']['host']} flushed",
                    markup=False,
                )
            run_dir.create()
            run = plan.run_record()
            if reset is not None:
                run["reset"] = reset
        if scan is not None and scan.damaged:
            run_dir.set_aside(scan)
            run["resumes"][-1]["set_aside"] = [{"line": n, "why": why} for n, _line, why in scan.damaged]
            console.print(
                f"{len(scan.damaged)} damaged line(s) of steps.jsonl moved to steps.damaged.jsonl; "
                "their steps are measured again",
                markup=False,
            )
        run_dir.write_run(run)
        runner = SweepRunner(plan, run_dir, steps)
        if remaining:
            summary, interrupted = runner.run()
        else:
            summary, interrupted = runner.write_summary(), None
    except LoadlabError:
        if saved is not None and len(steps) == kept:
            run_dir.restore(saved)
        raise
    _write_report(plan.out, lab_panels=plan.mode == "lab")
    if interrupted is not None:
        err_console.print(
            f"interrupted by {interrupted}: {summary['finished_steps']} of {summary['planned_steps']} steps "
            "kept in "
            f"{plan.out}; continue with: loadlab sweep --resume {plan.out}",
            markup=False,
            soft_wrap=True,
        )
        import signal

        sys.exit(128 + int(getattr(signal, interrupted)))
    _print_summary(summary, plan.out)
    gated = _gate(baseline, run_dir, summary) if baseline is not None else "pass"
    _index(run_dir, summary)
    if gated == "not judged":
        sys.exit(2)  # the run is kept; the baseline could not be compared with it (said above)
    sys.exit(0 if summary["verdict"] == "pass" and gated == "pass" else 1)


def _index(run_dir: Any, summary: dict[str, Any]) -> None:
    """A finished run goes into its results folder's index.jsonl (`loadlab runs`); a folder the index
    cannot be written in costs the index line, never the run."""
    from loadlab.sweep.history import record

    try:
        record(run_dir.path, run_dir.read_run(), summary)
    except UserError as exc:
        err_console.print(f"warning: {exc}", markup=False)


def _baseline(opts: dict[str, Any]) -> tuple[Any, float] | None:
    """--baseline RUN and --max-regression, checked before anything runs."""
    if opts["baseline"] is None:
        if opts["max_regression"] is not None:
            raise UserError("--max-regression needs --baseline RUN: the run to compare against")
        return None
    from loadlab.sweep.compare import load_run

    tolerance = parse_share(opts["max_regression"] or "5%", "--max-regression")
    return load_run(Path(opts["baseline"])), tolerance


def _gate(baseline: tuple[Any, float], run_dir: Any, summary: dict[str, Any]) -> str:
    """This run against the baseline; summary.json gets `baseline`; the gate's verdict."""
    from loadlab.sweep.compare import gate, load_run

    base, tolerance = baseline
    try:
        record = gate(base, load_run(run_dir.path), tolerance)
    except UserError as exc:
        record = {"run": str(base.path), "max_regression": tolerance, "verdict": "not judged"}
        record["why"] = str(exc)
    summary["baseline"] = record
    run_dir.write_summary(summary)
    worse = ", ".join(
        f"{r['figure']} {100 * r['change']:+.1f}% at "
        + (f"{r['rate']:g}/s" if r.get("rate") is not None else f"{r['users']} users")
        for r in record.get("regressions") or []
    )
    console.print(
        f"baseline {base.path}: {record['verdict']}"
        + (f" ({worse})" if worse else "")
        + (f" ({record['why']})" if record.get("why") else "")
        + f", tolerance {100 * tolerance:g}%",
        markup=False,
        soft_wrap=True,
    )
    return str(record["verdict"])


def _write_report(path: Path, lab_panels: bool) -> None:
    from loadlab.sweep.report import write_report

    try:
        report = write_report(path, panels=lab_panels)
    except UserError as exc:
        err_console.print(f"report not written: {exc}", markup=False)
        return
    console.print(f"report: {report}", markup=False)
