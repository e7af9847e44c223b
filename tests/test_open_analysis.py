"""Everything downstream of open-model (rate) steps, without a server: the summary, the recommendation,
thresholds at a rate, the capacity search over rates, steps.csv, report.html, compare and the run index.

Steps are made by hand the way the runner records them (a target that completes at most `capacity`
requests per second, each held `service_ms`; a pool of at most `pool_max` users behind the rate): below
the capacity every arrival is sent on time and answered, above it the backlog grows by the excess each
second and latency from each request's intended start grows with it, and a pool too small to carry the
rate (Little's law) leaves arrivals unsent.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from loadlab.cli import main
from loadlab.errors import UserError
from loadlab.sweep import analysis, history, samples
from loadlab.sweep.report import write_report
from loadlab.sweep.results import CSV_COLUMNS, RunDir, summarize
from loadlab.sweep.search import RateSearchSpec, next_rate, outcome
from loadlab.sweep.thresholds import evaluate, parse_threshold

WINDOW = 30.0


def open_step(
    index: int,
    rate: float,
    capacity: float = 400.0,
    service_ms: float = 20.0,
    pool_max: int = 1000,
    fail_ratio: float = 0.0,
) -> dict:
    """One open step as the runner records it (see the module's docstring for the simulated stack)."""
    intended = round(rate * WINDOW)
    # Little's law: the pool a rate needs; a pool at its maximum can only start pool_max / service per second.
    can_send = pool_max / (service_ms / 1000)
    sent_rate = min(rate, can_send)
    generator_behind = sent_rate < rate
    done = min(sent_rate, capacity)
    excess = max(0.0, sent_rate - capacity)
    # The queue at the target grows by the excess: the wait of the last arrival is excess * window / capacity.
    wait_ms = 1000 * excess * WINDOW / capacity
    response = {q: service_ms * f + wait_ms * w for q, f, w in (("p50", 1.0, 0.5), ("p95", 1.2, 0.95),
                                                               ("p99", 1.5, 0.99))}  # fmt: skip
    # Arrivals the generator could not start wait for a free user: their lateness adds to latency.
    late_ms = 0.0 if not generator_behind else 1000 * WINDOW * (1 - sent_rate / rate) / 2
    step = {
        "index": index,
        "rate": float(rate),
        "users": min(pool_max, max(1, round(rate * service_ms / 1000 * 1.5))),
        "rps": round(done, 1),
        "intended": intended,
        "sent": round(sent_rate * WINDOW),
        "sent_rate": round(sent_rate, 2),
        "dropped": round((rate - sent_rate) * WINDOW),
        "late": round((rate - sent_rate) * WINDOW / 2),
        "lateness_p99_ms": round(late_ms * 2, 1),
        "p50_ms": round(response["p50"] + late_ms, 1),
        "p90_ms": round(response["p95"] + late_ms, 1),
        "p95_ms": round(response["p95"] + late_ms, 1),
        "p99_ms": round(response["p99"] + late_ms, 1),
        "max_ms": round(response["p99"] * 1.2 + late_ms, 1),
        "response_p50_ms": round(response["p50"], 1),
        "response_p95_ms": round(response["p95"], 1),
        "response_p99_ms": round(response["p99"], 1),
        "backlog": {"start": 0, "end": round(excess * WINDOW), "growth_per_s": round(excess, 2)},
        "open": {"arrivals": "even", "late_after_ms": 10, "max_users": pool_max},
        "requests": round(done * WINDOW),
        "failures": round(done * WINDOW * fail_ratio),
        "fail_ratio": fail_ratio,
        "window_s": WINDOW,
        "warmup_s": 5.0,
        "window_start": 1000.0 + 40 * index,
        "window_end": 1000.0 + 40 * index + WINDOW,
        "client_sockets": min(pool_max, round(rate * service_ms / 1000 * 1.5)),
        "loadgen_cpu": 0.2,
        "target_cpu": 0.5,
    }
    codes = []
    if generator_behind:
        codes.append("generator_behind")
    elif excess > 0:
        codes.append("target_saturated")
    if fail_ratio >= 0.01:
        codes.append("errors")
    step["diagnosis"] = codes or ["ok"]
    evidence = {
        "generator_behind": {"sent_rate": step["sent_rate"], "users": step["users"]},
        "target_saturated": {"backlog_growth_per_s": step["backlog"]["growth_per_s"]},
    }
    step["diagnosis_evidence"] = {k: v for k, v in evidence.items() if k in codes}
    return step


def open_run(rates: list[float], **kw) -> list[dict]:
    return [open_step(i, r, **kw) for i, r in enumerate(rates)]


# -- the summary ---------------------------------------------------------------------------------------


def test_an_open_summary_keys_steps_by_rate_and_names_knee_and_saturation() -> None:
    # Measured out of order (a resumed run, a spike): the summary still reads them by rate.
    steps = [open_step(0, 800), open_step(1, 100), open_step(2, 400), open_step(3, 200)]
    summary = summarize(steps, [parse_threshold("p95<1s")], 4)
    assert summary["model"] == "open"
    assert [s["rate"] for s in summary["steps"]] == [100, 200, 400, 800]
    assert summary["knee_rate"] == 400 and summary["saturation_rate"] == 800
    assert summary["knee"]["found"] is True and summary["knee"]["side"] == "target"
    assert summary["knee"]["fell_behind"]["backlog_growth_per_s"] == 400
    assert summary["usl"] is None and "knee_users" not in summary
    assert summary["max_rps"] == 400.0 and summary["max_rps_rate"] == 400.0
    rec = summary["recommendation"]
    assert rec["rate"] == 400.0
    assert rec["text"].startswith(
        "stay at or below 400 req/s for p95 under 1000 ms (about 400 rps); 800 req/s"
    )
    assert "did not keep up (the target: its backlog grew 400/s, target_saturated)" in rec["text"]
    # Each open figure is kept per step; rate comes first.
    first = summary["steps"][0]
    assert list(first)[:2] == ["rate", "users"]
    assert first["backlog"] == {"start": 0, "end": 0, "growth_per_s": 0.0}
    assert first["response_p95_ms"] == 24.0 and first["dropped"] == 0


def test_a_closed_summary_says_closed_and_keeps_its_user_keys() -> None:
    steps = [
        {"index": i, "users": u, "rps": 10.0 * u, "p50_ms": 10, "p95_ms": 12} for i, u in enumerate((1, 2))
    ]
    summary = summarize(steps, [], 2)
    assert list(summary)[:4] == ["model", "steps", "max_rps", "knee_users"]
    assert summary["model"] == "closed"
    assert "knee_rate" not in summary and "saturation_rate" not in summary


def test_every_rate_kept_up_means_no_knee_and_the_next_rates_to_try() -> None:
    summary = summarize(open_run([50, 100, 200], capacity=5000), [], 3)
    assert summary["knee"]["found"] is False and summary["knee_rate"] == 200
    assert summary["saturation_rate"] is None
    rec = summary["recommendation"]
    assert rec["next_rates"] == [400, 800] and rec["rate"] is None
    assert rec["text"].startswith("no knee found: every step kept up to 200 req/s")
    assert rec["text"].endswith("try 400 and 800 req/s next")


def test_a_generator_that_falls_behind_is_no_saturation_of_the_target() -> None:
    # 2 users of 20 ms can start 100 arrivals a second: 200/s is beyond the generator, not the target.
    summary = summarize(open_run([50, 100, 200], capacity=5000, pool_max=2), [], 3)
    assert summary["knee_rate"] == 100
    assert summary["knee"]["side"] == "generator"
    assert summary["knee"]["fell_behind"]["sent_share"] == 0.5
    assert summary["saturation_rate"] is None
    assert (
        "200 req/s did not keep up (the load generator: sent 50% of its arrivals"
        in summary["recommendation"]["text"]
    )


@pytest.mark.parametrize(
    ("change", "behind"),
    [
        ({"sent": 2939}, {"sent_share": 0.9797}),  # 97.97% of 3000 sent
        ({"dropped": 31}, {"dropped_share": 0.0103}),
        ({"backlog": {"start": 0, "end": 150, "growth_per_s": 5.0}}, {"backlog_growth_per_s": 5.0}),
        ({"diagnosis": ["target_saturated"]}, {"diagnosis": ["target_saturated"]}),
        ({"sent": 2941, "dropped": 30, "backlog": {"start": 2, "end": 5, "growth_per_s": 1.9}}, {}),
        (
            {"sent": None, "dropped": None, "backlog": None},
            {},
        ),  # figures a step lacks are not held against it
    ],
)
def test_kept_up_means_sent_on_time_little_dropped_and_no_growing_backlog(change: dict, behind: dict) -> None:
    step = open_step(0, 100) | change  # 3000 arrivals due; backlog noise of 2% of the rate is tolerated
    assert analysis.fell_behind(step) == behind
    assert analysis.kept_up(step) is (not behind)


def test_errors_and_a_p95_gate_stop_the_recommendation_before_the_knee() -> None:
    steps = open_run([100, 200, 400, 800])
    steps[2] = open_step(2, 400, fail_ratio=0.05)
    summary = summarize(steps, [], 4)
    assert summary["knee_rate"] == 400  # it kept up, with errors
    assert summary["recommendation"]["text"].startswith("stay at or below 200 req/s")
    assert summary["recommendation"]["text"].endswith("400 req/s had errors (fail 5.0%)")
    gated = summarize(open_run([100, 200, 400, 800]), [parse_threshold("p95<10ms")], 4)
    assert (
        gated["recommendation"]["text"]
        == "no step can be recommended: the lightest, 100 req/s, failed p95<10ms"
    )


# -- thresholds at a rate ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "users", "rate"),
    [("p99<200ms@300rps", None, 300.0), ("p95<1s @ 12.5 rps", None, 12.5), ("rps>90@100/s", None, 100.0),
     ("p95<200ms@30", 30, None), ("p95<200ms", None, None)],
)  # fmt: skip
def test_at_n_rps_names_the_step_at_that_intended_rate(
    expr: str, users: int | None, rate: float | None
) -> None:
    t = parse_threshold(expr)
    assert (t.at_users, t.at_rate) == (users, rate)
    assert t.everywhere is (users is None and rate is None)


