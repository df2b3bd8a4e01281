"""Real VAD and endpointing: Silero v6 (ONNX) and the energy gate, on real speech.

The speech is the replay client's own caller voice (Piper ``en_US-joe-medium``
with noise off, :func:`agent.client.user_speech.render_user_audio`): deterministic,
and exactly what a replay sends. Its bounds are where it is audible, measured
the same way the replay client measures ``user.speech_start``/``speech_end``.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything loads from installed packages

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from agent import clock as clocks
from agent.audio import PCM, resample, speech_bounds
from agent.client.replay import ReplayResult
from agent.client.user_speech import render_user_audio
from agent.clock import MonotonicClock
from agent.config.scenario import load_scenario
from agent.errors import ConfigError
from agent.jobs.runner import run_scenario
from agent.stages.interfaces import SessionContext, VadEvent
from agent.stages.pipeline import parse_pipeline
from agent.stages.vad_silero import (
    DEFAULT_ENDPOINT_MS,
    ENERGY_ENDPOINT_MS,
    SILERO_WINDOW,
    Endpointer,
    EnergyVAD,
    EnergyVADConfig,
    SileroVAD,
    SileroVADConfig,
    silero_session,
)
from agent.wire.protocol import Script

RATE = 16000
FIRST = "Hi, what time do you open tomorrow?"
SECOND = "Do you have any cordless drills in stock?"


@dataclass
class Conversation:
    pcm: PCM
    rate: int
    #: (onset, end) of each utterance, in samples.
    truth: list[tuple[int, int]]


def speech_silence_speech(rate: int = RATE) -> Conversation:
    """0.5 s silence, utterance, 1.5 s silence, utterance, 1.5 s silence."""
    parts: list[PCM] = [np.zeros(rate // 2, np.int16)]
    truth = []
    at = rate // 2
    for text in (FIRST, SECOND):
        pcm = render_user_audio(text, None, rate).pcm
        bounds = speech_bounds(pcm, rate)
        assert bounds is not None
        truth.append((at + bounds[0], at + bounds[1]))
        gap = np.zeros(rate * 3 // 2, np.int16)
        parts += [pcm, gap]
        at += len(pcm) + len(gap)
    return Conversation(np.concatenate(parts), rate, truth)


def context(rate: int = RATE) -> SessionContext:
    return SessionContext(clock=MonotonicClock(), sample_rate=rate, frame_samples=rate // 50)


def run(vad: SileroVAD | EnergyVAD, pcm: PCM, frame: int) -> list[VadEvent]:
    """Feed ``pcm`` in frames as the session does; all events in order."""
    events: list[VadEvent] = []
    for i in range(0, len(pcm), frame):
        events += vad.process(pcm[i : i + frame], i)
    return events


def ms(samples: int, rate: int = RATE) -> float:
    return samples * 1000 / rate


def check_boundaries(
    events: list[VadEvent],
    conv: Conversation,
    *,
    start_slack_ms: float,
    endpoint_ms: float,
    min_speech_ms: float,
    end_slack_ms: float,
) -> None:
    assert [e.kind for e in events] == ["speech_start", "end_of_turn"] * 2, events
    for (onset, end), start_event, eot in zip(conv.truth, events[::2], events[1::2], strict=True):
        # speech_start needs min_speech_ms of speech, so it comes that long after the onset at least.
        delay = ms(start_event.sample - onset, conv.rate)
        assert min_speech_ms <= delay <= min_speech_ms + start_slack_ms, delay
        # The end of turn is endpoint_ms of silence after the VAD's last speech window,
        # which may end a little before the audible end (a fading last syllable).
        late = ms(eot.sample - end, conv.rate)
        assert endpoint_ms - 50 <= late <= endpoint_ms + end_slack_ms, late


# --------------------------------------------------------------------------- silero


def test_silero_model_is_the_v6_streaming_interface() -> None:
    """The shapes the stage relies on: 64 context + 512 new samples, LSTM state 2 x [1, 1, 128]."""
    session = silero_session()
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    assert inputs["input"][1] == 64 + SILERO_WINDOW
    assert inputs["h"] == inputs["c"] == [1, 1, 128]
    assert outputs == ["speech_probs", "hn", "cn"]


def test_silero_finds_each_utterance_and_its_end_of_turn() -> None:
    conv = speech_silence_speech()
    config = SileroVADConfig()
    vad = SileroVAD(config, context())
    events = run(vad, conv.pcm, 320)
    check_boundaries(
        events,
        conv,
        min_speech_ms=config.min_speech_ms,
        start_slack_ms=100,
        endpoint_ms=config.endpoint_ms,
        end_slack_ms=150,
    )
    # Where the VAD found the speech (not when it was sure): within 60 ms of the truth.
    runs = vad.endpointer.segments
    first_runs = [min(s for s, _ in runs if s >= onset - RATE // 4) for onset, _ in conv.truth]
    last_runs = [max(e for _, e in runs if e <= end + RATE // 4) for _, end in conv.truth]
    for (onset, end), found_start, found_end in zip(conv.truth, first_runs, last_runs, strict=True):
        assert abs(ms(found_start - onset)) <= 60
        assert abs(ms(found_end - end)) <= 60


def test_silero_default_endpoint_is_the_measured_one() -> None:
    assert SileroVADConfig().endpoint_ms == DEFAULT_ENDPOINT_MS == 512
    assert EnergyVADConfig().endpoint_ms == ENERGY_ENDPOINT_MS == 520


@pytest.mark.parametrize("rate", [8000, 48000])
def test_silero_resamples_other_session_rates(rate: int) -> None:
    conv = speech_silence_speech(rate)
    config = SileroVADConfig()
    events = run(SileroVAD(config, context(rate)), conv.pcm, rate // 50)
    check_boundaries(
        events,
        conv,
        min_speech_ms=config.min_speech_ms,
        start_slack_ms=130,
        endpoint_ms=config.endpoint_ms,
        end_slack_ms=180,
    )


@pytest.mark.parametrize("dbfs", [None, -50.0, -30.0])
def test_silero_hears_no_speech_in_silence_or_noise(dbfs: float | None) -> None:
    rng = np.random.default_rng(7)
    if dbfs is None:
        pcm = np.zeros(RATE * 5, np.int16)
    else:
        noise = rng.normal(0.0, 32768 * 10 ** (dbfs / 20), RATE * 5)
        pcm = np.clip(noise, -32768, 32767).astype(np.int16)
    vad = SileroVAD(SileroVADConfig(), context())
    assert run(vad, pcm, 320) == []
    assert max(vad.probabilities) < SileroVADConfig().threshold


def test_silero_ignores_script_hints() -> None:
    conv = speech_silence_speech()
    plain = run(SileroVAD(SileroVADConfig(), context()), conv.pcm, 320)
    ctx = context()
    # A hint that lies about where speech is: a real VAD listens instead.
    ctx.scripts.add(Script(turn=0, speech_start_sample=0, speech_end_sample=100, text="x"))
    assert run(SileroVAD(SileroVADConfig(), ctx), conv.pcm, 320) == plain


def test_silero_model_is_loaded_once_and_state_is_per_session() -> None:
    a = SileroVAD(SileroVADConfig(), context())
    b = SileroVAD(SileroVADConfig(), context())
    assert a._session is b._session is silero_session()
    speech = render_user_audio(FIRST, None, RATE).pcm
    run(a, speech, 320)  # a's LSTM state moves; b's must not
    assert run(b, np.zeros(RATE, np.int16), 320) == []
    assert max(b.probabilities) < 0.1


def test_silero_bad_model_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"vad\.model"):
        SileroVAD(SileroVADConfig(model="/nonexistent/silero.onnx"), context())


# --------------------------------------------------------------------------- energy


def test_energy_vad_finds_each_utterance_and_its_end_of_turn() -> None:
    conv = speech_silence_speech()
    config = EnergyVADConfig()
    events = run(EnergyVAD(config, context()), conv.pcm, 320)
    check_boundaries(
        events,
        conv,
        min_speech_ms=config.min_speech_ms,
        start_slack_ms=60,
        endpoint_ms=config.endpoint_ms,
        end_slack_ms=100,
    )


@pytest.mark.parametrize("dbfs", [None, -50.0])
def test_energy_vad_hears_no_speech_in_silence_or_low_noise(dbfs: float | None) -> None:
    rng = np.random.default_rng(3)
    pcm = np.zeros(RATE * 5, np.int16)
    if dbfs is not None:
        pcm = np.clip(rng.normal(0.0, 32768 * 10 ** (dbfs / 20), RATE * 5), -32768, 32767).astype(np.int16)
    assert run(EnergyVAD(EnergyVADConfig(), context()), pcm, 320) == []


def test_energy_vad_at_another_rate() -> None:
    conv = speech_silence_speech(48000)
    events = run(EnergyVAD(EnergyVADConfig(), context(48000)), conv.pcm, 960)
    assert [e.kind for e in events] == ["speech_start", "end_of_turn"] * 2


# --------------------------------------------------------------------------- endpointing rules


def push_all(ep: Endpointer, pattern: str, window: int = 10) -> list[tuple[str, int]]:
    """Windows of ``window`` samples: 's' speech, '.' silence, '?' undecided."""
    out = []
    for i, c in enumerate(pattern):
        decision = {"s": True, ".": False, "?": None}[c]
        out += [(e.kind, e.sample) for e in ep.push(i * window, (i + 1) * window, decision)]
    return out


def test_endpointer_needs_min_speech_and_bridges_short_gaps() -> None:
    # min_speech 30 samples (3 windows), min_silence 20 (2 windows), endpoint 50 (5 windows).
    assert push_all(Endpointer(30, 20, 50), "ss....ss..") == []  # blips never confirm
    # A 1-window gap is bridged: the run lasts from its first window, gap included.
    assert push_all(Endpointer(30, 20, 50), "s.s") == [("speech_start", 30)]
    assert push_all(Endpointer(30, 20, 50), "s..ss") == []  # a 2-window gap ends the run
    assert push_all(Endpointer(30, 20, 50), "sss.....") == [("speech_start", 30), ("end_of_turn", 80)]


def test_endpointer_blips_do_not_reset_the_end_of_turn_timer() -> None:
    # A 2-window blip in the trailing silence is not confirmed speech.
    assert push_all(Endpointer(30, 20, 50), "sss..ss.....") == [("speech_start", 30), ("end_of_turn", 80)]
    # Confirmed speech after a pause resumes the turn: the silence counts again from there.
    events = push_all(Endpointer(30, 20, 50), "sss..sss.....")
    assert events == [("speech_start", 30), ("end_of_turn", 130)]


def test_endpointer_undecided_windows_continue_the_previous_state() -> None:
    assert push_all(Endpointer(30, 20, 50), "s??") == [("speech_start", 30)]
    assert push_all(Endpointer(30, 20, 50), "sss.????") == [("speech_start", 30), ("end_of_turn", 80)]


def test_endpoint_shorter_than_min_silence_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"vad\.endpoint_ms"):
        SileroVAD(SileroVADConfig(endpoint_ms=50, min_silence_ms=100), context())
    with pytest.raises(ConfigError, match=r"vad\.endpoint_ms"):
        EnergyVAD(EnergyVADConfig(endpoint_ms=50, min_silence_ms=100), context())


def test_pipeline_files_name_the_real_vads() -> None:
    base = '[asr]\nkind = "emulated"\n[llm]\nkind = "emulated"\n[tts]\nkind = "emulated"\n'
    pipe = parse_pipeline('[vad]\nkind = "silero"\nendpoint_ms = 600\nthreshold = 0.6\n' + base)
    assert pipe.stages["vad"].config == SileroVADConfig(endpoint_ms=600, threshold=0.6)
    assert not pipe.virtual_time_ok
    pipe = parse_pipeline('[vad]\nkind = "energy"\nthreshold_dbfs = -45\n' + base)
    assert pipe.stages["vad"].config.threshold_dbfs == -45
    with pytest.raises(ConfigError, match="unknown setting"):
        parse_pipeline('[vad]\nkind = "silero"\nendpoint = 600\n' + base)
    with pytest.raises(ConfigError, match="must be > 0"):
        parse_pipeline('[vad]\nkind = "silero"\nthreshold = 0\n' + base)


def test_resampled_positions_match_16k_positions() -> None:
    """Events at 48 kHz land where the 16 kHz run puts them (within one window)."""
    conv16 = speech_silence_speech(RATE)
    at16 = run(SileroVAD(SileroVADConfig(), context(RATE)), conv16.pcm, 320)
    pcm48 = resample(conv16.pcm, RATE, 48000)
    at48 = run(SileroVAD(SileroVADConfig(), context(48000)), pcm48, 960)
    assert [e.kind for e in at48] == [e.kind for e in at16]
    for a, b in zip(at16, at48, strict=True):
        assert abs(b.sample / 48000 - a.sample / RATE) <= 0.032 + 1e-9


# --------------------------------------------------------------------------- turn numbering

SPLIT_PIPELINE = """
[vad]
kind = "silero"
endpoint_ms = 200   # shorter than the pauses at commas: utterances split
[asr]
kind = "emulated"
finalize_ms = 20
[llm]
kind = "emulated"
ttft_ms = 100
tokens_per_s = 400
[tts]
kind = "emulated"
first_audio_ms = 50
"""


@pytest.mark.timeout(120)
def test_a_split_utterance_restarts_its_turn_and_later_turns_keep_their_ids(tmp_path: Path) -> None:
    """With endpoint_ms below the pause after "Hi," the VAD ends the turn early; the
    user's next words continue (restart) that turn, and turn 1 is still turn 1."""
    scenario = tmp_path / "split.yaml"
    scenario.write_text(
        "name: split\ndefaults:\n  pause_ms: 300\nturns:\n"
        '  - user: "Hi, what time do you open tomorrow?"\n    reply: "At nine."\n'
        '  - user: "Do you have any cordless drills in stock?"\n    reply: "Yes, we do."\n'
    )
    pipeline = parse_pipeline(SPLIT_PIPELINE)

    async def main(clock: clocks.Clock) -> ReplayResult:
        return await run_scenario(load_scenario(scenario), clock, pipeline=pipeline, run_dir=tmp_path / "run")

    records = clocks.run(main, virtual=False).records
    assert [(r["turn"], r["status"]) for r in records] == [(0, "ok"), (1, "ok")]
    first, second = records
    assert first["llm"]["vad_splits"] >= 1  # the pause after "Hi," ended the turn once too early
    assert first["reply"] == "At nine."  # one answer, to the whole utterance
    assert second["reply"] == "Yes, we do."
    # The restarted turn's end of turn is the one after the whole utterance.
    assert 200 - 50 <= first["latency_ms"]["endpointing"] <= 200 + 300
