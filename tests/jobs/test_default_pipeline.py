"""The embedded default pipeline, end to end in real time with the real models:
Silero VAD, faster-whisper tiny.en, the Groq-class emulated LLM and Piper, over
the real loopback websocket, with Piper-synthesised caller speech."""

from __future__ import annotations

import importlib.util
import json
import wave
from pathlib import Path

import numpy as np
import pytest

from agent import clock as clocks
from agent.audio import frame_rms_dbfs
from agent.client.replay import ReplayResult
from agent.config.scenario import load_scenario
from agent.jobs.runner import run_scenario
from agent.metrics.timeline import HOP_NAMES
from agent.metrics.wer import word_error_rate
from agent.stages.pipeline import load_pipeline
from agent.stages.pipeline_names import DEFAULT_PIPELINE, resolve_pipeline
from tests.conftest import PIPELINES

_MISSING = [m for m in ("piper", "faster_whisper", "onnxruntime") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"extra 'speech' not installed: {_MISSING}")

TWO_TURNS = """\
name: two-turns
defaults:
  pause_ms: 400
  reply_timeout_ms: 20000
turns:
  - user: "Hi, what time do you open tomorrow?"
    reply: "We open at nine tomorrow morning."
  - user: "Do you have any cordless drills in stock?"
    reply: "Yes, we have a few of those in stock."
"""


def test_default_pipeline_is_the_clis_default() -> None:
    assert resolve_pipeline(DEFAULT_PIPELINE).resolve() == (PIPELINES / "default.toml").resolve()
    pipeline = load_pipeline(PIPELINES / "default.toml")
    kinds = {role: spec.kind for role, spec in pipeline.stages.items()}
    assert kinds == {"vad": "silero", "asr": "faster-whisper", "llm": "emulated", "tts": "piper"}
    assert pipeline.stages["llm"].config.profile == "groq-llama-3.3-70b"
    assert not pipeline.virtual_time_ok  # real models: real time only


@pytest.mark.timeout(300)
def test_real_time_replay_on_the_default_pipeline(tmp_path: Path) -> None:
    scenario_path = tmp_path / "two-turns.yaml"
    scenario_path.write_text(TWO_TURNS)
    scenario = load_scenario(scenario_path)
    pipeline = load_pipeline(PIPELINES / "default.toml")

    async def main(clock: clocks.Clock) -> ReplayResult:
        return await run_scenario(scenario, clock, pipeline=pipeline, run_dir=tmp_path / "run")

    result = clocks.run(main)
    assert [r["status"] for r in result.records] == ["ok", "ok"], [r["reason"] for r in result.records]
    for record, turn in zip(result.records, scenario.turns, strict=True):
        assert record["missing_marks"] == []
        # Real ASR on real (Piper) speech: close to the words spoken.
        assert word_error_rate(turn.text, record["transcript"]) <= 0.25, record["transcript"]
        lat = record["latency_ms"]
        assert 300 < lat["voice_to_voice"] < 3000
        # The hops and what they leave unaccounted add up; the gaps between hops are small.
        total = sum(lat[h] for h in HOP_NAMES) + lat["unaccounted"]
        assert lat["voice_to_voice"] == pytest.approx(total, abs=1e-3)
        assert abs(lat["unaccounted"]) < 50
        assert lat["tts_first_audio"] > 0 and lat["asr_finalize"] >= 0
        assert record["reply"] == turn.reply  # the emulated LLM speaks the scripted reply

    # Every real stage was warmed before the hello, and the manifest says how long it took.
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    warm = manifest["agent"]["pipeline"]["warm_up"]
    assert set(warm["stages_ms"]) == {"vad", "asr", "tts"} and not warm["timed_out"]
    assert warm["total_ms"] >= sum(warm["stages_ms"].values()) > 0
    # Caller pacing is recorded, turn by turn and for the run.
    assert all(r["caller"]["frames"] > 0 for r in result.records)
    assert result.summary["caller"]["frames"] >= sum(r["caller"]["frames"] for r in result.records)

    with wave.open(str(tmp_path / "run" / "recording.wav")) as wav:
        rate = wav.getframerate()
        audio = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    for record in result.records:
        at = {name: t_ns * rate // 1_000_000_000 for name, t_ns in record["marks_ns"].items()}
        said = slice(at["user.speech_start"], at["user.speech_end"])
        heard = at["client.first_audio_received"]
        assert frame_rms_dbfs(audio[said, 0]) > -35  # the caller's speech (left)
        assert frame_rms_dbfs(audio[heard : heard + rate, 1]) > -35  # the agent's reply (right)
        assert np.abs(audio[said, 1]).max() == 0  # the agent was quiet while the caller spoke
