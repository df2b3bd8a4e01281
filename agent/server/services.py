"""Standalone ASR and TTS services: one pipeline stage behind a websocket.

``vlt serve asr --pipeline P`` serves P's ``[asr]`` stage and ``vlt serve tts
--pipeline P`` its ``[tts]`` stage, speaking :mod:`agent.wire.service_protocol`.
Each connection gets its own stage instance (like an agent session); heavy
models inside a stage kind are shared per process as usual. The stage kinds
``remote-asr`` and ``remote-tts`` are the clients.

The TTS service sends audio at the rate the client asked for in its hello,
resampling the stage's output with soxr when they differ (as a cloud TTS
does when asked for an output format), in messages of at most
``MAX_CHUNK_MS`` so that a long sentence never nears the message size limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from agent import __version__
from agent.audio import PCM, bytes_to_pcm, pcm_to_bytes
from agent.clock import Clock
from agent.errors import BackendError, ProtocolError, VltError
from agent.server.limits import ServerLimits
from agent.server.listener import MAX_MESSAGE_BYTES, WebsocketListener
from agent.stages.interfaces import ASRStats, Closable, PartialTranscripts, SessionContext
from agent.stages.pipeline import Pipeline
from agent.wire.json_guard import clip
from agent.wire.protocol import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_POLICY_VIOLATION,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_UNSUPPORTED_DATA,
    CLOSE_UNSUPPORTED_VERSION,
    SUPPORTED_SAMPLE_RATES,
    Script,
    check_pcm_frame,
)
from agent.wire.service_protocol import SERVICE_PROTOCOL_VERSION, SERVICES, decode, encode, script_from_dict

__all__ = ["MAX_CHUNK_MS", "StageService"]

log = logging.getLogger("vlt.services")

#: Longest audio message the TTS service sends.
MAX_CHUNK_MS = 200
#: The stage's frame size hint (services receive whatever frames the client sends).
_FRAME_MS = 20
_CLOSE_FOR_CODE = {
    "unsupported_version": CLOSE_UNSUPPORTED_VERSION,
    "unsupported_format": CLOSE_UNSUPPORTED_DATA,
    "backend_unavailable": CLOSE_INTERNAL_ERROR,
    # A limit of ServerLimits (as in an agent session).
    "idle_timeout": CLOSE_POLICY_VIOLATION,
    "too_many_requests": CLOSE_POLICY_VIOLATION,
    "text_too_large": CLOSE_POLICY_VIOLATION,
}


class StageService(WebsocketListener):
    """``async with StageService(pipeline, "tts", clock) as service: ... service.url``."""

    def __init__(
        self,
        pipeline: Pipeline,
        service: str,
        clock: Clock,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        limits: ServerLimits | None = None,
    ) -> None:
        if service not in SERVICES:
            raise ValueError(f"service must be one of {SERVICES}, not {service!r}")
        spec = pipeline.stages[service]
        #: Of the agent server's limits, a service applies the session cap, the hello and
        #: idle timeouts (ASR: audio streams all the time), the TTS queue and text size.
        self.limits = limits or ServerLimits()
        super().__init__(
            self._handle,
            host,
            port,
            description=f"{service} service ({spec.kind})",
            max_connections=self.limits.max_sessions,
            busy_frame=lambda message: encode("error", code="server_busy", message=message),
        )
        self.pipeline = pipeline
        self.service = service
        self.spec = spec
        self.clock = clock
        self._ids = itertools.count(1)

    # -- one connection ------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        name = f"{self.service}{next(self._ids)}"
        log.info("%s from %s", name, ws.remote_address)
        stage: Any = None
        try:
            rate = await self._handshake(ws)
            ctx = SessionContext(clock=self.clock, sample_rate=rate, frame_samples=rate * _FRAME_MS // 1000)
            try:
                stage = self.spec.entry.build(self.spec.config, ctx)
            except VltError as exc:
                raise ProtocolError("backend_unavailable", str(exc)) from None
            await ws.send(
                encode(
                    "hello",
                    protocol=SERVICE_PROTOCOL_VERSION,
                    service=self.service,
                    sample_rate=rate,
                    stage=self.spec.kind,
                    software=f"vlt/{__version__}",
                )
            )
            if self.service == "asr":
                await _serve_asr(ws, stage, self.limits)
            else:
                await _serve_tts(ws, stage, rate, self.limits)
        except ProtocolError as exc:
            log.info("%s: %s", name, exc)
            with contextlib.suppress(ConnectionClosed):
                await ws.send(encode("error", code=exc.code, message=exc.reason))
                await ws.close(_CLOSE_FOR_CODE.get(exc.code, CLOSE_PROTOCOL_ERROR), exc.code)
        except ConnectionClosed:
            log.info("%s: client went away", name)
        except Exception as exc:
            log.exception("%s: internal error", name)
            with contextlib.suppress(ConnectionClosed):
                await ws.send(encode("error", code="internal_error", message=repr(exc)))
                await ws.close(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            if isinstance(stage, Closable):
                with contextlib.suppress(Exception):
                    await stage.aclose()

    async def _handshake(self, ws: ServerConnection) -> int:
        """The client's hello → the sample rate of this connection."""
        try:
            async with asyncio.timeout(self.limits.handshake_timeout_s):
                first = await ws.recv()
        except TimeoutError:
            limit = self.limits.handshake_timeout_s
            raise ProtocolError("handshake_timeout", f"no hello within {limit:g} s") from None
        if isinstance(first, bytes):
            raise ProtocolError("hello_required", "the first message must be a hello text frame")
        hello = decode(first, self.limits.max_json_depth)
        if hello["type"] != "hello":
            raise ProtocolError("hello_required", f"the first message must be hello, not {hello['type']}")
        if hello["protocol"] != SERVICE_PROTOCOL_VERSION:
            raise ProtocolError(
                "unsupported_version",
                f"service protocol {hello['protocol']} is not supported; "
                f"this service speaks {SERVICE_PROTOCOL_VERSION}",
            )
        if hello["service"] != self.service:
            raise ProtocolError(
                "wrong_service", f"this is a {self.service} service, not {clip(repr(hello['service']), 60)}"
            )
        rate: int = hello["sample_rate"]
        if rate not in SUPPORTED_SAMPLE_RATES:
            rates = ", ".join(map(str, SUPPORTED_SAMPLE_RATES))
            raise ProtocolError("unsupported_format", f"sample_rate {rate}; supported: {rates}")
        return rate


