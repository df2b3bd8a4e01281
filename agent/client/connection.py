"""A client's websocket connection to an agent: handshake and clock sync."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from agent import __version__
from agent.audio import PCM, bytes_to_pcm
from agent.clock import Clock
from agent.errors import ConnectError, ProtocolError, UnreachableError
from agent.metrics.clocksync import ClockSample, OffsetEstimate, estimate_offset
from agent.wire.protocol import PROTOCOL_VERSION, Error, Hello, Ping, Pong, decode, encode

__all__ = ["CONNECT_TIMEOUT_S", "dial", "open_session", "receive_until_closed", "sync_clock"]

CONNECT_TIMEOUT_S = 10.0


async def dial(ws_url: str, named: str, expected: str) -> ClientConnection:
    """Open the websocket to an agent; errors name the URL as the user gave it (``named``)
    and say what was ``expected`` (``ws://host:port``…): UnreachableError when nothing
    answered, so the command exits with its own status."""
    try:
        return await connect(ws_url, compression=None, open_timeout=CONNECT_TIMEOUT_S, max_size=1 << 20)
    except InvalidURI:
        raise ConnectError(f"{named}: not a websocket URL (expected {expected})") from None
    except (OSError, TimeoutError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise UnreachableError(f"cannot reach agent at {ws_url}: {reason}") from None
    except InvalidHandshake as exc:
        raise UnreachableError(f"{ws_url} did not accept a websocket: {exc}") from None


async def open_session(
    url: str, clock: Clock, sample_rate: int | None, frame_ms: int | None
) -> tuple[ClientConnection, Hello]:
    """Connect and exchange hellos; errors become :class:`ConnectError`/:class:`ProtocolError`."""
    ws = await dial(url, url, "ws://host:port")
    hello = Hello(
        protocol=PROTOCOL_VERSION,
        sample_rate=sample_rate,
        frame_ms=frame_ms,
        role="client",
        software=f"vlt/{__version__}",
    )
    try:
        await ws.send(encode(hello))
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            reply = decode(await ws.recv())
    except ConnectionClosed as exc:
        raise UnreachableError(f"agent at {url} closed the connection: {exc}") from None
    except TimeoutError:
        await ws.close()
        raise UnreachableError(f"agent at {url} sent no hello within {CONNECT_TIMEOUT_S:g} s") from None
    if isinstance(reply, Error):
        await ws.close()
        raise ProtocolError(reply.code, f"agent at {url} refused the session: {reply.message}")
    if not isinstance(reply, Hello) or reply.sample_rate is None or reply.frame_ms is None:
        await ws.close()
        what = reply.TYPE if not isinstance(reply, Hello) else "a hello without its audio format"
        raise ProtocolError("hello_required", f"agent at {url} answered {what}")
    return ws, reply


async def sync_clock(
    send_ping: Callable[[Ping], Awaitable[tuple[Pong, int]]], clock: Clock, rounds: int = 8
) -> OffsetEstimate:
    """Estimate the server's clock offset from ``rounds`` sequential pings.

    ``send_ping`` returns the pong and the client time it arrived at.
    """
    samples = []
    for _ in range(rounds):
        t0 = clock.now_ns()
        pong, t3 = await send_ping(Ping(t0_ns=t0))
        samples.append(ClockSample(t0, pong.t1_ns, pong.t2_ns, t3))
    return estimate_offset(samples)


async def receive_until_closed(
    ws: ClientConnection,
    clock: Clock,
    on_audio: Callable[[PCM, int], None],
    on_message: Callable[[Any, int], None],
) -> str:
    """Hand each of the agent's frames, with its arrival time, to ``on_audio`` or
    ``on_message`` until the connection ends; returns why it ended."""
    try:
        async for data in ws:
            now = clock.now_ns()
            if isinstance(data, bytes):
                on_audio(bytes_to_pcm(data), now)
            else:
                on_message(decode(data), now)
    except ConnectionClosed:
        pass
    except ProtocolError as exc:
        return f"agent broke the protocol: {exc}"
    code = ws.close_code
    reason = f"code {code} {ws.close_reason or ''}".strip() if code else "connection lost"
    return f"agent closed the connection ({reason})"
