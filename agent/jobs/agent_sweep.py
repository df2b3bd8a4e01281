"""``vlt sweep --agent-cmd``: sweep the LLM emulator's speed under an agent vlt does not run.

For every point the sweep starts ``vlt serve llm-emulator`` in-process with the
point's tokens/s and TTFT, starts the agent's command with ``{llm_url}`` (the
emulator's OpenAI ``base_url``) and ``{port}`` (a free port) filled in, waits
until the agent's URL (``{port}`` filled in too) accepts connections, replays
every scenario against it — through vlt's protocol or a black-box target
(docs/black-box.md) — and stops the agent. Rows, sweep.json and sweep.csv are
those of ``vlt sweep --pipeline`` (docs/sweeps.md); the latency model needs the
agent's hop marks and chunker, so a foreign agent's rows have no prediction.
Real time only: the agent is another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.client.replay import ReplayResult
from agent.clock import Clock
from agent.config.accelerators import get_profile, with_overrides
from agent.config.scenario import Scenario
from agent.errors import ConfigError, UnreachableError
from agent.jobs.runner import run_scenario
from agent.jobs.sweep import PointReplay, Progress, SweepPoint, run_points
from agent.metrics.results import check_new_run_dir
from agent.server.llm_emulator import LLMEmulatorServer

__all__ = ["AGENT_READY_TIMEOUT_S", "BASE_PROFILE", "run_agent_sweep"]

#: How long an agent command may take to start listening.
AGENT_READY_TIMEOUT_S = 60.0
#: The profile a grid point's TTFT and tokens/s are set on (prefill, jitter off).
BASE_PROFILE = "groq-llama-3.3-70b"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _fill(template: str, llm_url: str, port: int) -> str:
    # str.replace, not str.format: commands and URLs carry JSON braces of their own.
    return template.replace("{llm_url}", llm_url).replace("{port}", str(port))


async def _wait_listening(
    url: str, process: asyncio.subprocess.Process, clock: Clock, timeout_s: float
) -> None:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme.endswith("wss") else 80)
    deadline = clock.now_ns() + round(timeout_s * 1e9)
    while True:
        if process.returncode is not None:
            raise UnreachableError(
                f"the agent command exited with status {process.returncode} before listening"
            )
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if clock.now_ns() > deadline:
                raise UnreachableError(
                    f"the agent command did not listen on {host}:{port} within {timeout_s:g} s"
                ) from None
            await clock.sleep_until(clock.now_ns() + 200_000_000)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


@contextlib.asynccontextmanager
async def _agent(command: str, url: str, clock: Clock, ready_timeout_s: float) -> AsyncIterator[None]:
    # Its own process group, so a shell command's children stop with it.
    process = await asyncio.create_subprocess_shell(command, start_new_session=True)
    try:
        await _wait_listening(url, process, clock, ready_timeout_s)
        yield
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()


async def run_agent_sweep(
    command: str,
    url: str,
    scenarios: Sequence[Scenario],
    points: Sequence[SweepPoint],
    clock: Clock,
    out: str | Path,
    *,
    repeat: int = 1,
    ready_timeout_s: float = AGENT_READY_TIMEOUT_S,
    on_progress: Callable[[Progress], None] | None = None,
    on_point: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Replay every scenario ``repeat`` times at every point against the agent ``command`` starts."""
    if clock.virtual:
        raise ConfigError(
            "--agent-cmd runs the agent as another process: real time only (drop --clock virtual)"
        )
    if "{llm_url}" not in command:
        raise ConfigError("--agent-cmd must contain {llm_url}: where the agent finds the emulated LLM")
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    out = Path(out)
    check_new_run_dir(out, option="sweep folder")
    out.mkdir(parents=True, exist_ok=True)

    @contextlib.asynccontextmanager
    async def replaying(index: int, point: SweepPoint) -> AsyncIterator[PointReplay]:
        base = get_profile(point.profile or BASE_PROFILE)
        profile = with_overrides(base, {"ttft_ms": point.ttft_ms, "tokens_per_s": point.tokens_per_s})
        async with LLMEmulatorServer(profile, clock) as llm:
            port = _free_port()
            agent_url = _fill(url, llm.base_url, port)
            async with _agent(_fill(command, llm.base_url, port), agent_url, clock, ready_timeout_s):

                async def one(scenario: Scenario, run_dir: Path) -> ReplayResult:
                    return await run_scenario(scenario, clock, url=agent_url, run_dir=run_dir)

                yield one

    # A foreign agent's stages are unknown: no latency model, only the measured curve.
    return await run_points(
        out,
        {"name": "agent-cmd", "description": command, "agent_cmd": command, "url": url},
        scenarios,
        points,
        "real",
        repeat,
        replaying,
        lambda index, records: [],
        on_progress=on_progress,
        on_point=on_point,
    )
