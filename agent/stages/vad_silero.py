"""Real voice activity detection and endpointing: ``silero`` (ONNX) and ``energy``.

Both kinds turn the upstream audio into a sequence of short windows, classify
each window as speech or silence, and feed the decisions to one shared
endpointing state machine (:class:`Endpointer`). Only the classifier differs:

- ``silero``: Silero VAD v6, the ONNX model faster-whisper ships
  (``faster_whisper/assets/silero_vad_v6.onnx``), run with onnxruntime on
  16 kHz audio in its native 512-sample (32 ms) windows. The model's input is
  those 512 samples preceded by the previous window's last 64 (``[1, 576]``),
  plus an LSTM state ``h``/``c`` of ``[1, 1, 128]`` each that is carried from
  window to window; it outputs one speech probability. Sessions at another
  rate are resampled to 16 kHz with a streaming soxr resampler.
- ``energy``: RMS level of 20 ms windows against a fixed dBFS threshold — the
  classic gate, kept for comparison.

Endpointing (:class:`Endpointer`), in audio samples, never in wall time:

- a *speech run* starts at a speech window; gaps shorter than ``min_silence_ms``
  inside it are bridged;
- a run that has lasted ``min_speech_ms`` is *confirmed*: the first confirmed
  run of a turn emits ``speech_start``, and every confirmed run pushes the end
  of speech forward (an unconfirmed blip — a click, a breath — does not);
- ``end_of_turn`` is emitted once ``endpoint_ms`` of audio has passed since the
  end of the last confirmed speech.

Events carry the sample at which the decision became possible: the end of the
window whose classification completed it. The stages read no clock — the
session stamps ``vad.speech_start`` / ``vad.end_of_turn`` when it receives the
events — and they ignore the scenario's ``script`` hints.

The ONNX session is loaded once per process and shared by every agent session
(onnxruntime sessions are safe to ``run`` concurrently); the LSTM state, the
window buffer and the endpointing state live in each stage instance.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.audio import FULL_SCALE, PCM, frame_rms_dbfs
from agent.errors import ConfigError
from agent.stages.interfaces import SessionContext, VadEvent

__all__ = [
    "DEFAULT_ENDPOINT_MS",
    "ENERGY_ENDPOINT_MS",
    "ENERGY_WINDOW_MS",
    "SILERO_RATE",
    "SILERO_WINDOW",
    "Endpointer",
    "EnergyVAD",
    "EnergyVADConfig",
    "SileroVAD",
    "SileroVADConfig",
    "bundled_silero_path",
    "silero_session",
]

#: Silero v5/v6 run at 16 kHz on 512-sample windows, each preceded by 64 samples of context.
SILERO_RATE = 16000
SILERO_WINDOW = 512
_CONTEXT = 64
_STATE_SHAPE = (1, 1, 128)

#: End-of-turn silence for ``silero``, chosen by measurement (benchmarks/endpointing.py,
#: docs/speech.md "Choosing endpoint_ms"): the longest pause inside a shipped
#: scenario's user utterance, as the endpointer counts it, is 480 ms (15 windows;
#: the caller's Piper voice, and 180 noisy Piper renders). Silence is counted in
#: whole 32 ms windows, so 512 ms (16 windows) is the shortest setting that
#: splits none of them; 448 ms splits 11 % of the caller's utterances.
DEFAULT_ENDPOINT_MS = 512.0
#: The same measurement for ``energy`` (20 ms windows at -40 dBFS): longest pause 500 ms.
ENERGY_ENDPOINT_MS = 520.0

Floats = npt.NDArray[np.float32]


# --------------------------------------------------------------------------- endpointing


class Endpointer:
    """Speech start and end of turn from per-window speech/silence decisions.

    Pure arithmetic on sample positions (sans I/O): feed it ``(start, end,
    is_speech)`` for consecutive windows and it returns the events decided at
    each window's end. ``is_speech=None`` means "undecided" (a probability
    between the two thresholds) and continues whatever the previous window was.
    """

    def __init__(self, min_speech: int, min_silence: int, endpoint: int) -> None:
        self._min_speech = min_speech
        self._min_silence = min_silence
        self._endpoint = endpoint
        self._run_start: int | None = None  # first sample of the current speech run
        self._run_end = 0  # end of the last speech window of that run
        self._confirmed = False  # the current run has lasted min_speech
        self._in_turn = False  # speech_start emitted, end_of_turn not yet
        self._speech_end = 0  # end of the last confirmed speech of this turn
        self._previous = False
        #: ``(start, end)`` of each confirmed speech run, in samples (for diagnostics and tests).
        self.segments: list[tuple[int, int]] = []

    @property
    def in_turn(self) -> bool:
        """Speech has started and the end of turn has not been declared yet."""
        return self._in_turn

    @property
    def speech_end(self) -> int:
        """End of the last confirmed speech: the end-of-turn silence counts from here."""
        return self._speech_end

    def push(self, start: int, end: int, is_speech: bool | None) -> list[VadEvent]:
        speech = self._previous if is_speech is None else is_speech
        self._previous = speech
        events: list[VadEvent] = []
        if speech:
            if self._run_start is None:
                self._run_start, self._confirmed = start, False
            self._run_end = end
            if not self._confirmed and end - self._run_start >= self._min_speech:
                self._confirmed = True
                self.segments.append((self._run_start, end))
                if not self._in_turn:
                    self._in_turn = True
                    events.append(VadEvent("speech_start", end))
            if self._confirmed:
                self._speech_end = end
                self.segments[-1] = (self.segments[-1][0], end)
        elif self._run_start is not None and end - self._run_end >= self._min_silence:
            self._run_start = None  # the gap is a pause, not a gap between syllables
        if self._in_turn and not speech and end - self._speech_end >= self._endpoint:
            self._in_turn = False
            events.append(VadEvent("end_of_turn", end))
        return events


def _samples(ms: float, rate: int) -> int:
    return round(ms * rate / 1000)


def _check_timing(role: str, min_silence_ms: float, endpoint_ms: float) -> None:
    # Checked when the stage is built (the session reports it as backend_unavailable);
    # the pipeline loader only knows per-field bounds.
    if endpoint_ms < min_silence_ms:
        raise ConfigError(
            f"endpoint_ms ({endpoint_ms:g}) must be >= min_silence_ms ({min_silence_ms:g})",
            field=f"{role}.endpoint_ms",
        )


# --------------------------------------------------------------------------- silero


@dataclass(frozen=True, slots=True)
class SileroVADConfig:
    threshold: float = field(default=0.5, metadata={"min_exclusive": 0.0})
    """Speech probability at or above which a 32 ms window is speech. A window is
    silence below ``threshold - 0.15`` (Silero's own hysteresis); in between it
    continues the previous window's state."""
    min_speech_ms: float = field(default=90.0, metadata={"min": 0})
    """Speech must last this long before it counts (speech_start, or resuming a turn)."""
    min_silence_ms: float = field(default=100.0, metadata={"min": 0})
    """Gaps shorter than this inside speech are bridged (between syllables and words)."""
    endpoint_ms: float = field(default=DEFAULT_ENDPOINT_MS, metadata={"min": 0})
    """Silence after the last confirmed speech before the end of turn is declared."""
    model: str = ""
    """Path to a Silero v5/v6 ONNX file; "" = the one bundled with faster-whisper."""


def bundled_silero_path() -> Path:
    """faster-whisper's bundled ``silero_vad_v6.onnx``."""
    try:
        import faster_whisper
    except ImportError:
        raise ConfigError(
            "the silero VAD needs faster-whisper (it ships the model): pip install -e '.[speech]'",
            field="vad.kind",
        ) from None
    return Path(faster_whisper.__file__).parent / "assets" / "silero_vad_v6.onnx"


_session_lock = threading.Lock()


@functools.cache
def _load_session(path: str) -> Any:
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    # One 32 ms window costs ~0.2 ms on one thread; more threads only add
    # contention with the ASR on a 2-core machine.
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return onnxruntime.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def silero_session(path: str | Path | None = None) -> Any:
    """The process-wide onnxruntime session for a Silero model (loaded on first use)."""
    resolved = Path(path) if path else bundled_silero_path()
    if not resolved.is_file():
        raise ConfigError(f"Silero VAD model not found: {resolved}", field="vad.model")
    try:
        import onnxruntime  # noqa: F401  (a clear error before the cached loader runs)
    except ImportError:
        raise ConfigError(
            "the silero VAD needs onnxruntime: pip install -e '.[speech]'", field="vad.kind"
        ) from None
    with _session_lock:  # two sessions starting together load the model once
        return _load_session(str(resolved.resolve()))


#: The onnxruntime sessions already warmed (by id; sessions live as long as the process).
_warmed: set[int] = set()


class SileroVAD:
    """Silero VAD v6 on 32 ms windows of 16 kHz audio, with endpointing."""

    def __init__(self, config: SileroVADConfig, ctx: SessionContext) -> None:
        _check_timing("vad", config.min_silence_ms, config.endpoint_ms)
        self._session = silero_session(config.model or None)
        self._rate = ctx.sample_rate
        self._threshold = config.threshold
        self._negative = max(config.threshold - 0.15, 0.01)
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)  # 16 kHz samples not yet in a window
        self._consumed = 0  # 16 kHz samples already classified
        self._origin: int | None = None  # session sample of the first audio processed
        self._resample = _stream_resampler(ctx.sample_rate, SILERO_RATE)
        rate = ctx.sample_rate
        self.endpointer = Endpointer(
            _samples(config.min_speech_ms, rate),
            _samples(config.min_silence_ms, rate),
            _samples(config.endpoint_ms, rate),
        )
        #: Speech probability of every window so far (diagnostics and measurements).
        self.probabilities: list[float] = []

    async def warm_up(self) -> None:
        """One inference on silence with a throwaway state (onnxruntime's first run
        allocates), once per process; this session's state is untouched."""
        if id(self._session) in _warmed:
            return
        zeros = np.zeros(_STATE_SHAPE, dtype=np.float32)
        x = np.zeros((1, _CONTEXT + SILERO_WINDOW), dtype=np.float32)
        self._session.run(None, {"input": x, "h": zeros, "c": zeros})
        _warmed.add(id(self._session))

    def _position(self, sample_16k: int) -> int:
        """A 16 kHz position (counted from the first audio) as a session sample position."""
        origin = self._origin or 0
        if self._rate == SILERO_RATE:
            return origin + sample_16k
        return origin + math.ceil(sample_16k * self._rate / SILERO_RATE)

    def probability(self, window: Floats) -> float:
        """Run the model on one 512-sample window, advancing the LSTM state."""
        x = np.concatenate((self._context, window))[None, :]
        out, self._h, self._c = self._session.run(None, {"input": x, "h": self._h, "c": self._c})
        self._context = window[-_CONTEXT:]
        return float(np.asarray(out).reshape(-1)[0])

    @property
    def classified_to(self) -> int:
        """The session sample up to which audio has been classified."""
        return self._position(self._consumed)

    def process(self, pcm: PCM, first_sample: int) -> Sequence[VadEvent]:
        if self._origin is None:
            self._origin = first_sample
        x = pcm.astype(np.float32) / FULL_SCALE
        if self._resample is not None:
            x = self._resample(x)
        self._pending = np.concatenate((self._pending, x))
        events: list[VadEvent] = []
        while self._pending.shape[0] >= SILERO_WINDOW:
            window, self._pending = self._pending[:SILERO_WINDOW], self._pending[SILERO_WINDOW:]
            p = self.probability(window)
            self.probabilities.append(p)
            decision = True if p >= self._threshold else False if p < self._negative else None
            start = self._position(self._consumed)
            self._consumed += SILERO_WINDOW
            events += self.endpointer.push(start, self._position(self._consumed), decision)
        return events


