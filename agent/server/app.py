"""The agent server: a websockets server running one :class:`AgentSession` per connection."""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection

from agent.clock import Clock
from agent.server.limits import ServerLimits
from agent.server.listener import MAX_MESSAGE_BYTES, WebsocketListener
from agent.server.session import AgentSession
from agent.stages.pipeline import Pipeline
from agent.wire.protocol import Error, encode

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
        self.limits = limits or ServerLimits()
        super().__init__(
            self._session,
            host,
            port,
            description=f"agent server ({pipeline.name})",
            max_connections=self.limits.max_sessions,
            busy_frame=lambda message: encode(Error(code="server_busy", message=message)),
        )
        self.pipeline = pipeline
        self.clock = clock
        #: With --mqtt: each session publishes its marks as they are stamped.
        self.telemetry = telemetry
        self._ids = itertools.count(1)

    async def _session(self, ws: ServerConnection) -> None:
        session_id = f"s{next(self._ids)}"
        log.info("session %s from %s", session_id, ws.remote_address)
        session = AgentSession(
            ws, self.pipeline, self.clock, session_id, limits=self.limits, telemetry=self.telemetry
        )
        await session.run()
