"""Run a scenario against an in-process agent or a remote one (used by the CLI and tests)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from agent.client.replay import ReplayOptions, ReplayResult, replay
from agent.clock import Clock
from agent.config.scenario import Scenario
from agent.errors import ConfigError
from agent.jobs.agent_process import agent_in_process
from agent.jobs.agent_thread import agent_on_thread
from agent.metrics.records import ManifestExtra, TurnRecord
from agent.metrics.results import new_run_dir
from agent.server.app import AgentServer
from agent.stages.pipeline import Pipeline

if TYPE_CHECKING:
    from agent.telemetry.publisher import Telemetry

__all__ = ["AgentLoop", "run_scenario"]

#: Where an in-process agent runs in real time: a child process (what ``vlt replay`` and
#: ``vlt sweep`` use), its own thread and loop (this function's default: the agent stays in
#: this process, so tests can reach into it), or the caller's loop ("shared");
#: docs/speech.md, "The caller's clock".
AgentLoop = Literal["thread", "process", "shared"]


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
    options: ReplayOptions | None = None,
    agent_loop: AgentLoop = "thread",
) -> ReplayResult:
    """Replay ``scenario`` against ``url``, or against ``pipeline`` served in-process
    (in real time on its own thread unless ``agent_loop`` is ``shared``; in virtual
    time always on the caller's loop, which keeps the run deterministic); with
    ``telemetry``, the client publishes its turns and the in-process agent its marks."""
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
        return await replay(scenario, url, clock, out, options=options, on_turn=on_turn, telemetry=telemetry)
    extra: ManifestExtra = {"pipeline": pipeline.as_dict()}

    async def against(agent_url: str) -> ReplayResult:
        return await replay(
            scenario,
            agent_url,
            clock,
            out,
            options=options,
            manifest_extra=extra,
            on_turn=on_turn,
            telemetry=telemetry,
        )

    if not clock.virtual and agent_loop == "process":
        broker = None if telemetry is None else telemetry.broker
        async with agent_in_process(pipeline, broker) as agent_url:
            return await against(agent_url)
    if not clock.virtual and agent_loop == "thread":
        async with agent_on_thread(pipeline, telemetry) as agent_url:
            return await against(agent_url)
    async with AgentServer(pipeline, clock, telemetry=telemetry) as server:
        return await against(server.url)
