"""`loadlab calibrate`: the lab proves its diagnosis on itself.

Each case provokes one known bottleneck on the lab's own stack — with a user class of
locustfiles/calibrate.py, the number of users and workers that make it give out, and at most one action
during the window — then runs one sweep step through the same code as `loadlab sweep` (its own Locust on
this machine, the lab's figures from the lab's Prometheus) and checks the diagnosis: the provoked code is
among the step's codes, and nothing that was not provoked is blamed (`host_cpu_saturated` beside it is
fine when the generator shares the target's host). A case that stops a component starts it again before
the case ends, whatever happens; no knob of the lab is changed, so the lab is as it was afterwards.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from loadlab.errors import LabError, UserError
from loadlab.lab import Host, Lab
from loadlab.remote import RemoteHosts
from loadlab.sweep.lab_view import LabView, view_of
from loadlab.sweep.results import RunDir
from loadlab.sweep.spec import SweepSpec

LOCUSTFILE = Path(__file__).resolve().parent.parent / "locustfiles" / "calibrate.py"
# Beside the provoked code these may appear without failing a case: a shared host's CPU fills up with the
# generator and the target on it.
TOLERATED = {"ok", "host_cpu_saturated"}
SUPERVISORCTL = "supervisorctl -c {etc}/supervisord.conf"
STOP_FOR = 0.4  # share of the window a stopped component stays down, from a quarter into it
PROGRAMS = {"postgres": "postgres", "lb": "nginx"}  # inventory group -> its supervisor program


@dataclass
class Case:
    """One provoked bottleneck: who loads what, how hard, and which codes the step must name."""

    name: str
    provokes: str  # what the case does, in words
    expects: tuple[str, ...]  # diagnosis codes the step must name
    user_class: str
    users: int
    workers: int
    target: str = "nginx"  # "nginx" or "app": the first app instance, directly
    stop: str | None = None  # a lab group (postgres, lb): its program is stopped mid-window, then started
    result: dict[str, Any] = field(default_factory=dict)


def cases(lab: Lab) -> list[Case]:
    """The cases, sized from the inventory: pools, instances."""
    app_hosts = lab.group("app")
    instances = sum(len(h.app_ports()) for h in app_hosts) or 1
    pool = (app_hosts[0] if app_hosts else next(iter(lab.hosts.values()))).int_var("app_db_pool_size")
    return [
        Case(
            "db_pool",
            f"{3 * pool * instances} users holding a DB connection {300} ms each: 3 per pool slot",
            ("db_connections_saturated",),
            "PoolHoldUser",
            users=3 * pool * instances,
            workers=2,
        ),
        Case(
            "target_cpu",
            "4 users back to back on /cpu?ms=20 of one app instance",
            ("target_cpu_bound",),
            "CpuUser",
            users=4,
            workers=1,
            target="app",
        ),
        Case(
            "generator_cpu",
            "one Locust worker, 10 users with no think time on nginx's own /lb-ping",
            ("generator_cpu_bound",),
            "LbPingUser",
            users=10,
            workers=1,
        ),
        Case(
            "shared_pool",
            "30 users of one worker sharing one 10-socket session",
            ("client_connection_capped",),
            "SharedPoolUser",
            users=30,
            workers=1,
        ),
        Case(
            "component_down",
            "PostgreSQL stopped mid-window for 40% of it, then started again",
            ("component_down", "errors"),
            "SteadyDbUser",
            users=10,
            workers=1,
            stop="postgres",
        ),
        Case(
            "lb_down",
            "nginx stopped mid-window for 40% of it, then started again",
            ("component_down", "errors"),
            "SteadyDbUser",
            users=10,
            workers=1,
            stop="lb",
        ),
    ]


def judge(case: Case, codes: list[str]) -> tuple[bool, list[str], list[str]]:
    """(passed, missing codes, codes blamed that were not provoked)."""
    missing = [c for c in case.expects if c not in codes]
    extra = [c for c in codes if c not in case.expects and c not in TOLERATED]
    return not missing and not extra, missing, extra


class Calibration:
    """Runs the cases against the lab of `inventory`, one run folder each under `out`."""

    def __init__(
        self,
        inventory: str | None,
        out: Path | None,
        step_time: float,
        warmup: float,
        only: list[str] | None = None,
        note: Callable[[str], None] = print,
    ) -> None:
        self.view: LabView = view_of(Lab.load(inventory))
        self.lab = self.view.lab
        assert self.lab is not None
        if self.view.nginx_url is None:
            raise UserError(
                "the inventory names no nginx host (lb group): calibrate provokes known bottlenecks of the "
                "lab's own stack, so run it on a lab that has one (inventory/local.yml)"
            )
        if not self.view.prometheus_url:
            raise UserError(
                "the inventory names no Prometheus (monitor group): calibrate reads the lab from it"
            )
        own = sorted({h.name for h in self.lab.group("app") if h.var("app_command")})
        if own:
            raise UserError(
                f"the lab runs your own app on {', '.join(own)} (app_command): calibrate provokes known "
                "bottlenecks of the lab's demo app; run it on a lab without app_source/app_command"
            )
        from loadlab.sweep.resources import PROMETHEUS_MIN_SCRAPES

        shortest = PROMETHEUS_MIN_SCRAPES * self.view.scrape_interval
        if step_time < shortest:
            raise UserError(
                f"--step-time: at least {shortest:g}s, {PROMETHEUS_MIN_SCRAPES} scrapes of the lab's "
                f"Prometheus (every {self.view.scrape_interval:g}s), which calibrate reads the lab from"
            )
        self.out = out or Path("results") / f"{datetime.now():%Y%m%d-%H%M%S}-calibrate"
        self.step_time, self.warmup = step_time, warmup
        self.note = note
        all_cases = cases(self.lab)
        known = [c.name for c in all_cases]
        for name in only or ():
            if name not in known:
                raise UserError(f"--case {name}: no such case (known: {', '.join(known)})")
        self.cases = [c for c in all_cases if not only or c.name in only]

    def _target(self, case: Case) -> str:
        if case.target == "app":
            if not self.view.apps:
                raise UserError("the inventory names no app instance: the target_cpu case needs one")
            address, port = self.view.apps[0]
            return f"http://{address}:{port}"
        assert self.view.nginx_url is not None
        return self.view.nginx_url

    @contextlib.contextmanager
    def _action(self, case: Case) -> Iterator[Callable[[float], None] | None]:
        """The mid-window action of a case, and the restore that runs whatever happens."""
        if case.stop is None:
            yield None
            return
        assert self.lab is not None
        host: Host = self.lab.group(case.stop)[0]
        program = PROGRAMS[case.stop]
        ctl = SUPERVISORCTL.format(etc=host.var("loadlab_etc_dir"))
        remotes = RemoteHosts(self.lab)
        events: dict[str, float] = {}

        def stop_then_start(window: float) -> None:
            try:
                time.sleep(window / 4)
                events["stopped_at"] = time.time()
                remotes[host].run(f"{ctl} stop {program}")
                time.sleep(window * STOP_FOR)
                remotes[host].run(f"{ctl} start {program}")
                events["started_at"] = time.time()
            except LabError as exc:  # the case then fails on its diagnosis; the restore below still runs
                events["error"] = str(exc)

        try:
            yield stop_then_start
        finally:
            remotes[host].run(f"{ctl} start {program}")  # already running: a harmless "already started"
            remotes.close()
            case.result["action"] = {"host": host.name, "component": program, **events}

    def run_case(self, case: Case) -> dict[str, Any]:
        from loadlab.sweep.runner import SweepPlan, SweepRunner

        spec = SweepSpec(
            name=case.name,
            users=[case.users],
            step_time=self.step_time,
            warmup=self.warmup,
            spawn_rate=max(10.0, float(case.users)),
            user_classes=[case.user_class],
        ).validate()
        out = self.out / case.name
        run_dir = RunDir(out)
        run_dir.check_fresh()
        with self._action(case) as action:
            plan = SweepPlan(
                spec=spec,
                mode="standalone",
                host=self._target(case),
                out=out,
                lab=self.view,
                locustfile=str(LOCUSTFILE),
                workers=case.workers,
                command=["loadlab", "calibrate", "--case", case.name],
                during_window=action,
            )
            run_dir.create()
            run_dir.write_run(plan.run_record())
            runner = SweepRunner(plan, run_dir, [])
            summary, interrupted = runner.run()
        if interrupted:
            raise KeyboardInterrupt
        (step,) = summary["steps"]
        codes = list(step.get("diagnosis") or [])
        passed, missing, extra = judge(case, codes)
        case.result.update(
            {
                "case": case.name,
                "provoked": case.provokes,
                "expects": list(case.expects),
                "diagnosed": codes,
                "passed": passed,
                "missing": missing,
                "blamed_wrongly": extra,
                "evidence": step.get("diagnosis_evidence"),
                "rps": step.get("rps"),
                "fail_ratio": step.get("fail_ratio"),
                "run": str(out),
            }
        )
        return case.result

    def check_lab(self) -> None:
        """The lab answers: its nginx and its Prometheus, which every case reads (one line when not)."""
        import httpx

        from loadlab.sweep.runner import check_reachable

        assert self.view.nginx_url is not None and self.view.prometheus_url is not None
        try:
            check_reachable(self.view.nginx_url)
        except LabError as exc:
            raise LabError(f"{exc}: is the lab up? (loadlab status)") from None
        try:
            ready = httpx.get(f"{self.view.prometheus_url}/-/ready", timeout=5, trust_env=False).status_code
        except httpx.HTTPError:
            ready = None
        if ready != 200:
            raise LabError(
                f"the lab's Prometheus at {self.view.prometheus_url} does not answer: is the lab up? "
                "(loadlab status)"
            )

    def run(self) -> list[dict[str, Any]]:
        self.check_lab()
        self.out.mkdir(parents=True, exist_ok=True)
        results = []
        for number, case in enumerate(self.cases, start=1):
            self.note(f"case {number}/{len(self.cases)} {case.name}: {case.provokes}")
            results.append(self.run_case(case))
            r = results[-1]
            verdict = "pass" if r["passed"] else "FAIL"
            self.note(f"case {case.name}: {verdict} (diagnosed {', '.join(r['diagnosed'])})")
            (self.out / "calibrate.json").write_text(json.dumps({"cases": results}, indent=2) + "\n")
        return results
