"""`loadlab sweep` input: specs, thresholds, flags; every mistake is one line and exit 2, before any load."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from loadlab.cli import main
from loadlab.errors import UserError
from loadlab.sweep.spec import load_spec, parse_duration
from loadlab.sweep.thresholds import evaluate, parse_threshold, verdict
from tests.servers import free_port

REPO = Path(__file__).resolve().parent.parent
SPECS = sorted((REPO / "scripts" / "sweeps").glob("*.yml"))
LOCUSTFILE = str(REPO / "tests" / "locustfiles" / "closed_loop.py")


def sweep(*args: str):
    return CliRunner().invoke(main, ["sweep", *args])


def assert_one_line_error(result, contains: str = "") -> None:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    assert contains in lines[0]


def test_the_seed_modes_ship_as_specs() -> None:
    names = {p.stem for p in SPECS}
    assert {"basic", "stress", "cache", "spike", "capacity", "max_rps"} <= names
    for path in SPECS:
        spec = load_spec(path).validate()
        assert spec.name == path.stem
        assert spec.locustfile and Path(spec.locustfile).is_file()
    assert load_spec(REPO / "scripts/sweeps/basic.yml").users == [10]
    assert load_spec(REPO / "scripts/sweeps/basic.yml").step_time == 60
    assert load_spec(REPO / "scripts/sweeps/stress.yml").step_time == 300
    assert load_spec(REPO / "scripts/sweeps/spike.yml").users == [1, 50, 1]
    capacity = load_spec(REPO / "scripts/sweeps/capacity.yml").users
    assert all(b == 2 * a for a, b in zip(capacity, capacity[1:], strict=False))


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("2m", 120), ("1m30s", 90), ("500ms", 0.5), ("45", 45), ("1h", 3600)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("expr", "metric", "op", "limit", "at"),
    [
        ("p95<200ms", "p95", "<", 200, None),
        ("p99<=1.5s", "p99", "<=", 1500, None),
        ("p50 < 20ms", "p50", "<", 20, None),
        ("rps>100@50", "rps", ">", 100, 50),
        ("fail_ratio<1%", "fail_ratio", "<", 0.01, None),
        ("fail_ratio<0.005", "fail_ratio", "<", 0.005, None),
        ("p90<300ms@20", "p90", "<", 300, 20),
    ],
)
def test_threshold_expressions(expr: str, metric: str, op: str, limit: float, at: int | None) -> None:
    t = parse_threshold(expr)
    assert (t.metric, t.op, t.limit, t.at_users) == (metric, op, pytest.approx(limit), at)


def test_thresholds_per_step_and_at_a_named_step() -> None:
    steps = [
        {"index": 0, "users": 10, "p95_ms": 80, "rps": 100, "fail_ratio": 0.0},
        {"index": 1, "users": 20, "p95_ms": 250, "rps": 150, "fail_ratio": 0.02},
    ]
    results = evaluate(
        [parse_threshold(e) for e in ("p95<200ms", "p95<200ms@10", "rps>120@20", "fail_ratio<1%")], steps
    )
    assert [r["passed"] for r in results] == [False, True, True, False]
    assert results[0]["failed_steps"] == [{"step": 1, "users": 20, "value": 250}]
    assert verdict(results) == "fail"
    assert verdict(results[1:3]) == "pass"
    assert verdict([]) == "pass"


@pytest.mark.parametrize(
    ("args", "contains"),
    [
        ([], "--users"),
        (["--users", "10,x"], "'x'"),
        (["--users", "0"], "out of range"),
        (["--users", ""], "users"),
        (["--users", "10", "--step-time", "5q"], "--step-time"),
        (["--users", "10", "--step-time", "0s"], "--step-time"),
        (["--users", "10", "--warmup", "-3s"], "--warmup"),
        (["--users", "10", "--spawn-rate", "fast"], "--spawn-rate"),
        (["--users", "10", "--spawn-rate", "0"], "--spawn-rate"),
        (["--users", "10", "--threshold", "p95<<200"], "p95<<200"),
        (["--users", "10", "--threshold", "p42<200ms"], "unknown metric"),
        (["--users", "10", "--threshold", "p95<200"], "write p95<200ms"),
        (["--users", "10", "--threshold", "rps>10ms"], "rps takes no unit"),
        (["--users", "10", "--threshold", "fail_ratio<5"], "fail_ratio"),
        (["--users", "10", "--threshold", "p95<200ms@7"], "no step has 7 users"),
        (["--users", "10", "--user-classes", "Not-A-Class"], "--user-classes"),
        (["--users", "10", "--name", "bad name!"], "name"),
        (["--users", "10", "--workers", "many"], "--workers"),
        (["--users", "10", "--workers", "0", "--host", "http://127.0.0.1:1", "-f", LOCUSTFILE], "workers"),
        (["--users", "10", "--bogus"], "--bogus"),
        (["--spec", "/no/such/spec.yml"], "no such file"),
        (["--users", "10", "--host", "ftp://x"], "--host"),
        (["--users", "10", "--host", "http://127.0.0.1:1"], "-f LOCUSTFILE"),
        (["--users", "10", "--host", "http://127.0.0.1:1", "-f", "/no/such.py"], "no such locustfile"),
        (["--users", "10", "-f", LOCUSTFILE], "standalone"),
        (["--users", "10", "--workers", "2"], "standalone"),
        (["--users", "10", "-i", "/no/such/inventory.yml"], "no such inventory"),
        (["--resume", "/no/such/run"], "not a sweep run"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(args: list[str], contains: str) -> None:
    assert_one_line_error(sweep(*args), contains)


SPEC_MISTAKES = {
    "unknown field": ("users: [10]\nstep: 30s\n", "unknown field 'step'"),
    "no users": ("step_time: 30s\n", "missing field 'users'"),
    "users not numbers": ("users: [10, ten]\n", "'ten'"),
    "users a mapping": ("users: {a: 1}\n", "users"),
    "bad step_time": ("users: [10]\nstep_time: soon\n", "step_time"),
    "bad warmup": ("users: [10]\nwarmup: [1]\n", "warmup"),
    "bad spawn_rate": ("users: [10]\nspawn_rate: quick\n", "spawn_rate"),
    "negative spawn_rate": ("users: [10]\nspawn_rate: -1\n", "spawn_rate"),
    "bad thresholds": ("users: [10]\nthresholds: [p95 under 200]\n", "threshold"),
    "thresholds not strings": ("users: [10]\nthresholds: [1, 2]\n", "thresholds"),
    "bad user_classes": ("users: [10]\nuser_classes: [1]\n", "user_classes"),
    "bad target": ("users: [10]\ntarget: nginx\n", "target"),
    "bad workers": ("users: [10]\nworkers: two\n", "workers"),
    "bad locustfile": ("users: [10]\nlocustfile: [a]\n", "locustfile"),
    "not a mapping": ("- 10\n- 20\n", "mapping"),
    "not yaml": ("users: [10\n", "not valid YAML"),
    "bad name": ("name: 'a b'\nusers: [10]\n", "name"),
}


@pytest.mark.parametrize("case", sorted(SPEC_MISTAKES))
def test_bad_spec_fields_are_one_line_and_exit_2(case: str, tmp_path: Path) -> None:
    text, contains = SPEC_MISTAKES[case]
    spec = tmp_path / "bad.yml"
    spec.write_text(text)
    assert_one_line_error(sweep("--spec", str(spec)), contains)


def test_a_host_outside_the_inventory_is_refused(tmp_path: Path) -> None:
    result = sweep(
        "--users", "2", "--host", "http://127.0.0.1:9", "-f", LOCUSTFILE,
        "-i", str(REPO / "inventory" / "local.yml"), "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert_one_line_error(result, "--allow-any-host")
    assert not (tmp_path / "run").exists()


def test_an_unreachable_target_fails_fast(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = sweep(
        "--users", "2", "--host", url, "-f", LOCUSTFILE, "--allow-any-host", "--out", str(tmp_path / "r")
    )
    assert_one_line_error(result, f"target {url} is unreachable")


def test_resume_takes_its_settings_from_the_run(tmp_path: Path) -> None:
    result = sweep("--resume", str(tmp_path), "--users", "10")
    assert_one_line_error(result, "drop --users")


def test_spec_errors_raise_user_errors(tmp_path: Path) -> None:
    path = tmp_path / "s.yml"
    path.write_text("users: [10]\nstep_time: 10\n")
    assert load_spec(path).step_time == 10
    path.write_text("users: [10]\nstep_time: 10x\n")
    with pytest.raises(UserError):
        load_spec(path)
