"""No-reply turns (noise, a backchannel) and a scenario's ``assert`` block, end to end.

The emulated pipeline's oracle VAD hears only announced speech, so it lets noise
pass, as a good endpointer should; the energy VAD answers any loud sound, so it
is the agent that fails the check. Virtual time, real loopback websockets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent import clock as clocks
from agent.client.replay import replay
from agent.config.scenario import load_scenario
from agent.server.app import AgentServer
from agent.stages.pipeline import load_pipeline
from tests.cli.test_cli import vlt
from tests.conftest import PIPELINES, live_test_pipeline

NOISE = """
name: noise
defaults:
  no_reply_window_ms: 2000
turns:
  - user: "What time do you open tomorrow?"
    reply: "We open at nine tomorrow morning, and we close at six in the evening, every day."
  - noise: 400
    expect: {no_reply: true}
  - user: "Thanks, bye."
    reply: "Goodbye."
"""


def _run(tmp_path: Path, pipeline: Any, scenario_text: str) -> Any:
    (tmp_path / "s.yaml").write_text(scenario_text)
    scenario = load_scenario(tmp_path / "s.yaml")

    async def main(clock: clocks.Clock) -> Any:
        async with AgentServer(pipeline, clock) as server:
            return await replay(scenario, server.url, clock, tmp_path / "run")

    return clocks.run(main, virtual=True)


def test_noise_that_gets_no_reply_passes(tmp_path: Path) -> None:
    result = _run(tmp_path, load_pipeline(PIPELINES / "emulated.toml"), NOISE)
    noise = result.records[1]
    assert noise["status"] == "ok" and noise["passed"]
    assert noise["expectations"] == [{"check": "no_reply", "value": 1, "ok": True}]
    assert noise["latency_ms"]["voice_to_voice"] is None and noise["agent_audio_ms"] == 0
    # The caller's track carries the noise where the turn put it.
    assert result.records[2]["status"] == "ok"


def test_an_agent_answering_noise_fails_the_turn(tmp_path: Path) -> None:
    (tmp_path / "energy.toml").write_text(live_test_pipeline())
    result = _run(tmp_path, load_pipeline(tmp_path / "energy.toml"), NOISE)
    noise = result.records[1]
    assert not noise["passed"]
    assert noise["expectations"] == [{"check": "no_reply", "value": 1, "ok": False}]
    assert noise["agent_audio_ms"] > 0 and noise["reason"] == "answered a turn meant to get no reply"
    assert result.summary["expectations_failed"] == 1
    # The conversation goes on: the next turn is answered.
    assert result.records[2]["status"] == "ok"


def test_assert_block_results_in_the_summary_and_exit_status(tmp_path: Path) -> None:
    scenario = tmp_path / "a.yaml"
    scenario.write_text(
        "name: a\nassert:\n  v2v_p50_ms: 5000\n  missed_responses: 0\n  v2v_p95_ms: 10\n"
        'turns:\n  - user: "Hello there."\n    reply: "Hi, how can I help?"\n'
    )
    out = tmp_path / "run"
    result = vlt("replay", str(scenario), "--clock", "virtual", "--out", str(out))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "assert v2v_p95_ms <= 10:" in result.stdout and "FAILED" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert [(a["check"], a["ok"]) for a in summary["assertions"]] == [
        ("v2v_p50_ms", True),
        ("v2v_p95_ms", False),
        ("missed_responses", True),
    ]
    assert summary["expectations_failed"] == 0  # the turns themselves passed
