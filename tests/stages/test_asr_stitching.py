"""The streaming ASR's final transcript depends on the audio, not on how late decodes finish.

Real model (Whisper tiny.en), real caller speech (Piper). Decode delays are injected
deterministically: decodes go to a held worker that runs each one only when the
test releases it, a chosen number of frames after it was submitted (or only at the
end of turn). On a busy machine the shared worker is late in just this way; on main
the speculative decode then covered more trailing audio than a timely one and the
final could read differently.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model comes from an installed package

import asyncio
import concurrent.futures
import importlib.util
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from agent.audio import PCM
from agent.client.user_speech import render_user_audio
from agent.clock import MonotonicClock
from agent.stages.asr_whisper import WhisperASR, WhisperASRConfig
from agent.stages.interfaces import SessionContext

_MISSING = [m for m in ("piper", "faster_whisper") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"extra 'speech' not installed: {_MISSING}")

RATE = 16000
FRAME = 320
#: Utterances with inner pauses (a speculative decode starts at each, then speech resumes).
TEXTS = ("Hi, what time do you open tomorrow?", "Great, thanks. I'll come by in the morning.")


class HeldWorker(concurrent.futures.Executor):
    """Runs each submitted decode only when :meth:`release` says its delay is over."""

    def __init__(self, delay: Callable[[int], int | None]) -> None:
        #: Decode number → frames it is held (None: until the end of turn).
        self._delay = delay
        self._held: list[tuple[int | None, concurrent.futures.Future[Any], Callable[[], Any]]] = []
        self.frame = 0
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        delay = self._delay(self.submitted)
        self.submitted += 1
        due = None if delay is None else self.frame + delay
        self._held.append((due, future, lambda: fn(*args, **kwargs)))
        return future

    def release(self, everything: bool = False) -> None:
        keep = []
        for due, future, job in self._held:
            if everything or (due is not None and due <= self.frame):
                try:
                    future.set_result(job())
                except Exception as exc:  # handed to the stage, as the real worker would
                    future.set_exception(exc)
            else:
                keep.append((due, future, job))
        self._held = keep


async def _settle() -> None:
    for _ in range(5):  # run_in_executor's future completes through call_soon_threadsafe
        await asyncio.sleep(0)


async def _final(pcm: PCM, speech_end: int, delay: Callable[[int], int | None]) -> tuple[str, dict[str, Any]]:
    """Feed ``pcm`` frame by frame; finalize 600 ms after the speech (an endpointer's delay)."""
    ctx = SessionContext(clock=MonotonicClock(), sample_rate=RATE, frame_samples=FRAME)
    asr = WhisperASR(WhisperASRConfig(partial_interval_ms=300), ctx)
    await asr.model()
    worker = HeldWorker(delay)
    asr._worker = worker
    end_of_turn = speech_end + RATE * 600 // 1000
    for i in range(0, end_of_turn, FRAME):
        asr.feed(pcm[i : i + FRAME], i)
        asr.poll_partial()
        worker.frame += 1
        worker.release()
        await _settle()
    final = asyncio.ensure_future(asr.finalize(end_of_turn, None))
    await _settle()
    worker.release(everything=True)
    text = await final
    assert asr.last_stats is not None
    return text, asr.last_stats


@pytest.mark.timeout(600)
@pytest.mark.parametrize("text", TEXTS)
def test_the_final_transcript_is_the_same_however_late_decodes_finish(text: str) -> None:
    utt = render_user_audio(text, None, RATE)
    lead = RATE * 300 // 1000
    pcm = np.concatenate((np.zeros(lead, np.int16), utt.pcm, np.zeros(RATE, np.int16)))
    speech_end = lead + utt.speech_end
    rng = random.Random(12)
    random_delays = [rng.choice((0, 1, 4, 9, 17, 30)) for _ in range(64)]
    patterns: dict[str, Callable[[int], int | None]] = {
        "on time": lambda n: 0,
        "3 frames late": lambda n: 3,
        "12 frames late": lambda n: 12,
        "random": lambda n: random_delays[n % len(random_delays)],
        "only at the end of turn": lambda n: None,
    }
    results = {name: asyncio.run(_final(pcm, speech_end, delay)) for name, delay in patterns.items()}
    reference_text, reference_stats = results["on time"]
    assert reference_text.strip(), "the on-time final should hear the words"
    for name, (final, stats) in results.items():
        # The same words in the same order, from the same span of audio.
        assert final == reference_text, (name, final, reference_text)
        assert stats["audio_s"] == reference_stats["audio_s"], (name, stats, reference_stats)
    # The delays did change how the final was reached (else this test would prove nothing).
    sources = {stats["final_source"] for _, stats in results.values()}
    assert len(sources) >= 2, sources
