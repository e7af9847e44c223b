"""The capacity search's choice of steps (no server: a closed system simulated by its textbook law).

A closed system of N users with think time 0 against a server of C slots, each request held S seconds,
carries X(N) = min(N, C) / S requests per second with latency N / X(N): the knee is at N = C. The steps are
diagnosed by the sweep's own diagnosis, so the search sees what it sees in a real run.
"""

from __future__ import annotations

import pytest

from loadlab.sweep.diagnosis import diagnose
from loadlab.sweep.search import SearchSpec, next_users, outcome
from loadlab.sweep.spec import SweepSpec
from loadlab.sweep.thresholds import parse_threshold


def closed_system(slots: int, hold_ms: float, generator_max_rps: float | None = None, think_ms: float = 0.0,
                  slower_from: int | None = None):  # fmt: skip
    """Users that wait `think_ms` between requests; from `slower_from` users on each request is held twice
    as long (a cache that no longer fits, say)."""

    def measure(index: int, users: int, earlier: list[dict]) -> dict:
        hold = hold_ms * (2 if slower_from is not None and users >= slower_from else 1)
        # Below the knee every user cycles through hold + think; above it the slots bound throughput.
        rps = min(users / ((hold + think_ms) / 1000), slots / (hold / 1000))
        cpu = 0.2
        if generator_max_rps is not None and rps > generator_max_rps:
            rps, cpu = generator_max_rps, 0.99
        latency = users / rps * 1000 - think_ms
        step = {
            "index": index,
            "users": users,
            "rps": rps,
            "p50_ms": latency,
            "p95_ms": latency * 1.1,
            "fail_ratio": 0.0,
            "resources": {"processes": {"gen/locust-worker-1": {"cpu": cpu, "role": "loadgen"}}},
        }
        step["diagnosis"], step["diagnosis_evidence"] = diagnose(step, earlier)
        return step

    return measure


def run_search(search: SearchSpec, measure, thresholds=(), stop_after: int | None = None, steps=None):
    steps = list(steps or [])
    parsed = [parse_threshold(t) for t in thresholds]
    while (users := next_users(search, steps, parsed)) is not None:
        if stop_after is not None and len(steps) >= stop_after:
            break
        steps.append(measure(len(steps), users, list(steps)))
    return steps


def linear_steps_to(first_bad: int, start: int, knee: int, resolution: float) -> int:
    """Steps a linear sweep from `start` in steps of `resolution` of the knee takes to reach `first_bad`."""
    width = max(1, round(resolution * knee))
    return len(range(start, first_bad + width, width))


@pytest.mark.parametrize(("start", "slots"), [(2, 8), (2, 24), (2, 60), (5, 150), (1, 40)])
def test_the_search_brackets_the_knee_within_its_resolution_in_fewer_steps_than_a_linear_sweep(start, slots):
    """Doubling costs a step per octave, narrowing log2(1/resolution) steps; a linear sweep of the same
    resolution 1/resolution steps: the search takes fewer while the knee is within ~30x the first step."""
    search = SearchSpec(start=start, max_users=1000, resolution=0.1)
    steps = run_search(search, closed_system(slots, 50))
    result = outcome(search, steps, [])
    assert result["limit_found"] and result["narrow"], result
    assert {"target_saturated", "throughput_bend"} & set(result["gave_out"]), result["gave_out"]
    assert slots - max(1, 0.1 * slots) <= result["users"] <= slots + max(1, 0.1 * slots), result
    assert result["first_bad_users"] - result["users"] <= max(1, 0.1 * result["users"])
    linear = linear_steps_to(result["first_bad_users"], start, slots, 0.1)
    assert len(steps) < linear, ([s["users"] for s in steps], linear)


def test_a_resumed_search_takes_the_same_steps():
    search = SearchSpec(start=3, resolution=0.1)
    measure = closed_system(40, 20)
    whole = run_search(search, measure)
    cut = run_search(search, measure, stop_after=4)
    resumed = run_search(search, measure, steps=cut)
    assert [s["users"] for s in resumed] == [s["users"] for s in whole]


def test_a_generator_that_gives_out_first_ends_the_search_without_a_made_up_knee():
    search = SearchSpec(start=2)
    steps = run_search(search, closed_system(10_000, 10, generator_max_rps=800))
    result = outcome(search, steps, [])
    assert result["generator_limited"] and "generator_cpu_bound" in result["gave_out"]
    assert "load generator" in result["text"] and "beyond" in result["text"]
    # The first step the generator could not carry bounds the answer; fewer users are healthy.
    assert result["users"] < result["first_bad_users"]


def test_a_generator_full_at_the_first_step_stops_at_once():
    search = SearchSpec(start=16)
    steps = run_search(search, closed_system(10_000, 10, generator_max_rps=100))
    assert [s["users"] for s in steps] == [16]
    assert "first step" in outcome(search, steps, [])["text"]


def test_an_slo_threshold_ends_growth_and_an_at_n_threshold_gets_its_own_step():
    # Users think 2 s; from 40 users on requests take 150 ms instead of 50: throughput still grows almost in
    # proportion, but p95 breaks the 100 ms SLO.
    search = SearchSpec(start=5, resolution=0.1)
    measure = closed_system(100_000, 50, think_ms=2000, slower_from=40)
    thresholds = ["p95<100ms", "rps>1@7"]
    steps = run_search(search, measure, thresholds=thresholds)
    result = outcome(search, steps, [parse_threshold(t) for t in thresholds])
    assert "threshold p95<100ms" in result["gave_out"], result
    assert result["first_bad_users"] == 40 and 36 <= result["users"] < 40, result
    # The step the @7 threshold is judged on is measured first, and is one of the search's steps.
    assert [s["users"] for s in steps][0] == 7
    assert len([s for s in steps if s["users"] == 7]) == 1


def test_nothing_gives_out_up_to_max_users():
    search = SearchSpec(start=4, max_users=20)
    steps = run_search(search, closed_system(1000, 50))
    assert [s["users"] for s in steps] == [4, 8, 16, 20]
    result = outcome(search, steps, [])
    assert not result["limit_found"] and "raise --max-users" in result["text"]


def test_a_spec_with_users_auto_round_trips_through_run_json():
    spec = SweepSpec(
        name="cap", users=[], search=SearchSpec(start=3, max_users=90, resolution=0.2)
    ).validate()
    again = SweepSpec(**spec.to_dict()).validate()
    assert again.search == spec.search and again.users == []
    assert again.next_step([]) == (0, 3)
