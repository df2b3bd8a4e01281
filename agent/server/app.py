"""The agent server: a websockets server running one :class:`AgentSession` per connection."""

from __future__ import annotations

import contextlib
import itertools
import logging
from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from agent.clock import Clock
from agent.server.limits import ServerLimits
from agent.server.listener import MAX_MESSAGE_BYTES, WebsocketListener
from agent.server.session import AgentSession
from agent.stages.pipeline import Pipeline
from agent.wire.protocol import CLOSE_TRY_AGAIN_LATER, Error, encode

if TYPE_CHECKING:
    from agent.telemetry.publisher import Telemetry

__all__ = ["MAX_MESSAGE_BYTES", "AgentServer"]

log = logging.getLogger("vlt.server")


class AgentServer(WebsocketListener):
    """``async with AgentServer(pipeline, clock) as server: ... server.url``."""

    def __init__(
        self,
        pipeline: Pipeline,
        clock: Clock,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        limits: ServerLimits | None = None,
        telemetry: Telemetry | None = None,
    ):
        super().__init__(self._session, host, port, description=f"agent server ({pipeline.name})")
        self.pipeline = pipeline
        self.clock = clock
        self.limits = limits or ServerLimits()
        #: With --mqtt: each session publishes its marks as they are stamped.
        self.telemetry = telemetry
        self._ids = itertools.count(1)
        #: Sessions being served now (at most ``limits.max_sessions``).
        self.active_sessions = 0

    async def _session(self, ws: ServerConnection) -> None:
        session_id = f"s{next(self._ids)}"
        if self.active_sessions >= self.limits.max_sessions:
            log.warning(
                "session %s from %s refused: %d sessions already",
                session_id,
                ws.remote_address,
                self.active_sessions,
            )
            message = (
                f"the server is serving its maximum of {self.limits.max_sessions} sessions; try again later"
            )
            with contextlib.suppress(ConnectionClosed):
                await ws.send(encode(Error(code="server_busy", message=message)))
                await ws.close(CLOSE_TRY_AGAIN_LATER, "server_busy")
            return
        log.info("session %s from %s", session_id, ws.remote_address)
        self.active_sessions += 1
        try:
            session = AgentSession(
                ws, self.pipeline, self.clock, session_id, limits=self.limits, telemetry=self.telemetry
            )
            await session.run()
        finally:
            self.active_sessions -= 1
