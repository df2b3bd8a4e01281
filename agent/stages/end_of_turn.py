"""The ``semantic`` end-of-turn strategy: VAD kind ``semantic``.

Three end-of-turn strategies, chosen by the pipeline's VAD kind
(docs/speech.md, "End-of-turn strategies"): ``silero``/``energy`` wait a fixed
``endpoint_ms`` of silence (``silence``); ``oracle`` ends turns where the
scenario's script says (emulated pipelines); ``semantic`` (this module)
combines three signals, because none is reliable alone on synthetic callers
(issue 13: Smart Turn scores complete espeak-ng sentences as low as 0.01, and
half-sentences in the Piper voice as high as 0.97):

1. **Smart Turn v3.2** (:mod:`agent.stages.smart_turn`) on the last 8 s of the
   caller's audio, started after ``check_ms`` of silence, in a worker thread,
   so it runs while the silence is still being confirmed;
2. **the transcript's completeness** (:func:`text_verdict`): the streaming
   ASR's latest partial, which the session hands over (:meth:`SemanticVAD.hear`)
   — a clause ending in "for", "the", "and" or a comma is not finished;
3. **an adaptive silence window**: the end of turn is declared once the silence
   reaches ``min_ms`` when the model says complete and the text does not say
   incomplete, ``unsure_ms`` when only the text does not object, and
   ``max_ms`` when the text says incomplete (also the fallback when the
   model has not answered by then).

Silence is counted in audio samples from the end of the last confirmed speech
(Silero's :class:`~agent.stages.vad_silero.Endpointer`), never in wall time,
so the decision does not depend on how fast frames arrive — except that a
model still running when its window is reached waits for it (up to
``max_ms``). Speech that resumes before the decision cancels it: the turn goes on.
"""

from __future__ import annotations

import concurrent.futures
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from agent.audio import PCM
from agent.errors import ConfigError
from agent.stages.interfaces import SessionContext, VadEvent
from agent.stages.smart_turn import SmartTurn
from agent.stages.vad_silero import SileroVAD, SileroVADConfig

__all__ = [
    "HearsTranscripts",
    "SemanticVAD",
    "SemanticVADConfig",
    "TurnCheck",
    "Verdict",
    "text_verdict",
]

Verdict = Literal["complete", "incomplete", "unknown"]

#: Words a finished English sentence rarely ends on: conjunctions, prepositions,
#: articles, possessives, auxiliaries — the place a caller pauses mid-clause.
_DANGLING_WORDS = (
    "a an the and or but so because if when while than that which who whose to for of "
    "with without on in at by from into about as like my your our their his her its "
    "this these those some any is are was were be been am i we you they he she would "
    "could should will can shall may might must do does did have has had not um uh er"
)
_DANGLING = frozenset(_DANGLING_WORDS.split(" "))
_WORD = re.compile(r"[a-z']+")


def text_verdict(text: str) -> Verdict:
    """Whether a transcript reads as a finished turn (a judgement of the text alone)."""
    text = text.strip()
    if not text:
        return "unknown"
    words = _WORD.findall(text.lower())
    if text.endswith((",", ";", ":", "-", "...", "…")) or (words and words[-1] in _DANGLING):
        return "incomplete"
    if text.endswith((".", "?", "!")):
        return "complete"
    return "unknown"


@runtime_checkable
class HearsTranscripts(Protocol):
    """A VAD that wants the streaming ASR's partial transcripts (the session passes them on)."""

    def hear(self, partial: str) -> None: ...


@dataclass(frozen=True, slots=True)
class SemanticVADConfig:
    check_ms: float = field(default=128.0, metadata={"min": 100})
    """Silence after which Smart Turn starts (Silero's endpoint for the check; >= min_silence_ms)."""
    min_ms: float = field(default=192.0, metadata={"min": 0})
    """End of turn at this much silence when the model says complete and the text does not object."""
    unsure_ms: float = field(default=512.0, metadata={"min": 0})
    """… when the model says incomplete but the text does not (synthetic voices' flat prosody)."""
    max_ms: float = field(default=896.0, metadata={"min": 0})
    """… when the text says incomplete, or the model has not answered (the longest wait)."""
    turn_threshold: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})
    """Smart Turn probability at or above which the audio says complete."""
    threads: int = field(default=1, metadata={"min": 1})
    """onnxruntime threads for one Smart Turn inference."""
    threshold: float = field(default=0.5, metadata={"min_exclusive": 0.0})
    """Silero speech probability threshold (as ``silero``)."""
    min_speech_ms: float = field(default=90.0, metadata={"min": 0})
    min_silence_ms: float = field(default=100.0, metadata={"min": 0})
    model: str = ""
    """A Silero ONNX file; "" = the one faster-whisper bundles."""


