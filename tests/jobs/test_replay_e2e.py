"""End to end: the replay client against the agent server over a real loopback websocket.

Virtual-time runs assert exact hop durations (the emulated stages' settings);
the real-time run asserts the same with tolerances for a noisy 2-core machine.
"""

from __future__ import annotations

import asyncio
import json
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent import clock as clocks
from agent.config.scenario import load_scenario
from agent.jobs.runner import run_scenario
from agent.metrics.timeline import HOP_NAMES
from agent.stages.chunker import PhraseChunker
from agent.stages.llm import tokenize
from agent.stages.pipeline import Pipeline, load_pipeline
from tests.conftest import PIPELINES, SCENARIOS

EMULATED = PIPELINES / "emulated.toml"


def _replay(scenario: Path, run_dir: Path, *, virtual: bool, pipeline: Pipeline | None = None) -> Any:
    pipe = pipeline or load_pipeline(EMULATED)
    scen = load_scenario(scenario)

    async def main(clock: clocks.Clock) -> Any:
        return await run_scenario(scen, clock, pipeline=pipe, run_dir=run_dir)

    return clocks.run(main, virtual=virtual)


def _first_phrase_tokens(reply: str, pipeline: Pipeline) -> int:
    """Index of the token at which the chunker releases the first phrase."""
    chunker = PhraseChunker(pipeline.chunker)
    for i, token in enumerate(tokenize(reply)):
        if chunker.push(token):
            return i
    return len(tokenize(reply)) - 1


def test_virtual_replay_hops_equal_the_emulation_exactly(tmp_path: Path) -> None:
    pipeline = load_pipeline(EMULATED)
    result = _replay(SCENARIOS / "quick-3-turn.yaml", tmp_path / "run", virtual=True)
    llm = pipeline.stages["llm"].config
    scenario = load_scenario(SCENARIOS / "quick-3-turn.yaml")
    assert [r["status"] for r in result.records] == ["ok"] * 3
    for record, turn in zip(result.records, scenario.turns, strict=True):
        lat = record["latency_ms"]
        assert record["missing_marks"] == []
        assert lat["endpointing"] == pytest.approx(pipeline.stages["vad"].config.endpoint_ms, abs=1e-6)
        assert lat["asr_finalize"] == pytest.approx(pipeline.stages["asr"].config.finalize_ms, abs=1e-6)
        assert lat["llm_ttft"] == pytest.approx(llm.ttft_ms, abs=1e-6)
        expected_phrase = _first_phrase_tokens(turn.reply, pipeline) * 1000 / llm.tokens_per_s
        assert lat["first_phrase"] == pytest.approx(expected_phrase, abs=1e-5)
        assert lat["tts_first_audio"] == pytest.approx(pipeline.stages["tts"].config.first_audio_ms, abs=1e-6)
        assert lat["transport"] == 0
        assert lat["unaccounted"] == 0
        assert 0 < lat["audio_onset"] < 10  # the synthetic voice's attack, found in the audio
        assert lat["voice_to_voice"] == pytest.approx(sum(lat[h] for h in HOP_NAMES), abs=1e-6)
        assert record["transcript"] == turn.text
        assert record["reply"] == turn.reply
        assert record["llm"]["output_tokens"] == len(tokenize(turn.reply))
        assert record["llm"]["token_source"] == "usage"
        assert record["passed"] is True


def test_virtual_replay_is_deterministic(tmp_path: Path) -> None:
    a = _replay(SCENARIOS / "barge-in.yaml", tmp_path / "a", virtual=True)
    b = _replay(SCENARIOS / "barge-in.yaml", tmp_path / "b", virtual=True)
    assert [r["latency_ms"] for r in a.records] == [r["latency_ms"] for r in b.records]
    assert [r["marks_ns"] for r in a.records] == [r["marks_ns"] for r in b.records]
    assert (tmp_path / "a" / "recording.wav").read_bytes() == (tmp_path / "b" / "recording.wav").read_bytes()


