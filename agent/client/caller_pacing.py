"""The replay caller's send lateness, frame by frame, kept per turn (agent.metrics.pacing).

A frame belongs to the latest turn whose speech has started when it is sent (frames
before the first speech belong to turn 0); a turn's record reports its frames sent
up to the moment the record is written, the summary every frame of the run.
"""

from __future__ import annotations

from agent.metrics.pacing import DEFAULT_LATE_MS, caller_pacing
from agent.metrics.records import CallerPacing

__all__ = ["CallerPacer"]


class CallerPacer:
    def __init__(self, turns: int, late_ms: float = DEFAULT_LATE_MS) -> None:
        self.late_ms = late_ms
        self._per_turn: list[list[int]] = [[] for _ in range(max(turns, 1))]
        self._all: list[int] = []
        self._turn = 0

    def speech_started(self, turn: int) -> None:
        """Turn ``turn``'s first speech frame is about to be sent: later frames are its."""
        if 0 <= turn < len(self._per_turn):
            self._turn = turn

    def frame_sent(self, lateness_ns: int) -> int:
        """A frame went out ``lateness_ns`` after it was due; returns the lateness (>= 0)."""
        late = max(lateness_ns, 0)
        self._per_turn[self._turn].append(late)
        self._all.append(late)
        return late

    def turn_pacing(self, turn: int) -> CallerPacing:
        return caller_pacing(self._per_turn[turn] if 0 <= turn < len(self._per_turn) else [], self.late_ms)

    def run_pacing(self) -> CallerPacing:
        return caller_pacing(self._all, self.late_ms)
