"""Did run B change a figure of run A? Each run gives one sample of the figure per interval of a step (the
requests per second of each 3 s interval, an interval's p95, the CPU cores of each scrape). Such samples are
autocorrelated: a slow stretch lasts several intervals, so 20 samples hold far fewer than 20 independent ones
and a test that takes them as independent calls a machine's wobble a regression. This module says how much
the mean changed, with a confidence interval and a p-value that count the samples for what they are worth,
and then judges a whole family of figures at once (Holm), so that testing many does not find a few by luck.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from scipy import stats

# Fewer samples than this on either side: no test.
MIN_SAMPLES = 3
TOO_FEW = "too few samples"
NO_DIFFERENCE = "no real difference"
BETTER = "better"
WORSE = "worse"
# The significant digits to_dict() keeps.
DIGITS = 6


@dataclass(frozen=True)
class Difference:
    """B against A for one figure. `change` is (mean(b) - mean(a)) / |mean(a)| when `relative` (a share:
    -0.3 is 30% lower), else mean(b) - mean(a) in the figure's unit (mean(a) is 0). [ci_low, ci_high] is
    the confidence interval of `change`; p_value tests "no difference", p_adjusted is the same after the
    correction for the family judge() saw. block_a and block_b are the block lengths the bootstrap used."""

    a_mean: float | None
    b_mean: float | None
    change: float | None
    ci_low: float | None
    ci_high: float | None
    relative: bool
    p_value: float | None
    p_adjusted: float | None
    n_a: int
    n_b: int
    block_a: int
    block_b: int
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        """The fields for JSON: floats to DIGITS significant digits, a non-finite float as None."""
        return {k: _rounded(v) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _rounded(x: float) -> float | None:
    return float(f"{x:.{DIGITS}g}") if math.isfinite(x) else None


def _longest_block(n: int) -> int:
    """The longest block a series of n samples gets: at least three blocks to a series (see block_length)."""
    return max(1, n // 3)


def _blocks(x: np.ndarray) -> np.ndarray:
    """block_length() of each row of the 2-D array x, at once (the bootstrap needs it for every resample)."""
    rows, n = x.shape
    if n < 2:
        return np.ones(rows, dtype=int)
    d = x - x.mean(axis=1, keepdims=True)
    c0 = (d * d).sum(axis=1)
    r = np.divide((d[:, :-1] * d[:, 1:]).sum(axis=1), c0, out=np.zeros(rows), where=c0 > 0)
    r = np.clip(r + (1 + 4 * r) / n, 0.0, 0.99)
    return np.clip(np.rint((1 + r) / (1 - r)), 1, _longest_block(n)).astype(int)


def block_length(x: Sequence[float]) -> int:
    """How many consecutive samples of `x` are worth about one independent sample: the block length of the
    bootstrap, and the divisor that turns the sample count into an effective one.

    The rule: r = the lag-1 sample autocorrelation, corrected for its downward bias in short series
    (r + (1 + 4r) / n; the plain estimate of an AR(1) series' 0.6 averages 0.43 at n = 20), then the
    integrated autocorrelation time of an AR(1) series with that coefficient, (1 + r) / (1 - r), rounded:
    by that factor the variance of the mean exceeds the independent samples' s^2 / n. Negative r counts as
    0. At least 1, and at most n // 3, so that a series holds at least three blocks: with two, the variance
    of its mean would rest on one degree of freedom and the test could call nothing (a noisy r near 1 is
    common in 20 samples). 1 for fewer than 6 samples."""
    return int(_blocks(np.asarray(x, dtype=float).reshape(1, -1))[0])


def _mean_variance(x: np.ndarray, blocks: np.ndarray | int) -> np.ndarray:
    """The variance of the mean of each row of x: its sample variance over (effective samples - 1), the
    effective samples being n / block. With block 1 this is the familiar s^2 / n."""
    n = x.shape[1]
    d = x - x.mean(axis=1, keepdims=True)
    return (d * d).sum(axis=1) / n / (n / blocks - 1)


def _change(ma: Any, mb: Any, va: Any, vb: Any, relative: bool) -> tuple[Any, Any]:
    """The change of the means and its standard error, the relative one's by the delta method; works on
    numbers and, element-wise, on arrays of resamples."""
    if relative:
        return (mb - ma) / np.abs(ma), np.sqrt(vb / ma**2 + va * mb**2 / ma**4)
    return mb - ma, np.sqrt(va + vb)


def _resample(rng: np.random.Generator, x: np.ndarray, block: int, resamples: int) -> np.ndarray:
    """`resamples` circular-block resamples of x, one a row: blocks of `block` consecutive samples from
    random starts (wrapping past the end), laid end to end and cut to len(x)."""
    n = len(x)
    count = -(-n // block)
    starts = rng.integers(0, n, size=(resamples, count))
    index = (starts[:, :, None] + np.arange(block)) % n
    return x[index.reshape(resamples, count * block)[:, :n]]


def compare_series(
    a: Sequence[float],
    b: Sequence[float],
    *,
    higher_is_better: bool,
    alpha: float = 0.05,
    resamples: int = 2000,
    seed: int = 0,
    block: int | None = None,
) -> Difference:
    """How the mean of B's samples differs from A's, with a (1 - alpha) confidence interval and a two-sided
    p-value for "no difference", from a circular-block bootstrap that resamples a and b independently, each
    with its own block_length() (or `block` for both, at most n // 3: block=1 is the i.i.d. bootstrap, which
    takes every sample as independent). The verdict is the one judge() gives this difference alone, without
    tolerance. The same `seed` gives the same result.

    The bootstrap is studentized (bootstrap-t): what it resamples is T = (change* - change) / se*, each
    resample's change over its own standard error, computed as for the data (the variance of a mean is
    _mean_variance() with the resample's own block length; the relative change's error by the delta
    method). That is the distribution of the change's error in standard errors; the interval is
    change +- q * se with q the (1 - alpha) quantile of |T|, and p is the share of resamples with
    |T| >= |change| / se. This is the same test as resampling both series shifted to their pooled mean
    (the shift leaves the deviations, so T, unchanged) and asking how often a change as large as the
    observed one, in standard errors, appears there. p can never be below 1 / (resamples + 1).

    Twenty samples hold only a few blocks, and a world resampled from them cannot be more dependent than
    its blocks: its T is lighter-tailed than the real one (AR(1) series of 0.6, n = 20: about 7% false
    alarms at alpha 5%, and over 20% for the plain percentile block bootstrap, which does not studentize).
    So q is at least, and p at least that of, Student's t with the effective degrees of freedom
    (n / block - 1 per series, combined by Welch-Satterthwaite), the exact reference for normal samples of
    that effective count; the bootstrap still decides when the series are skewed or spiky enough to need a
    wider one.

    Fewer than MIN_SAMPLES samples on either side: no interval, no p-value, verdict TOO_FEW."""
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    na, nb = len(xa), len(xb)
    ma = float(xa.mean()) if na else None
    mb = float(xb.mean()) if nb else None
    if block is not None and block < 1:
        raise ValueError(f"block length {block}: it must be at least 1")
    la = min(block, _longest_block(na)) if block else block_length(xa)
    lb = min(block, _longest_block(nb)) if block else block_length(xb)
    relative = ma is not None and ma != 0
    if ma is None or mb is None or min(na, nb) < MIN_SAMPLES:
        change = None if ma is None or mb is None else float(_change(ma, mb, 0.0, 0.0, relative)[0])
        return Difference(ma, mb, change, None, None, relative, None, None, na, nb, la, lb, TOO_FEW)

    va = float(_mean_variance(xa.reshape(1, -1), la)[0])
    vb = float(_mean_variance(xb.reshape(1, -1), lb)[0])
    change, se = (float(v) for v in _change(ma, mb, va, vb, relative))

    rng = np.random.default_rng(seed)
    ra, rb = _resample(rng, xa, la, resamples), _resample(rng, xb, lb, resamples)
    ba, bb = (block, block) if block else (_blocks(ra), _blocks(rb))
    with np.errstate(divide="ignore", invalid="ignore"):
        changes, errors = _change(
            ra.mean(axis=1), rb.mean(axis=1), _mean_variance(ra, ba), _mean_variance(rb, bb), relative
        )
        t = np.where(errors > 0, (changes - change) / errors, 0.0)
        observed = abs(change) / se if se > 0 else (math.inf if change else 0.0)
    t = np.abs(np.where(np.isfinite(t), t, math.inf))

    # Student's t floor: the effective degrees of freedom of each side, weighted by its share of se^2.
    wa, wb = (va * mb**2 / ma**4, vb / ma**2) if relative else (va, vb)
    dfa, dfb = na / la - 1, nb / lb - 1
    df = (wa + wb) ** 2 / (wa**2 / dfa + wb**2 / dfb) if wa + wb > 0 else min(dfa, dfb)
    q = max(float(np.quantile(t, 1 - alpha, method="higher")), float(stats.t.ppf(1 - alpha / 2, df)))
    p = max((1 + int(np.count_nonzero(t >= observed))) / (resamples + 1), float(2 * stats.t.sf(observed, df)))

    diff = Difference(
        ma, mb, change, change - q * se, change + q * se, relative, p, p, na, nb, la, lb, NO_DIFFERENCE
    )
    return replace(diff, verdict=_verdict(diff, p, higher_is_better, alpha, 0.0))


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the order given: the i-th smallest of m is multiplied by
    (m - i + 1), made no smaller than the one before it, and capped at 1. Reject where the adjusted value is
    below alpha, and the chance of any false alarm in the family stays below alpha. None (no test) stays None
    and does not count in m."""
    order = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        adjusted[i] = running
    return adjusted


