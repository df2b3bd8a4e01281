"""The parts of a turn record that every client builds alike (replay, live demo).

Pure: marks in, numbers out. Each client adds what only it knows (the
scenario's expectations, the listener's playout, barge-in).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from agent.metrics.clocksync import OffsetEstimate
from agent.metrics.records import AsrStats, LatencyMs, LlmStats, Marks, TurnStats
from agent.metrics.timeline import LISTENER_HOPS, LISTENER_V2V_END, V2V_START, TurnTimeline, analyze

__all__ = ["client_marks", "latency_ms", "listener_latency", "llm_tpot_ms", "marks_since", "stats_fields"]


def client_marks(
    server_marks: Mapping[str, int], own_marks: Mapping[str, int], offset: OffsetEstimate | None
) -> Marks:
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


def marks_since(marks: Mapping[str, int], origin_ns: int) -> Marks:
    """Marks relative to the run's origin, in time order (as turns.jsonl stores them)."""
    return {k: v - origin_ns for k, v in sorted(marks.items(), key=lambda kv: kv[1])}


def stats_fields(stats: Mapping[str, Any], partials_received: int) -> TurnStats:
    """The record's ``llm`` and ``asr`` objects from the agent's per-turn stats."""
    # The agent's stats pass through as it sent them (the types name vlt's own keys).
    llm = cast(LlmStats, {k: v for k, v in stats.items() if k not in ("reply", "transcript", "asr")})
    asr = cast(AsrStats, {**stats.get("asr", {}), "partials_received": partials_received})
    return {"llm": llm, "asr": asr}


def latency_ms(timeline: TurnTimeline) -> LatencyMs:
    """The start of a record's ``latency_ms``: the timeline's hops, ``unaccounted`` and
    ``voice_to_voice``. The client then sets ``llm_tpot`` and ``barge_in_stop``, in that
    order (the keys' order is the file's)."""
    # as_ms() has a key per hop analysed; LatencyMs declares every hop (tests/metrics/test_records.py).
    return cast(LatencyMs, timeline.as_ms())


def listener_latency(marks: Mapping[str, int]) -> tuple[TurnTimeline, LatencyMs]:
    """A live turn's timeline and hops in ms: voice-to-voice at the listener (the
    device took the sample) and, as ``voice_to_voice_arrival``, the replay client's
    figure (the sample would play on arrival)."""
    timeline = analyze(marks, LISTENER_HOPS, LISTENER_V2V_END)
    latency = latency_ms(timeline)
    arrival, end = marks.get("client.first_audio_received"), marks.get(V2V_START)
    latency["voice_to_voice_arrival"] = None if arrival is None or end is None else (arrival - end) / 1e6
    return timeline, latency