def test_a_threshold_at_a_rate_judges_exactly_that_step() -> None:
    steps = open_run([100, 300, 600])
    steps[0]["users"] = 300  # a pool of 300 users is not the step at 300 req/s
    results = evaluate(
        [parse_threshold(e) for e in ("p99<100ms@300rps", "p99<100ms@600rps", "p95<1s@300")], steps
    )
    at_300, at_600, at_users = results
    assert at_300["passed"] and at_300["checked_steps"] == 1 and at_300["at_rate"] == 300.0
    assert not at_600["passed"]
    assert at_600["failed_steps"] == [{"step": 2, "users": 18, "value": steps[2]["p99_ms"], "rate": 600.0}]
    # @N users never matches an open step's pool: the gate measured nothing and fails.
    assert at_users["checked_steps"] == 0 and not at_users["passed"]
    # A closed run's evaluation record is as before: no at_rate key.
    assert "at_rate" not in evaluate([parse_threshold("p95<1s@2")], [{"users": 2, "p95_ms": 5}])[0]


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("p99<200ms@300rpm", "@300rpm names no step: write @USERS (@50) or an arrival rate (@300rps)"),
        ("p99<200ms@0rps", "arrival rates are above 0"),
        ("p99<200ms@1.5", "user counts are whole; for a rate write @1.5rps"),
        ("p99<200ms@", "names no step"),
        ("p99<200ms@rps", "names no step"),
        ("p99<200ms@0", "user counts start at 1"),
    ],
)
def test_bad_at_forms_are_one_line_user_errors(expr: str, says: str) -> None:
    with pytest.raises(UserError) as err:
        parse_threshold(expr)
    assert says in str(err.value) and "\n" not in str(err.value)
    result = CliRunner().invoke(main, ["sweep", "--users", "10", "--threshold", expr])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert says in result.output