def _verdict(
    diff: Difference, p: float | None, higher_is_better: bool, alpha: float, tolerance: float
) -> str:
    """BETTER or WORSE when p < alpha and the whole interval lies beyond +-tolerance on one side, else
    NO_DIFFERENCE; TOO_FEW stays."""
    if diff.verdict == TOO_FEW or p is None or diff.ci_low is None or diff.ci_high is None:
        return TOO_FEW
    if p >= alpha:
        return NO_DIFFERENCE
    if diff.ci_low > tolerance:
        return BETTER if higher_is_better else WORSE
    if diff.ci_high < -tolerance:
        return WORSE if higher_is_better else BETTER
    return NO_DIFFERENCE


def judge(
    differences: list[Difference],
    *,
    higher_is_better: list[bool],
    alpha: float = 0.05,
    tolerance: float = 0.0,
) -> list[Difference]:
    """The differences of one comparison (every figure of every step compared), judged as a family: each
    p_adjusted is holm() over the family's p-values, and each verdict BETTER or WORSE only when p_adjusted
    < alpha and its whole confidence interval lies beyond +-tolerance in that direction, else NO_DIFFERENCE
    (TOO_FEW stays). `tolerance` is in the unit of `change`, a share when relative: 0.02 never calls a change
    under 2% real, however sure. higher_is_better[i] says which way is better for differences[i]. The
    intervals are the ones compare_series() made, at its alpha."""
    if len(higher_is_better) != len(differences):
        raise ValueError(f"{len(differences)} differences but {len(higher_is_better)} higher_is_better flags")
    adjusted = holm([d.p_value for d in differences])
    return [
        replace(d, p_adjusted=p, verdict=_verdict(d, p, better_up, alpha, tolerance))
        for d, p, better_up in zip(differences, adjusted, higher_is_better, strict=True)
    ]
