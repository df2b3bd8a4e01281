"""Where a real-time replay's in-process agent runs: its own thread, a child process, or
the caller's loop. Each gives the same answers over the real loopback websocket; the
thread restores the interpreter's switch interval, and the child ends with the run.
(Which keeps the caller on time is measured in benchmarks/truth.py, not here.)"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from agent import clock as clocks
from agent.config.scenario import parse_scenario
from agent.jobs.runner import run_scenario
from agent.stages.pipeline import load_pipeline
from tests.conftest import PIPELINES

ONE_TURN = """\
name: one-turn
defaults:
  pause_ms: 200
turns:
  - user: "What time do you open?"
    reply: "We open at nine."
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("agent_loop", ["thread", "process", "shared"])
def test_each_agent_loop_answers_and_cleans_up(tmp_path: Path, agent_loop: Any) -> None:
    scenario = parse_scenario(ONE_TURN, tmp_path / "one-turn.yaml")
    pipeline = load_pipeline(PIPELINES / "emulated.toml")
    switch = sys.getswitchinterval()

    async def main(clock: clocks.Clock) -> Any:
        return await run_scenario(
            scenario, clock, pipeline=pipeline, run_dir=tmp_path / "run", agent_loop=agent_loop
        )

    result = clocks.run(main)
    assert [r["status"] for r in result.records] == ["ok"]
    assert result.records[0]["reply"] == "We open at nine."
    assert result.records[0]["caller"]["frames"] > 0
    # One machine, one monotonic clock: the agent's marks need (almost) no moving.
    assert result.offset is not None and abs(result.offset.offset_ns) < 2_000_000
    assert sys.getswitchinterval() == switch