# -- the capacity search over rates ------------------------------------------------------------------


def search_rates(search: RateSearchSpec, thresholds=(), **stack) -> list[dict]:
    steps: list[dict] = []
    parsed = [parse_threshold(t) for t in thresholds]
    while (rate := next_rate(search, steps, parsed)) is not None:
        assert len(steps) < 40, [s["rate"] for s in steps]
        steps.append(open_step(len(steps), rate, **stack))
    return steps


@pytest.mark.parametrize("capacity", [55.0, 400.0, 777.0, 3000.0])
def test_the_rate_search_doubles_then_narrows_to_the_capacity(capacity: float) -> None:
    search = RateSearchSpec(start=10, max_rate=100_000, resolution=0.1)
    steps = search_rates(search, capacity=capacity)
    rates = [s["rate"] for s in steps]
    doubling = [r for r in rates if r <= capacity]
    assert rates[:3] == [10, 20, 40]
    cap = outcome(search, steps, [])
    assert cap["rate"] <= capacity < cap["first_bad_rate"] <= cap["rate"] * 1.1, rates
    assert cap["narrow"] and cap["limit_found"] and not cap["generator_limited"]
    assert cap["gave_out"][0] == "target_saturated"  # with fell_behind where the backlog outgrew the noise
    assert len(steps) <= len(doubling) + 1 + 4  # doubling, one past it, then at most log2(1/0.1) narrowing
    assert cap["text"].startswith(
        f"this stack carries about {cap['rps']} rps at an arrival rate of {cap['rate']:g}/s (p95 "
    )
    assert f"what gives out first, at {cap['first_bad_rate']:g}/s: the target" in cap["text"]


