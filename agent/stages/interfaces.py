"""The small interfaces every stage implementation satisfies (structural typing),
and the optional capabilities some stages add (checked with ``isinstance``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from agent.audio import PCM
from agent.clock import Clock
from agent.wire.protocol import Script

__all__ = [
    "ASR",
    "LLM",
    "TTS",
    "VAD",
    "ASRStats",
    "Closable",
    "LLMDelta",
    "LLMRequest",
    "PartialTranscripts",
    "ScriptBook",
    "SessionContext",
    "VadEvent",
    "WarmUp",
]


class ScriptBook:
    """The scenario hints a client has announced for this session, in order."""

    def __init__(self) -> None:
        self._scripts: list[Script] = []

    def add(self, script: Script) -> None:
        self._scripts.append(script)

    def __iter__(self) -> Any:
        return iter(self._scripts)

    def __len__(self) -> int:
        return len(self._scripts)

    def prune(self, before_sample: int) -> None:
        """Forget what no :meth:`covering` call at ``before_sample`` or later can return:
        every script announced before the latest one that started by then."""
        for i in range(len(self._scripts) - 1, 0, -1):
            if self._scripts[i].speech_start_sample <= before_sample:
                del self._scripts[:i]
                return

    def covering(self, sample: int) -> Script | None:
        """The latest script whose speech started at or before ``sample``."""
        found = None
        for script in self._scripts:
            if script.speech_start_sample <= sample:
                found = script
        return found


@dataclass(frozen=True, slots=True)
class SessionContext:
    """What a stage may use: the session's clock (for pacing emulation only),
    its audio format, and the scenario hints announced so far."""

    clock: Clock
    sample_rate: int
    frame_samples: int
    scripts: ScriptBook = field(default_factory=ScriptBook)


@dataclass(frozen=True, slots=True)
class VadEvent:
    """``speech_start`` or ``end_of_turn``, at a sample position of the upstream audio;
    ``turn_check``: an end-of-turn model started on a pause (only the ``semantic`` VAD)."""

    kind: Literal["speech_start", "end_of_turn", "turn_check"]
    sample: int


class VAD(Protocol):
    """Voice activity detection and endpointing over the upstream audio, frame by frame."""

    def process(self, pcm: PCM, first_sample: int) -> Sequence[VadEvent]: ...


class ASR(Protocol):
    """Streaming recognition: audio is fed as it arrives; ``finalize`` ends an utterance."""

    def feed(self, pcm: PCM, first_sample: int) -> None: ...

    async def finalize(self, end_sample: int, hint: Script | None) -> str: ...


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """One turn's chat request (OpenAI-style messages) plus the scenario's hint."""

    messages: Sequence[dict[str, str]]
    turn: int
    scripted_reply: str | None = None


@dataclass(frozen=True, slots=True)
class LLMDelta:
    """A piece of streamed output. ``text`` may be empty (e.g. a usage-only chunk)."""

    text: str = ""
    #: Token usage if the backend reports it: ``{"prompt_tokens", "completion_tokens"}``.
    usage: dict[str, int] | None = None
    #: Server-reported timing (e.g. ``x_groq.usage``), stored next to client-side numbers.
    server_timing: dict[str, Any] | None = None


class LLM(Protocol):
    """Streaming chat completion."""

    name: str

    def stream(self, request: LLMRequest) -> AsyncIterator[LLMDelta]: ...


class TTS(Protocol):
    """Streaming synthesis of one phrase into PCM chunks at ``sample_rate``."""

    sample_rate: int

    def synthesize(self, text: str) -> AsyncIterator[PCM]: ...


# --------------------------------------------------------------------------- optional capabilities
# Runtime-checkable, because a session or service asks each stage it built
# whether it has them; a stage declares one by naming it as a base class.


@runtime_checkable
class PartialTranscripts(Protocol):
    """A streaming ASR that offers partial transcripts while the user speaks."""

    def poll_partial(self) -> str | None:
        """The latest partial if it changed since the last poll, else None; never waits."""
        ...


@runtime_checkable
class ASRStats(Protocol):
    """An ASR that says what its last ``finalize`` did (read right after it returns)."""

    last_stats: dict[str, Any] | None


@runtime_checkable
class WarmUp(Protocol):
    """A stage whose first use is slower than the rest (a model to load, a first inference
    that allocates): the session calls ``warm_up`` once, before its hello, so the first
    turn is timed like the others. Process-wide work is done once per process."""

    async def warm_up(self) -> None: ...


@runtime_checkable
class Closable(Protocol):
    """A stage holding a resource (a connection, an HTTP client), closed once when its session ends."""

    async def aclose(self) -> None: ...
