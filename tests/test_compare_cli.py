"""`loadlab compare` on run folders written here (steps.jsonl, run.json and each step's samples, as a sweep
writes them), so the command is checked end to end without a server: the table and verdicts, compare.json,
compare.html with its plots, and one line with exit 2 for every input it cannot compare."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from loadlab.cli import main
from loadlab.sweep import samples


def _write_run(
    path: Path, steps: dict[int, tuple[float, float]], seed: int, noise: float = 0.03, search: bool = False
) -> Path:
    """A run: per user count (mean rps, mean latency ms), 20 one-second samples from two workers with
    autocorrelated noise (AR(1), phi 0.6, `noise` of the mean)."""
    rng = random.Random(seed)
    path.mkdir(parents=True)
    run = {"mode": "standalone", "target": "http://127.0.0.1:9/"}
    if search:  # a capacity search, as run.json records its spec
        run["spec"] = {
            "name": "search",
            "users": [],
            "search": {"start": 4, "max_users": 1000, "resolution": 0.1},
        }
    (path / "run.json").write_text(json.dumps(run))
    lines = []
    for index, (users, (rps, latency)) in enumerate(sorted(steps.items())):
        reports, wobble = [], 0.0
        for second in range(1, 21):
            wobble = 0.6 * wobble + rng.gauss(0, noise)
            for worker in ("w1", "w2"):
                n = max(1, round(rps / 2 * (1 + wobble)))
                ms = max(1, round(latency * (1 - wobble)))
                reports.append(
                    {"time": 1000.0 + second, "worker": worker, "requests": n, "failures": 0,
                     "response_times": {str(ms): n}}
                )  # fmt: skip
        answer = {"reset_at": 1000.0, "now": 1020.0, "report_interval_s": 1.0, "reports": reports}
        samples.write(path, index, samples.from_master(answer))
        lines.append(
            {"users": users, "index": index, "rps": rps, "p50_ms": latency, "p95_ms": latency,
             "p99_ms": latency, "fail_ratio": 0.0, "target_cpu": 0.5, "loadgen_cpu": 0.2, "diagnosis": ["ok"],
             "samples": f"samples/step-{index + 1}.json"}
        )  # fmt: skip
    (path / "steps.jsonl").write_text("".join(json.dumps(s) + "\n" for s in lines))
    return path


def _compare(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["compare", *args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def test_a_slower_run_is_called_slower_with_its_magnitude_and_a_rerun_is_the_same(tmp_path: Path):
    a = _write_run(tmp_path / "a", {4: (400.0, 10.0), 8: (800.0, 10.0)}, seed=1)
    b = _write_run(tmp_path / "b", {4: (280.0, 14.0), 8: (560.0, 14.0)}, seed=2)  # 30% fewer rps
    c = _write_run(tmp_path / "c", {4: (400.0, 10.0), 8: (800.0, 10.0)}, seed=3)  # the same again
    code, output = _compare(str(a), str(b), str(c), "--out", str(tmp_path / "cmp"))
    assert code == 0, output
    assert "b against a" in output and "c against a" in output
    assert "verdict: slower" in output and "verdict: no real difference" in output
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    slower, same = data["comparisons"]
    rps = [r for r in slower["rows"] if r["figure"] == "rps"]
    assert [r["verdict"] for r in rps] == ["slower", "slower"]
    for row in rps:  # the magnitude, within this data's noise (coverage is tests/test_compare_stats.py's)
        assert row["change"] == pytest.approx(-0.30, abs=0.05), row
        assert row["ci_low"] < row["change"] < row["ci_high"] < 0, row
    assert {r["verdict"] for r in same["rows"] if r["figure"] in ("rps", "p50_ms", "p95_ms")} == {
        "no real difference"
    }
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert "b against a" in page and "c against a" in page
    for png in ("compare_throughput.png", "compare_p95.png", "compare_cpu.png"):
        assert (tmp_path / "cmp" / png).stat().st_size > 1000
        assert f"src='{png}'" in page
    if Path("/usr/bin/chromium").exists():  # the page as a browser draws it, plots included
        shot = tmp_path / "compare.png"
        subprocess.run(
            ["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--screenshot={shot}", "--window-size=1200,1600", (tmp_path / "cmp" / "compare.html").as_uri()],
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_capacity_searches_are_compared_on_their_peaks(tmp_path: Path):
    # The searches stepped where their measurements led them: no user count in common.
    a = _write_run(
        tmp_path / "a", {4: (400.0, 10.0), 8: (800.0, 10.0), 12: (810.0, 15.0)}, seed=1, search=True
    )
    b = _write_run(
        tmp_path / "b", {4: (300.0, 13.0), 6: (450.0, 13.0), 10: (560.0, 18.0)}, seed=2, search=True
    )
    code, output = _compare(str(a), str(b), "--out", str(tmp_path / "cmp"))
    assert code == 0, output
    (result,) = json.loads((tmp_path / "cmp" / "compare.json").read_text())["comparisons"]
    assert result["common_users"] == [4]
    peak = next(r for r in result["rows"] if r["figure"] == "max_rps")
    assert peak["users"] == "12/10" and peak["verdict"] == "slower", peak
    assert peak["change"] == pytest.approx(560 / 810 - 1, abs=0.05)
    assert result["verdict"] == "slower"


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda t: [t / "missing", t / "a"], "not a folder"),
        (lambda t: [t / "empty", t / "a"], "not a sweep run"),
        (lambda t: [t / "a"], "needs two runs or more"),
        (lambda t: [t / "a", t / "other_users"], "has no step with a user count of"),
        (lambda t: [t / "a", t / "corrupt"], "is damaged"),
        (lambda t: [t / "a", t / "bad_samples"], "not a samples file"),
    ],
)
def test_what_cannot_be_compared_is_one_line_and_exit_2(tmp_path: Path, make, expected: str):
    _write_run(tmp_path / "a", {4: (400.0, 10.0)}, seed=1)
    _write_run(tmp_path / "other_users", {6: (400.0, 10.0)}, seed=1)
    (tmp_path / "empty").mkdir()
    corrupt = _write_run(tmp_path / "corrupt", {4: (400.0, 10.0)}, seed=1)
    (corrupt / "steps.jsonl").write_text('{"users": 4, "index": 0, "rps": "fast"}\n{"users": 8}\n')
    bad = _write_run(tmp_path / "bad_samples", {4: (400.0, 10.0)}, seed=1)
    (bad / "samples" / "step-1.json").write_text("{")
    code, output = _compare(*map(str, make(tmp_path)), "--out", str(tmp_path / "cmp"))
    assert code == 2, output
    (line,) = output.strip().splitlines()
    assert expected in line, line


def test_runs_lists_the_indexed_history_and_charts_a_figure(tmp_path: Path):
    from loadlab.sweep import history

    for name, rps in (("r1", 400.0), ("r2", 380.0), ("r3", 420.0)):
        run = _write_run(tmp_path / name, {4: (rps, 10.0)}, seed=1)
        summary = {"steps": [{"users": 4}], "max_rps": rps, "knee_users": 4, "verdict": "pass"}
        history.record(
            run, {"target": "http://127.0.0.1:9/", "git": {"commit": "abc1234def", "dirty": False}}, summary
        )
    with (tmp_path / history.INDEX).open("a") as f:
        f.write("{cut short\n")
    # r2 resumed after it finished: indexed again, listed once, where it finished last
    history.record(tmp_path / "r2", {}, {"steps": [{"users": 4}], "max_rps": 381.0, "verdict": "pass"})
    result = CliRunner().invoke(main, ["runs", str(tmp_path), "--plot", "max_rps"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if " r1 " in line or " r2 " in line or " r3 " in line]
    assert len(rows) == 3 and "abc1234" in rows[0], result.output
    assert "420.0" in rows[1] and "381.0" in rows[2], result.output
    assert "1 line(s) of" in " ".join(result.output.split()) and "skipped" in result.output
    assert (tmp_path / "runs_max_rps.png").stat().st_size > 1000
    last = CliRunner().invoke(main, ["runs", str(tmp_path), "--last", "1"])
    assert " r2 " in last.output and " r1 " not in last.output
    # compare --last N: the last N runs of the index, the oldest of them first
    code, output = _compare("--last", "2", "--results", str(tmp_path), "--out", str(tmp_path / "cmp"))
    assert code == 0 and "r2 against r3" in output, output
    code, output = _compare("--last", "5", "--results", str(tmp_path / "nowhere"))
    assert code == 2 and "not a folder" in output, output
    missing = CliRunner().invoke(main, ["runs", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and len(missing.output.strip().splitlines()) == 1, missing.output
