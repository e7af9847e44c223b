"""Reading curves with known parameters: the knee, the USL fit, the recommendation, the diagnosis rules."""

from __future__ import annotations

import numpy as np
import pytest

from loadlab.sweep import analysis
from loadlab.sweep.diagnosis import diagnose
from loadlab.sweep.runner import load_held


def closed_loop_curve(users: list[int], slots: int, hold_ms: float) -> list[dict]:
    """A server holding `slots` requests at once for `hold_ms`: linear up to `slots` users, flat after,
    latency constant up to `slots` and proportional to users after (Little's law)."""
    steps = []
    for i, n in enumerate(users):
        rps = min(n, slots) / (hold_ms / 1000)
        latency = hold_ms * max(1.0, n / slots)
        steps.append({"index": i, "users": n, "rps": rps, "p50_ms": latency, "p95_ms": latency * 1.1})
    return steps


@pytest.mark.parametrize(
    ("slots", "users"), [(8, [2, 4, 8, 16, 32]), (20, [5, 10, 20, 40]), (3, [1, 3, 6, 12])]
)
def test_knee_is_the_last_step_before_throughput_flattens(slots: int, users: list[int]) -> None:
    knee = analysis.knee(closed_loop_curve(users, slots, 50))
    assert knee["found"] is True
    assert knee["users"] == slots


def test_no_knee_inside_the_sweep_means_the_largest_step() -> None:
    knee = analysis.knee(closed_loop_curve([2, 4, 8], slots=100, hold_ms=50))
    assert knee == {"users": 8, "found": False, "rps": 160.0, "p95_ms": pytest.approx(55.0)}


def test_flat_throughput_without_rising_latency_is_not_a_knee() -> None:
    """An open-model plateau (same rps, same latency) is not the knee: nothing queues."""
    steps = [{"users": u, "rps": 100.0, "p50_ms": 10.0, "p95_ms": 12.0} for u in (10, 20, 40)]
    assert analysis.knee(steps)["found"] is False


def test_knee_uses_the_best_of_repeated_user_counts() -> None:
    """A spike (1, 50, 1) measures 1 user twice; the curve keeps one point per count."""
    steps = [
        {"index": 0, "users": 1, "rps": 20.0, "p50_ms": 50, "p95_ms": 55},
        {"index": 1, "users": 50, "rps": 160.0, "p50_ms": 300, "p95_ms": 340},
        {"index": 2, "users": 1, "rps": 19.0, "p50_ms": 52, "p95_ms": 56},
    ]
    assert [p["users"] for p in analysis.curve(steps)] == [1, 50]
    assert analysis.max_rps(steps) == 160.0


@pytest.mark.parametrize(
    ("lam", "sigma", "kappa"),
    [(100.0, 0.05, 0.001), (200.0, 0.02, 0.0004), (40.0, 0.2, 0.01), (500.0, 0.0, 0.0002)],
)
def test_usl_fit_recovers_known_parameters(lam: float, sigma: float, kappa: float) -> None:
    users = [1, 2, 4, 8, 16, 32, 64]
    steps = [{"users": n, "rps": float(analysis.usl_throughput(n, lam, sigma, kappa))} for n in users]
    fit = analysis.usl_fit(steps)
    assert fit is not None
    assert fit["sigma"] == pytest.approx(sigma, abs=1e-3)
    assert fit["kappa"] == pytest.approx(kappa, rel=1e-2, abs=1e-6)
    assert fit["lambda"] == pytest.approx(lam, rel=1e-3)
    n_star = np.sqrt((1 - sigma) / kappa)
    assert fit["peak_users"] == round(n_star)
    assert fit["peak_rps"] == pytest.approx(analysis.usl_throughput(n_star, lam, sigma, kappa), rel=1e-3)
    assert fit["r2"] > 0.999


