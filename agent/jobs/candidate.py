"""The candidate side of ``vlt regress``: replay a scenario N times and pool the runs' samples.

The settings left out default to the baseline's (its pipeline, clock mode and
number of runs), so a candidate measures the same thing the baseline did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent import clock as clocks
from agent.client.replay import ReplayResult
from agent.config.scenario import load_scenario
from agent.errors import ConfigError
from agent.jobs.runner import run_scenario
from agent.metrics import baseline as baselines
from agent.metrics.results import new_run_dir
from agent.stages.pipeline import load_pipeline
from agent.stages.pipeline_names import resolve_pipeline

__all__ = ["CandidateRun", "run_candidate"]


@dataclass(frozen=True, slots=True)
class CandidateRun:
    """One replay about to start (for progress lines)."""

    number: int
    """1-based."""
    total: int
    scenario_name: str
    target: str
    """``pipeline NAME`` or the agent's URL."""
    clock: str
    run_dir: Path


def run_candidate(
    scenario_path: Path,
    base: baselines.Baseline,
    *,
    baseline_path: Path,
    pipeline: str | None = None,
    url: str | None = None,
    clock: str | None = None,
    repeat: int | None = None,
    runs_root: Path = Path("runs"),
    allow_mismatch: bool = False,
    on_run: Callable[[CandidateRun], None] | None = None,
) -> baselines.Baseline:
    """Replay ``scenario_path`` ``repeat`` times against ``url`` or ``pipeline`` and pool the samples.

    ``pipeline``, ``clock`` and ``repeat`` default to ``base``'s. Raises
    :class:`~agent.errors.ConfigError` for a mismatched baseline before any run.
    """
    scenario = load_scenario(scenario_path)
    loaded = None
    if url is None:
        loaded = load_pipeline(resolve_pipeline(pipeline or base.pipeline_name))
    mode = clock or base.clock
    runs = repeat if repeat is not None else base.runs
    if runs < 1:
        raise ConfigError(f"--repeat must be >= 1, got {runs}")
    # Fail on a mismatched baseline before spending minutes on real-time runs.
    planned = baselines.Baseline(
        scenario_name=scenario.name,
        scenario_hash=baselines.scenario_hash(scenario.as_dict()),
        pipeline_name=loaded.name if loaded else base.pipeline_name,
        pipeline_hash=None,
        clock=mode,
        samples={},
    )
    baselines.check_compatible(base, planned, path=baseline_path, allow_mismatch=allow_mismatch)
    target = url or f"pipeline {loaded.name if loaded else ''}"
    sets = []
    for i in range(runs):
        run_dir = new_run_dir(runs_root, scenario.name)
        if on_run is not None:
            on_run(CandidateRun(i + 1, runs, scenario.name, target, mode, run_dir))

        async def main(clock_: clocks.Clock, run_dir: Path = run_dir) -> ReplayResult:
            return await run_scenario(scenario, clock_, pipeline=loaded, url=url, run_dir=run_dir)

        result = clocks.run(main, virtual=mode == "virtual")
        sets.append(baselines.from_run(result.run_dir))
    return baselines.pool(sets)
