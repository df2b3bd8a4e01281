"""Limits of the standalone ASR/TTS services (vlt serve asr|tts), over real loopback websockets.

The same discipline as the agent server (tests/server/test_hostile_clients.py):
a full server refuses with ``server_busy`` and close 1013, a broken or hostile
client ends only its own connection with a named error and close 1008.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from agent import clock as clocks
from agent.clock import Clock
from agent.server.limits import ServerLimits
from agent.server.services import StageService
from agent.stages.pipeline import load_pipeline
from agent.wire.protocol import CLOSE_POLICY_VIOLATION, CLOSE_TRY_AGAIN_LATER
from agent.wire.service_protocol import SERVICE_PROTOCOL_VERSION, encode
from tests.conftest import PIPELINES

T = TypeVar("T")
EMULATED = load_pipeline(PIPELINES / "emulated.toml")


def _virtual(body: Callable[[Clock], Awaitable[T]]) -> T:
    return clocks.run(body, virtual=True)


async def _hello(ws: ClientConnection, service: str) -> dict[str, object]:
    await ws.send(encode("hello", protocol=SERVICE_PROTOCOL_VERSION, service=service, sample_rate=16000))
    reply: dict[str, object] = json.loads(await ws.recv())
    assert reply["type"] == "hello", reply
    return reply


async def _closing_error(ws: ClientConnection) -> tuple[str, int | None]:
    """The error the service sent before it closed, and the close code; ("", None)
    if it did not close within a minute (of virtual time: no real wait)."""
    code = ""
    try:
        async with asyncio.timeout(60):
            while True:
                message = await ws.recv()
                if isinstance(message, str) and (body := json.loads(message))["type"] == "error":
                    code = body["code"]
    except ConnectionClosed:
        pass
    except TimeoutError:
        return "", None
    return code, ws.close_code


def test_a_full_service_refuses_with_server_busy() -> None:
    async def body(clock: Clock) -> tuple[tuple[str, int | None], dict[str, object]]:
        limits = ServerLimits(max_sessions=1)
        async with StageService(EMULATED, "tts", clock, limits=limits) as service:
            async with connect(service.url) as first:
                await _hello(first, "tts")
                async with connect(service.url) as second:
                    refused = await _closing_error(second)
            # The slot is free again once the first client has gone.
            async with connect(service.url) as third:
                hello = await _hello(third, "tts")
        return refused, hello

    refused, hello = _virtual(body)
    assert refused == ("server_busy", CLOSE_TRY_AGAIN_LATER)
    assert hello["service"] == "tts"


def test_an_asr_client_that_stops_sending_is_closed_after_the_idle_timeout() -> None:
    async def body(clock: Clock) -> tuple[tuple[str, int | None], float]:
        limits = ServerLimits(idle_timeout_s=5.0)
        async with StageService(EMULATED, "asr", clock, limits=limits) as service, connect(service.url) as ws:
            await _hello(ws, "asr")
            start = clock.now_ns()
            closed = await _closing_error(ws)
            return closed, (clock.now_ns() - start) / 1e9

    closed, waited_s = _virtual(body)
    assert closed == ("idle_timeout", CLOSE_POLICY_VIOLATION)
    assert 5.0 <= waited_s < 6.5  # the timeout, plus the close handshake


def test_a_tts_flood_of_requests_ends_that_connection_only() -> None:
    async def body(clock: Clock) -> tuple[tuple[str, int | None], tuple[str, int | None], str]:
        limits = ServerLimits(max_pending_requests=3, max_synthesize_chars=100)
        async with StageService(EMULATED, "tts", clock, limits=limits) as service:
            async with connect(service.url) as flood:
                await _hello(flood, "tts")
                for i in range(10):
                    await flood.send(encode("synthesize", id=i, text="Hello there, how can I help?"))
                flooded = await _closing_error(flood)
            async with connect(service.url) as big:
                await _hello(big, "tts")
                await big.send(encode("synthesize", id=1, text="x" * 101))
                too_big = await _closing_error(big)
            async with connect(service.url) as honest:
                await _hello(honest, "tts")
                await honest.send(encode("synthesize", id=7, text="Fine, thanks."))
                while True:
                    message = await honest.recv()
                    if isinstance(message, str):
                        done = json.loads(message)
                        break
        return flooded, too_big, f"{done['type']}:{done['id']}"

    flooded, too_big, honest = _virtual(body)
    assert flooded == ("too_many_requests", CLOSE_POLICY_VIOLATION)
    assert too_big == ("text_too_large", CLOSE_POLICY_VIOLATION)
    assert honest == "done:7"