def test_usl_fit_with_noise_stays_close() -> None:
    rng = np.random.default_rng(7)
    lam, sigma, kappa = 120.0, 0.04, 0.0008
    users = [1, 2, 4, 8, 12, 16, 24, 32, 48, 64]
    steps = [
        {"users": n, "rps": float(analysis.usl_throughput(n, lam, sigma, kappa)) * rng.normal(1.0, 0.02)}
        for n in users
    ]
    fit = analysis.usl_fit(steps)
    true_peak = np.sqrt((1 - sigma) / kappa)
    assert fit is not None
    assert fit["peak_users"] == pytest.approx(true_peak, rel=0.15)
    assert fit["sigma"] == pytest.approx(sigma, abs=0.02)


def test_usl_without_coherency_has_no_peak_but_an_asymptote() -> None:
    steps = [
        {"users": n, "rps": float(analysis.usl_throughput(n, 50.0, 0.1, 0.0))} for n in (1, 2, 4, 8, 16, 32)
    ]
    fit = analysis.usl_fit(steps)
    assert fit is not None
    assert fit["peak_users"] is None
    assert fit["peak_rps"] == pytest.approx(500.0, rel=0.02)


def test_usl_needs_enough_distinct_steps() -> None:
    assert analysis.usl_fit(closed_loop_curve([1, 2, 4], 8, 50)) is None
    assert analysis.usl_fit(closed_loop_curve([1, 50, 1, 50], 8, 50)) is None


def test_recommendation_from_the_knee_and_from_a_p95_gate() -> None:
    steps = closed_loop_curve([2, 4, 8, 16, 32], 8, 50)
    rec = analysis.recommendation(steps, knee_users=8)
    assert rec is not None and rec["users"] == 8
    assert rec["text"].startswith("stay at or below 8 users for p95 under 60 ms")
    # A lax gate still recommends no more than the knee: past it more users only wait longer.
    assert analysis.recommendation(steps, 8, p95_limit_ms=1000)["users"] == 8
    # A tight gate recommends the last step under it.
    tight = closed_loop_curve([2, 4, 8, 16], 8, 50)
    tight[2]["p95_ms"] = 70.0
    assert analysis.recommendation(tight, 8, p95_limit_ms=60)["users"] == 4
    assert analysis.recommendation(tight, 8, p95_limit_ms=10)["users"] is None


def _step(users: int, **kw) -> dict:
    base = {
        "index": 0,
        "users": users,
        "rps": 100.0,
        "p50_ms": 50,
        "p95_ms": 60,
        "avg_ms": 50.0,
        "fail_ratio": 0.0,
    }
    base.update(kw)
    return base


def test_diagnosis_generator_cpu_bound_names_the_process() -> None:
    procs = {
        "h1/locust-master": {"cpu": 0.01, "role": "loadgen"},
        "h1/locust-worker-1": {"cpu": 0.97, "role": "loadgen"},
    }
    step = _step(20, resources={"processes": procs})
    codes, evidence = diagnose(step, [])
    assert codes == ["generator_cpu_bound"]
    assert evidence["generator_cpu_bound"]["process"] == "h1/locust-worker-1"
    assert evidence["generator_cpu_bound"]["host"] == "h1"


def test_diagnosis_generator_runnable_all_window_on_a_busy_host() -> None:
    procs = {"h1/locust-worker-1": {"cpu": 0.6, "runnable": 0.98, "role": "loadgen"}}
    step = _step(20, resources={"processes": procs})
    codes, evidence = diagnose(step, [])
    assert codes == ["generator_cpu_bound"]
    assert evidence["generator_cpu_bound"]["runnable"] == 0.98


def test_diagnosis_connection_cap_needs_requests_waiting_for_sockets() -> None:
    capped = _step(20, rps=190.0, avg_ms=100.0, client_sockets=10)  # 19 in flight on 10 sockets
    codes, evidence = diagnose(capped, [_step(10, rps=195.0, p50_ms=50, p95_ms=55)])
    assert codes == ["client_connection_capped"]  # and not target_saturated: the client held it back
    assert evidence["client_connection_capped"]["client_sockets"] == 10
    thinking = _step(20, rps=20.0, avg_ms=50.0, client_sockets=10)  # 1 in flight: the sockets idle
    assert diagnose(thinking, [])[0] == ["ok"]