def test_run_folder_contents(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = _replay(SCENARIOS / "quick-3-turn.yaml", run, virtual=True)
    lines = (run / "turns.jsonl").read_text().splitlines()
    assert [json.loads(line)["turn"] for line in lines] == [0, 1, 2]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["completed"] is True
    assert manifest["pipeline"]["llm"]["kind"] == "emulated"
    assert manifest["scenario"]["name"] == "quick-3-turn"
    assert manifest["clock"]["virtual"] is True
    assert manifest["clock"]["offset_start"]["offset_ns"] == 0
    assert manifest["environment"]["packages"]["websockets"]
    summary = json.loads((run / "summary.json").read_text())
    v2v = summary["metrics_ms"]["voice_to_voice"]
    assert v2v["n"] == 3
    assert set(v2v) == {"n", "mean", "p50", "p90", "p95", "p99", "min", "max"}
    assert v2v["p50"] == pytest.approx(np.median([r["latency_ms"]["voice_to_voice"] for r in result.records]))

    with wave.open(str(run / "recording.wav")) as wav:
        assert wav.getnchannels() == 2
        rate = wav.getframerate()
        audio = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    # The agent track is silent before the first audible reply and loud right after it.
    first = result.records[0]
    heard = first["marks_ns"]["client.first_audio_received"] * rate // 1_000_000_000
    ended = first["marks_ns"]["user.speech_end"] * rate // 1_000_000_000
    assert np.abs(audio[:heard, 1]).max() < 400
    assert np.abs(audio[heard : heard + rate // 10, 1]).max() > 4000
    # The caller track holds speech before the user's speech end, and silence during the wait.
    assert np.abs(audio[ended - rate // 10 : ended, 0]).max() > 4000
    assert np.abs(audio[ended + rate // 50 : heard, 0]).max() == 0


def test_barge_in_stops_agent_audio(tmp_path: Path) -> None:
    pipeline = load_pipeline(EMULATED)
    result = _replay(SCENARIOS / "barge-in.yaml", tmp_path / "run", virtual=True)
    by_turn = {r["turn"]: r for r in result.records}
    start_ms = pipeline.stages["vad"].config.start_ms
    lead_ms = pipeline.output.lead_ms
    frame_ms = pipeline.audio.frame_ms
    for turn in (2, 4):
        record = by_turn[turn]
        interrupted = by_turn[turn - 1]
        assert interrupted["status"] == "interrupted"
        assert interrupted["reason"] == "barge-in"
        stop = record["latency_ms"]["barge_in_stop"]
        # Detection needs start_ms of speech (rounded up to a frame); audio already
        # sent is at most lead_ms ahead of playout. Agent frames leave every frame_ms
        # on their own grid, so the last one may precede the detection by up to a frame.
        assert start_ms - frame_ms <= stop <= start_ms + frame_ms + lead_ms
        assert record["barge_in"]["interrupted_turn"] == turn - 1
        # The interrupted reply was cut short where the barge-in happened: its audio
        # runs to detection (start_ms, rounded up to a frame) plus the send lead and
        # one frame of send granularity, far less than its several sentences need.
        limit = record["barge_in_ms"] + start_ms + 2 * frame_ms + lead_ms + 10
        assert interrupted["agent_audio_ms"] < limit
        assert record["status"] == "ok"
    with wave.open(str(tmp_path / "run" / "recording.wav")) as wav:
        rate = wav.getframerate()
        audio = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    barge = by_turn[2]["marks_ns"]["user.speech_start"] * rate // 1_000_000_000
    quiet_from = barge + int((start_ms + frame_ms + lead_ms + 5) * rate / 1000)
    quiet_to = by_turn[2]["marks_ns"]["client.first_frame_received"] * rate // 1_000_000_000
    assert np.abs(audio[quiet_from:quiet_to, 1]).max() == 0


def test_interrupted_run_keeps_finished_turns(tmp_path: Path) -> None:
    run = tmp_path / "run"
    scenario = load_scenario(SCENARIOS / "restaurant-booking.yaml")
    seen: list[int] = []

    async def main(clock: clocks.Clock) -> None:
        three = asyncio.Event()

        def on_turn(record: dict[str, Any]) -> None:
            seen.append(record["turn"])
            if len(seen) == 3:
                three.set()

        task = asyncio.create_task(
            run_scenario(scenario, clock, pipeline=load_pipeline(EMULATED), run_dir=run, on_turn=on_turn)
        )
        await three.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    clocks.run(main, virtual=True)
    lines = (run / "turns.jsonl").read_text().splitlines()
    assert [json.loads(line)["turn"] for line in lines] == seen == [0, 1, 2]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["completed"] is False
    assert summary["turns"] == 3
    assert (run / "recording.wav").stat().st_size > 44


def test_failed_expectation_is_reported(tmp_path: Path, write_scenario: Any) -> None:
    path = write_scenario(
        """
name: expectations
defaults: {pause_ms: 100}
turns:
  - user: "Do you sell apples?"
    reply: "Yes, we sell apples and pears."
    expect: {contains: ["apples"], max_v2v_ms: 5000}
  - user: "And bananas?"
    reply: "No, sorry, not today."
    expect: {contains: ["banana"], max_v2v_ms: 10}
"""
    )
    result = _replay(path, tmp_path / "run", virtual=True)
    first, second = result.records
    assert first["passed"] and all(c["ok"] for c in first["expectations"])
    assert not second["passed"]
    assert [c["ok"] for c in second["expectations"]] == [False, False]
    assert result.summary["expectations_failed"] == 1


@pytest.mark.timeout(90)
def test_real_time_replay_within_tolerance(tmp_path: Path, write_scenario: Any) -> None:
    path = write_scenario(
        """
name: real-time
defaults: {pause_ms: 200}
turns:
  - user: "Is the shop open today?"
    reply: "Yes, until six. Anything else?"
  - user: "No, thanks."
    reply: "Okay, bye for now."
"""
    )
    pipeline = load_pipeline(EMULATED)
    result = _replay(path, tmp_path / "run", virtual=False, pipeline=pipeline)
    configured = {
        "endpointing": pipeline.stages["vad"].config.endpoint_ms,
        "asr_finalize": pipeline.stages["asr"].config.finalize_ms,
        "llm_ttft": pipeline.stages["llm"].config.ttft_ms,
        "tts_first_audio": pipeline.stages["tts"].config.first_audio_ms,
    }
    assert abs(result.offset.offset_ns) < 5_000_000  # one host: the offset is ~0
    for record in result.records:
        lat = record["latency_ms"]
        assert record["status"] == "ok"
        for hop, value in configured.items():
            # Generous: a loaded 2-core machine can wake timers late by tens of ms.
            assert value - 5 <= lat[hop] <= value + 50, hop
        assert 0 <= lat["transport"] < 50
        assert abs(lat["unaccounted"]) < 50
        assert lat["voice_to_voice"] == pytest.approx(
            sum(lat[h] for h in HOP_NAMES) + lat["unaccounted"], abs=1e-6
        )


def test_backend_failure_is_recorded_and_the_session_goes_on(tmp_path: Path) -> None:
    pipeline = load_pipeline(EMULATED).with_overrides({"llm.fail_turns": [1]})
    result = _replay(SCENARIOS / "quick-3-turn.yaml", tmp_path / "run", virtual=True, pipeline=pipeline)
    statuses = [r["status"] for r in result.records]
    assert statuses == ["ok", "failed", "ok"]
    failed = result.records[1]
    assert "emulated LLM" in failed["reason"] and "503" in failed["reason"]
    assert failed["latency_ms"]["voice_to_voice"] is None
    assert not failed["passed"]
    assert result.summary["status"] == {"ok": 2, "failed": 1}


def test_wav_turn_is_spoken_and_measured(tmp_path: Path, write_scenario: Any) -> None:
    from agent.audio import speechlike, write_wav

    rate = 22050  # resampled to the session's 16 kHz by the client
    speech = speechlike("Hello, can you hear me?", rate, pitch_hz=200.0)
    silence = np.zeros(rate // 2, dtype=np.int16)
    write_wav(tmp_path / "hello.wav", np.concatenate((silence, speech, silence)), rate)
    path = write_scenario(
        'turns:\n  - wav: hello.wav\n    text: "Hello, can you hear me?"\n    reply: "Yes, loud and clear."\n'
    )
    result = _replay(path, tmp_path / "run", virtual=True)
    (record,) = result.records
    assert record["status"] == "ok"
    assert record["transcript"] == "Hello, can you hear me?"
    # Speech end comes from the audio itself (the trailing half second is silence),
    # so endpointing is still exactly the VAD's setting.
    assert record["latency_ms"]["endpointing"] == pytest.approx(300.0, abs=1e-6)
    speech_ms = (record["marks_ns"]["user.speech_end"] - record["marks_ns"]["user.speech_start"]) / 1e6
    assert speech_ms == pytest.approx(len(speech) / rate * 1000, abs=25)


def test_a_reply_longer_than_the_timeout_is_not_a_missing_one(tmp_path: Path, write_scenario: Any) -> None:
    """reply_timeout_ms bounds silence from the agent, not the length of its reply."""
    long_reply = " ".join(["This reply keeps going for a good while, sentence after sentence."] * 3)
    path = write_scenario(
        "defaults: {reply_timeout_ms: 2000}\n"
        f'turns:\n  - user: "Tell me everything."\n    reply: "{long_reply}"\n'
    )
    result = _replay(path, tmp_path / "run", virtual=True)
    (record,) = result.records
    assert record["agent_audio_ms"] > 4000  # far longer than the 2 s timeout
    assert record["status"] == "ok"
    assert record["missing_marks"] == []


def test_an_agent_that_never_answers_times_out(tmp_path: Path, write_scenario: Any) -> None:
    pipeline = load_pipeline(EMULATED).with_overrides({"llm.ttft_ms": 5000})
    path = write_scenario('defaults: {reply_timeout_ms: 1000}\nturns:\n  - user: "Hello?"\n')
    result = _replay(path, tmp_path / "run", virtual=True, pipeline=pipeline)
    (record,) = result.records
    assert record["status"] == "no_response"
    assert "1000 ms" in record["reason"]


def test_next_phrase_is_synthesised_while_the_previous_one_plays(tmp_path: Path, write_scenario: Any) -> None:
    """TTS runs ahead of playout: a slow TTS (1 s to first audio) delays the reply's
    start, but adds no silence at phrase boundaries inside it."""
    pipeline = load_pipeline(EMULATED).with_overrides({"tts.first_audio_ms": 1000, "tts.rtf": 0.05})
    path = write_scenario(
        'turns:\n  - user: "Tell me about it."\n'
        '    reply: "Sure, here is the first part. And here is the second part. And a third one."\n'
    )
    result = _replay(path, tmp_path / "run", virtual=True, pipeline=pipeline)
    (record,) = result.records
    assert record["llm"]["phrases"] == 3
    with wave.open(str(tmp_path / "run" / "recording.wav")) as wav:
        rate = wav.getframerate()
        agent = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)[:, 1]
    loud = np.flatnonzero(np.abs(agent) > 300)
    longest_gap_ms = np.diff(loud).max() * 1000 / rate
    assert longest_gap_ms < 500  # a phrase boundary without look-ahead: >= 1000 ms
