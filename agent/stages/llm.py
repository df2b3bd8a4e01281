"""LLM stages and the token model they share.

``emulated``: streams a reply with a configurable time to first token, decode
speed and jitter. The text is the scenario's scripted reply for the turn, or
one from a small built-in bank. Tokens approximate a BPE tokenizer (a word
piece with its leading space, punctuation separate), so "tokens per second"
means roughly what it means for a real model.
"""

from __future__ import annotations

import functools
import random
import re
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from agent.clock import Pacer
from agent.errors import BackendError
from agent.stages.interfaces import LLMDelta, LLMRequest, SessionContext

__all__ = ["REPLY_BANK", "EmulatedLLM", "EmulatedLLMConfig", "estimate_tokens", "tokenize"]

# Leading whitespace stays with the piece, as in GPT/Llama tokenizers.
_PIECE = re.compile(r"\s*[A-Za-z]+|\s*\d|\s*[^\sA-Za-z\d]|\s+")
_MAX_PIECE_LETTERS = 6  # longer words are split, as BPE splits rare words

REPLY_BANK: tuple[str, ...] = (
    "Sure, I can help with that. Could you tell me a little more about what you need?",
    "That's a good question. Let me check, and I'll have an answer for you in a moment.",
    "Okay, got it. Is there anything else you'd like me to look at while I'm here?",
    "Thanks for waiting. I've found a couple of options, and the first one looks best.",
    "I understand. Let's go through it step by step, starting with the basics.",
    "Yes, that works. I've made a note of it, and you'll get a confirmation shortly.",
)


@functools.lru_cache(maxsize=1024)
def tokenize(text: str) -> tuple[str, ...]:
    """Split text into BPE-like pieces that concatenate back to ``text``."""
    pieces: list[str] = []
    for piece in _PIECE.findall(text):
        while len(piece.strip()) > _MAX_PIECE_LETTERS:
            cut = len(piece) - len(piece.lstrip()) + _MAX_PIECE_LETTERS // 2 + 2
            pieces.append(piece[:cut])
            piece = piece[cut:]
        pieces.append(piece)
    return tuple(pieces)


def estimate_tokens(text: str) -> int:
    return len(tokenize(text))


@dataclass(frozen=True, slots=True)
class EmulatedLLMConfig:
    ttft_ms: float = field(default=200.0, metadata={"min": 0})
    """Request → first token."""
    tokens_per_s: float = field(default=300.0, metadata={"min_exclusive": 0})
    """Decode speed of one stream."""
    jitter: float = field(default=0.0, metadata={"min": 0})
    """Relative standard deviation of each inter-token gap (0 = perfectly even)."""
    ttft_jitter_ms: float = field(default=0.0, metadata={"min": 0})
    """Standard deviation of TTFT."""
    seed: int = 0
    """Seed of the jitter; with the turn number it makes each turn reproducible."""
    fail_turns: list[int] = field(default_factory=list)
    """Turns (0-based) that fail after TTFT with an injected HTTP 503, to exercise
    the failure path: the turn is recorded as failed and the session goes on."""


class EmulatedLLM:
    name = "emulated"

    def __init__(self, config: EmulatedLLMConfig, ctx: SessionContext) -> None:
        self.config = config
        self._clock = ctx.clock

    def reply_for(self, request: LLMRequest) -> str:
        if request.scripted_reply:
            return request.scripted_reply
        last_user = next((m["content"] for m in reversed(request.messages) if m.get("role") == "user"), "")
        return REPLY_BANK[zlib.crc32(last_user.encode()) % len(REPLY_BANK)]

    def schedule_ns(self, n_tokens: int, turn: int) -> list[int]:
        """Offsets from the request at which each token is emitted."""
        cfg = self.config
        # Seeded per turn so each turn is reproducible on its own (only when needed:
        # seeding costs more than everything else on the zero-latency path).
        rng = random.Random(f"{cfg.seed}:{turn}") if cfg.jitter or cfg.ttft_jitter_ms else None
        first = cfg.ttft_ms * 1e6
        if rng is not None and cfg.ttft_jitter_ms:
            first = max(0.0, first + rng.gauss(0.0, cfg.ttft_jitter_ms * 1e6))
        gap = 1e9 / cfg.tokens_per_s
        offsets, t = [], first
        for i in range(n_tokens):
            if i:
                factor = max(0.0, 1.0 + rng.gauss(0.0, cfg.jitter)) if rng and cfg.jitter else 1.0
                t += gap * factor
            offsets.append(round(t))
        return offsets

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMDelta]:
        pacer = Pacer(self._clock)
        tokens = tokenize(self.reply_for(request))
        schedule = self.schedule_ns(len(tokens), request.turn)
        if request.turn in self.config.fail_turns:
            await pacer.until(schedule[0] if schedule else 0)
            raise BackendError("emulated LLM", "injected failure (fail_turns)", status=503)
        for token, offset in zip(tokens, schedule, strict=True):
            await pacer.until(offset)
            yield LLMDelta(text=token)
        prompt = sum(estimate_tokens(m.get("content", "")) for m in request.messages)
        yield LLMDelta(usage={"prompt_tokens": prompt, "completion_tokens": len(tokens)})
