"""The parts of a turn record that every client builds alike (replay, live demo).

Pure: marks in, numbers out. Each client adds what only it knows (the
scenario's expectations, the listener's playout, barge-in).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.metrics.clocksync import OffsetEstimate
from agent.metrics.timeline import LISTENER_HOPS, LISTENER_V2V_END, V2V_START, TurnTimeline, analyze

__all__ = ["client_marks", "listener_latency", "llm_tpot_ms", "marks_since", "stats_fields"]


def client_marks(
    server_marks: Mapping[str, int], own_marks: Mapping[str, int], offset: OffsetEstimate | None
) -> dict[str, int]:
    """The turn's marks on the client clock: the server's moved by the offset, then the client's."""
    to_client = offset.to_client if offset is not None else (lambda t: t)
    marks = {name: to_client(t) for name, t in server_marks.items()}
    marks.update(own_marks)
    return marks


def llm_tpot_ms(marks: Mapping[str, int], stats: Mapping[str, Any]) -> float | None:
    """Time per output token: first → last token over (output tokens - 1)."""
    tokens = stats.get("output_tokens")
    first, done = marks.get("llm.first_token"), marks.get("llm.done")
    if first is None or done is None or not isinstance(tokens, int) or tokens <= 1:
        return None
    return (done - first) / (tokens - 1) / 1e6


def marks_since(marks: Mapping[str, int], origin_ns: int) -> dict[str, int]:
    """Marks relative to the run's origin, in time order (as turns.jsonl stores them)."""
    return {k: v - origin_ns for k, v in sorted(marks.items(), key=lambda kv: kv[1])}


def stats_fields(stats: Mapping[str, Any], partials_received: int) -> dict[str, Any]:
    """The record's ``llm`` and ``asr`` objects from the agent's per-turn stats."""
    return {
        "llm": {k: v for k, v in stats.items() if k not in ("reply", "transcript", "asr")},
        "asr": {**stats.get("asr", {}), "partials_received": partials_received},
    }


def listener_latency(marks: Mapping[str, int]) -> tuple[TurnTimeline, dict[str, float | None]]:
    """A live turn's timeline and hops in ms: voice-to-voice at the listener (the
    device took the sample) and, as ``voice_to_voice_arrival``, the replay client's
    figure (the sample would play on arrival)."""
    timeline = analyze(marks, LISTENER_HOPS, LISTENER_V2V_END)
    latency = timeline.as_ms()
    arrival, end = marks.get("client.first_audio_received"), marks.get(V2V_START)
    latency["voice_to_voice_arrival"] = None if arrival is None or end is None else (arrival - end) / 1e6
    return timeline, latency
