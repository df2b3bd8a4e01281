"""An in-process agent's stand-in in a child process, for real-time replays (``--agent-loop process``).

The child (``python -m agent.jobs.agent_process``) reads the pipeline (its parsed
table, so a sweep's overrides travel too) as one JSON line on stdin, serves it on a
free loopback port, prints the URL as its first stdout line, and ends when its
stdin closes (the parent is done, or gone). Nothing of the agent's work then
shares the caller's interpreter: no event loop, no GIL. Both processes read the
same monotonic clock; the client's offset estimate measures what little is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

from agent.errors import ConnectError
from agent.stages.pipeline import Pipeline

__all__ = ["STARTUP_TIMEOUT_S", "agent_in_process"]

STARTUP_TIMEOUT_S = 120.0


@contextlib.asynccontextmanager
async def agent_in_process(pipeline: Pipeline) -> AsyncIterator[str]:
    """Serve ``pipeline`` from a child process; yields the agent's URL."""
    _register_secrets(pipeline)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent.jobs.agent_process",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        path = None if pipeline.path is None else str(pipeline.path)
        child.stdin.write(json.dumps({"raw": pipeline.raw, "path": path}).encode() + b"\n")
        await child.stdin.drain()
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT_S):
                line = await child.stdout.readline()
        except TimeoutError:
            line = b""
        url = line.decode().strip()
        if not url.startswith("ws://"):
            raise ConnectError(f"the agent process did not start (exit status {child.returncode})")
        yield url
    finally:
        with contextlib.suppress(Exception):
            child.stdin.close()
        try:
            async with asyncio.timeout(10):
                await child.wait()
        except TimeoutError:
            child.kill()
            await child.wait()


def _register_secrets(pipeline: Pipeline) -> None:
    """Mask here what the child's stages will read as secrets: the run folder and stdout are
    this process's, and an in-process agent's stages would have registered them here."""
    from agent.metrics.redact import add_secret
    from agent.stages.openai_endpoint import OpenAILLMConfig, resolve

    for spec in pipeline.stages.values():
        if isinstance(spec.config, OpenAILLMConfig):
            env = resolve(spec.config).api_key_env
            if env and os.environ.get(env):
                add_secret(os.environ[env])


def _child() -> None:
    from agent import clock as clocks
    from agent.server.app import AgentServer
    from agent.stages.pipeline import pipeline_from_raw

    spec: dict[str, Any] = json.loads(sys.stdin.readline())
    pipeline = pipeline_from_raw(spec["raw"], spec.get("path"))

    async def main(clock: clocks.Clock) -> None:
        loop = asyncio.get_running_loop()
        async with AgentServer(pipeline, clock) as server:
            print(server.url, flush=True)
            # Ends when the parent closes stdin (or dies): read until EOF off the loop.
            await loop.run_in_executor(None, sys.stdin.read)

    clocks.run(main)


if __name__ == "__main__":
    _child()
