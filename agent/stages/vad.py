"""Voice activity detection and endpointing stages.

``oracle``: knows exactly where the scenario put speech (from the client's
``script`` hints) and declares the end of turn ``endpoint_ms`` of audio after
the true speech end. It isolates the rest of the pipeline from VAD error and
makes the endpointing hop exactly the configured value (plus transport).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.audio import PCM
from agent.stages.interfaces import SessionContext, VadEvent

__all__ = ["OracleVAD", "OracleVADConfig"]


@dataclass(frozen=True, slots=True)
class OracleVADConfig:
    endpoint_ms: float = field(default=200.0, metadata={"min": 0})
    """Audio after the true end of speech before the end of turn is declared."""
    start_ms: float = field(default=0.0, metadata={"min": 0})
    """Audio after the true start of speech before speech_start is declared
    (what a real VAD needs to be sure; it delays barge-in detection)."""


class OracleVAD:
    """Endpointing from the scenario's ground truth, decided on audio position."""

    def __init__(self, config: OracleVADConfig, ctx: SessionContext) -> None:
        self._ctx = ctx
        self._endpoint = round(config.endpoint_ms * ctx.sample_rate / 1000)
        self._start_delay = round(config.start_ms * ctx.sample_rate / 1000)
        self._started = 0  # scripts whose speech_start was reported
        self._ended = 0  # scripts whose end of turn was reported

    def process(self, pcm: PCM, first_sample: int) -> Sequence[VadEvent]:
        end = first_sample + len(pcm)
        scripts = list(self._ctx.scripts)
        events: list[VadEvent] = []
        while self._started < len(scripts):
            at = scripts[self._started].speech_start_sample + self._start_delay
            # Declared once the audio up to ``at`` has arrived, and at least one
            # sample of speech has (so start_ms = 0 still needs speech to exist).
            if max(at, scripts[self._started].speech_start_sample + 1) > end:
                break
            events.append(VadEvent("speech_start", at))
            self._started += 1
        while self._ended < self._started:
            at = scripts[self._ended].speech_end_sample + self._endpoint
            if at > end:
                break
            events.append(VadEvent("end_of_turn", at))
            self._ended += 1
        return events
