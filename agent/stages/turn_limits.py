"""How long each hop of a turn may take, and how long a reply may be: a pipeline's ``[limits]``.

A backend that hangs, sends only SSE keep-alive comments, or ignores
``max_tokens`` must not hold a turn (and the caller) forever: the orchestrator
(:mod:`agent.server.orchestrator`) fails the turn with a reason naming the hop
that hung — ``llm: no content within 10000 ms`` — and keeps the marks already
stamped, or cuts the reply at ``max_reply_chars``. The defaults sit below the
replay client's 15 s reply timeout, so the server, which knows which hop hung,
speaks first. docs/llm-backends.md ("Deadlines and the reply cap").
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["TurnLimits"]


@dataclass(frozen=True, slots=True)
class TurnLimits:
    asr_final_ms: float = field(default=10_000.0, metadata={"min_exclusive": 0})
    """End of turn → final transcript."""
    llm_content_ms: float = field(default=10_000.0, metadata={"min_exclusive": 0})
    """Request → first content, and the longest wait between two content chunks
    (keep-alive comments and empty chunks do not count as content)."""
    llm_reply_ms: float = field(default=60_000.0, metadata={"min_exclusive": 0})
    """Request → end of the stream, however steadily content arrives."""
    tts_audio_ms: float = field(default=10_000.0, metadata={"min_exclusive": 0})
    """A phrase sent to TTS → its first audio, and the longest wait between its chunks."""
    max_reply_chars: int = field(default=2_000, metadata={"min": 1})
    """The reply is cut here (about two minutes of speech) even if the backend
    ignores ``max_tokens``; the turn's stats say ``truncated``."""
