"""What a client run needs from its connection to an agent, whatever the target speaks.

:class:`ClientRun` (agent/client/lifecycle.py) talks to an :class:`AgentLink`:
it sends websocket frames (the protocol's JSON text and binary PCM), receives
the agent's audio and messages with their arrival times, and closes. vlt's own
protocol is :class:`ProtocolLink`, a thin wrapper of the websocket; a black-box
target (agent/client/targets/pcm_ws.py) translates its agent's plain audio into
the same calls, so the replay and live clients need not know which they face.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection

from agent.audio import PCM
from agent.client.connection import receive_until_closed
from agent.clock import Clock

__all__ = ["AgentLink", "ProtocolLink"]


class AgentLink(Protocol):
    """One session's connection to an agent."""

    #: The agent answers ``ping`` with ``pong`` (a clock offset can be measured).
    answers_pings: bool

    async def send(self, data: str | bytes) -> None:
        """Send one frame: an encoded protocol message (text) or PCM (bytes)."""
        ...

    async def receive(
        self, clock: Clock, on_audio: Callable[[PCM, int], None], on_message: Callable[[Any, int], None]
    ) -> str:
        """Hand each frame of agent audio and each message, with its arrival time on
        ``clock``, to ``on_audio``/``on_message`` until the connection ends; why it ended."""
        ...

    async def close(self) -> None: ...

    def describe(self) -> dict[str, Any] | None:
        """The target's settings for the manifest (None: vlt's own protocol)."""
        ...


class ProtocolLink:
    """vlt's websocket protocol (docs/protocol.md): frames pass through as they are."""

    answers_pings = True

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def receive(
        self, clock: Clock, on_audio: Callable[[PCM, int], None], on_message: Callable[[Any, int], None]
    ) -> str:
        return await receive_until_closed(self.ws, clock, on_audio, on_message)

    async def close(self) -> None:
        await self.ws.close()

    def describe(self) -> dict[str, Any] | None:
        return None
