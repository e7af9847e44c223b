"""Reading curves with known parameters: the knee, the USL fit, the recommendation, the diagnosis rules."""

from __future__ import annotations

import numpy as np
import pytest

from loadlab.sweep import analysis
from loadlab.sweep.diagnosis import diagnose


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
    step = _step(20, resources={"loadgen_cpu": {"master": 0.01, "worker-1": 0.97}})
    codes, evidence = diagnose(step, [])
    assert codes == ["generator_cpu_bound"]
    assert evidence["generator_cpu_bound"]["process"] == "worker-1"


def test_diagnosis_generator_runnable_all_window_on_a_busy_host() -> None:
    step = _step(20, resources={"loadgen_cpu": {"worker-1": 0.6}, "loadgen_runnable": {"worker-1": 0.98}})
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
            "target_cpu": {"app-8001": 0.95, "nginx": 0.2},
            "host_cores": 2,
            "pg_connections": 98,
            "pg_max_connections": 100,
        },
    )
    codes, _ = diagnose(step, [])
    assert codes == ["target_cpu_bound", "db_connections_saturated", "errors"]
    pool = _step(10, resources={"db_pool": {"127.0.0.1:8001": {"in_use_avg": 4.9, "size": 5}}})
    assert diagnose(pool, [])[0] == ["db_connections_saturated"]
