"""Run a scenario against an in-process agent or a remote one (used by the CLI and tests)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agent.client.replay import ReplayResult, replay
from agent.clock import Clock
from agent.config.scenario import Scenario
from agent.errors import ConfigError
from agent.metrics.records import ManifestExtra, TurnRecord
from agent.metrics.results import new_run_dir
from agent.server.app import AgentServer
from agent.stages.pipeline import Pipeline

if TYPE_CHECKING:
    from agent.telemetry.publisher import Telemetry

__all__ = ["run_scenario"]


async def run_scenario(
    scenario: Scenario,
    clock: Clock,
    *,
    pipeline: Pipeline | None = None,
    url: str | None = None,
    runs_root: str | Path = "runs",
    run_dir: str | Path | None = None,
    on_turn: Callable[[TurnRecord], None] | None = None,
    telemetry: Telemetry | None = None,
) -> ReplayResult:
    """Replay ``scenario`` against ``url``, or against ``pipeline`` served in-process;
    with ``telemetry``, the client publishes its turns and the in-process agent its marks."""
    if (pipeline is None) == (url is None):
        raise ConfigError("give either a pipeline or an agent URL")
    if clock.virtual and url is not None:
        raise ConfigError("--clock virtual needs the agent in-process: use --pipeline, not --url")
    if clock.virtual and pipeline is not None and not pipeline.virtual_time_ok:
        stages = ", ".join(pipeline.real_time_stages())
        raise ConfigError(
            f"--clock virtual needs an all-emulated pipeline; {pipeline.name} has real stages: {stages}"
        )
    out = Path(run_dir) if run_dir is not None else new_run_dir(runs_root, scenario.name)
    if pipeline is None:
        assert url is not None
        return await replay(scenario, url, clock, out, on_turn=on_turn, telemetry=telemetry)
    extra: ManifestExtra = {"pipeline": pipeline.as_dict()}
    async with AgentServer(pipeline, clock, telemetry=telemetry) as server:
        return await replay(
            scenario, server.url, clock, out, manifest_extra=extra, on_turn=on_turn, telemetry=telemetry
        )
