"""Two-sample statistics for latency samples: a row's statistic, its bootstrap CI, rank tests.

What :mod:`agent.metrics.regress` weighs a candidate's samples against a
baseline's with: the statistic itself (``p50``, ``p99.9``, ``mean``), a
percentile-bootstrap confidence interval of its difference, a one-sided
Mann-Whitney U test (normal approximation, tie and continuity corrections) and
Cliff's delta. Pure: no I/O, no clock; the bootstrap draws from the generator
it is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "MannWhitney",
    "Samples",
    "bootstrap_delta_ci",
    "cliffs_delta",
    "mann_whitney",
    "min_p_value",
    "stat_value",
]

#: Latency samples in ms: a list, a tuple or a numpy array.
Samples = Sequence[float] | NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class MannWhitney:
    u: float
    """Pairs (baseline x, candidate y) with y > x; ties count one half."""
    sigma: float
    """Standard deviation of U under the null hypothesis, corrected for ties."""
    p_slower: float
    """One-sided p-value for "the candidate is stochastically slower"."""
    p_faster: float


def _as_array(values: Samples) -> NDArray[np.float64]:
    return np.asarray(values, dtype=np.float64)


def stat_value(values: Samples, stat: str) -> float:
    """The statistic of the samples (percentiles interpolate linearly, as in summaries)."""
    data = _as_array(values)
    if data.size == 0:
        raise ValueError("statistic of no values")
    if stat == "mean":
        return float(data.mean())
    return float(np.quantile(data, float(stat[1:]) / 100.0, method="linear"))


def bootstrap_delta_ci(
    baseline: Samples,
    candidate: Samples,
    stat: str,
    *,
    alpha: float = 0.05,
    resamples: int = 2000,
    rng: np.random.Generator | None = None,
) -> tuple[float, float]:
    """Percentile-bootstrap ``1 - alpha`` interval of ``stat(candidate) - stat(baseline)``.

    Each side is resampled with replacement independently (they are separate
    runs); percentiles use the same interpolation as the point estimate.
    """
    x, y = _as_array(baseline), _as_array(candidate)
    if x.size == 0 or y.size == 0:
        raise ValueError("bootstrap of no values")
    rng = rng if rng is not None else np.random.default_rng(0)
    bx = x[rng.integers(0, x.size, size=(resamples, x.size))]
    by = y[rng.integers(0, y.size, size=(resamples, y.size))]
    if stat == "mean":
        deltas = by.mean(axis=1) - bx.mean(axis=1)
    else:
        q = float(stat[1:]) / 100.0
        deltas = np.quantile(by, q, axis=1, method="linear") - np.quantile(bx, q, axis=1, method="linear")
    lo, hi = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _average_ranks(values: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """1-based ranks, ties sharing their average rank; and the tie group sizes."""
    unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    del unique
    first = np.cumsum(counts) - counts  # 0-based position of each group's first member
    return (first + (counts + 1) / 2.0)[inverse], counts


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def mann_whitney(baseline: Samples, candidate: Samples) -> MannWhitney:
    """Mann-Whitney U with the normal approximation, tie correction and continuity correction."""
    x, y = _as_array(baseline), _as_array(candidate)
    n1, n2 = x.size, y.size
    if n1 == 0 or n2 == 0:
        raise ValueError("Mann-Whitney U of no values")
    ranks, ties = _average_ranks(np.concatenate([x, y]))
    u = float(ranks[n1:].sum() - n2 * (n2 + 1) / 2.0)
    n = n1 + n2
    tie_term = float((ties.astype(np.float64) ** 3 - ties).sum()) / (n * (n - 1)) if n > 1 else 0.0
    variance = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if variance <= 0:
        # Every value is the same: no evidence either way.
        return MannWhitney(u=u, sigma=0.0, p_slower=1.0, p_faster=1.0)
    sigma = math.sqrt(variance)
    mean = n1 * n2 / 2.0
    return MannWhitney(
        u=u,
        sigma=sigma,
        p_slower=_normal_sf((u - mean - 0.5) / sigma),
        p_faster=_normal_sf((mean - u - 0.5) / sigma),
    )


def min_p_value(n1: int, n2: int) -> float:
    """The smallest one-sided p-value :func:`mann_whitney` can give at these sizes."""
    if n1 == 0 or n2 == 0:
        return 1.0
    return mann_whitney([0.0] * n1, [1.0] * n2).p_slower


def cliffs_delta(baseline: Samples, candidate: Samples) -> float:
    """P(candidate > baseline) - P(candidate < baseline), over all pairs.

    Romano et al.'s rule of thumb: |d| < 0.147 negligible, < 0.33 small,
    < 0.474 medium, else large. ``(d + 1) / 2`` is the common-language effect
    size (the probability a random candidate value is the slower one).
    """
    x, y = _as_array(baseline), _as_array(candidate)
    if x.size == 0 or y.size == 0:
        raise ValueError("effect size of no values")
    return float(np.sign(y[:, None] - x[None, :]).mean())