def _stream_resampler(src: int, dst: int) -> Callable[[Floats], Floats] | None:
    if src == dst:
        return None
    import soxr

    stream = soxr.ResampleStream(src, dst, 1, dtype="float32")

    def resample(x: Floats) -> Floats:
        return np.asarray(stream.resample_chunk(x), dtype=np.float32)

    return resample


# --------------------------------------------------------------------------- energy


@dataclass(frozen=True, slots=True)
class EnergyVADConfig:
    threshold_dbfs: float = -40.0
    """A 20 ms window is speech when its RMS level is at or above this."""
    min_speech_ms: float = field(default=60.0, metadata={"min": 0})
    """Speech must last this long before it counts."""
    min_silence_ms: float = field(default=100.0, metadata={"min": 0})
    """Gaps shorter than this inside speech are bridged."""
    endpoint_ms: float = field(default=ENERGY_ENDPOINT_MS, metadata={"min": 0})
    """Silence (the hangover) after the last confirmed speech before the end of turn."""


ENERGY_WINDOW_MS = 20


class EnergyVAD:
    """An RMS threshold with hangover: cheap, and fooled by any loud noise."""

    def __init__(self, config: EnergyVADConfig, ctx: SessionContext) -> None:
        _check_timing("vad", config.min_silence_ms, config.endpoint_ms)
        rate = ctx.sample_rate
        self._threshold = config.threshold_dbfs
        self._window = _samples(ENERGY_WINDOW_MS, rate)
        self._pending = np.zeros(0, dtype=np.int16)
        self._consumed: int | None = None  # session sample where the pending audio starts
        self.endpointer = Endpointer(
            _samples(config.min_speech_ms, rate),
            _samples(config.min_silence_ms, rate),
            _samples(config.endpoint_ms, rate),
        )

    @property
    def classified_to(self) -> int:
        """The session sample up to which audio has been classified."""
        return self._consumed or 0

    def process(self, pcm: PCM, first_sample: int) -> Sequence[VadEvent]:
        if self._consumed is None:
            self._consumed = first_sample
        self._pending = np.concatenate((self._pending, pcm))
        events: list[VadEvent] = []
        while self._pending.shape[0] >= self._window:
            window, self._pending = self._pending[: self._window], self._pending[self._window :]
            speech = frame_rms_dbfs(window) >= self._threshold
            start = self._consumed
            self._consumed += self._window
            events += self.endpointer.push(start, self._consumed, speech)
        return events