def test_diagnosis_target_saturated_against_the_closest_lighter_step() -> None:
    earlier = [_step(4, rps=80.0, p50_ms=50, p95_ms=55), _step(8, index=1, rps=158.0, p50_ms=51, p95_ms=56)]
    step = _step(16, index=2, rps=160.0, p50_ms=100, p95_ms=110)
    codes, evidence = diagnose(step, earlier)
    assert codes == ["target_saturated"]
    assert evidence["target_saturated"]["users"] == [8, 16]


def test_diagnosis_errors_db_and_target_cpu() -> None:
    step = _step(
        10,
        fail_ratio=0.2,
        failures=40,
        target_cpu=1.9,
        resources={
            "processes": {
                "h1/app-8001": {"cpu": 0.95, "role": "target"},
                "h1/nginx": {"cpu": 0.2, "role": "target"},
            },
            "hosts": {"h1": {"cores": 2}},
            "postgres": {"h1": {"connections": 98, "max_connections": 100}},
        },
    )
    codes, _ = diagnose(step, [])
    assert codes == ["target_cpu_bound", "db_connections_saturated", "errors"]
    pool = _step(10, resources={"db_pool": {"h1/app-8001": {"in_use_avg": 4.9, "size": 5}}})
    assert diagnose(pool, [])[0] == ["db_connections_saturated"]


def _one_host_lab(host_cpu: float, **host: object) -> dict:
    """The issue's one-host lab at 10 users of MaxRpsUser: no process near a full core."""
    return {
        "hosts": {"lab1": {"cpu": host_cpu, "cores": 2, "cpu_from": "machine", **host}},
        "processes": {
            "lab1/app-8001": {"cpu": 0.36, "role": "target"},
            "lab1/app-8002": {"cpu": 0.35, "role": "target"},
            "lab1/app-8003": {"cpu": 0.35, "role": "target"},
            "lab1/nginx": {"cpu": 0.17, "role": "target"},
            "lab1/locust-worker-1": {"cpu": 0.33, "role": "loadgen"},
            "lab1/locust-worker-2": {"cpu": 0.32, "role": "loadgen"},
            "lab1/postgres": {"cpu": 0.05, "role": "data"},
        },
    }


def test_a_full_host_is_host_cpu_saturated_with_each_groups_share() -> None:
    earlier = [_step(5, rps=900.0, p50_ms=4, p95_ms=6)]
    step = _step(10, index=1, rps=1000.0, p50_ms=8, p95_ms=12, resources=_one_host_lab(0.985))
    codes, evidence = diagnose(step, earlier)
    # not `ok`, and not `target_saturated`: the generator shared the full host with the target
    assert codes == ["host_cpu_saturated"]
    found = evidence["host_cpu_saturated"]
    assert found["host"] == "lab1" and found["host_cpu"] == 0.985 and found["cores"] == 2
    groups = found["groups"]
    assert groups["target"]["cpu"] == pytest.approx(1.23) and groups["generator"]["cpu"] == pytest.approx(
        0.65
    )
    assert groups["data"]["cpu"] == pytest.approx(0.05)
    assert sum(g["cpu"] for g in groups.values()) == pytest.approx(0.985 * 2, abs=0.01)
    # Below the line nothing fires; a process at a full core is named by its own check instead.
    assert diagnose(_step(10, resources=_one_host_lab(0.6)), [])[0] == ["ok"]
    busy = _one_host_lab(0.99)
    busy["processes"]["lab1/locust-worker-1"]["cpu"] = 0.97
    assert diagnose(_step(10, resources=busy), [])[0] == ["generator_cpu_bound"]


def test_host_cpu_saturated_on_hosts_sharing_one_machine_names_the_machine() -> None:
    res = {
        "hosts": {
            h: {"cpu": share, "cores": 2, "cpu_from": "cgroup", "shared_machine": True}
            for h, share in (("target1", 0.55), ("loadgen1", 0.25), ("data1", 0.15))
        },
        "processes": {
            "target1/app-8001": {"cpu": 0.8, "role": "target"},
            "target1/nginx": {"cpu": 0.3, "role": "target"},
            "loadgen1/locust-worker-1": {"cpu": 0.5, "role": "loadgen"},
            "data1/postgres": {"cpu": 0.3, "role": "data"},
        },
    }
    codes, evidence = diagnose(_step(10, resources=res), [])
    assert codes == ["host_cpu_saturated"]
    found = evidence["host_cpu_saturated"]
    assert found["shared_machine"] is True and found["hosts"] == ["data1", "loadgen1", "target1"]
    assert found["host"].startswith("shared machine") and found["host_cpu"] == pytest.approx(0.95)


