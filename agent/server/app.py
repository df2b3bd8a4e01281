"""The agent server: a websockets server running one :class:`AgentSession` per connection."""

from __future__ import annotations

import errno
import itertools
import logging
from types import TracebackType

from websockets.asyncio.server import Server, ServerConnection, serve

from agent.clock import Clock
from agent.errors import ConnectError
from agent.pipeline import Pipeline
from agent.server.session import AgentSession

__all__ = ["MAX_MESSAGE_BYTES", "AgentServer"]

log = logging.getLogger("vlt.server")

MAX_MESSAGE_BYTES = 1 << 20


class AgentServer:
    """``async with AgentServer(pipeline, clock) as server: ... server.url``."""

    def __init__(self, pipeline: Pipeline, clock: Clock, host: str = "127.0.0.1", port: int = 0):
        self.pipeline = pipeline
        self.clock = clock
        self.host = host
        self.port = port
        self._ids = itertools.count(1)
        self._server: Server | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

    async def start(self) -> None:
        try:
            self._server = await serve(
                self._handle,
                self.host,
                self.port,
                compression=None,  # deflating PCM costs CPU and latency for nothing
                max_size=MAX_MESSAGE_BYTES,
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConnectError(f"cannot listen on {self.host}:{self.port}: port is busy") from None
            raise ConnectError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        sockets = list(self._server.sockets)
        if sockets and self.port == 0:
            self.port = sockets[0].getsockname()[1]
        log.info("agent server on %s with pipeline %s", self.url, self.pipeline.name)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def __aenter__(self) -> AgentServer:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _handle(self, ws: ServerConnection) -> None:
        session_id = f"s{next(self._ids)}"
        log.info("session %s from %s", session_id, ws.remote_address)
        await AgentSession(ws, self.pipeline, self.clock, session_id).run()
