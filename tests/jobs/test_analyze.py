"""``vlt analyze`` on vlt's own recordings (it must give the run's voice-to-voice back)
and on hand-made ones; its run folder read by report, baseline save and regress --run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent import clock as clocks
from agent.audio import AudioFileError, read_wav_channels, write_wav
from agent.config.scenario import load_scenario
from agent.errors import ConfigError
from agent.jobs.analyze import AnalyzeOptions, analyze_recording
from agent.jobs.runner import run_scenario
from agent.metrics.heard_turns import AGENT_WINDOW_MS
from agent.stages.pipeline import load_pipeline
from tests.cli.test_cli import vlt
from tests.conftest import PIPELINES, SCENARIOS


@pytest.fixture(scope="module")
def replays(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Virtual-time replays of two shipped scenarios (one with barge-ins)."""
    pipeline = load_pipeline(PIPELINES / "emulated.toml")
    out = {}
    for name in ("quick-3-turn", "barge-in"):
        scenario = load_scenario(SCENARIOS / f"{name}.yaml")
        run_dir = tmp_path_factory.mktemp(name) / "run"

        async def main(clock: clocks.Clock, scenario: Any = scenario, run_dir: Path = run_dir) -> Any:
            return await run_scenario(scenario, clock, pipeline=pipeline, run_dir=run_dir)

        out[name] = (scenario, clocks.run(main, virtual=True))
    return out


@pytest.mark.parametrize("name", ["quick-3-turn", "barge-in"])
@pytest.mark.parametrize("from_scenario", [True, False])
def test_analyze_reproduces_the_replays_voice_to_voice(
    replays: dict[str, Any], name: str, from_scenario: bool, tmp_path: Path
) -> None:
    scenario, run = replays[name]
    result = analyze_recording(
        [run.run_dir / "recording.wav"], tmp_path / "a", scenario=scenario if from_scenario else None
    )
    assert len(result.records) == len(run.records)
    for replayed, heard in zip(run.records, result.records, strict=True):
        assert heard["status"] == replayed["status"]
        v2v = replayed["latency_ms"]["voice_to_voice"]
        assert heard["latency_ms"]["voice_to_voice"] == pytest.approx(v2v, abs=2.0)
        assert (heard["barge_in"] is None) == (replayed["barge_in"] is None)
        if heard["barge_in"] is not None:
            # Both are the interrupted sound's end as heard (issue 12): the recording's figure
            # may read up to one analysis window early, never later.
            stop_heard, stop_replayed = (
                heard["latency_ms"]["barge_in_stop"],
                replayed["latency_ms"]["barge_in_stop"],
            )
            assert stop_replayed - AGENT_WINDOW_MS <= stop_heard <= stop_replayed
            # And at or after the interrupted reply's last frame arrived.
            assert stop_heard >= replayed["barge_in"]["received_ms"]
            assert heard["heard"]["overlap_ms"] > 0


def test_two_mono_files_and_the_right_channel_give_the_same_turns(
    replays: dict[str, Any], tmp_path: Path
) -> None:
    _, run = replays["quick-3-turn"]
    stereo, rate = read_wav_channels(run.run_dir / "recording.wav")
    write_wav(tmp_path / "caller.wav", np.ascontiguousarray(stereo[:, 0]), rate)
    write_wav(tmp_path / "agent.wav", np.ascontiguousarray(stereo[:, 1]), rate)
    write_wav(tmp_path / "swapped.wav", np.ascontiguousarray(stereo[:, ::-1]), rate)
    a = analyze_recording([run.run_dir / "recording.wav"], tmp_path / "a")
    b = analyze_recording([tmp_path / "caller.wav", tmp_path / "agent.wav"], tmp_path / "b")
    c = analyze_recording([tmp_path / "swapped.wav"], tmp_path / "c", options=AnalyzeOptions(caller="right"))
    figures = [[r["latency_ms"]["voice_to_voice"] for r in x.records] for x in (a, b, c)]
    assert figures[0] == figures[1] == figures[2]


def test_a_mono_recording_alone_is_refused(tmp_path: Path) -> None:
    write_wav(tmp_path / "mono.wav", np.zeros(1600, dtype=np.int16), 16000)
    with pytest.raises(AudioFileError, match="is mono"):
        analyze_recording([tmp_path / "mono.wav"], tmp_path / "a")
    with pytest.raises(ConfigError, match="not 3 files"):
        analyze_recording([tmp_path / "mono.wav"] * 3, tmp_path / "b")


def test_cli_analyze_then_report_baseline_and_regress(replays: dict[str, Any], tmp_path: Path) -> None:
    _, run = replays["barge-in"]
    out = tmp_path / "analysis"
    done = vlt(
        "analyze",
        str(run.run_dir / "recording.wav"),
        "--scenario",
        "scenarios/barge-in.yaml",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert "barge stop" in done.stdout and f"results: {out}" in done.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "analyze" and manifest["analysis"]["turns_from"] == "scenario"
    assert (out / "recording.wav").is_file()
    assert vlt("report", str(out), "--format", "md", "-o", str(tmp_path / "r.md")).returncode == 0
    assert "voice_to_voice" in (tmp_path / "r.md").read_text()
    saved = vlt("baseline", "save", str(out), "-o", str(tmp_path / "b.json"))
    assert saved.returncode == 0, saved.stderr
    gate = vlt("regress", "--baseline", str(tmp_path / "b.json"), "--run", str(out))
    assert gate.returncode == 0, gate.stdout + gate.stderr


def test_cli_analyze_bad_input_is_one_line(tmp_path: Path) -> None:
    result = vlt("analyze", str(tmp_path / "missing.wav"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "missing.wav" in result.stderr
