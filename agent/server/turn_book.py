"""The agent session's turn decisions, kept apart from its I/O (sans-I/O).

The session (:mod:`agent.server.session`) owns the websocket, the reply tasks
and the clock. It tells the book what happened, as data — a script announced,
a VAD event at a sample position handled at an int-nanosecond time, a reply
started or ended — and the book answers with what to do: start turn N,
continue (restart) turn N, barge in on the reply to turn N, or stop that reply
silently because the user went on speaking. The book reads no clock and does
no I/O, so every rule can be tested by plain calls.

The rules: docs/protocol.md, "Turn numbering" and "Barge-in and interrupt";
docs/speech.md, "Turn numbering with a real VAD".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from agent.stages.interfaces import ScriptBook
from agent.wire.protocol import Script

__all__ = [
    "BARGE_IN",
    "CONTINUATION",
    "NEW_TURN",
    "BargeIn",
    "ContinueTurn",
    "Resume",
    "StartTurn",
    "TurnBook",
]

_TRANSCRIPTS_KEPT = 16

#: Interrupt reason of user speech while the agent is busy or audible.
BARGE_IN = "barge-in"
#: Interrupt reason when a new end of turn stops the reply still running.
NEW_TURN = "new turn"
#: Interrupt reason when the user resumes the utterance a turn answers (docs/speech.md).
CONTINUATION = "continuation"


@dataclass(frozen=True, slots=True)
class BargeIn:
    """The user spoke while the agent was busy or audible: stop the reply to
    ``turn`` and report it interrupted. ``turn`` is None only if no reply ever
    started (then there is nothing to stop but a playout estimate)."""

    turn: int | None
    reason: ClassVar[str] = BARGE_IN


@dataclass(frozen=True, slots=True)
class Resume:
    """The user went on with the utterance whose reply (to ``turn``) is running
    or audible: the VAD took a pause for its end. Stop the reply silently; the
    turn restarts at the next end of turn."""

    turn: int
    reason: ClassVar[str] = CONTINUATION


@dataclass(frozen=True, slots=True)
class StartTurn:
    """Answer a new turn that ended at ``end_sample``; a reply still running stops first."""

    turn: int
    end_sample: int
    script: Script | None
    #: The turn's VAD marks: ``vad.speech_start`` (if one was heard) and ``vad.end_of_turn``.
    marks: dict[str, int]
    stop_reason: ClassVar[str] = NEW_TURN


@dataclass(frozen=True, slots=True)
class ContinueTurn:
    """A second end of turn inside one scripted utterance (the VAD split it at a
    pause): restart ``turn`` with ``prefix``, the words heard before the pause,
    in front of its transcript. A reply still running stops silently first.
    ``prefix`` is what the book knew when the turn continued: an attempt stopped
    while its ASR finalized tells the book its words later (:meth:`TurnBook.heard`),
    and the session takes :meth:`TurnBook.words_so_far` before answering."""

    turn: int
    end_sample: int
    script: Script
    #: As for :class:`StartTurn`; ``vad.speech_start`` is the turn's first one.
    marks: dict[str, int]
    prefix: str
    stop_reason: ClassVar[str] = CONTINUATION


class TurnBook:
    """One session's turn numbering, continuations and barge-in decisions."""

    def __init__(self) -> None:
        #: The scripts the client announced; shared with the stages (``SessionContext``).
        self.scripts = ScriptBook()
        self._cursor = 0  # where the search for a free turn id resumes
        self._used: set[int] = set()  # turn ids an end of turn has taken
        self._answering: int | None = None  # the turn of the latest reply, kept after it ends
        self._replying = False  # a reply task is running
        self._speech_start_ns: int | None = None  # first speech start since the last end of turn
        self._speech_starts: dict[int, int] = {}  # each turn's first vad.speech_start
        self._transcripts: dict[int, str] = {}  # each turn's transcript so far, for a continuation
        self._splits: dict[int, int] = {}  # continuations per turn

    # -- what happened -------------------------------------------------------

    def script(self, script: Script) -> None:
        """The client announced an utterance (a ``script`` message)."""
        self.scripts.add(script)

    def speech_start(self, sample: int, t_ns: int, audible_until_ns: int = 0) -> BargeIn | Resume | None:
        """The VAD heard speech start at ``sample``, handled at ``t_ns``.

        ``audible_until_ns``: when the audio already sent ends playing, by the
        server's estimate. The agent is busy while a reply runs or its audio
        plays; speech then stops the reply (None: nothing to stop).
        """
        if self._speech_start_ns is None:
            self._speech_start_ns = t_ns
        if not self._replying and audible_until_ns <= t_ns:
            return None
        script = self.scripts.covering(sample)
        if script is not None and script.turn == self._answering:
            return Resume(script.turn)
        return BargeIn(self._answering)

    def end_of_turn(self, sample: int, t_ns: int) -> StartTurn | ContinueTurn:
        """The VAD ended a turn at ``sample``, handled at ``t_ns``: which turn to answer."""
        script = self.scripts.covering(sample)
        speech_start_ns, self._speech_start_ns = self._speech_start_ns, None
        if script is not None and script.turn in self._used:
            turn = script.turn
            self._splits[turn] = self._splits.get(turn, 0) + 1
            # Endpointing is measured over the whole utterance: keep its first start.
            first_start = self._speech_starts.get(turn, speech_start_ns)
            prefix = self.words_so_far(turn)
            return ContinueTurn(turn, sample, script, self._marks(turn, first_start, t_ns), prefix)
        turn = script.turn if script is not None else self._next_free_turn()
        self._used.add(turn)
        return StartTurn(turn, sample, script, self._marks(turn, speech_start_ns, t_ns))

    def reply_started(self, turn: int) -> None:
        self._answering = turn
        self._replying = True

    def heard(self, turn: int, transcript: str) -> None:
        """A reply to ``turn`` ended or was stopped, having heard ``transcript`` so
        far (with any continuation's prefix): it leads the turn's next attempt."""
        if transcript:
            self._transcripts.pop(turn, None)
            self._transcripts[turn] = transcript  # (re)inserted last: the dict is oldest first
            # Only a recent turn can be continued; a long session must not keep every transcript.
            while len(self._transcripts) > _TRANSCRIPTS_KEPT:
                del self._transcripts[next(iter(self._transcripts))]

    def reply_ended(self) -> None:
        """The reply task is done (finished, failed or cancelled)."""
        self._replying = False

    # -- questions -----------------------------------------------------------

    def words_so_far(self, turn: int) -> str:
        """Everything heard of ``turn``'s utterance by its attempts so far ("" if nothing):
        the prefix of its next continuation."""
        return self._transcripts.get(turn, "")

    def partial_turn(self, sample: int) -> int:
        """The turn the user is speaking at ``sample`` (what partial transcripts belong to)."""
        script = self.scripts.covering(sample)
        return script.turn if script is not None else self._next_free_turn()

    def vad_splits(self, turn: int) -> int | None:
        """How many times the VAD split ``turn``'s utterance (None: never)."""
        return self._splits.get(turn)

    # -- inside --------------------------------------------------------------

    def _next_free_turn(self) -> int:
        """The turn id an end of turn outside any script gets (e.g. a live microphone):
        the first not taken and not announced by a script."""
        announced = {script.turn for script in self.scripts}
        while self._cursor in self._used or self._cursor in announced:
            self._cursor += 1
        return self._cursor

    def _marks(self, turn: int, speech_start_ns: int | None, end_ns: int) -> dict[str, int]:
        marks: dict[str, int] = {}
        if speech_start_ns is not None:
            marks["vad.speech_start"] = speech_start_ns
            self._speech_starts.setdefault(turn, speech_start_ns)
        marks["vad.end_of_turn"] = end_ns
        return marks
