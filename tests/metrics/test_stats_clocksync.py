"""Latency statistics (agent.metrics.stats) and NTP-style clock offsets (agent.metrics.clocksync)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from agent.metrics.clocksync import ClockSample, OffsetEstimate, estimate_offset
from agent.metrics.stats import PERCENTILES, describe, percentile

MS = 1_000_000

# --------------------------------------------------------------------------- stats


def test_percentile_matches_numpy_on_random_data() -> None:
    rng = random.Random(1234)
    for n in (1, 2, 3, 5, 10, 57, 100, 1001):
        for _ in range(5):
            data = sorted(rng.uniform(0, 2000) for _ in range(n))
            for q in (*PERCENTILES, 0, 100, 12.5):
                assert percentile(data, q) == pytest.approx(np.percentile(data, q), rel=1e-12, abs=1e-9)


def test_percentile_hand_cases() -> None:
    assert percentile([10.0], 99) == 10.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([0.0, 10.0], 90) == pytest.approx(9.0)
    assert percentile([1, 2, 3, 4, 5], 0) == 1
    assert percentile([1, 2, 3, 4, 5], 100) == 5


def test_percentile_of_nothing_raises() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_describe_empty() -> None:
    assert describe([]) == {
        "n": 0,
        "mean": None,
        "p50": None,
        "p90": None,
        "p95": None,
        "p99": None,
        "min": None,
        "max": None,
    }
    assert describe([None, None])["n"] == 0


def test_describe_ignores_none_and_sorts() -> None:
    values = [30.0, None, 10.0, 20.0, None, 40.0]
    d = describe(values)
    data = [10.0, 20.0, 30.0, 40.0]
    assert d["n"] == 4
    assert d["mean"] == 25.0
    assert d["min"] == 10.0 and d["max"] == 40.0
    for q in PERCENTILES:
        assert d[f"p{q}"] == pytest.approx(np.percentile(data, q))
    assert list(d) == ["n", "mean", "p50", "p90", "p95", "p99", "min", "max"]


def test_describe_accepts_a_generator() -> None:
    d = describe(v for v in (5.0, 1.0, 3.0))
    assert (d["n"], d["p50"], d["min"], d["max"]) == (3, 3.0, 1.0, 5.0)


# --------------------------------------------------------------------------- clock sync


def sample(t0: int, up_ns: int, server_ns: int, down_ns: int, offset_ns: int) -> ClockSample:
    """A ping at client time ``t0``: ``up_ns`` on the wire, ``server_ns`` in the server,
    ``down_ns`` back; the server's clock reads ``offset_ns`` ahead of the client's."""
    t1 = t0 + up_ns + offset_ns
    t2 = t1 + server_ns
    t3 = t0 + up_ns + server_ns + down_ns
    return ClockSample(t0, t1, t2, t3)


def test_sample_offset_and_delay() -> None:
    s = sample(1_000 * MS, up_ns=2 * MS, server_ns=1 * MS, down_ns=2 * MS, offset_ns=5 * MS)
    assert s.offset_ns == 5 * MS  # symmetric: exact
    assert s.delay_ns == 4 * MS  # server time excluded


def test_estimate_offset_picks_min_delay_sample_with_asymmetric_delays() -> None:
    offset = 5 * MS
    samples = [
        sample(0, up_ns=8 * MS, server_ns=1 * MS, down_ns=2 * MS, offset_ns=offset),  # delay 10
        sample(50 * MS, up_ns=1 * MS, server_ns=3 * MS, down_ns=3 * MS, offset_ns=offset),  # delay 4
        sample(100 * MS, up_ns=2 * MS, server_ns=0, down_ns=20 * MS, offset_ns=offset),  # delay 22
        sample(150 * MS, up_ns=5 * MS, server_ns=1 * MS, down_ns=1 * MS, offset_ns=offset),  # delay 6
    ]
    est = estimate_offset(samples)
    assert est.min_delay_ns == 4 * MS
    assert est.samples == 4
    # Best sample: up 1 ms, down 3 ms → estimate off by (up - down) / 2 = -1 ms.
    assert est.offset_ns == offset - 1 * MS
    assert est.uncertainty_ns == 2 * MS
    assert abs(est.offset_ns - offset) <= est.uncertainty_ns
    assert isinstance(est.offset_ns, int)


def test_true_offset_always_within_uncertainty() -> None:
    rng = random.Random(99)
    for _ in range(200):
        offset = rng.randint(-50 * MS, 50 * MS)
        samples = [
            sample(
                k * 100 * MS,
                up_ns=rng.randint(0, 10 * MS),
                server_ns=rng.randint(0, 2 * MS),
                down_ns=rng.randint(0, 10 * MS),
                offset_ns=offset,
            )
            for k in range(rng.randint(1, 8))
        ]
        est = estimate_offset(samples)
        assert abs(est.offset_ns - offset) <= est.uncertainty_ns
        assert est.min_delay_ns == min(s.delay_ns for s in samples)


def test_same_host_offset_is_zero() -> None:
    est = estimate_offset([ClockSample(100, 150, 160, 210)])
    assert (est.offset_ns, est.min_delay_ns, est.uncertainty_ns) == (0, 100, 50)


def test_odd_delay_rounds_uncertainty_up() -> None:
    est = estimate_offset([ClockSample(0, 1, 1, 3)])
    assert est.min_delay_ns == 3
    assert est.uncertainty_ns == 2


def test_negative_delay_is_clamped() -> None:
    # Server processing time larger than the round trip: clocks misbehaving.
    est = estimate_offset([ClockSample(0, 10, 30, 5)])
    assert est.min_delay_ns == 0
    assert est.uncertainty_ns == 0


def test_to_client() -> None:
    est = OffsetEstimate(offset_ns=5 * MS, uncertainty_ns=1, min_delay_ns=2, samples=1)
    assert est.to_client(105 * MS) == 100 * MS
    est = OffsetEstimate(offset_ns=-3, uncertainty_ns=0, min_delay_ns=0, samples=1)
    assert est.to_client(10) == 13


def test_server_marks_map_onto_client_clock() -> None:
    offset = 5 * MS
    est = estimate_offset([sample(0, MS, 0, MS, offset), sample(10 * MS, 3 * MS, 0, MS, offset)])
    client_instant = 777 * MS
    assert est.to_client(client_instant + offset) == client_instant


def test_as_dict() -> None:
    est = estimate_offset([ClockSample(0, 5, 6, 3)])
    assert est.as_dict() == {
        "offset_ns": est.offset_ns,
        "uncertainty_ns": est.uncertainty_ns,
        "min_delay_ns": est.min_delay_ns,
        "samples": 1,
    }


def test_no_samples() -> None:
    with pytest.raises(ValueError, match="no clock samples"):
        estimate_offset([])
