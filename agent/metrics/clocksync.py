"""NTP-style clock offset estimation over the websocket. Pure.

The client sends ``ping(t0)``; the server answers with its receive time ``t1``
and send time ``t2``; the client notes arrival ``t3``. Then::

    offset = ((t1 - t0) + (t2 - t3)) / 2     # server clock minus client clock
    delay  = (t3 - t0) - (t2 - t1)           # round trip spent on the wire

The sample with the smallest delay is the least disturbed by queueing, and the
true offset lies within ±delay/2 of its estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.metrics.records import ClockOffset

__all__ = ["ClockSample", "OffsetEstimate", "estimate_offset"]


@dataclass(frozen=True, slots=True)
class ClockSample:
    t0_ns: int
    t1_ns: int
    t2_ns: int
    t3_ns: int

    @property
    def offset_ns(self) -> float:
        return ((self.t1_ns - self.t0_ns) + (self.t2_ns - self.t3_ns)) / 2

    @property
    def delay_ns(self) -> int:
        return (self.t3_ns - self.t0_ns) - (self.t2_ns - self.t1_ns)


@dataclass(frozen=True, slots=True)
class OffsetEstimate:
    """``server_time - offset_ns`` is the same instant on the client's clock."""

    offset_ns: int
    uncertainty_ns: int
    min_delay_ns: int
    samples: int

    def to_client(self, server_t_ns: int) -> int:
        return server_t_ns - self.offset_ns

    def as_dict(self) -> ClockOffset:
        return {
            "offset_ns": self.offset_ns,
            "uncertainty_ns": self.uncertainty_ns,
            "min_delay_ns": self.min_delay_ns,
            "samples": self.samples,
        }


def estimate_offset(samples: Sequence[ClockSample]) -> OffsetEstimate:
    if not samples:
        raise ValueError("no clock samples")
    best = min(samples, key=lambda s: s.delay_ns)
    delay = max(best.delay_ns, 0)
    return OffsetEstimate(
        offset_ns=round(best.offset_ns),
        uncertainty_ns=(delay + 1) // 2,
        min_delay_ns=delay,
        samples=len(samples),
    )
