"""A live turn's state while it is in flight, and the record it becomes.

The live client (``agent.client.live``) fills these from what the microphone,
the agent and the speaker tell it; this module turns a finished turn into its
turns.jsonl record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agent.audio import PhraseResampler
from agent.client.agent_reply import AgentReply
from agent.client.barge_in import barge_in_figures
from agent.client.turn_record import client_marks, listener_latency, llm_tpot_ms, marks_since, stats_fields
from agent.metrics.clocksync import OffsetEstimate
from agent.metrics.records import BargeIn, TurnPlayout, TurnRecord

__all__ = ["PASSING_STATUSES", "LiveTurn", "Utterance", "answered_utterance", "build_live_record"]

#: A live turn passes unless the agent failed it: a turn cut short because the user
#: ended the session is not the agent's failure.
PASSING_STATUSES = frozenset({"ok", "interrupted", "unfinished"})


@dataclass
class Utterance:
    """Speech the client VAD found in the microphone audio."""

    start_ns: int
    end_ns: int | None = None
    #: Filled when this speech interrupted the agent (barge-in).
    barge_in: BargeIn | None = None
    #: With ``barge_in``: the last agent sample the device was given (what the listener heard).
    heard_end_ns: int | None = None


@dataclass
class LiveTurn:
    turn: int
    opened_ns: int
    marks: dict[str, int] = field(default_factory=dict)
    reply: AgentReply = field(default_factory=AgentReply)
    last_activity_ns: int = 0
    done: bool = False
    drained: bool = False
    recorded: bool = False
    #: The client flushed this turn's audio (barge-in); later audio is dropped.
    cut: bool = False
    #: The last agent frame that arrived for this turn (also after a cut: the agent's flush).
    last_frame_ns: int | None = None
    resampler: PhraseResampler | None = None


def answered_utterance(utterances: Sequence[Utterance], end_of_turn_ns: int) -> Utterance | None:
    """The speech a turn answers: the latest that ended before the agent's end of turn."""
    ended = [u for u in utterances if u.end_ns is not None and u.end_ns <= end_of_turn_ns]
    return ended[-1] if ended else None


def build_live_record(
    ct: LiveTurn,
    utterances: Sequence[Utterance],
    offset: OffsetEstimate | None,
    origin_ns: int,
    sample_rate: int,
    playout: TurnPlayout,
    turns: Mapping[int, LiveTurn] | None = None,
) -> TurnRecord:
    """A finished live turn's record: marks on the client clock (ns since the run's
    origin) with the user's speech it answers, voice-to-voice at the listener,
    barge-in and the playout. ``turns``: the session's turns, where an interrupted one
    gives its last frame received and the agent's stop (``barge_in_flush``)."""
    agent = ct.reply
    marks = client_marks(agent.server_marks, ct.marks, offset)
    utt = answered_utterance(utterances, marks.get("vad.end_of_turn", ct.opened_ns))
    if utt is not None:
        marks["user.speech_start"] = utt.start_ns
        assert utt.end_ns is not None
        marks["user.speech_end"] = utt.end_ns
    timeline, latency = listener_latency(marks)
    latency["llm_tpot"] = llm_tpot_ms(marks, agent.stats)
    barge_in = utt.barge_in if utt is not None else None
    if barge_in is not None and utt is not None:
        cut = (
            (turns or {}).get(barge_in["interrupted_turn"])
            if barge_in["interrupted_turn"] is not None
            else None
        )
        stopped = client_marks(cut.reply.server_marks, {}, offset).get("server.interrupted") if cut else None
        barge_in = barge_in_figures(
            barge_in["interrupted_turn"],
            utt.start_ns,
            utt.heard_end_ns,
            cut.last_frame_ns if cut else None,
            stopped,
        )
    latency["barge_in_stop"] = barge_in["stop_ms"] if barge_in else None
    latency["barge_in_flush"] = barge_in["flush_ms"] if barge_in else None
    stats = stats_fields(agent.stats, len(agent.partials))
    return {
        "turn": ct.turn,
        "status": agent.status,
        "reason": agent.reason,
        "user_text": "",
        "transcript": agent.transcript,
        "reply": agent.reply,
        "latency_ms": latency,
        "missing_marks": list(timeline.missing),
        "marks_ns": marks_since(marks, origin_ns),
        "llm": stats["llm"],
        "asr": stats["asr"],
        "wer": None,
        "agent_audio_ms": agent.audio_samples * 1000 / sample_rate,
        "barge_in": barge_in,
        "playout": playout,
        "expectations": [],
        "passed": agent.status in PASSING_STATUSES,
    }