def test_the_rate_search_measures_the_rates_its_thresholds_name_first_and_stops_at_max_rate() -> None:
    search = RateSearchSpec(start=10, max_rate=150, resolution=0.1)
    steps = search_rates(search, ["p99<1s@25rps"], capacity=10_000)
    assert [s["rate"] for s in steps] == [25, 50, 100, 150]  # healthy at 25/s: it doubles from there
    cap = outcome(search, steps, [parse_threshold("p99<1s@25rps")])
    assert cap["rate"] == 150 and not cap["limit_found"]
    assert cap["text"].startswith("nothing gave out up to an arrival rate of 150/s (the search's max_rate)")


def test_the_rate_search_stops_where_the_generator_cannot_hold_the_first_rate() -> None:
    search = RateSearchSpec(start=200, max_rate=10_000)
    steps = search_rates(search, pool_max=2)  # 2 users of 20 ms start at most 100 arrivals a second
    assert [s["rate"] for s in steps] == [200]
    cap = outcome(search, steps, [])
    assert cap["generator_limited"] and cap["rate"] is None
    assert cap["text"].startswith("the load generator gave out at the first rate, 200/s")
    assert "generator_behind" in cap["text"] and "the target's own limit lies beyond" in cap["text"]


def test_an_slo_over_every_step_bounds_the_rate_search() -> None:
    search = RateSearchSpec(start=10, max_rate=10_000, resolution=0.1)
    # 1% errors from 160/s on: the SLO, not the target's capacity, ends the search there.
    steps: list[dict] = []
    parsed = [parse_threshold("fail_ratio<1%")]
    while (rate := next_rate(search, steps, parsed)) is not None:
        steps.append(open_step(len(steps), rate, capacity=10_000, fail_ratio=0.02 if rate >= 160 else 0.0))
    cap = outcome(search, steps, parsed)
    assert cap["rate"] < 160 <= cap["first_bad_rate"] and "threshold fail_ratio<1%" in cap["gave_out"]


def test_a_rate_search_summary_takes_the_searchs_answer() -> None:
    search = RateSearchSpec(start=50, max_rate=10_000)
    steps = search_rates(search, capacity=400)
    summary = summarize(steps, [], len(steps), search=search)
    assert summary["model"] == "open"
    assert summary["capacity"]["search"] == {"start": 50, "max_rate": 10_000, "resolution": 0.1}
    assert summary["recommendation"]["rate"] == summary["capacity"]["rate"] == 400
    assert summary["recommendation"]["text"] == summary["capacity"]["text"]


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"start": 0}, "search.start"),
        ({"start": 500, "max_rate": 100}, "above search.max_rate"),
        ({"max_rate": float("inf")}, "search.max_rate"),
        ({"resolution": "150%"}, "search.resolution"),
    ],
)
def test_a_bad_rate_search_is_one_line(spec: dict, says: str) -> None:
    with pytest.raises(UserError) as err:
        RateSearchSpec(**spec).validate()
    assert says in str(err.value) and "\n" not in str(err.value)


# -- the run folder: steps.csv, report, index ----------------------------------------------------------


def write_open_run(path: Path, steps: list[dict]) -> Path:
    """A run folder as an open sweep leaves it: run.json, steps.jsonl, steps.csv and summary.json."""
    path.mkdir(parents=True)
    spec = {"name": "open", "users": [], "model": "open", "rates": [s["rate"] for s in steps]}
    run = {"mode": "standalone", "target": "http://127.0.0.1:9/", "id": path.name, "spec": spec}
    (path / "run.json").write_text(json.dumps(run))
    run_dir = RunDir(path)
    for i, step in enumerate(steps):
        run_dir.append_step(step, steps[: i + 1])
    run_dir.write_summary(summarize(steps, [], len(steps)))
    return path


