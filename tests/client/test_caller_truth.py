"""The replay's figures against its own recording, in virtual time (deterministic):
barge-in stop as the caller hears it, and the caller's send lateness when its loop stalls.

A stalled loop is simulated by a clock (the client's only) that wakes every sleeper
due inside a window at the window's end, as a loop blocked by CPU work would; the
agent runs on the plain virtual clock, so it sees the late frames arrive late.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from agent import clock as clocks
from agent.client.replay import ReplayResult, _end_on_frame, replay
from agent.client.user_speech import render_user_audio
from agent.config.scenario import load_scenario
from agent.metrics.recording_truth import heard_barge_in_stop_ms, heard_silence_ms, read_recording
from agent.server.app import AgentServer
from agent.stages.pipeline import load_pipeline
from tests.conftest import PIPELINES, SCENARIOS


class StallingClock:
    """The virtual clock, except that a sleep due in [at_ns, at_ns + stall_ns) wakes at its end."""

    virtual = True

    def __init__(self, inner: clocks.Clock, at_ns: int, stall_ns: int) -> None:
        self._inner, self.at_ns, self.stall_ns = inner, at_ns, stall_ns

    def now_ns(self) -> int:
        return self._inner.now_ns()

    async def sleep_until(self, t_ns: int) -> None:
        if self.at_ns <= t_ns < self.at_ns + self.stall_ns:
            t_ns = self.at_ns + self.stall_ns
        await self._inner.sleep_until(t_ns)


def _replay(run_dir: Path, scenario_name: str, stall: tuple[float, float] | None = None) -> ReplayResult:
    """Replay a shipped scenario on the emulated pipeline; ``stall``: (at s, for ms) after the origin."""
    pipeline = load_pipeline(PIPELINES / "emulated.toml")
    scenario = load_scenario(SCENARIOS / scenario_name)

    async def main(clock: clocks.Clock) -> ReplayResult:
        client_clock: Any = clock
        if stall is not None:
            # The origin is fixed after the hellos and two clock syncs: a few ms of virtual time.
            client_clock = StallingClock(clock, round(stall[0] * 1e9), round(stall[1] * 1e6))
        async with AgentServer(pipeline, clock) as server:
            return await replay(scenario, server.url, client_clock, run_dir)

    return clocks.run(main, virtual=True)


def _records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "turns.jsonl").read_text().splitlines()]


def test_barge_in_stop_is_what_the_recording_shows(tmp_path: Path) -> None:
    result = _replay(tmp_path / "run", "barge-in.yaml")
    stereo, rate = read_recording(result.run_dir / "recording.wav")
    barge_ins = [r for r in _records(result.run_dir) if r["barge_in"] is not None]
    assert len(barge_ins) == 2
    for record in barge_ins:
        b, lat = record["barge_in"], record["latency_ms"]
        start = record["marks_ns"]["user.speech_start"] * rate // 1_000_000_000
        heard = heard_barge_in_stop_ms(stereo, rate, start)
        assert heard is not None
        assert abs(lat["barge_in_stop"] - heard) <= 5.0, (record["turn"], lat, heard)
        # The old figure (last frame received) misses the audio buffered at the caller.
        assert b["received_ms"] < b["stop_ms"]
        assert lat["barge_in_stop"] == b["stop_ms"] and lat["barge_in_flush"] == b["flush_ms"]
        # The breakdown adds up: speech start → agent stop → last frame received.
        marks = _records(result.run_dir)[b["interrupted_turn"]]["marks_ns"]
        stop = marks["server.interrupted"] - record["marks_ns"]["user.speech_start"]
        assert abs(stop / 1e6 + b["flush_ms"] - b["received_ms"]) < 1e-6


def test_an_on_time_caller_is_not_flagged(tmp_path: Path) -> None:
    result = _replay(tmp_path / "run", "quick-3-turn.yaml")
    for record in result.records:
        assert record["caller"]["lateness_max_ms"] == 0.0 and not record["caller"]["flagged"]
    assert result.summary["caller"]["frames"] > 100 and not result.summary["caller"]["flagged"]


def test_a_stalled_caller_is_recorded_flagged_and_placed_where_it_sent(tmp_path: Path) -> None:
    # Turn 0's speech runs from ~0.62 s to ~2.6 s after the origin; the stall covers its end.
    plain = _replay(tmp_path / "plain", "quick-3-turn.yaml")
    end_s = plain.records[0]["marks_ns"]["user.speech_end"] / 1e9
    result = _replay(tmp_path / "run", "quick-3-turn.yaml", stall=(end_s - 0.01, 40.0))
    first, *others = result.records
    assert first["caller"]["flagged"]
    assert 20.0 <= first["caller"]["lateness_max_ms"] <= 40.0  # the first frame due inside the stall
    assert first["caller"]["late_frames"] >= 2
    assert not any(r["caller"]["flagged"] for r in others)
    assert result.summary["caller"]["flagged"]
    # The speech end went out late, and the record says so: the agent heard it later.
    late_end = first["marks_ns"]["user.speech_end"]
    assert late_end > plain.records[0]["marks_ns"]["user.speech_end"] + 5_000_000
    # The recording places the late frames where they were sent: its silence is the record's.
    stereo, rate = read_recording(result.run_dir / "recording.wav")
    for record in result.records:
        silence, _, _ = heard_silence_ms(stereo, rate, record["marks_ns"]["user.speech_end"] * rate // 10**9)
        assert silence is not None
        assert abs(silence - record["latency_ms"]["voice_to_voice"]) <= 10.0, record["turn"]


def test_a_caller_stalled_before_a_turn_sends_its_speech_whole_and_in_order(tmp_path: Path) -> None:
    # A stall just before turn 1 is due to start speaking: the microphone catches up with
    # silence, then sends the utterance from its first frame (it once sent its last words first).
    plain = _replay(tmp_path / "plain", "quick-3-turn.yaml")
    start_s = plain.records[1]["marks_ns"]["user.speech_start"] / 1e9
    result = _replay(tmp_path / "run", "quick-3-turn.yaml", stall=(start_s - 0.15, 200.0))
    stereo, rate = read_recording(result.run_dir / "recording.wav")
    turn = load_scenario(SCENARIOS / "quick-3-turn.yaml").turns[1]
    frame = rate * 20 // 1000
    utt = _end_on_frame(render_user_audio(turn.text, None, rate), frame)
    end = result.records[1]["marks_ns"]["user.speech_end"] * rate // 10**9
    begin = end - utt.speech_end
    assert np.array_equal(stereo[begin : begin + len(utt.pcm), 0], utt.pcm)
    assert result.records[1]["caller"]["lateness_max_ms"] == 0.0  # the speech itself went on time
