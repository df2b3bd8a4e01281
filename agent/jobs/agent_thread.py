"""An in-process agent on its own thread and event loop, for real-time replays.

On one event loop the caller's microphone waits whenever the agent's receive loop
or its stages run Python (VAD per frame, resampling, chunking, asyncio callbacks of
decodes), and a frame meant for t goes out at t + that. On a thread of its own the
agent's loop runs beside the caller's; their Python code still shares the GIL, so
the interpreter's switch interval bounds how long the caller can wait for it (5 ms by
default — the lateness threshold itself), which is lowered here while the agent runs.
The choice and its measurements: docs/speech.md, "The caller's clock".

Both loops read the same monotonic clock, so the agent's marks need no moving (the
offset estimate stays ~0). Virtual time keeps the agent on the caller's loop: there,
one loop is what makes a run deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from agent.clock import MonotonicClock, new_real_time_loop
from agent.server.app import AgentServer
from agent.stages.pipeline import Pipeline

if TYPE_CHECKING:
    from agent.telemetry.publisher import Telemetry

__all__ = ["SWITCH_INTERVAL_S", "agent_on_thread"]

#: While the agent thread runs: how long one thread may hold the GIL while another wants it.
SWITCH_INTERVAL_S = 0.0005


@contextlib.asynccontextmanager
async def agent_on_thread(pipeline: Pipeline, telemetry: Telemetry | None = None) -> AsyncIterator[str]:
    """Serve ``pipeline`` on a new thread (its own real-time loop); yields the agent's URL.
    ``telemetry`` (thread-safe: it queues to its own thread) gets the agent's marks."""
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    caller_loop = asyncio.get_running_loop()
    stop = threading.Event()
    agent_loop: list[asyncio.AbstractEventLoop] = []
    stopping: list[asyncio.Event] = []

    def report(result: str | BaseException) -> None:
        def settle() -> None:
            if ready.done():
                return
            if isinstance(result, BaseException):
                ready.set_exception(result)
            else:
                ready.set_result(result)

        caller_loop.call_soon_threadsafe(settle)

    async def serve() -> None:
        done = asyncio.Event()
        stopping.append(done)
        agent_loop.append(asyncio.get_running_loop())
        async with AgentServer(pipeline, MonotonicClock(), telemetry=telemetry) as server:
            report(server.url)
            if not stop.is_set():
                await done.wait()

    def main() -> None:
        try:
            with asyncio.Runner(loop_factory=new_real_time_loop) as runner:
                runner.run(serve())
        except BaseException as exc:  # reported to the caller, who raises it
            report(exc)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(min(switch, SWITCH_INTERVAL_S))
    thread = threading.Thread(target=main, name="vlt-agent", daemon=True)
    thread.start()
    try:
        yield await ready
    finally:
        stop.set()
        if agent_loop and stopping:
            agent_loop[0].call_soon_threadsafe(stopping[0].set)
        await asyncio.to_thread(thread.join)
        sys.setswitchinterval(switch)
