"""LLM stages and the token model they share.

``emulated``: streams a reply with a configurable time to first token, decode
speed and jitter — set directly, or taken from an accelerator profile
(:mod:`agent.config.accelerators`), whose timing model it shares with the
OpenAI-compatible emulator server. The text is the scenario's scripted reply
for the turn, or one from a small built-in bank. Tokens approximate a BPE
tokenizer (a word piece with its leading space, punctuation separate), so
"tokens per second" means roughly what it means for a real model.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.clock import Pacer
from agent.config.accelerator_timing import token_schedule_ns
from agent.config.accelerators import PROFILE_CHOICES, AcceleratorProfile, get_profile
from agent.errors import BackendError, ConfigError
from agent.stages.interfaces import LLMDelta, LLMRequest, SessionContext

__all__ = [
    "DEFAULT_TOKENS_PER_S",
    "DEFAULT_TTFT_MS",
    "REPLY_BANK",
    "EmulatedLLM",
    "EmulatedLLMConfig",
    "bank_reply",
    "estimate_tokens",
    "resolve_profile",
    "tokenize",
]

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


def bank_reply(messages: Sequence[Mapping[str, Any]]) -> str:
    """The built-in reply for a conversation: chosen by its latest user message, deterministically."""
    last_user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    # surrogatepass: a lone surrogate that got this far picks a reply too, never fails the turn.
    return REPLY_BANK[zlib.crc32(str(last_user).encode("utf-8", "surrogatepass")) % len(REPLY_BANK)]


#: Timing of the ``emulated`` LLM when neither a profile nor the pipeline sets it.
DEFAULT_TTFT_MS = 200.0
DEFAULT_TOKENS_PER_S = 300.0
#: The settings a profile supplies and a pipeline file may override.
_TIMING = ("ttft_ms", "tokens_per_s", "jitter", "ttft_jitter_ms")


@dataclass(frozen=True, slots=True)
class EmulatedLLMConfig:
    profile: str = field(default="", metadata={"choices": PROFILE_CHOICES})
    """Accelerator profile (``vlt profiles``) giving TTFT, prefill speed, tokens/s
    and jitter; "" for none. The settings below, when set, override it."""
    ttft_ms: float | None = field(default=None, metadata={"min": 0})
    """Request → first token, before prefill (unset: the profile's, else 200)."""
    tokens_per_s: float | None = field(default=None, metadata={"min_exclusive": 0})
    """Decode speed of one stream (unset: the profile's, else 300)."""
    jitter: float | None = field(default=None, metadata={"min": 0})
    """Relative standard deviation of each inter-token gap, 0 = perfectly even
    (unset: the profile's, else 0)."""
    ttft_jitter_ms: float | None = field(default=None, metadata={"min": 0})
    """Standard deviation of TTFT (unset: the profile's, else 0)."""
    seed: int = 0
    """Seed of the jitter; with the turn number it makes each turn reproducible."""
    fail_turns: list[int] = field(default_factory=list)
    """Turns (0-based) that fail after TTFT with an injected HTTP 503, to exercise
    the failure path: the turn is recorded as failed and the session goes on."""

    def __post_init__(self) -> None:
        # Unset timing is filled in at once — from the profile, else the built-in
        # defaults — so the run manifest records the numbers the stage runs with.
        # (So ``dataclasses.replace(config, profile=...)`` keeps the old numbers.)
        base = _base_profile(self.profile)
        for name in _TIMING:
            if getattr(self, name) is None:
                object.__setattr__(self, name, float(getattr(base, name)))


def _base_profile(name: str) -> AcceleratorProfile:
    if not name:
        return AcceleratorProfile(
            name="emulated",
            label="emulated",
            model="",
            ttft_ms=DEFAULT_TTFT_MS,
            tokens_per_s=DEFAULT_TOKENS_PER_S,
            source="pipeline settings",
            date="",
        )
    try:
        return get_profile(name)
    except ConfigError as exc:
        raise ConfigError(exc.reason, field="llm.profile") from None


def resolve_profile(config: EmulatedLLMConfig) -> AcceleratorProfile:
    """The timing a config describes: its profile (prefill and all) with its timing settings on top."""
    changes: dict[str, Any] = {name: getattr(config, name) for name in _TIMING}
    return dataclasses.replace(_base_profile(config.profile), **changes)


class EmulatedLLM:
    name = "emulated"

    def __init__(self, config: EmulatedLLMConfig, ctx: SessionContext) -> None:
        self.config = config
        #: The effective timing: the profile with the pipeline's explicit settings applied.
        self.profile = resolve_profile(config)
        self._clock = ctx.clock

    def reply_for(self, request: LLMRequest) -> str:
        if request.scripted_reply:
            return request.scripted_reply
        return bank_reply(request.messages)

    def schedule_ns(self, n_tokens: int, turn: int, prompt_tokens: int = 0) -> list[int]:
        """Offsets from the request at which each token is emitted.

        One stream on its own accelerator: the profile's single-stream timing,
        with prefill of ``prompt_tokens`` added to TTFT when the profile models it.
        """
        profile = self.profile
        # Seeded per turn so each turn is reproducible on its own (only when needed:
        # seeding costs more than everything else on the zero-latency path).
        jittered = profile.jitter or profile.ttft_jitter_ms
        rng = random.Random(f"{self.config.seed}:{turn}") if jittered else None
        return token_schedule_ns(profile, n_tokens, prompt_tokens=prompt_tokens, active_streams=1, rng=rng)

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMDelta]:
        pacer = Pacer(self._clock)
        tokens = tokenize(self.reply_for(request))
        prompt = sum(estimate_tokens(m.get("content", "")) for m in request.messages)
        schedule = self.schedule_ns(len(tokens), request.turn, prompt)
        if request.turn in self.config.fail_turns:
            await pacer.until(schedule[0] if schedule else 0)
            raise BackendError("emulated LLM", "injected failure (fail_turns)", status=503)
        for token, offset in zip(tokens, schedule, strict=True):
            await pacer.until(offset)
            yield LLMDelta(text=token)
        yield LLMDelta(usage={"prompt_tokens": prompt, "completion_tokens": len(tokens)})