@dataclass
class TurnCheck:
    """One end-of-turn check: a pause long enough to ask the model."""

    speech_end: int  # session sample where the caller's speech stopped
    check_sample: int  # where the check started (check_ms of silence)
    future: concurrent.futures.Future[float]
    probability: float | None = None
    verdict: Verdict = "unknown"
    window: int | None = None  # samples of silence the decision waits for
    decided_sample: int | None = None  # where the end of turn was declared
    cancelled: bool = False  # speech resumed first

    def summary(self, rate: int) -> dict[str, Any]:
        ms = 1000 / rate
        return {
            "probability": None if self.probability is None else round(self.probability, 4),
            "text": self.verdict,
            "window_ms": None if self.window is None else round(self.window * ms),
            "check_ms": round((self.check_sample - self.speech_end) * ms),
            "decided_ms": None
            if self.decided_sample is None
            else round((self.decided_sample - self.speech_end) * ms),
        }


#: One worker for every session: a turn check is short, and more threads would
#: only fight the ASR's decode worker for the same cores.
_WORKER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlt-smart-turn")


class SemanticVAD(HearsTranscripts):
    """Silero for speech/silence, Smart Turn + the transcript for the end of turn."""

    def __init__(
        self,
        config: SemanticVADConfig,
        ctx: SessionContext,
        submit: Callable[[Callable[[], float]], concurrent.futures.Future[float]] | None = None,
    ) -> None:
        if not config.min_ms <= config.unsure_ms <= config.max_ms:
            raise ConfigError(
                "need min_ms <= unsure_ms <= max_ms, got "
                f"{config.min_ms:g}, {config.unsure_ms:g}, {config.max_ms:g}",
                field="vad.unsure_ms",
            )
        if config.check_ms > config.min_ms:
            raise ConfigError(
                f"check_ms ({config.check_ms:g}) must be <= min_ms ({config.min_ms:g})", field="vad.check_ms"
            )
        self.config = config
        self._rate = ctx.sample_rate
        #: The session's sample rate (what :meth:`TurnCheck.summary` counts in).
        self.vad_rate = ctx.sample_rate
        silero = SileroVADConfig(
            threshold=config.threshold,
            min_speech_ms=config.min_speech_ms,
            min_silence_ms=config.min_silence_ms,
            endpoint_ms=config.check_ms,
            model=config.model,
        )
        self.vad = SileroVAD(silero, ctx)
        self._model = SmartTurn(config.threads)
        # Injected in tests to run the model inline, so a decision is reproducible.
        self._submit = submit or (lambda work: _WORKER.submit(work))
        self._ms = ctx.sample_rate / 1000
        self._audio: deque[tuple[int, PCM]] = deque()  # (first sample, chunk), the last ~10 s
        self._partial = ""
        self._check: TurnCheck | None = None
        self._in_turn = False
        #: Every check of the session, in order (diagnostics, tests, the turn record).
        self.checks: list[TurnCheck] = []

    def hear(self, partial: str) -> None:
        self._partial = partial

    def process(self, pcm: PCM, first_sample: int) -> Sequence[VadEvent]:
        self._keep(pcm, first_sample)
        out: list[VadEvent] = []
        for event in self.vad.process(pcm, first_sample):
            if event.kind == "speech_start":
                if self._check is not None:  # the caller went on: no end of turn here
                    self._check.cancelled = True
                    self._check.future.cancel()
                    self._check = None
                    continue
                if not self._in_turn:
                    self._in_turn = True
                    out.append(event)
            else:  # check_ms of silence: ask the model while the silence goes on
                self._start_check(event.sample)
                out.append(VadEvent("turn_check", event.sample))
        if self._check is not None and (decided := self._decide(self.vad.classified_to)) is not None:
            out.append(VadEvent("end_of_turn", decided))
        return out

    # -- inside --------------------------------------------------------------

    def _keep(self, pcm: PCM, first_sample: int) -> None:
        self._audio.append((first_sample, pcm))
        horizon = first_sample - 10 * self._rate
        while self._audio and self._audio[0][0] + len(self._audio[0][1]) < horizon:
            self._audio.popleft()

    def _start_check(self, sample: int) -> None:
        speech_end = self.vad.endpointer.speech_end
        chunks = [c for s, c in self._audio if s < speech_end]
        first = self._audio[0][0] if self._audio else speech_end
        audio = np.concatenate(chunks)[: speech_end - first] if chunks else np.zeros(0, np.int16)
        model, rate = self._model, self._rate
        future = self._submit(lambda: model.probability(audio, rate))
        self._check = TurnCheck(speech_end, sample, future)
        self.checks.append(self._check)

    def _decide(self, now: int) -> int | None:
        check = self._check
        assert check is not None
        silence = now - check.speech_end
        if check.future.done() and check.probability is None:
            try:
                check.probability = check.future.result()
            except Exception:
                check.probability = float("nan")  # a failed model: fall back to max_ms
        if check.probability is None and silence < self.config.max_ms * self._ms:
            return None  # the model is still running and may yet shorten the wait
        check.verdict = text_verdict(self._partial)
        check.window = round(self._window(check.probability, check.verdict) * self._ms)
        if silence < check.window:
            return None
        check.decided_sample = now
        self._check, self._in_turn, self._partial = None, False, ""
        return now

    def _window(self, p: float | None, verdict: Verdict) -> float:
        c = self.config
        if verdict == "incomplete" or p is None or p != p:
            return c.max_ms
        return c.min_ms if p >= c.turn_threshold else c.unsure_ms