async def _messages(ws: ServerConnection, idle_s: float | None) -> AsyncIterator[str | bytes]:
    """The connection's messages; with ``idle_s``, ending it with ``idle_timeout``
    when nothing at all arrives for that long."""
    while True:
        try:
            async with asyncio.timeout(idle_s):
                data = await ws.recv()
        except ConnectionClosedOK:
            return
        except TimeoutError:
            raise ProtocolError("idle_timeout", f"nothing received for {idle_s:g} s") from None
        yield data


async def _serve_asr(ws: ServerConnection, asr: Any, limits: ServerLimits) -> None:
    """Audio frames feed the stage as they come; each finalize runs as its own task,
    so the next utterance's audio keeps flowing while a transcript is produced.
    A remote-asr client streams audio all the time, so silence means a dead client."""
    sample = 0
    tasks: set[asyncio.Task[None]] = set()
    # Optional: a streaming ASR's partials, polled after each frame as a session does.
    partials = asr if isinstance(asr, PartialTranscripts) else None

    async def finalize(request_id: int, end_sample: int, hint: Script | None) -> None:
        try:
            text = await asr.finalize(end_sample, hint)
            # Optional, read right after finalize (as the orchestrator does): what it did.
            stats = asr.last_stats if isinstance(asr, ASRStats) else None
            reply = encode("final", id=request_id, text=text, stats=stats)
        except BackendError as exc:
            reply = encode("error", id=request_id, code="backend_failed", message=str(exc))
        except Exception as exc:
            # A bug in a stage fails its request, not the connection (as in an agent session).
            log.exception("asr request %d: internal error", request_id)
            reply = encode("error", id=request_id, code="internal_error", message=repr(exc))
        with contextlib.suppress(ConnectionClosed):
            await ws.send(reply)

    try:
        async for data in _messages(ws, limits.idle_timeout_s):
            if isinstance(data, bytes):
                check_pcm_frame(data, MAX_MESSAGE_BYTES)
                pcm = bytes_to_pcm(data)
                asr.feed(pcm, sample)
                sample += len(pcm)
                if partials is not None and (partial := partials.poll_partial()) is not None:
                    await ws.send(encode("partial", text=partial))
                continue
            message = decode(data, limits.max_json_depth)
            if message["type"] != "finalize":
                raise ProtocolError("unexpected_message", f"an ASR client may not send {message['type']}")
            hint = script_from_dict(message.get("hint"))  # checked here: a bad one is a protocol error
            task = asyncio.get_running_loop().create_task(
                finalize(message["id"], message["end_sample"], hint)
            )
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for task in list(tasks):
            task.cancel()


