"""Descriptive statistics for latency samples. Pure."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = ["PERCENTILES", "describe", "percentile"]

PERCENTILES = (50, 90, 95, 99)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of sorted values."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    pos = (len(sorted_values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def describe(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """n, mean, p50, p90, p95, p99, min, max of the non-missing values."""
    data = sorted(v for v in values if v is not None)
    if not data:
        return {
            "n": 0,
            "mean": None,
            **{f"p{q}": None for q in PERCENTILES},
            "min": None,
            "max": None,
        }
    return {
        "n": len(data),
        "mean": sum(data) / len(data),
        **{f"p{q}": percentile(data, q) for q in PERCENTILES},
        "min": data[0],
        "max": data[-1],
    }
