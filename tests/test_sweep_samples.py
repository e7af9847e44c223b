"""A step's samples (loadlab/sweep/samples.py): the workers' reports of a window become one value per
second, each report's requests spread over the span it covers and each second's latency from the reports
that arrived in it. No server: the reports are written here as the master's /loadlab/reports answers."""

from __future__ import annotations

import json

import pytest

from loadlab.errors import UserError
from loadlab.sweep import samples


def _answer(reports: list[tuple[float, str, int, int, dict[int, int]]], window: float) -> dict:
    return {
        "reset_at": 1000.0,
        "now": 1000.0 + window,
        "report_interval_s": 1.0,
        "reports": [
            {"time": 1000.0 + t, "worker": w, "requests": n, "failures": f, "response_times": times}
            for t, w, n, f, times in reports
        ],
    }


def test_each_second_has_its_own_rate_failures_and_latency():
    data = samples.from_master(
        _answer(
            [
                (1.0, "w1", 100, 0, {10: 100}),
                (2.0, "w1", 100, 2, {10: 100}),
                (3.0, "w1", 40, 0, {200: 40}),  # a slow second: fewer requests, all 200 ms
            ],
            window=3.0,
        )
    )
    out = samples.series(data)
    assert out["t"] == [1.0, 2.0, 3.0]
    assert out["rps"] == [100.0, 100.0, 40.0]
    assert out["fail_ratio"] == [0.0, 0.02, 0.0]
    assert out["p50_ms"] == [10.0, 10.0, 200.0]
    assert out["p95_ms"] == [10.0, 10.0, 200.0]


def test_a_late_report_keeps_its_requests_in_the_seconds_it_covers():
    # Two workers at 50 rps each; w2's second report arrives 0.5 s late, its third 0.5 s early.
    data = samples.from_master(
        _answer(
            [
                (1.0, "w1", 50, 0, {5: 50}),
                (1.0, "w2", 50, 0, {5: 50}),
                (2.0, "w1", 50, 0, {5: 50}),
                (2.5, "w2", 75, 0, {5: 75}),
                (3.0, "w1", 50, 0, {5: 50}),
                (3.0, "w2", 25, 0, {5: 25}),
            ],
            window=3.0,
        )
    )
    # Counting reports by arrival would read 100, 50, 150; spread over their spans it is 100 each second.
    assert samples.series(data)["rps"] == [100.0, 100.0, 100.0]


def test_a_second_that_answered_nothing_has_no_latency():
    data = samples.from_master(_answer([(1.0, "w1", 10, 0, {5: 10}), (3.0, "w1", 0, 0, {})], window=3.0))
    out = samples.series(data)
    assert out["rps"] == [10.0, 0.0, 0.0]
    assert out["p95_ms"] == [5.0, None, None]
    assert out["fail_ratio"] == [0.0, None, None]


def test_no_reports_means_no_samples():
    assert samples.from_master(None) is None
    assert samples.from_master(_answer([], window=5.0)) is None


def test_samples_are_written_and_read_per_step(tmp_path):
    data = samples.from_master(_answer([(1.0, "w1", 10, 0, {5: 10})], window=1.0))
    samples.write(tmp_path, 1, data)
    path = tmp_path / "samples" / "step-2.json"
    assert json.loads(path.read_text())["interval_s"] == samples.INTERVAL_S
    assert samples.read(tmp_path, 1) == data
    assert samples.read(tmp_path, 0) is None  # a step without samples
    path.write_text("{not json")
    with pytest.raises(UserError, match="step-2.json: not a samples file"):
        samples.read(tmp_path, 1)


def test_the_percentile_is_locusts():
    # What locust.stats.calculate_response_time_percentile answers for these counts (read off Locust 2.47;
    # this process does not import Locust, which would patch the standard library under the other tests).
    counts = {3: 40, 7: 30, 12: 20, 150: 9, 900: 1}
    assert [samples.percentile(counts, 100, q) for q in (0.5, 0.9, 0.95, 0.99)] == [7, 150, 150, 900]
