"""A barge-in turn shows both figures: the stop as the caller heard it and the agent's flush,
in the terminal row, the waterfall and the run's summary table (a virtual-time replay)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent import clock as clocks
from agent.config.scenario import load_scenario
from agent.jobs.runner import run_scenario
from agent.report.build import build_report
from agent.report.console import format_summary, format_turn
from agent.report.plots import waterfall_figure
from agent.stages.pipeline import load_pipeline
from tests.conftest import PIPELINES, SCENARIOS


def test_barge_in_stop_and_flush_are_shown(tmp_path: Path) -> None:
    pipeline = load_pipeline(PIPELINES / "emulated.toml")
    scenario = load_scenario(SCENARIOS / "barge-in.yaml")

    async def main(clock: clocks.Clock) -> Any:
        return await run_scenario(scenario, clock, pipeline=pipeline, run_dir=tmp_path / "run")

    result = clocks.run(main, virtual=True)
    barged = [r for r in result.records if r["barge_in"] is not None]
    assert barged
    for record in barged:
        lat = record["latency_ms"]
        row = format_turn(record)
        assert f"barge-in stop {lat['barge_in_stop']:.1f} ms as heard" in row
        assert f"last frame received {lat['barge_in_flush']:.1f} ms" in row
        labels = [t.get_text() for t in waterfall_figure(record).axes[0].get_yticklabels()]
        assert "barge-in stop (heard)" in labels and "barge-in flush" in labels
    summary = format_summary(result.summary)
    assert "barge_in_stop" in summary and "barge_in_flush" in summary
    assert "caller send lateness: p99 0.0 ms, max 0.0 ms" in summary
    markdown = build_report(tmp_path / "run", "md")
    assert "barge_in_stop" in markdown and "barge_in_flush" in markdown
