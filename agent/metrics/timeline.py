"""Marks → hop durations, voice-to-voice and the unaccounted residual. Pure.

A *mark* is a named instant on the client's clock (server marks are moved onto
it with the estimated clock offset before they get here). A *hop* is the time
between two marks. The hops are chosen to tile the path from the moment the
user stops speaking to the moment the caller hears the agent; whatever the
tiles do not cover (gaps between hops, or overlaps counted twice) is reported
as ``unaccounted`` so that, by construction::

    sum(hops) + unaccounted == voice_to_voice
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "HOPS",
    "HOP_NAMES",
    "LISTENER_HOPS",
    "LISTENER_V2V_END",
    "PLAYOUT",
    "SHORT_NAMES",
    "V2V_END",
    "V2V_START",
    "Hop",
    "Mark",
    "TurnTimeline",
    "analyze",
    "marks_by_turn",
]

V2V_START = "user.speech_end"
V2V_END = "client.first_audio_received"


@dataclass(frozen=True, slots=True)
class Mark:
    """A named instant: ``t_ns`` nanoseconds on the client's clock, in ``turn``."""

    name: str
    t_ns: int
    turn: int


@dataclass(frozen=True, slots=True)
class Hop:
    """The time from mark ``start`` to mark ``end``."""

    name: str
    start: str
    end: str
    description: str


HOPS: tuple[Hop, ...] = (
    Hop(
        "endpointing",
        "user.speech_end",
        "vad.end_of_turn",
        "user stops speaking → end of turn declared (includes upstream transport)",
    ),
    Hop("asr_finalize", "vad.end_of_turn", "asr.final", "end of turn → final transcript"),
    Hop(
        "llm_ttft",
        "llm.request",
        "llm.first_token",
        "LLM request sent → first non-empty token (TTFT)",
    ),
    Hop(
        "first_phrase",
        "llm.first_token",
        "llm.first_phrase",
        "first token → first speakable phrase released by the chunker",
    ),
    Hop(
        "tts_first_audio",
        "tts.request",
        "tts.first_audio",
        "first phrase sent to TTS → its first audio",
    ),
    Hop(
        "transport",
        "server.first_audio_sent",
        "client.first_frame_received",
        "server sends first agent audio frame → client receives it",
    ),
    Hop(
        "audio_onset",
        "client.first_frame_received",
        "client.first_audio_received",
        "first agent frame → first audible sample (leading silence, playout)",
    ),
)
HOP_NAMES: tuple[str, ...] = tuple(h.name for h in HOPS)

#: A live session (``vlt demo``) has a real output device: its voice-to-voice ends
#: when the first audible agent sample is handed to the device, one hop later.
LISTENER_V2V_END = "client.first_audio_played"
PLAYOUT = Hop(
    "playout",
    "client.first_audio_received",
    LISTENER_V2V_END,
    "first audible sample would play on arrival → handed to the output device (jitter buffer, device)",
)
LISTENER_HOPS: tuple[Hop, ...] = (*HOPS, PLAYOUT)

#: Short hop names for narrow columns (terminal rows, the live demo's HUD).
SHORT_NAMES = {
    "endpointing": "endpt",
    "asr_finalize": "asr",
    "llm_ttft": "ttft",
    "first_phrase": "phrase",
    "tts_first_audio": "tts",
    "transport": "net",
    "audio_onset": "onset",
    "playout": "play",
    "unaccounted": "unacc",
}


@dataclass(frozen=True, slots=True)
class TurnTimeline:
    """One turn's hop durations (ns); ``None`` where a mark is missing."""

    hops_ns: Mapping[str, int | None]
    voice_to_voice_ns: int | None
    unaccounted_ns: int | None
    missing: tuple[str, ...] = field(default=())

    @property
    def complete(self) -> bool:
        return not self.missing

    def as_ms(self) -> dict[str, float | None]:
        """Hops, voice-to-voice and unaccounted in milliseconds (for records)."""
        out: dict[str, float | None] = {k: _ms(v) for k, v in self.hops_ns.items()}
        out["unaccounted"] = _ms(self.unaccounted_ns)
        out["voice_to_voice"] = _ms(self.voice_to_voice_ns)
        return out


def _ms(ns: int | None) -> float | None:
    return None if ns is None else ns / 1e6


def analyze(marks: Mapping[str, int], hops: Iterable[Hop] = HOPS, v2v_end: str = V2V_END) -> TurnTimeline:
    """Compute one turn's timeline from its marks (name → t_ns).

    Voice-to-voice runs from ``user.speech_end`` to ``v2v_end`` and needs only
    those two marks. The residual is only defined when
    every hop could be measured; a turn with a missing mark reports which.
    """
    hops = tuple(hops)
    durations: dict[str, int | None] = {}
    missing: list[str] = []
    for hop in hops:
        start, end = marks.get(hop.start), marks.get(hop.end)
        for name, value in ((hop.start, start), (hop.end, end)):
            if value is None and name not in missing:
                missing.append(name)
        durations[hop.name] = None if start is None or end is None else end - start
    v_start, v_end = marks.get(V2V_START), marks.get(v2v_end)
    v2v = None if v_start is None or v_end is None else v_end - v_start
    measured = [d for d in durations.values() if d is not None]
    residual = v2v - sum(measured) if v2v is not None and len(measured) == len(hops) else None
    return TurnTimeline(durations, v2v, residual, tuple(missing))


def marks_by_turn(marks: Iterable[Mark]) -> dict[int, dict[str, int]]:
    """Group marks per turn; a repeated name keeps its first occurrence."""
    out: dict[int, dict[str, int]] = {}
    for mark in marks:
        out.setdefault(mark.turn, {}).setdefault(mark.name, mark.t_ns)
    return out
