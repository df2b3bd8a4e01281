"""Text-to-speech stages.

``emulated``: speech-like audio (see :func:`agent.audio.speechlike`) whose
length follows the text, delivered in chunks: the first after
``first_audio_ms``, the rest at ``rtf`` (synthesis time / audio time).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from agent.audio import PCM, speechlike
from agent.clock import Pacer
from agent.stages.interfaces import SessionContext

__all__ = ["EmulatedTTS", "EmulatedTTSConfig"]


@dataclass(frozen=True, slots=True)
class EmulatedTTSConfig:
    first_audio_ms: float = field(default=80.0, metadata={"min": 0})
    """Phrase in → first audio chunk out."""
    rtf: float = field(default=0.2, metadata={"min": 0})
    """Real-time factor of the rest: synthesis time per second of audio."""
    chunk_ms: float = field(default=100.0, metadata={"min_exclusive": 0})
    """Audio per chunk."""
    words_per_minute: float = field(default=165.0, metadata={"min_exclusive": 0})
    pitch_hz: float = field(default=120.0, metadata={"min_exclusive": 0})


@functools.lru_cache(maxsize=256)
def _render(text: str, sample_rate: int, pitch_hz: float, words_per_minute: float) -> PCM:
    # Cached: the emulation models a TTS's timing, so the cost of generating
    # the waveform here must not leak into the measured hop on repeated phrases.
    audio = speechlike(text, sample_rate, pitch_hz=pitch_hz, words_per_minute=words_per_minute)
    audio.flags.writeable = False
    return audio


class EmulatedTTS:
    def __init__(self, config: EmulatedTTSConfig, ctx: SessionContext) -> None:
        self.config = config
        self.sample_rate = ctx.sample_rate
        self._clock = ctx.clock

    async def synthesize(self, text: str) -> AsyncIterator[PCM]:
        cfg = self.config
        pacer = Pacer(self._clock)
        audio = _render(text, self.sample_rate, cfg.pitch_hz, cfg.words_per_minute)
        step = max(1, round(cfg.chunk_ms * self.sample_rate / 1000))
        first_ns = round(cfg.first_audio_ms * 1e6)
        for k, start in enumerate(range(0, len(audio), step)):
            await pacer.until(first_ns + round(k * cfg.chunk_ms * cfg.rtf * 1e6))
            yield audio[start : start + step]
