"""`--resume` on a run folder a real sweep wrote: damaged lines are kept aside, their steps measured again.

The run comes from a real standalone sweep against tests/sweep_target.py on loopback (three short steps,
one Locust worker), as in tests/test_sweep_run.py; each test damages a copy of it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from loadlab.cli import main
from loadlab.sweep.results import STEPS_DAMAGED, STEPS_JSONL, RunDir
from tests.servers import free_port
from tests.test_sweep_run import LOCUSTFILES, Target

pytestmark = pytest.mark.server  # every test damages a copy of a real sweep's run (a sweep target, Locust)
USERS = [2, 3, 4]


def sweep(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["sweep", *args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    t = Target(8, 0.05)
    yield t
    t.stop()


@pytest.fixture(scope="module")
def finished_run(target: Target, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("resume") / "run"
    code, output = sweep(
        "--host", target.url, "-f", str(LOCUSTFILES / "closed_loop.py"), "--allow-any-host",
        "--users", ",".join(map(str, USERS)), "--step-time", "3s", "--warmup", "0s", "--spawn-rate", "50",
        "--workers", "1", "--out", str(out),
    )  # fmt: skip
    assert code == 0, output
    return out


def copy_of(run: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(run, dest)
    return dest


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def damage_middle_line(run: Path) -> tuple[str, list[str]]:
    """Two bytes of the second step's line changed: it no longer parses. Returns it and all lines."""
    lines = (run / STEPS_JSONL).read_text().splitlines()
    lines[1] = lines[1][:10] + "\x00\x00" + lines[1][12:]
    (run / STEPS_JSONL).write_text("".join(line + "\n" for line in lines))
    return lines[1], lines


def test_scan_finds_the_damaged_step_and_writes_nothing(finished_run: Path, tmp_path: Path) -> None:
    run = copy_of(finished_run, tmp_path)
    damage_middle_line(run)
    with open(run / STEPS_JSONL, "a") as f:
        f.write('{"index": 2, "users": 4, "rps"')  # a kill in the middle of a write
    before = files_of(run)
    scan = RunDir(run).scan_steps(USERS)
    assert [s["users"] for s in scan.steps] == [2, 4]
    assert scan.pending(len(USERS)) == [1]
    assert [(n, why) for n, _line, why in scan.damaged] == [(2, "not JSON"), (4, "cut short")]
    assert files_of(run) == before


def test_a_step_recorded_twice_or_off_plan_is_not_a_good_step(finished_run: Path, tmp_path: Path) -> None:
    run = copy_of(finished_run, tmp_path)
    lines = (run / STEPS_JSONL).read_text().splitlines()
    off_plan = json.loads(lines[2]) | {"users": 99}
    (run / STEPS_JSONL).write_text("\n".join([lines[0], lines[0], json.dumps(off_plan)]) + "\n")
    scan = RunDir(run).scan_steps(USERS)
    assert scan.pending(len(USERS)) == [1, 2]
    assert [why for _n, _line, why in scan.damaged] == [
        "a second record of step 0",
        "step 2 with 99 users is not in the run's plan",
    ]


def test_a_failed_resume_leaves_every_file_byte_identical(finished_run: Path, tmp_path: Path) -> None:
    run = copy_of(finished_run, tmp_path)
    record = json.loads((run / "run.json").read_text())
    dead = f"http://127.0.0.1:{free_port()}"
    record["target"] = record["spec"]["target"] = dead
    (run / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    damage_middle_line(run)
    with open(run / STEPS_JSONL, "a") as f:
        f.write('{"index": 2, "users": 4, "rps"')
    before = files_of(run)
    code, output = sweep("--resume", str(run))
    assert code == 2 and f"target {dead} is unreachable" in output
    assert files_of(run) == before


@pytest.mark.timeout(120)
def test_a_resume_that_fails_after_its_checks_leaves_every_file_byte_identical(
    finished_run: Path, tmp_path: Path
) -> None:
    """Every check passes (the target answers, the locustfile compiles) but Locust cannot start: the
    damaged line set aside and the run record rewritten for the resume are put back as they were."""
    run = copy_of(finished_run, tmp_path)
    broken = tmp_path / "broken.py"
    broken.write_text("import a_module_this_machine_lacks  # found only when Locust imports it\n")
    record = json.loads((run / "run.json").read_text())
    record["locustfile"] = str(broken)
    (run / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    damage_middle_line(run)
    before = files_of(run)
    code, output = sweep("--resume", str(run))
    assert code == 2 and "a_module_this_machine_lacks" in output, output
    after = files_of(run)
    assert {name: after.get(name) for name in before} == before
    # Only the failed attempt's Locust logs are new, in a folder of their own.
    assert {name for name in after if name not in before} <= {
        "locust/resume-1/master.log",
        "locust/resume-1/worker-1.log",
    }, sorted(after)


@pytest.mark.timeout(180)
def test_resume_sets_a_damaged_line_aside_and_measures_exactly_that_step(
    finished_run: Path, tmp_path: Path
) -> None:
    run = copy_of(finished_run, tmp_path)
    damaged, lines = damage_middle_line(run)
    kept = [json.loads(lines[0]), json.loads(lines[2])]
    code, output = sweep("--resume", str(run))
    assert code == 0, output
    assert (run / STEPS_DAMAGED).read_text() == damaged + "\n"
    steps = [json.loads(line) for line in (run / STEPS_JSONL).read_text().splitlines()]
    assert sorted((s["index"], s["users"]) for s in steps) == [(0, 2), (1, 3), (2, 4)]
    assert len(steps) == 3  # nothing measured twice
    by_index = {s["index"]: s for s in steps}
    assert by_index[0] == kept[0] and by_index[2] == kept[1]  # the good steps as they were
    assert by_index[1]["window_start"] > kept[1]["window_end"]  # the lost step, measured now
    summary = json.loads((run / "summary.json").read_text())
    assert [s["users"] for s in summary["steps"]] == USERS and summary["complete"] is True
    resume = json.loads((run / "run.json").read_text())["resumes"][-1]
    assert resume["set_aside"] == [{"line": 2, "why": "not JSON"}]
