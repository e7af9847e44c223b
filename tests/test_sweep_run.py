"""Sweeps against real servers on loopback, driven through real Locust processes.

The targets have known limits: tests/sweep_target.py serves at most SLOTS requests at once, each held HOLD
seconds (capacity SLOTS/HOLD rps, knee at SLOTS users); nginx answering a static 200 is fast enough that one
Locust worker runs out of CPU first. Loads are small (tens of users, steps of a few seconds) because the
generator and the targets share this machine's two cores.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from loadlab.cli import main
from loadlab.sweep.locust_driver import LocalLocust
from tests.servers import free_port, wait_port

REPO = Path(__file__).resolve().parent.parent
LOCUSTFILES = REPO / "tests" / "locustfiles"
LOADLAB = str(Path(sys.executable).with_name("loadlab"))
pytestmark = pytest.mark.server  # sweep targets, nginx and Locust processes
SLOTS, HOLD = 8, 0.05
STEP = ["--step-time", "6s", "--warmup", "2s", "--spawn-rate", "50"]


class Target:
    """tests/sweep_target.py in a subprocess."""

    def __init__(self, slots: int, hold: float, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "sweep_target.py"), "--port", str(self.port),
             "--slots", str(slots), "--hold", str(hold), *extra],
        )  # fmt: skip
        wait_port(self.port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _our_locusts() -> list[str]:
    """Command lines of the Locust processes this test process started that are still running."""
    ours = [c for c in psutil.Process().children(recursive=True) if not _gone(c)]
    return [" ".join(c.cmdline()) for c in ours if "locust" in " ".join(c.cmdline())]


@pytest.fixture(autouse=True)
def no_locust_left_behind() -> Iterator[None]:
    """Every sweep stops the Locust it started: after each test, none is left (a few seconds' grace)."""
    yield
    deadline = time.monotonic() + 10
    while _our_locusts() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _our_locusts() == []


@pytest.fixture(scope="module")
def capacity_target() -> Iterator[Target]:
    target = Target(SLOTS, HOLD)
    yield target
    target.stop()


@pytest.fixture(scope="module")
def wide_target() -> Iterator[Target]:
    """Far more slots than any test's users: whatever caps throughput is on the client side."""
    target = Target(100, HOLD)
    yield target
    target.stop()


def run_sweep(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["sweep", *args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def plain_locust_rps(url: str, users: int, seconds: int, workdir: Path) -> float:
    """What Locust alone measures: headless, one process, stats reset once every user runs."""
    prefix = workdir / "plain"
    subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILES / "closed_loop.py"), "--headless",
         "-u", str(users), "-r", "50", "-t", f"{seconds}s", "--host", url, "--reset-stats",
         "--only-summary", "--csv", str(prefix)],
        check=True, capture_output=True, timeout=seconds + 60, cwd=workdir,
    )  # fmt: skip
    with open(f"{prefix}_stats.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    return float(row["Requests/s"])


@pytest.fixture(scope="module")
def capacity_run(capacity_target: Target, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("capacity") / "run"
    code, output = run_sweep(
        "--host", capacity_target.url, "-f", str(LOCUSTFILES / "closed_loop.py"), "--allow-any-host",
        "--users", "2,4,8,16", *STEP, "--workers", "2", "--out", str(out),
        "--threshold", "p95<1s", "--threshold", "fail_ratio<1%",
        "--threshold", f"rps>{SLOTS / HOLD / 2:g}@16",
    )  # fmt: skip
    plain = plain_locust_rps(capacity_target.url, 16, 12, out.parent)
    return {"code": code, "output": output, "out": out, "summary": summary_of(out), "plain_rps": plain}


@pytest.mark.timeout(240)
def test_max_rps_matches_plain_locust_and_the_knee_is_the_capacity(capacity_run: dict) -> None:
    summary = capacity_run["summary"]
    assert capacity_run["code"] == 0, capacity_run["output"]
    assert [s["users"] for s in summary["steps"]] == [2, 4, 8, 16]
    assert summary["max_rps"] == pytest.approx(capacity_run["plain_rps"], rel=0.10)
    assert summary["knee_users"] == SLOTS
    assert summary["knee"]["found"] is True
    last = summary["steps"][-1]
    assert "target_saturated" in last["diagnosis"]
    assert last["diagnosis_evidence"]["target_saturated"]["users"] == [8, 16]
    assert summary["usl"] is not None
    assert summary["usl"]["peak_rps"] == pytest.approx(SLOTS / HOLD, rel=0.25)
    assert summary["recommendation"]["text"].startswith(f"stay at or below {SLOTS} users for p95 under")


def test_each_step_keeps_its_samples_second_by_second(capacity_run: dict) -> None:
    """Every step's workers' reports are in samples/step-N.json; their per-second rate averages to the
    step's own rps, and the 16-user step's seconds sit at the target's capacity."""
    from loadlab.sweep import samples

    out = capacity_run["out"]
    for step in capacity_run["summary"]["steps"]:
        data = samples.read(out, step["index"])
        assert data is not None and step["samples"] == f"samples/step-{step['index'] + 1}.json"
        assert {r["worker"] for r in data["reports"]} and len({r["worker"] for r in data["reports"]}) == 2
        per_second = samples.series(data)
        # one value per second the workers' reports cover (the last report may still be on its way)
        assert int(data["window_s"]) - 1 <= len(per_second["rps"]) <= int(data["window_s"])
        mean = sum(per_second["rps"]) / len(per_second["rps"])
        assert mean == pytest.approx(step["rps"], rel=0.1), (per_second["rps"], step["rps"])
    last = samples.series(samples.read(out, capacity_run["summary"]["steps"][-1]["index"]))
    assert all(v == pytest.approx(SLOTS / HOLD, rel=0.25) for v in last["rps"]), last["rps"]


@pytest.mark.timeout(240)
def test_compare_calls_a_30_percent_slower_target_slower_and_the_same_target_the_same(
    capacity_run: dict, capacity_target: Target, tmp_path: Path
) -> None:
    """The same 16-user step against a target whose requests take 1/0.7 as long (30% less capacity), and
    against the same target again: compare says slower by about 30%, then no difference;
    each sweep gated on the first run (--baseline) fails on the regression and passes on the rerun."""
    slower = Target(SLOTS, HOLD / 0.7)
    try:
        runs, gates = {}, {}
        for name, target in (("slower", slower), ("again", capacity_target)):
            code, output = run_sweep(
                "--host", target.url, "-f", str(LOCUSTFILES / "closed_loop.py"), "--allow-any-host",
                "--users", "16", *STEP, "--workers", "2", "--out", str(tmp_path / name),
                "--baseline", str(capacity_run["out"]), "--max-regression", "5%", "--target-revision", name,
            )  # fmt: skip
            runs[name] = tmp_path / name
            gates[name] = (code, summary_of(tmp_path / name)["baseline"], output)
    finally:
        slower.stop()
    # The gate: exit 1 on the real regression, with what regressed in summary.json; exit 0 on the rerun.
    code, record, output = gates["slower"]
    assert code == 1 and record["verdict"] == "regression", output
    assert {(r["users"], r["figure"]) for r in record["regressions"]} >= {(16, "rps"), (16, "p95_ms")}, record
    assert "baseline " in output and "regression (rps" in output
    code, record, output = gates["again"]
    assert code == 0 and record["verdict"] == "pass" and record["regressions"] == [], (record, output)
    # Both finished runs are in their results folder's index, with the gate's verdict (`loadlab runs`).
    index = [json.loads(line) for line in (tmp_path / "index.jsonl").read_text().splitlines()]
    assert [(e["id"], e["target_revision"], e["baseline"]["verdict"]) for e in index] == [
        ("slower", "slower", "regression"),
        ("again", "again", "pass"),
    ]
    result = CliRunner().invoke(
        main, ["compare", str(capacity_run["out"]), str(runs["slower"]), str(runs["again"]),
               "--out", str(tmp_path / "cmp")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    worse, same = json.loads((tmp_path / "cmp" / "compare.json").read_text())["comparisons"]
    assert worse["common_users"] == [16] and worse["verdict"] == "slower"
    row = {r["figure"]: r for r in worse["rows"]}
    assert row["rps"]["verdict"] == "slower" and row["rps"]["change"] == pytest.approx(-0.30, abs=0.08), row
    # 16 users queue for 8 slots: each waits twice its hold, which is 1/0.7 as long
    assert row["p50_ms"]["verdict"] == "slower"
    assert row["p50_ms"]["change"] == pytest.approx(1 / 0.7 - 1, abs=0.12), row["p50_ms"]
    assert same["verdict"] == "no real difference", [
        (r["users"], r["figure"], r["change"], r["verdict"]) for r in same["rows"]
    ]
    assert (tmp_path / "cmp" / "compare.html").is_file()


REPEATS = 8  # steps of one sweep at the same user count: 28 pairs, 4 disjoint ones at a time
ALPHA = 0.05  # `loadlab compare`'s default, with its default tolerance (2%)
RISK = 0.01  # the chance that a method which keeps its claim fails this test anyway


def chernoff_allowance(p: float, independent: int, risk: float) -> float:
    """The share that a mean of `independent` independent values in [0, 1], each with mean at most p,
    exceeds with probability at most `risk`: the c > p where exp(-independent * KL(c || p)) = risk, KL the
    relative entropy of Bernoulli(c) to Bernoulli(p) (the Chernoff bound of the binomial, which Hoeffding
    1963, Theorem 1, shows for any values in [0, 1]). 1.0 where no share below 1 is that unlikely."""

    def excess(c: float) -> float:
        kl = c * math.log(c / p) + ((1 - c) * math.log((1 - c) / (1 - p)) if c < 1 else 0.0)
        return independent * kl - math.log(1 / risk)

    if excess(1.0) <= 0:
        return 1.0
    lo, hi = p, 1.0
    for _ in range(60):  # bisection: KL(c || p) grows with c above p
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if excess(mid) > 0 else (mid, hi)
    return hi


@pytest.mark.timeout(240)
def test_repeated_steps_of_one_target_are_seldom_called_different(
    capacity_target: Target, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The false-alarm rate on real runs: one sweep holds the same 16 users on one target for REPEATS steps,
    and every pair of its steps is compared as `loadlab compare` compares two runs' steps (compare() on two
    one-step views of the run: every figure that has samples, Holm over them, alpha 0.05, tolerance 2%).
    Nothing differs between the steps, so every figure called a real difference is a false alarm.

    The method claims that a comparison calls any of its figures different by luck with a chance of at most
    alpha (Holm's family-wise bound), so each figure at most alpha too: the share of pairs with an alarm
    and the share of figures called should stay near alpha or under. The 28 pairs are not independent:
    pairs that share a step share its luck, and one unusual step can put an alarm in all 7 of its pairs.
    So the allowance counts only 4 independent comparisons, the disjoint pairs: the 28 pairs are 7 rounds
    of 4 disjoint pairs (a round-robin), the share over all of them is the mean of the rounds' shares, and
    since exp is convex that mean obeys every Chernoff bound one round, a mean of 4 independent comparisons,
    obeys (Hoeffding 1963, section 5). That assumes the steps' noise independent from step to step (each
    window follows a ramp and a warm-up; the per-second figures' autocorrelation lasts a few seconds); a
    drift that moves every later step is a real change, which the tolerance keeps quiet while it is small.
    With 4 independent comparisons the allowance is wide (60% at 1% risk): this catches a method that calls
    its noise real, not one a few points off alpha, whose exact rate tests/test_compare_stats.py checks on
    300 independent synthetic pairs. The measured shares are printed in the log."""
    from loadlab.sweep.compare import compare, load_run

    out = tmp_path / "run"
    code, output = run_sweep(
        "--host", capacity_target.url, "-f", str(LOCUSTFILES / "closed_loop.py"), "--allow-any-host",
        "--users", ",".join(["16"] * REPEATS), "--step-time", "6s", "--warmup", "1s", "--spawn-rate", "50",
        "--workers", "1", "--out", str(out),
    )  # fmt: skip
    assert code == 0, output
    run = load_run(out)
    assert [s["users"] for s in run.steps] == [16] * REPEATS
    pairs = list(itertools.combinations(run.steps, 2))
    judged: dict[str, int] = {}
    called: list[tuple[int, int, str, float | None, str]] = []
    pair_shares, pairs_called = [], 0
    for a, b in pairs:
        result = compare(replace(run, steps=[a]), replace(run, steps=[b]), alpha=ALPHA)
        rows = [r for r in result["rows"] if r["p_value"] is not None]  # CPU needs samples of it
        assert {"rps", "p50_ms", "p95_ms", "p99_ms", "fail_ratio"} <= {r["figure"] for r in rows}, result
        alarms = [r for r in rows if r["verdict"] != "no real difference"]
        for r in rows:
            judged[r["figure"]] = judged.get(r["figure"], 0) + 1
        called += [(a["index"] + 1, b["index"] + 1, r["figure"], r["change"], r["verdict"]) for r in alarms]
        pair_shares.append(len(alarms) / len(rows))
        pairs_called += bool(alarms)
    figure_share = sum(pair_shares) / len(pairs)
    pair_share = pairs_called / len(pairs)
    allowance = chernoff_allowance(ALPHA, REPEATS // 2, RISK)
    with capsys.disabled():  # in the log of every run, passed or not
        print(
            f"\nfalse alarms over {len(pairs)} pairs of {REPEATS} repeated 16-user steps: "
            f"{len(called)} of {sum(judged.values())} figures judged ({figure_share:.1%}), "
            f"{pairs_called} of {len(pairs)} pairs with any ({pair_share:.1%}); alpha {ALPHA:.0%}, "
            f"allowance {allowance:.1%} (Chernoff bound for {REPEATS // 2} independent pairs, "
            f"risk {RISK:.0%}); figures judged: {judged}; called: {called or 'none'}"
        )
    assert figure_share <= allowance, called
    assert pair_share <= allowance, called


def test_each_step_has_window_figures_and_resources(capacity_run: dict) -> None:
    summary = capacity_run["summary"]
    for step in summary["steps"]:
        for key in ("users", "rps", "p50_ms", "p95_ms", "p99_ms", "fail_ratio", "client_sockets",
                    "loadgen_cpu", "target_cpu", "diagnosis", "p90_ms", "max_ms", "endpoints"):  # fmt: skip
            assert step[key] is not None, key
        assert step["p50_ms"] <= step["p90_ms"] <= step["p95_ms"] <= step["p99_ms"]
        # Locust keeps response times above 100 ms to two significant digits (107 -> 110); max is exact.
        assert step["p99_ms"] <= step["max_ms"] * 1.1
        assert step["fail_ratio"] == 0.0
        # Each closed-loop user keeps its own keep-alive socket.
        assert step["client_sockets"] == step["users"]
        # Every process keyed with this machine's name in the lab; Locust's CPU is the total of its processes.
        names = {n for n, p in step["resources"]["processes"].items() if p["role"] == "loadgen"}
        here = {n.split("/")[0] for n in names}
        assert len(here) == 1 and here <= {socket.gethostname(), "localhost"}, names
        assert {n.split("/")[1] for n in names} == {"locust-master", "locust-worker-1", "locust-worker-2"}
        assert step["loadgen_cpu"] >= step["loadgen_cpu_busiest"]["cpu"] > 0
        assert step["loadgen_cpu_busiest"]["process"] in names
        # The target is on this machine: its end of every client socket is counted too.
        assert step["server_sockets"] == step["client_sockets"]
        assert step["endpoints"][0]["name"] == "/"
        # A window holds only its own requests: users x window / hold at most.
        assert step["requests"] <= min(step["users"], SLOTS) * step["window_s"] / HOLD * 1.05
    assert [set(s["diagnosis"]) <= {"ok", "target_saturated"} for s in summary["steps"]] == [True] * 4


def test_thresholds_that_hold_pass_with_exit_0(capacity_run: dict) -> None:
    summary = capacity_run["summary"]
    assert summary["verdict"] == "pass"
    assert [(t["expr"], t["passed"]) for t in summary["thresholds"]] == [
        ("p95<1s", True), ("fail_ratio<1%", True), (f"rps>{SLOTS / HOLD / 2:g}@16", True),
    ]  # fmt: skip


def test_run_folder_files(capacity_run: dict) -> None:
    out: Path = capacity_run["out"]
    lines = (out / "steps.jsonl").read_text().splitlines()
    assert [json.loads(ln)["users"] for ln in lines] == [2, 4, 8, 16]
    with open(out / "steps.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["users"]) for r in rows] == [2, 4, 8, 16]
    run = json.loads((out / "run.json").read_text())
    assert run["mode"] == "standalone" and run["workers"] == 2
    assert run["spec"]["users"] == [2, 4, 8, 16]
    assert run["versions"]["locust"] and run["command"][:2] == ["loadlab", "sweep"]
    # the checkout the sweep ran from (this process's folder), as `git rev-parse HEAD` names it
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout
    assert run["git"]["commit"] == head.strip() and isinstance(run["git"]["dirty"], bool), run["git"]
    for name in ("report.html", "throughput_p95.png", "cpu.png", "sockets.png"):
        assert (out / name).stat().st_size > 1000, name


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs chromium")
def test_report_regenerates_and_renders_in_headless_chromium(capacity_run: dict, tmp_path: Path) -> None:
    out: Path = capacity_run["out"]
    (out / "report.html").unlink()
    result = CliRunner().invoke(main, ["report", str(out), "--no-panels"])
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text()
    assert 'class="capacity"' in html and "throughput_p95.png" in html and "stay at or below" in html
    shot = tmp_path / "report.png"
    subprocess.run(
        ["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--screenshot={shot}",
         "--window-size=1200,2000", (out / "report.html").as_uri()],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(180)
def test_a_shared_10_socket_pool_is_client_connection_capped(wide_target: Target, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, output = run_sweep(
        "--host", wide_target.url, "-f", str(REPO / "locustfiles" / "calibrate.py"), "--allow-any-host",
        "--user-classes", "SharedPoolUser", "--users", "5,10,20", *STEP, "--workers", "1", "--out", str(out),
        "--threshold", "p95<80ms",
    )  # fmt: skip
    summary = summary_of(out)
    by_users = {s["users"]: s for s in summary["steps"]}
    assert by_users[5]["client_sockets"] == 5
    assert by_users[10]["client_sockets"] == 10
    assert by_users[20]["client_sockets"] == 10
    assert "client_connection_capped" not in by_users[10]["diagnosis"]
    assert by_users[20]["diagnosis"] == ["client_connection_capped"]
    assert by_users[20]["diagnosis_evidence"]["client_connection_capped"]["client_sockets"] == 10
    # Twice the users on the same 10 sockets: latency doubles, so the p95 gate fails: exit 1.
    assert code == 1, output
    assert summary["verdict"] == "fail"
    assert summary["thresholds"][0]["failed_steps"][0]["users"] == 20


@pytest.mark.timeout(120)
def test_one_worker_against_fast_nginx_is_generator_cpu_bound(nginx_stub, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, output = run_sweep(
        "--host", f"http://127.0.0.1:{nginx_stub.port}", "-f", str(LOCUSTFILES / "closed_loop.py"),
        "--allow-any-host", "--users", "20", *STEP, "--workers", "1", "--out", str(out),
    )  # fmt: skip
    assert code == 0, output
    step = summary_of(out)["steps"][0]
    assert "generator_cpu_bound" in step["diagnosis"]
    evidence = step["diagnosis_evidence"]["generator_cpu_bound"]
    assert evidence["process"].endswith("/locust-worker-1")
    assert evidence["host"] == evidence["process"].split("/")[0]
    assert "target_saturated" not in step["diagnosis"]


@pytest.mark.timeout(300)
def test_users_auto_finds_the_known_capacity_in_fewer_steps_than_a_linear_sweep(
    capacity_target: Target, tmp_path: Path
) -> None:
    """SLOTS slots held HOLD s each: the knee is at SLOTS users, SLOTS/HOLD rps. A linear sweep of the
    search's resolution (10% of SLOTS: one user) from 2 users measures every count up to the first bad one;
    the search starts at 4."""
    spec = tmp_path / "search.yml"
    spec.write_text("users: auto\nsearch: {start: 4, resolution: 10%}\n")
    out = tmp_path / "run"
    code, output = run_sweep(
        "--host", capacity_target.url, "-f", str(LOCUSTFILES / "closed_loop.py"), "--allow-any-host",
        "--spec", str(spec), *STEP, "--workers", "2", "--out", str(out),
    )  # fmt: skip
    assert code == 0, output
    summary = summary_of(out)
    capacity = summary["capacity"]
    users = [s["users"] for s in summary["steps"]]
    assert capacity["limit_found"] and capacity["narrow"], capacity
    assert SLOTS - 1 <= capacity["users"] <= SLOTS + 1, (capacity, users)
    assert capacity["rps"] == pytest.approx(SLOTS / HOLD, rel=0.2)
    assert {"target_saturated", "throughput_bend"} & set(capacity["gave_out"]), capacity
    assert not capacity["generator_limited"]
    linear = len(range(2, capacity["first_bad_users"] + 1))
    assert len(users) < linear, users
    # One answer: the printed verdict, the summary's recommendation and its capacity say the same.
    assert summary["recommendation"]["users"] == capacity["users"]
    assert f"carries about {capacity['rps']} rps at {capacity['users']} users" in output
    assert "step 3/?" in output


@pytest.mark.timeout(300)
def test_users_auto_against_a_target_beyond_the_generators_reach_blames_the_generator(
    nginx_stub, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    code, output = run_sweep(
        "--host", f"http://127.0.0.1:{nginx_stub.port}", "-f", str(LOCUSTFILES / "closed_loop.py"),
        "--allow-any-host", "--users", "auto", "--max-users", "40", *STEP, "--workers", "1",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, output
    capacity = summary_of(out)["capacity"]
    assert capacity["limit_found"] and capacity["generator_limited"], capacity
    assert "generator_cpu_bound" in capacity["gave_out"]
    assert "target_saturated" not in capacity["gave_out"]
    assert (
        "the target's own limit lies beyond" in capacity["text"] or "beyond the generator" in capacity["text"]
    )


def lab_knobs(target: Target, lab_locust: LocalLocust, etc_dir: Path) -> dict[str, object]:
    """Inventory knobs for a lab of a test target and a test Locust master; every other lab port is one
    nothing here uses, so no other lab on this machine is measured."""
    return {
        "nginx_port": target.port,
        "locust_web_port": lab_locust.web_port,
        "locust_master_port": lab_locust.master_port,
        "app_instances": 0,
        "postgres_port": free_port(),
        "redis_port": free_port(),
        "prometheus_port": free_port(),
        "grafana_port": free_port(),
        "loadlab_etc_dir": str(etc_dir),
        # The test master's locustfile is not the lab's: a run that names no class runs all of its classes.
        "locust_default_user_classes": [],
    }


def _locust_children(pid: int) -> list[psutil.Process]:
    try:
        return [c for c in psutil.Process(pid).children(recursive=True) if "locust" in " ".join(c.cmdline())]
    except psutil.Error:
        return []


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.2)


@pytest.mark.timeout(180)
def test_sigterm_keeps_finished_steps_and_resume_finishes_the_run(
    capacity_target: Target, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    cmd = [LOADLAB, "sweep", "--host", capacity_target.url, "-f", str(LOCUSTFILES / "closed_loop.py"),
           "--allow-any-host", "--users", "2,4,8", "--step-time", "3s", "--warmup", "0s",
           "--spawn-rate", "50",
           "--workers", "1", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    steps_file = out / "steps.jsonl"
    _wait(lambda: steps_file.exists() and steps_file.read_text().count("\n") >= 1 or proc.poll() is not None)
    children = _locust_children(proc.pid)
    assert children, "the sweep's Locust processes"
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert f"--resume {out}" in output
    _wait(lambda: all(_gone(c) for c in children), timeout=20)
    kept = [json.loads(ln) for ln in steps_file.read_text().splitlines()]
    assert 1 <= len(kept) < 3
    partial = summary_of(out)
    assert partial["complete"] is False and partial["interrupted"] == "SIGTERM"

    code, output = run_sweep("--resume", str(out))
    assert code == 0, output
    summary = summary_of(out)
    assert [s["users"] for s in summary["steps"]] == [2, 4, 8]
    assert summary["complete"] is True
    assert summary["steps"][0]["window_start"] == kept[0]["window_start"]  # the finished step was kept as is
    assert json.loads((out / "run.json").read_text())["resumes"][0]["after_steps"] == len(kept)


@pytest.mark.timeout(120)
def test_a_killed_sweep_takes_its_locust_down_and_resume_repairs_a_cut_line(
    capacity_target: Target, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    cmd = [LOADLAB, "sweep", "--host", capacity_target.url, "-f", str(LOCUSTFILES / "closed_loop.py"),
           "--allow-any-host", "--users", "2,3", "--step-time", "3s", "--warmup", "0s", "--workers", "1",
           "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(lambda: len(_locust_children(proc.pid)) >= 2 or proc.poll() is not None)
    children = _locust_children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _wait(lambda: all(_gone(c) for c in children), timeout=20)
    # A kill in the middle of a write leaves a partial line: resume drops it and measures that step again.
    with open(out / "steps.jsonl", "a") as f:
        f.write('{"index": 0, "users": 2, "rps": 3')
    code, output = run_sweep("--resume", str(out))
    assert code == 0, output
    assert [s["users"] for s in summary_of(out)["steps"]] == [2, 3]


@pytest.mark.timeout(60)
def test_a_locust_that_will_not_start_is_one_line_and_exit_2(capacity_target: Target, tmp_path: Path) -> None:
    code, output = run_sweep(
        "--host", capacity_target.url, "-f", str(LOCUSTFILES / "broken.py"), "--allow-any-host",
        "--users", "2", "--workers", "1", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert code == 2
    errors = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert errors == [
        "error: Locust master exited with code 1: RuntimeError: this locustfile is broken on purpose"
    ]


@pytest.mark.timeout(120)
def test_the_masters_state_is_read_as_it_is_now_while_its_figures_come_from_locusts_cache(
    capacity_target: Target, tmp_path: Path
) -> None:
    """Locust answers /stats/requests from a cache up to 2 s old; the lab's plugin in the master tells its
    state, users and workers as they are, which ends each ramp when its users run (and the start of a sweep
    when its workers joined) instead of up to 2 s later."""
    lab_locust = LocalLocust(str(LOCUSTFILES / "closed_loop.py"), 2, [], tmp_path / "locust")
    web = lab_locust.start()
    try:
        assert web.state() == {"state": "ready", "user_count": 0, "worker_count": 2}
        web.swarm(4, 50, capacity_target.url)
        deadline = time.monotonic() + 30
        while (now := web.state() or {}).get("state") != "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert now == {"state": "running", "user_count": 4, "worker_count": 2}
        # The live figures carry the state as it is now, beside the cached rates and percentiles.
        live = web.live()
        assert (live["state"], live["user_count"], live["worker_count"]) == ("running", 4, 2)
        assert "current_rps" in live and "stats" in live
    finally:
        lab_locust.stop()