async def _serve_tts(ws: ServerConnection, tts: Any, rate: int, limits: ServerLimits) -> None:
    """Requests are synthesised one at a time, in order; ``cancel`` stops the one
    in progress (or drops a queued one), which still ends with its ``done``.
    No idle timeout: an agent asks for speech only when it answers, and a caller
    may talk for minutes in between."""
    requests: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    cancelled: set[int] = set()
    current: dict[str, Any] = {}

    async def synthesize(request: dict[str, Any]) -> None:
        resample = _resampler(tts.sample_rate, rate)
        step = rate * MAX_CHUNK_MS // 1000
        async for pcm in tts.synthesize(request["text"]):
            out = resample(pcm, False)
            for start in range(0, len(out), step):
                await ws.send(pcm_to_bytes(out[start : start + step]))
        tail = resample(np.zeros(0, dtype=np.int16), True)
        if len(tail):
            await ws.send(pcm_to_bytes(tail))

    async def worker() -> None:
        while True:
            request = await requests.get()
            request_id = request["id"]
            if request_id in cancelled:
                cancelled.discard(request_id)
                await ws.send(encode("done", id=request_id, cancelled=True))
                continue
            task = asyncio.get_running_loop().create_task(synthesize(request))
            current.update(id=request_id, task=task)
            try:
                await asyncio.wait([task])
            except asyncio.CancelledError:
                task.cancel()  # the connection is closing
                raise
            finally:
                current.clear()
            if task.cancelled():
                await ws.send(encode("done", id=request_id, cancelled=True))
            elif isinstance(exc := task.exception(), BackendError):
                await ws.send(encode("error", id=request_id, code="backend_failed", message=str(exc)))
            elif exc is not None:
                # A bug in a stage fails its request, not the connection (as in an agent session).
                log.error("tts request %d: internal error", request_id, exc_info=exc)
                await ws.send(encode("error", id=request_id, code="internal_error", message=repr(exc)))
            else:
                await ws.send(encode("done", id=request_id, cancelled=False))

    runner = asyncio.get_running_loop().create_task(worker())
    try:
        async for data in ws:
            if isinstance(data, bytes):
                raise ProtocolError("unexpected_audio", "a TTS client may not send audio")
            message = decode(data, limits.max_json_depth)
            if message["type"] == "synthesize":
                chars, most = len(message["text"]), limits.max_synthesize_chars
                if chars > most:
                    raise ProtocolError(
                        "text_too_large", f"{chars:,} characters to synthesize; at most {most:,}"
                    )
                if requests.qsize() >= (queued := limits.max_pending_requests):
                    raise ProtocolError("too_many_requests", f"more than {queued} synthesize requests queued")
                requests.put_nowait(message)
            elif message["type"] == "cancel":
                if current.get("id") == message["id"]:
                    current["task"].cancel()
                else:
                    cancelled.add(message["id"])
            else:
                raise ProtocolError("unexpected_message", f"a TTS client may not send {message['type']}")
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
            await runner


def _resampler(src: int, dst: int) -> Callable[[PCM, bool], PCM]:
    """A streaming resampler for one request: ``resample(chunk, last)``."""
    if src == dst:
        return lambda pcm, last: pcm
    import soxr  # only when the stage's rate differs from the client's

    stream = soxr.ResampleStream(src, dst, 1, dtype="int16")

    def resample(pcm: PCM, last: bool) -> PCM:
        out: PCM = np.asarray(stream.resample_chunk(pcm, last=last), dtype=np.int16)
        return out

    return resample