def test_steps_csv_has_the_open_columns_and_a_closed_one_keeps_its_header(tmp_path: Path) -> None:
    out = write_open_run(tmp_path / "open", open_run([100, 800]))
    with open(out / "steps.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:10] == ["index", "rate", "users", "rps", "intended", "sent", "sent_rate", "dropped",
                                  "late", "lateness_p99_ms"]  # fmt: skip
    assert rows[1]["rate"] == "800.0" and rows[1]["backlog_growth_per_s"] == "400.0"
    assert rows[1]["response_p95_ms"] == "28524.0" and rows[1]["diagnosis"] == "target_saturated"
    closed = tmp_path / "closed"
    closed.mkdir()
    RunDir(closed).write_csv([{"index": 0, "users": 4, "rps": 40.0, "diagnosis": ["ok"]}])
    assert (closed / "steps.csv").read_text().splitlines()[0] == ",".join(CSV_COLUMNS)


def test_a_resumed_open_run_keeps_steps_at_its_planned_rates(tmp_path: Path) -> None:
    out = write_open_run(tmp_path / "run", open_run([100, 200]))
    scan = RunDir(out).scan_steps([100.0, 200.0, 400.0])
    assert [s["rate"] for s in scan.steps] == [100, 200] and not scan.damaged
    assert scan.pending(3) == [2]
    other = RunDir(out).scan_steps([100.0, 250.0])
    assert [why for _n, _l, why in other.damaged] == ["step 1 with rate 200.0/s is not in the run's plan"]
    (out / "steps.jsonl").write_text(json.dumps(open_step(0, 100) | {"rate": -5}) + "\n")
    assert RunDir(out).scan_steps().damaged[0][2] == "rate is -5"


def test_the_report_says_the_model_and_plots_against_the_rate(tmp_path: Path) -> None:
    out = write_open_run(tmp_path / "open", open_run([100, 200, 400, 800]))
    page = write_report(out).read_text()
    assert "open model: arrivals held at a rate; latency from each request&#x27;s intended start" in page
    assert "coordinated omission" not in page
    for png in ("throughput_rate.png", "latency_rate.png", "arrivals_rate.png", "cpu.png", "sockets.png"):
        assert (out / png).stat().st_size > 1000 and f'src="{png}"' in page
    assert not (out / "throughput_p95.png").exists()
    table = page.split('<table class="capacity">')[1].split("</table>")[0]
    for head in ("rate /s", "users (pool)", "rps", "sent", "dropped", "late", "p95 ms", "send-to-answer"):
        assert f"<th>{head}" in table, head
    assert '<tr class="knee"><td>3</td><td>400</td>' in table
    assert "<td>24000 of 24000</td>" in table  # 800/s over 30 s, all sent
    assert "stay at or below 400 req/s" in page and "the target fell behind from 800 req/s" in page
    assert "(800 req/s): <b>target_saturated</b>" in page

    closed = tmp_path / "closed"
    closed.mkdir()
    steps = [{"index": i, "users": u, "rps": 10.0 * u, "p50_ms": 10.0, "p95_ms": 12.0, "window_s": 30}
             for i, u in enumerate((2, 4, 8))]  # fmt: skip
    (closed / "run.json").write_text(
        json.dumps({"mode": "standalone", "spec": {"name": "c", "users": [2, 4, 8]}})
    )
    for i, step in enumerate(steps):
        RunDir(closed).append_step(step, steps[: i + 1])
    RunDir(closed).write_summary(summarize(steps, [], 3))
    page = write_report(closed).read_text()
    assert "closed model: 2 to 8 users each waiting for its answer — latency hides queueing" in page
    assert "(coordinated omission)" in page and "open model" not in page
    assert (closed / "throughput_p95.png").stat().st_size > 1000


