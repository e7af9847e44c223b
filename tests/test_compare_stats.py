"""The statistics of `loadlab compare` on series with known answers: runs of one process are seldom called
different although their samples are autocorrelated, a 30% drop always is and its size is caught, a
tolerance keeps small real changes quiet, and Holm's correction matches the textbook."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import replace

import numpy as np
import pytest

from loadlab.sweep.compare_stats import (
    NO_DIFFERENCE,
    TOO_FEW,
    block_length,
    compare_series,
    holm,
    judge,
)

N = 20  # samples of a 60 s window in 3 s intervals
PHI = 0.6  # lag-1 autocorrelation of a figure from one interval to the next
RESAMPLES = 1000


def ar1(rng: np.random.Generator, n: int = N, mean: float = 100.0, sd: float = 5.0, phi: float = PHI) -> list:
    """n samples of an AR(1) series around `mean`: each deviation is phi times the one before plus normal
    noise of `sd`, the first drawn from the stationary distribution (no warm-up)."""
    e = [rng.normal(0, sd / math.sqrt(1 - phi * phi))]
    for _ in range(n - 1):
        e.append(phi * e[-1] + rng.normal(0, sd))
    return [mean + x for x in e]


@functools.cache
def false_alarm_share(block: int | None) -> float:
    """The share of 300 pairs of runs of one process that a single comparison calls different; `block`
    None is block_length()'s choice, 1 the i.i.d. bootstrap."""
    rng = np.random.default_rng(2024)
    called = 0
    for i in range(300):
        a, b = ar1(rng), ar1(rng)
        diff = compare_series(a, b, higher_is_better=True, resamples=RESAMPLES, seed=i, block=block)
        called += judge([diff], higher_is_better=[True])[0].verdict != NO_DIFFERENCE
    return called / 300


def test_runs_of_one_process_are_seldom_called_different() -> None:
    # alpha is 0.05; over 300 independent pairs the share called different has a binomial spread of
    # sqrt(0.05 * 0.95 / 300) = 0.013, so a correct test stays under 0.08 (0.05 + 2.4 spreads) all but
    # about 1% of the time.
    assert false_alarm_share(None) <= 0.08


def test_an_iid_bootstrap_takes_the_autocorrelation_for_a_difference() -> None:
    """Taking the 20 autocorrelated samples as independent (block length 1) underestimates the error of
    the mean about twofold: the reason for the block bootstrap."""
    assert false_alarm_share(1) > max(2 * false_alarm_share(None), 0.15)


def test_a_30_percent_drop_is_called_worse_and_measured() -> None:
    rng = np.random.default_rng(7)
    worse = covered = 0
    for i in range(100):
        diff = compare_series(
            ar1(rng), ar1(rng, mean=70.0), higher_is_better=True, resamples=RESAMPLES, seed=i
        )
        worse += diff.verdict == "worse"
        covered += diff.ci_low <= -0.30 <= diff.ci_high
        assert diff.relative
    assert worse >= 95
    assert covered >= 90


def test_lower_is_better_turns_the_verdict() -> None:
    rng = np.random.default_rng(8)
    diff = compare_series(ar1(rng), ar1(rng, mean=70.0), higher_is_better=False, resamples=RESAMPLES)
    assert diff.verdict == "better"
    assert judge([diff], higher_is_better=[False])[0].verdict == "better"


def test_a_tolerance_keeps_a_small_real_change_quiet() -> None:
    """A true 1% drop measured with tiny noise: certain, and still not called real under a 2% tolerance."""
    rng = np.random.default_rng(9)
    a = list(100.0 + rng.normal(0, 0.01, N))
    b = list(99.0 + rng.normal(0, 0.01, N))
    diff = compare_series(a, b, higher_is_better=True, resamples=RESAMPLES)
    assert diff.change == pytest.approx(-0.01, abs=1e-4)
    assert diff.p_value < 0.01
    assert judge([diff], higher_is_better=[True], tolerance=0.02)[0].verdict == NO_DIFFERENCE
    assert judge([diff], higher_is_better=[True], tolerance=0.0)[0].verdict == "worse"


def test_holm_matches_the_textbook() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1, never smaller than a smaller p's


def test_holm_skips_none_without_counting_it() -> None:
    adjusted = holm([0.01, None, 0.04, 0.03, None, 0.005])
    assert adjusted[1] is None and adjusted[4] is None
    assert [adjusted[i] for i in (0, 2, 3, 5)] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([None]) == [None]
    assert holm([]) == []


def test_judge_corrects_for_the_family() -> None:
    """A drop significant alone (p 0.02, interval below zero) is not once two more figures are tested."""
    rng = np.random.default_rng(10)
    drop = compare_series(ar1(rng), ar1(rng, mean=70.0), higher_is_better=True, resamples=RESAMPLES)
    assert drop.verdict == "worse"
    alone = replace(drop, p_value=0.02)
    quiet = replace(drop, p_value=0.3)
    assert judge([alone], higher_is_better=[True])[0].verdict == "worse"
    family = judge([alone, quiet, quiet], higher_is_better=[True] * 3)
    assert [d.p_adjusted for d in family] == pytest.approx([0.06, 0.6, 0.6])
    assert family[0].verdict == NO_DIFFERENCE
    with pytest.raises(ValueError):
        judge([drop], higher_is_better=[True, False])


def test_too_few_samples_are_not_tested() -> None:
    diff = compare_series([99.0, 101.0], [89.0, 90.0, 91.0], higher_is_better=True)
    assert diff.verdict == TOO_FEW
    assert diff.p_value is None and diff.ci_low is None
    assert diff.change == pytest.approx(-0.1)
    rng = np.random.default_rng(11)
    tested = compare_series(ar1(rng), ar1(rng, mean=50.0), higher_is_better=True, resamples=RESAMPLES)
    family = judge([diff, tested], higher_is_better=[True, True])
    assert family[0].verdict == TOO_FEW and family[0].p_adjusted is None
    assert family[1].p_adjusted == tested.p_value  # the untested one does not count in the family
    assert compare_series([], [1.0, 2.0, 3.0], higher_is_better=True).verdict == TOO_FEW


def test_a_zero_mean_in_a_gives_the_absolute_change() -> None:
    diff = compare_series([0.0, 1.0, -1.0, 0.0], [2.0, 3.0, 1.0, 2.0], higher_is_better=False, resamples=200)
    assert diff.relative is False
    assert diff.change == pytest.approx(2.0)


def test_the_seed_fixes_the_result_and_to_dict_is_json() -> None:
    rng = np.random.default_rng(12)
    a, b = ar1(rng), ar1(rng, mean=97.0)
    first = compare_series(a, b, higher_is_better=True, seed=3)
    assert compare_series(a, b, higher_is_better=True, seed=3) == first
    out = json.loads(json.dumps(first.to_dict()))
    assert set(out) >= {"change", "ci_low", "ci_high", "p_value", "p_adjusted", "verdict", "block_a"}
    assert out["change"] == pytest.approx(first.change, rel=1e-5)


def test_block_length_follows_the_autocorrelation() -> None:
    rng = np.random.default_rng(13)
    white = [block_length(ar1(rng, phi=0.0)) for _ in range(50)]
    strong = [block_length(ar1(rng, phi=0.8)) for _ in range(50)]
    assert np.median(white) == 1
    assert np.median(strong) > np.median([block_length(ar1(rng)) for _ in range(50)]) > 1
    assert all(1 <= b <= N // 3 for b in white + strong)
    assert block_length([5.0]) == 1
    assert block_length([3.0] * 10) == 1
