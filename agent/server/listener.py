"""What every websocket server of the testbed shares: listening, its URL, closing.

The agent server and the ASR/TTS services differ only in what they do with a
connection (``handle``); binding with a clear error for a busy port, learning
the port when 0 was asked for, the cap on connections served at once, and
shutting down are the same.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from agent.errors import ConnectError
from agent.wire.protocol import CLOSE_TRY_AGAIN_LATER

__all__ = ["MAX_MESSAGE_BYTES", "WebsocketListener"]

log = logging.getLogger("vlt.server")

#: Largest message accepted (a second of 48 kHz PCM is 96 kB).
MAX_MESSAGE_BYTES = 1 << 20


class WebsocketListener:
    """``async with WebsocketListener(handle, host, port) as server: ... server.url``."""

    def __init__(
        self,
        handle: Callable[[ServerConnection], Awaitable[None]],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        description: str = "websocket server",
        max_connections: int | None = None,
        busy_frame: Callable[[str], str] | None = None,
    ) -> None:
        """``max_connections``: served at once; one more gets ``busy_frame(message)``
        (the server protocol's ``error`` with code ``server_busy``) and close 1013."""
        self.host = host
        self.port = port
        self.description = description
        self._handle = handle
        self._server: Server | None = None
        self.max_connections = max_connections
        self._busy_frame = busy_frame
        #: Connections being served now.
        self.active_connections = 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

    async def start(self) -> None:
        try:
            self._server = await serve(
                self._on_connection,
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
        log.info("%s on %s", self.description, self.url)

    async def _on_connection(self, ws: ServerConnection) -> None:
        limit = self.max_connections
        if limit is not None and self.active_connections >= limit:
            log.warning(
                "%s: connection from %s refused: %d served already",
                self.description,
                ws.remote_address,
                limit,
            )
            message = f"the server is serving its maximum of {limit} sessions; try again later"
            with contextlib.suppress(ConnectionClosed):
                if self._busy_frame is not None:
                    await ws.send(self._busy_frame(message))
                await ws.close(CLOSE_TRY_AGAIN_LATER, "server_busy")
            return
        self.active_connections += 1
        try:
            await self._handle(ws)
        finally:
            self.active_connections -= 1

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def serve_forever(self) -> None:
        assert self._server is not None, "start() first"
        await self._server.serve_forever()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