def test_the_index_records_the_model_and_rates_and_runs_shows_them(tmp_path: Path) -> None:
    out = write_open_run(tmp_path / "o1", open_run([100, 800]))
    target = {"target": "http://127.0.0.1:9/"}
    history.record(out, target, json.loads((out / "summary.json").read_text()))
    closed = {"steps": [{"users": 2}, {"users": 4}], "knee_users": 4, "max_rps": 9.0}
    history.record(tmp_path / "c1", target, closed)
    o1, c1 = history.read(tmp_path).entries
    assert (o1["model"], o1["rates"], o1["knee_rate"], o1["saturation_rate"]) == ("open", [100, 800], 100,
                                                                                  800)  # fmt: skip
    assert c1["model"] == "closed" and "rates" not in c1
    result = CliRunner().invoke(main, ["runs", str(tmp_path), "--plot", "knee_rate"])
    assert result.exit_code == 0, result.output
    row_o = next(line for line in result.output.splitlines() if " o1 " in line)
    row_c = next(line for line in result.output.splitlines() if " c1 " in line)
    assert "100,800/s" in row_o and "100/s" in row_o
    assert "2,4 users" in row_c
    assert (tmp_path / "runs_knee_rate.png").stat().st_size > 1000


# -- compare ---------------------------------------------------------------------------------------


def write_compared_run(path: Path, rates: dict[float, tuple[float, float]], seed: int) -> Path:
    """An open run whose steps have per-second samples: per rate (mean rps, mean latency ms)."""
    rng = random.Random(seed)
    steps, answers = [], []
    for index, (rate, (rps, latency)) in enumerate(sorted(rates.items())):
        reports, wobble = [], 0.0
        for second in range(1, 21):
            wobble = 0.6 * wobble + rng.gauss(0, 0.03)
            n = max(1, round(rps * (1 + wobble)))
            reports.append({"time": 1000.0 + second, "worker": "w1", "requests": n, "failures": 0,
                            "response_times": {str(max(1, round(latency * (1 - wobble)))): n}})  # fmt: skip
        answers.append({"reset_at": 1000.0, "now": 1020.0, "report_interval_s": 1.0, "reports": reports})
        measured = {"rps": rps, "p50_ms": latency, "p95_ms": latency, "p99_ms": latency}
        steps.append(open_step(index, rate) | measured | {"samples": f"samples/step-{index + 1}.json"})
    write_open_run(path, steps)
    for index, answer in enumerate(answers):
        samples.write(path, index, samples.from_master(answer))
    return path


def _compare(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["compare", *args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def test_open_runs_are_matched_by_rate_and_a_slower_one_is_called_slower(tmp_path: Path) -> None:
    a = write_compared_run(tmp_path / "a", {100: (100.0, 10.0), 200: (200.0, 10.0), 300: (300.0, 12.0)}, 1)
    b = write_compared_run(tmp_path / "b", {100: (100.0, 14.0), 200: (200.0, 14.0), 400: (390.0, 20.0)}, 2)
    code, output = _compare(str(a), str(b), "--out", str(tmp_path / "cmp"))
    assert code == 0, output
    (result,) = json.loads((tmp_path / "cmp" / "compare.json").read_text())["comparisons"]
    assert result["model"] == "open" and result["common_rates"] == [100, 200]
    assert result["only_a"] == [300] and result["only_b"] == [400]
    p50 = [r for r in result["rows"] if r["figure"] == "p50_ms"]
    assert [(r["rate"], r["verdict"]) for r in p50] == [(100, "slower"), (200, "slower")]
    assert result["verdict"] == "slower"
    assert result["curves"]["knee_rate"] == [300, 400]
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert "<th>rate</th>" in page and "knee 300 &rarr; 400/s" in page
    assert "100/s" in output and "verdict: slower" in output


def test_an_open_run_is_not_compared_with_a_closed_one(tmp_path: Path) -> None:
    from tests.test_compare_cli import _write_run

    opened = write_compared_run(tmp_path / "open", {100: (100.0, 10.0)}, 1)
    closed = _write_run(tmp_path / "closed", {4: (400.0, 10.0)}, seed=1)
    other = write_compared_run(tmp_path / "other", {150: (150.0, 10.0)}, 1)
    for args, says in (
        ([closed, opened], "is an open-model run (arrival rates) and"),
        ([opened, closed], "is an open-model run (arrival rates) and"),
        ([opened, other], "has no step at an arrival rate of"),
    ):
        code, output = _compare(*map(str, args), "--out", str(tmp_path / "cmp"))
        assert code == 2, output
        (line,) = output.strip().splitlines()
        assert says in line, line
