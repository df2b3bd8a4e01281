"""Speech recognition stages.

``emulated``: returns the scenario's text for the utterance ``finalize_ms``
after the end of turn. The audio is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.audio import PCM
from agent.clock import Pacer
from agent.stages.interfaces import SessionContext
from agent.wire.protocol import Script

__all__ = ["EmulatedASR", "EmulatedASRConfig"]


@dataclass(frozen=True, slots=True)
class EmulatedASRConfig:
    finalize_ms: float = field(default=150.0, metadata={"min": 0})
    """Time from end of turn to the final transcript."""


class EmulatedASR:
    def __init__(self, config: EmulatedASRConfig, ctx: SessionContext) -> None:
        self._delay_ns = round(config.finalize_ms * 1e6)
        self._clock = ctx.clock

    def feed(self, pcm: PCM, first_sample: int) -> None:
        """The emulation does not listen."""

    async def finalize(self, end_sample: int, hint: Script | None) -> str:
        await Pacer(self._clock).until(self._delay_ns)
        return hint.text if hint is not None else ""
