"""What ``vlt watch`` shows: per-session figures and a fleet summary, from the stream.

Pure: fed decoded messages (:class:`~agent.telemetry.schema.Incoming`) with the
time they arrived; the command draws the table.

- *rolling p50/p95*: voice-to-voice over a session's last :data:`WINDOW` turns;
  the fleet's over every session's window together.
- *the hop that grew most*: for each hop of the session's latest turn, its
  value minus the median of that hop over the session's earlier turns; the
  largest positive difference (none until a session has two turns).
- A session that joined before the watch (its retained summary arrived, its
  turns did not) shows the summary's figures until its own turns outnumber it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from agent.metrics.stats import describe
from agent.metrics.timeline import HOP_NAMES
from agent.telemetry.schema import ANSWERED, Incoming

__all__ = ["WINDOW", "FleetSummary", "FleetView", "SessionView"]

#: Turns in a session's rolling percentiles.
WINDOW = 50
#: Earlier values of a hop kept for its median.
_HISTORY = 200


@dataclass
class SessionView:
    host: str
    session: str
    kind: str = ""
    state: str = "unknown"
    turns: int = 0
    failures: int = 0
    last_v2v_ms: float | None = None
    marks: int = 0
    last_mark: str = ""
    v2v_ms: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    hops: dict[str, deque[float]] = field(default_factory=dict)
    #: The hop that grew most in the latest turn, and by how many ms.
    grew: tuple[str, float] | None = None
    #: The retained summary, for a session whose earlier turns this watch did not see.
    summary: dict[str, Any] | None = None
    last_seen_s: float = 0.0

    @property
    def key(self) -> tuple[str, str]:
        return self.host, self.session

    def p(self, q: str) -> float | None:
        if self.summary is not None and self.summary.get("turns", 0) > self.turns:
            value = self.summary.get(f"{q}_voice_to_voice_ms")
            return float(value) if isinstance(value, int | float) else None
        stats = describe(self.v2v_ms)
        value = stats[q]
        return float(value) if value is not None else None

    def figures(self) -> tuple[int, int, float | None]:
        """(turns, failures, last voice-to-voice), from the summary when it knows more."""
        s = self.summary
        if s is not None and isinstance(s.get("turns"), int) and s["turns"] > self.turns:
            return s["turns"], int(s.get("failures") or 0), s.get("last_voice_to_voice_ms")
        return self.turns, self.failures, self.last_v2v_ms

    def add_turn(self, record: dict[str, Any]) -> None:
        self.turns += 1
        if record.get("status") not in ANSWERED:
            self.failures += 1
        latency = record.get("latency_ms") or {}
        v2v = latency.get("voice_to_voice")
        if isinstance(v2v, int | float):
            self.last_v2v_ms = float(v2v)
            self.v2v_ms.append(float(v2v))
        growth: list[tuple[float, str]] = []
        for hop in HOP_NAMES:
            value = latency.get(hop)
            if not isinstance(value, int | float):
                continue
            earlier = self.hops.setdefault(hop, deque(maxlen=_HISTORY))
            if earlier:
                growth.append((float(value) - median(earlier), hop))
            earlier.append(float(value))
        best = max(growth, default=None)
        self.grew = (best[1], best[0]) if best is not None and best[0] > 0 else None


@dataclass(frozen=True, slots=True)
class FleetSummary:
    hosts: int
    sessions: int
    online: int
    turns: int
    failures: int
    p50_ms: float | None
    p95_ms: float | None
    marks_per_s: float
    messages: int


class FleetView:
    def __init__(self) -> None:
        self.sessions: dict[tuple[str, str], SessionView] = {}
        self.messages = 0
        self._mark_times: deque[float] = deque()

    def update(self, message: Incoming, now_s: float) -> SessionView | None:
        """Take one message (``now_s``: when it arrived, seconds on any monotonic clock)."""
        self.messages += 1
        if not message.session:
            return None
        key = (message.host, message.session)
        view = self.sessions.get(key)
        if view is None:
            view = self.sessions[key] = SessionView(message.host, message.session)
        view.last_seen_s = now_s
        data = message.data
        if message.type == "mark":
            view.marks += 1
            view.last_mark = str(data.get("name", ""))
            self._mark_times.append(now_s)
            view.state = "online" if view.state == "unknown" else view.state
        elif message.type == "turn" and isinstance(data.get("record"), dict):
            view.add_turn(data["record"])
        elif message.type == "status":
            view.state = str(data.get("state", "unknown"))
        elif message.type == "summary":
            view.summary = data
            view.kind = str(data.get("kind", view.kind))
        elif message.type == "manifest":
            view.kind = str(data.get("kind", view.kind))
        return view

    def rows(self) -> list[SessionView]:
        return sorted(self.sessions.values(), key=lambda v: (v.host, v.session))

    def summary(self, now_s: float, rate_window_s: float = 5.0) -> FleetSummary:
        while self._mark_times and self._mark_times[0] < now_s - rate_window_s:
            self._mark_times.popleft()
        pooled = [v for s in self.sessions.values() for v in s.v2v_ms]
        stats = describe(pooled)
        figures = [s.figures() for s in self.sessions.values()]
        return FleetSummary(
            hosts=len({s.host for s in self.sessions.values()}),
            sessions=len(self.sessions),
            online=sum(1 for s in self.sessions.values() if s.state == "online"),
            turns=sum(f[0] for f in figures),
            failures=sum(f[1] for f in figures),
            p50_ms=None if stats["p50"] is None else float(stats["p50"]),
            p95_ms=None if stats["p95"] is None else float(stats["p95"]),
            marks_per_s=len(self._mark_times) / rate_window_s,
            messages=self.messages,
        )
