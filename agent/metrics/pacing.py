"""The caller's pacing: how late upstream frames went out, per turn and per run. Pure.

The replay client sends one frame per frame period on an absolute schedule. When
its event loop is late (the machine is busy), the frame goes out late and the
next ones in a burst: the agent then hears a stream whose speech and silences
are shifted from the scenario's, and ``user.speech_end`` is stamped at the late
send. That is not hidden: every frame's lateness is kept, each turn's record says
its max and p99 (:class:`~agent.metrics.records.CallerPacing`), and a turn with a
frame later than the threshold is flagged with a warning line.
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.metrics.records import CallerPacing
from agent.metrics.stats import describe

__all__ = ["DEFAULT_LATE_MS", "caller_pacing", "caller_warning"]

#: A frame later than this (ms) flags its turn: a 20 ms frame 5 ms late is a quarter frame off.
DEFAULT_LATE_MS = 5.0


def caller_pacing(lateness_ns: Iterable[int], threshold_ms: float = DEFAULT_LATE_MS) -> CallerPacing:
    """Max and p99 send lateness (ms) of frames, and whether any was past ``threshold_ms``.

    Early sends (negative lateness) count as 0: only late frames change what the agent hears.
    """
    values = [max(ns, 0) / 1e6 for ns in lateness_ns]
    stats = describe(values)
    late = sum(1 for v in values if v > threshold_ms)
    return {
        "frames": len(values),
        "lateness_p99_ms": stats["p99"],
        "lateness_max_ms": stats["max"],
        "late_frames": late,
        "threshold_ms": threshold_ms,
        "flagged": late > 0,
    }


def caller_warning(turn: int, pacing: CallerPacing) -> str:
    """The one-line warning for a flagged turn."""
    worst = pacing["lateness_max_ms"] or 0.0
    p99 = pacing["lateness_p99_ms"] or 0.0
    return (
        f"warning: turn {turn}: the caller sent {pacing['late_frames']} of {pacing['frames']} frames "
        f"later than {pacing['threshold_ms']:g} ms (max {worst:.1f} ms, p99 {p99:.1f} ms): the agent "
        "heard a stream shifted from the scenario's; this turn's figures include the shift"
    )
