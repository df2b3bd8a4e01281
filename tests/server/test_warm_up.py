"""Warming a session's stages before its hello: timed in virtual time, bounded, skipped
for stages that have nothing to warm; and the manifest of a run says what it took.

The stages here are small stand-ins whose warm-up takes a known virtual time (a real
model's warm-up takes real time, which a unit test cannot pin down; the real stages'
warm-up is checked in tests/jobs/test_default_pipeline.py).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from agent import clock as clocks
from agent.config.scenario import load_scenario
from agent.jobs.runner import run_scenario
from agent.server.warm_up import warm_up_stages
from agent.stages.pipeline import load_pipeline
from tests.conftest import PIPELINES, SCENARIOS


class _Slow:
    def __init__(self, ms: float, log: list[str], name: str) -> None:
        self.ms, self.log, self.name = ms, log, name

    async def warm_up(self) -> None:
        self.log.append(f"{self.name} start")
        await asyncio.sleep(self.ms / 1000)
        self.log.append(f"{self.name} end")


def test_stages_are_warmed_one_after_another_and_timed() -> None:
    log: list[str] = []

    async def main(clock: clocks.Clock) -> Any:
        stages = {"vad": _Slow(20, log, "vad"), "asr": _Slow(300, log, "asr"), "llm": object()}
        return await warm_up_stages(stages, clock)

    times = clocks.run(main, virtual=True)
    assert times.stages_ms == {"vad": 20.0, "asr": 300.0}  # the llm has nothing to warm
    assert times.total_ms == 320.0 and not times.timed_out
    assert log == ["vad start", "vad end", "asr start", "asr end"]


def test_a_warm_up_past_the_limit_is_cut_off_and_said() -> None:
    async def main(clock: clocks.Clock) -> Any:
        return await warm_up_stages({"asr": _Slow(9000, [], "asr")}, clock, limit_s=2.0)

    times = clocks.run(main, virtual=True)
    assert times.timed_out and times.total_ms == 2000.0 and "asr" not in times.stages_ms


def test_the_manifest_says_how_long_warm_up_took(tmp_path: Path) -> None:
    scenario = load_scenario(SCENARIOS / "quick-3-turn.yaml")
    pipeline = load_pipeline(PIPELINES / "emulated.toml")

    async def main(clock: clocks.Clock) -> Any:
        return await run_scenario(scenario, clock, pipeline=pipeline, run_dir=tmp_path / "run")

    clocks.run(main, virtual=True)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    # Emulated stages have nothing to warm: nothing is timed, and the total is exact.
    assert manifest["agent"]["pipeline"]["warm_up"] == {"total_ms": 0.0, "stages_ms": {}, "timed_out": False}
