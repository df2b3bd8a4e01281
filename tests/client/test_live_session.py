"""The live client's timing logic, in virtual time, against a real agent server.

The agent runs in-process over a real loopback websocket with an energy VAD
and emulated ASR/LLM/TTS. The sound card is replaced by the clock-driven
microphone and speaker of ``agent.client.devices.live_audio`` — not because a device
cannot run here (tests/test_demo_virtual_mic.py uses a real PulseAudio one) but
because these tests check the session's arithmetic exactly, which needs the
deterministic virtual clock.
"""

from __future__ import annotations

import asyncio
import json
import wave
from pathlib import Path
from typing import Any

import numpy as np

from agent import clock as clocks
from agent.audio import speechlike
from agent.client.devices.live_audio import ClockMicrophone, ClockSpeaker
from agent.client.hud import HudState
from agent.client.live import LiveOptions, live_session
from agent.metrics.recording_truth import last_audible
from agent.metrics.timeline import LISTENER_HOPS
from agent.server.app import AgentServer
from agent.stages.pipeline import parse_pipeline
from tests.conftest import live_test_pipeline

PIPELINE = live_test_pipeline()
RATE = 16000
FRAME = RATE // 50  # 20 ms
LEAD_IN = np.zeros(RATE * 3 // 10, dtype=np.int16)  # 300 ms of silence before speaking


def _utterance(text: str) -> np.ndarray:
    return np.concatenate((LEAD_IN, speechlike(text, RATE)))


def _converse(
    tmp_path: Path, texts: list[str], options: LiveOptions, *, barge_after_ms: float | None = None
) -> Any:
    """Speak ``texts`` one after another (each once the previous turn is recorded, or,
    with ``barge_after_ms``, the second that long after the agent became audible)."""
    pipeline = parse_pipeline(PIPELINE)
    devices: dict[str, Any] = {}

    async def main(clock: clocks.Clock) -> Any:
        state = HudState(status="connecting", mode="", agent="", devices="")

        def make_audio(rate: int, frame_ms: int) -> tuple[ClockMicrophone, ClockSpeaker]:
            devices["mic"] = ClockMicrophone(clock, rate, rate * frame_ms // 1000)
            devices["speaker"] = ClockSpeaker(clock, rate, 20)
            return devices["mic"], devices["speaker"]

        async def speak() -> None:
            while "mic" not in devices or state.status == "connecting":
                await clock.sleep_until(clock.now_ns() + 10_000_000)
            mic: ClockMicrophone = devices["mic"]
            for i, text in enumerate(texts):
                if i and barge_after_ms is not None:
                    while state.status != "agent speaking":
                        await clock.sleep_until(clock.now_ns() + 1_000_000)
                    await clock.sleep_until(clock.now_ns() + round(barge_after_ms * 1e6))
                    mic.say(speechlike(text, RATE))
                    continue
                while len(state.turns) < i:
                    await clock.sleep_until(clock.now_ns() + 10_000_000)
                mic.say(_utterance(text))

        async with AgentServer(pipeline, clock) as server:
            talker = asyncio.create_task(speak())
            try:
                return await live_session(
                    server.url,
                    clock,
                    tmp_path / "run",
                    make_audio,
                    options=options,
                    state=state,
                )
            finally:
                talker.cancel()

    result = clocks.run(main, virtual=True)
    return result, devices


def test_live_turns_have_every_mark_and_listener_v2v(tmp_path: Path) -> None:
    texts = ["I would like a table for two tonight.", "Seven thirty would be great."]
    result, devices = _converse(tmp_path, texts, LiveOptions(turns=2, vad="energy"))
    assert [r["status"] for r in result.records] == ["ok", "ok"]
    mic: ClockMicrophone = devices["mic"]
    for record, (_spoken_start, spoken_end), text in zip(result.records, mic.spoken, texts, strict=True):
        assert record["missing_marks"] == []
        lat = record["latency_ms"]
        # Every hop measured, and they tile voice-to-voice at the listener.
        hops = sum(lat[h.name] for h in LISTENER_HOPS)
        assert abs(hops + lat["unaccounted"] - lat["voice_to_voice"]) < 1e-6
        # The client VAD finds the speech end within a 20 ms window of the truth:
        # the utterance's last frame was received at spoken_end.
        marks = record["marks_ns"]  # relative to the session's origin
        end_truth = spoken_end - result.origin_ns
        assert abs(marks["user.speech_end"] - end_truth) <= 40_000_000
        # The speech end is the last audible sample (the replay's -40 dBFS rule), not the
        # VAD's frame edge: the utterance's last frame arrived at spoken_end, and it ends
        # with the utterance's padding to whole frames.
        pcm = _utterance(text)
        padded = -len(pcm) % FRAME
        audible = last_audible(pcm, RATE, len(pcm))
        assert audible is not None
        audible_end = end_truth - (len(pcm) + padded - audible) * 1_000_000_000 // RATE
        assert abs(marks["user.speech_end"] - audible_end) <= 1_000_000
        # The client and the agent run the same energy VAD on the same frames: endpointing
        # is the agent's 300 ms of silence after the VAD's edge, which is up to a frame
        # after the last audible sample.
        assert 300 <= lat["endpointing"] <= 320
        assert lat["asr_finalize"] == 150
        assert lat["llm_ttft"] == 200
        # Playout: the speaker pulls every 20 ms and the 40 ms prebuffer fills at
        # once (the agent sends 60 ms ahead), so the device takes the first
        # audible sample within one block of its arrival.
        assert 0 <= lat["playout"] <= 20
        assert lat["voice_to_voice"] == lat["voice_to_voice_arrival"] + lat["playout"]
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["metrics_ms"]["playout"]["n"] == 2
    assert summary["metrics_ms"]["voice_to_voice_arrival"]["n"] == 2
    assert len((result.run_dir / "turns.jsonl").read_text().splitlines()) == 2
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["kind"] == "demo"
    # Half-duplex: the microphone was muted while the agent was audible.
    assert manifest["playout"]["muted_frames"] > 0
    assert manifest["playout"]["underruns"] == 0


def test_recording_places_agent_audio_where_the_device_played_it(tmp_path: Path) -> None:
    options = LiveOptions(turns=1, vad="energy")
    result, devices = _converse(tmp_path, ["Hello there, is anyone listening?"], options)
    record = result.records[0]
    with wave.open(str(result.run_dir / "recording.wav")) as w:
        assert w.getnchannels() == 2
        stereo = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, 2)
    agent = stereo[:, 1]
    loud = np.flatnonzero(np.abs(agent.astype(np.int32)) > 327)  # -40 dBFS
    first_loud_ms = loud[0] * 1000 / RATE
    played_ms = record["marks_ns"]["client.first_audio_played"] / 1e6
    assert abs(first_loud_ms - played_ms) <= 2
    speaker: ClockSpeaker = devices["speaker"]
    played = np.concatenate(speaker.played)
    assert np.abs(played.astype(np.int32)).max() > 327  # the device really got agent audio


def test_barge_in_flushes_playback_and_measures_the_stop(tmp_path: Path) -> None:
    texts = ["Tell me everything about your menu please.", "Stop, stop."]
    options = LiveOptions(turns=2, barge_in=True, vad="energy")
    result, devices = _converse(tmp_path, texts, options, barge_after_ms=300)
    first, second = result.records
    assert first["status"] == "interrupted"
    barge = second["barge_in"]
    assert barge is not None and barge["interrupted_turn"] == first["turn"]
    # Energy VAD: 60 ms of speech confirms the start, decided at the end of a 20 ms
    # window; the flush then silences the next 20 ms device block at the latest.
    assert 40 <= barge["stop_ms"] <= 120
    assert second["latency_ms"]["barge_in_stop"] == barge["stop_ms"]
    stopped = first["marks_ns"]["client.playback_stopped"]
    speaker: ClockSpeaker = devices["speaker"]
    block_ns = 20_000_000
    origin = result.origin_ns
    # Every block the device took after the stop (apart from the one already in
    # flight) holds no agent audio, until the next response starts.
    next_audio = second["marks_ns"].get("client.first_frame_received", 10**18)
    assert speaker.started_ns is not None
    for k, block in enumerate(speaker.played):
        t = speaker.started_ns + k * block_ns - origin
        if stopped + block_ns <= t < next_audio:
            assert not block.any(), f"agent audio at {t / 1e6:.0f} ms, stopped at {stopped / 1e6:.0f} ms"
