"""vlt's agent behind a plain PCM websocket: a real black box to measure.

Each connection from a caller opens a protocol session to the agent at
``agent_url`` and relays audio both ways as bare binary frames; the agent's
messages (marks, transcripts, ``response_done``) stay inside, and the caller's
text frames (a start message) are kept in :attr:`PcmFacade.start_messages`,
never passed on. Measuring the facade with ``pcm+ws://`` therefore measures
vlt's agent as a foreign one (docs/black-box.md, benchmarks/black_box.py): the
agent must find turns in the audio (a pipeline with a real VAD), because no
``script`` hints reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from agent.client.connection import open_session
from agent.clock import Clock
from agent.server.listener import WebsocketListener

__all__ = ["PcmFacade"]

log = logging.getLogger("vlt.pcm_facade")


class PcmFacade(WebsocketListener):
    """``async with PcmFacade(agent_url, clock) as facade: ... facade.url`` (a ws:// URL)."""

    def __init__(
        self,
        agent_url: str,
        clock: Clock,
        *,
        sample_rate: int = 16000,
        frame_ms: int = 20,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(self._relay, host, port, description=f"plain PCM facade of {agent_url}")
        self.agent_url = agent_url
        self.clock = clock
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        #: Every text frame callers sent (a start message), in order.
        self.start_messages: list[str] = []

    def pcm_url(self, settings: str = "") -> str:
        """The ``pcm+ws://`` URL of this facade, with ``settings`` after the ``#``."""
        base = f"pcm+{self.url}#rate={self.sample_rate}&frame_ms={self.frame_ms}"
        return f"{base}&{settings}" if settings else base

    async def _relay(self, caller: ServerConnection) -> None:
        agent, _ = await open_session(self.agent_url, self.clock, self.sample_rate, self.frame_ms)

        async def upstream() -> None:
            async for data in caller:
                if isinstance(data, bytes):
                    await agent.send(data)
                else:
                    self.start_messages.append(data)

        async def downstream() -> None:
            async for data in agent:
                if isinstance(data, bytes):
                    await caller.send(data)

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await task
            await agent.close()
            await caller.close()