def test_generator_limits_are_named() -> None:
    res = {
        "processes": {"lg/locust-worker-1": {"cpu": 0.3, "role": "loadgen", "fds_limit_ratio": 1.0}},
        "tcp": {"lg": {"ephemeral_ports_used_ratio": 0.99, "time_wait": 27000, "listen_overflows": 0}},
    }
    codes, evidence = diagnose(_step(10, resources=res), [])
    assert codes == ["ephemeral_ports_exhausted", "fds_exhausted"]
    assert evidence["fds_exhausted"]["process"] == "lg/locust-worker-1"
    assert evidence["ephemeral_ports_exhausted"]["host"] == "lg"
    res = {"tcp": {"t1": {"ephemeral_ports_used_ratio": 0.01, "listen_overflows": 12}}}
    codes, evidence = diagnose(_step(10, resources=res), [])
    assert codes == ["listen_queue_overflow"] and evidence["listen_queue_overflow"]["host"] == "t1"


def test_no_knee_is_said_and_the_next_counts_suggested() -> None:
    """The issue's `make lab` run: nothing saturated, so nothing is recommended but where to look next."""
    steps = closed_loop_curve([5, 10, 20], slots=100, hold_ms=4)
    rec = analysis.recommendation(steps, analysis.knee(steps)["users"])
    assert rec["users"] is None and rec["next_users"] == [40, 80]
    assert rec["text"].startswith("no knee found") and "try 40 and 80 users next" in rec["text"]


def test_steps_with_errors_or_failed_thresholds_are_never_recommended() -> None:
    steps = closed_loop_curve([5, 10, 20, 40], slots=100, hold_ms=4)
    steps[2]["fail_ratio"] = 0.024
    steps[3]["fail_ratio"] = 0.04
    rec = analysis.recommendation(steps, analysis.knee(steps)["users"])
    assert rec["users"] == 10 and "20 users had errors (fail 2.4%)" in rec["text"]
    checks = [{"expr": "p99<5ms", "failed_steps": [{"users": 10}, {"users": 20}, {"users": 40}]}]
    rec = analysis.recommendation(steps, analysis.knee(steps)["users"], checks=checks)
    assert rec["users"] == 5 and "failed p99<5ms" in rec["text"]
    steps[0]["fail_ratio"] = 0.5
    assert analysis.recommendation(steps, None)["users"] is None


def test_a_worker_lost_mid_window_makes_the_step_load_short_and_never_target_saturated() -> None:
    """Two workers of 10 users each; one dies 5 s into a 15 s window, and the master drops its users after
    its missed heartbeats: 10 users ran for the last 7 s. The throughput fell with the users, which against
    the lighter step reads as saturation unless the short load is seen."""
    samples = [(float(t), 20 if t < 8 else 10, 2 if t < 8 else 1) for t in range(1, 15)]
    load = load_held(20, samples, 15.0)
    assert load["users_min"] == 10 and load["workers_start"] == 2 and load["workers_min"] == 1
    assert load["users_mean"] == pytest.approx(20 * 7 / 14 + 10 * 7 / 14)
    step = _step(20, rps=150.0, p50_ms=80, p95_ms=90, load=load)
    codes, evidence = diagnose(step, [_step(10, index=0, rps=195.0, p50_ms=50, p95_ms=55)])
    assert codes == ["load_short"]
    assert evidence["load_short"]["workers"] == {"at_start": 2, "least": 1}
    held = _step(
        20, rps=150.0, p50_ms=80, p95_ms=90, load=load_held(20, [(t, 20, 2) for t, _, _ in samples], 15)
    )
    assert "load_short" not in diagnose(held, [_step(10, index=0, rps=195.0, p50_ms=50, p95_ms=55)])[0]
