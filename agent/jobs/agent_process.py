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
import dataclasses
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agent.errors import ConnectError
from agent.stages.pipeline import Pipeline
from agent.telemetry.broker import BrokerUrl, TlsOptions

__all__ = ["STARTUP_TIMEOUT_S", "agent_in_process"]

STARTUP_TIMEOUT_S = 120.0


@contextlib.asynccontextmanager
async def agent_in_process(pipeline: Pipeline, broker: BrokerUrl | None = None) -> AsyncIterator[str]:
    """Serve ``pipeline`` from a child process; yields the agent's URL. With ``broker``
    the child publishes the agent's marks there (its own publisher, as ``vlt serve
    agent --mqtt`` would)."""
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
        spec = {"raw": pipeline.raw, "path": path, "broker": None if broker is None else _broker_dict(broker)}
        # On stdin, not the command line: the broker's password is not for `ps` to show.
        child.stdin.write(json.dumps(spec, default=str).encode() + b"\n")
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


def _broker_dict(broker: BrokerUrl) -> dict[str, Any]:
    return dataclasses.asdict(broker)


def _broker_from(spec: dict[str, Any] | None) -> BrokerUrl | None:
    if spec is None:
        return None
    tls = spec.pop("tls")
    if tls is not None:
        paths = {k: None if v is None else Path(v) for k, v in tls.items() if k != "insecure"}
        spec["tls"] = TlsOptions(**paths, insecure=tls["insecure"])
    return BrokerUrl(**spec)


def _child() -> None:
    from agent import clock as clocks
    from agent.server.app import AgentServer
    from agent.stages.pipeline import pipeline_from_raw

    spec: dict[str, Any] = json.loads(sys.stdin.readline())
    pipeline = pipeline_from_raw(spec["raw"], spec.get("path"))
    broker = _broker_from(spec.get("broker"))

    async def main(clock: clocks.Clock) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.ExitStack() as stack:
            telemetry = None
            if broker is not None:
                from agent.telemetry.publisher import Telemetry

                telemetry = stack.enter_context(Telemetry(broker))
            async with AgentServer(pipeline, clock, telemetry=telemetry) as server:
                print(server.url, flush=True)
                # Ends when the parent closes stdin (or dies): read until EOF off the loop.
                await loop.run_in_executor(None, sys.stdin.read)

    clocks.run(main)


if __name__ == "__main__":
    _child()
