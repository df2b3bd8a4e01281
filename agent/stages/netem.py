"""Network impairment model for remote stages: added one-way delay and jitter, seeded.

Pure: nothing here reads a clock or touches a socket. A :class:`DelayModel`
draws one delay per message; :func:`delivery_times` says when messages that
arrived at given times are delivered. The I/O side (``agent.stages.remote``)
holds each message for its drawn delay, one message at a time per direction,
which is exactly the schedule :func:`delivery_times` describes.

The model follows Linux ``netem`` defaults: each message's delay is drawn
uniformly from ``delay_ms ± jitter_ms`` (clipped at zero), and, like a TCP
connection, a direction never reorders, so a message is never delivered before
the one sent ahead of it: ``delivered[i] = max(arrival[i] + delay[i],
delivered[i - 1])``. With jitter the effective delay of a burst therefore
grows a little beyond ``delay_ms``, as it does on a real jittery link.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["DelayModel", "Direction", "Impairment", "delivery_times"]

Direction = Literal["up", "down"]
"""``up``: stage → service (requests, audio); ``down``: service → stage (results, audio)."""

_DIRECTION_SALT: dict[Direction, int] = {"up": 0, "down": 1}


@dataclass(frozen=True, slots=True)
class Impairment:
    """What is added to every message in each direction of one connection."""

    delay_ms: float = field(default=0.0, metadata={"min": 0})
    """Mean one-way delay added to each message."""
    jitter_ms: float = field(default=0.0, metadata={"min": 0})
    """Half-width of the uniform spread around ``delay_ms``."""
    seed: int = 0
    """Seed of the jitter draws; each direction has its own stream."""

    @property
    def active(self) -> bool:
        return self.delay_ms > 0 or self.jitter_ms > 0


class DelayModel:
    """One direction's sequence of per-message delays, reproducible from the seed.

    Each direction draws from its own generator, so the number of audio frames
    sent upstream cannot shift the delays drawn for the replies downstream.
    """

    def __init__(self, impairment: Impairment, direction: Direction) -> None:
        self.impairment = impairment
        self._rng = random.Random(impairment.seed * 2 + _DIRECTION_SALT[direction])
        self._delay_ns = round(impairment.delay_ms * 1e6)
        self._jitter_ns = round(impairment.jitter_ms * 1e6)

    def next_delay_ns(self) -> int:
        """The delay of the next message, in nanoseconds (never negative)."""
        if self._jitter_ns == 0:
            return self._delay_ns  # no draw: a fixed delay is exact, whatever the seed
        spread = self._rng.uniform(-self._jitter_ns, self._jitter_ns)
        return max(0, round(self._delay_ns + spread))


def delivery_times(arrivals_ns: Iterable[int], delays_ns: Iterable[int]) -> list[int]:
    """When each message is delivered, given when it was sent and its drawn delay.

    In order: a message held up behind a slower one leaves right after it.
    """
    out: list[int] = []
    previous: int | None = None
    for arrival, delay in zip(arrivals_ns, delays_ns, strict=True):
        due = arrival + delay
        if previous is not None and due < previous:
            due = previous
        out.append(due)
        previous = due
    return out
