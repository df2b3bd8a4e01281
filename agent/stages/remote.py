"""``remote-asr`` / ``remote-tts``: stages that run on a standalone service
(``vlt serve asr|tts``), reached over a websocket through an impaired link.

Every message in both directions is held for a delay drawn from
:mod:`agent.stages.netem` (``delay_ms`` ± ``jitter_ms``, seeded, never reordered)
before it is sent (upstream) or handed to the stage (downstream), so a hop can
be placed "in the cloud" while its service runs on loopback. The delays are
slept on the session's clock, so they are exact in virtual time. The
orchestrator times these stages like any other: ``asr_finalize`` and
``tts_first_audio`` include both network legs.

The connection is opened when the stage is built (at session start), so a
turn pays for the network, not for a handshake; a service that cannot be
reached makes the first use raise :class:`BackendError` naming its URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from agent import __version__
from agent.audio import PCM, bytes_to_pcm, pcm_to_bytes
from agent.clock import Clock, Pacer
from agent.errors import BackendError, ProtocolError
from agent.stages.interfaces import ASRStats, Closable, PartialTranscripts, SessionContext
from agent.stages.netem import DelayModel, Impairment
from agent.wire.protocol import Script
from agent.wire.service_protocol import SERVICE_PROTOCOL_VERSION, decode, encode, script_to_dict

__all__ = ["CONNECT_TIMEOUT_S", "RemoteASR", "RemoteASRConfig", "RemoteTTS", "RemoteTTSConfig"]

log = logging.getLogger("vlt.remote")

CONNECT_TIMEOUT_S = 10.0
_MAX_MESSAGE_BYTES = 1 << 20
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RemoteASRConfig:
    url: str = "ws://127.0.0.1:8766"
    """The ``vlt serve asr`` service."""
    delay_ms: float = field(default=0.0, metadata={"min": 0})
    """One-way delay added to every message, each direction."""
    jitter_ms: float = field(default=0.0, metadata={"min": 0})
    """Each message's delay is uniform in delay_ms ± jitter_ms (order is kept)."""
    seed: int = 0
    """Seed of the jitter draws."""


@dataclass(frozen=True, slots=True)
class RemoteTTSConfig:
    url: str = "ws://127.0.0.1:8767"
    """The ``vlt serve tts`` service."""
    delay_ms: float = field(default=0.0, metadata={"min": 0})
    """One-way delay added to every message, each direction."""
    jitter_ms: float = field(default=0.0, metadata={"min": 0})
    """Each message's delay is uniform in delay_ms ± jitter_ms (order is kept)."""
    seed: int = 0
    """Seed of the jitter draws."""


class _Delayed(Generic[T]):
    """One direction of the impaired link: items leave in order, each held for
    its drawn delay counted from when it was put (see :func:`agent.stages.netem.delivery_times`)."""

    def __init__(self, clock: Clock, model: DelayModel, deliver: Callable[[T], Awaitable[None]]) -> None:
        self._clock = clock
        self._model = model
        self._deliver = deliver
        self._queue: asyncio.Queue[tuple[Pacer, int, T]] = asyncio.Queue()

    def put(self, item: T) -> None:
        # The Pacer starts at the item's arrival; holding items one by one in
        # arrival order is the in-order schedule: max(arrival + delay, previous).
        self._queue.put_nowait((Pacer(self._clock), self._model.next_delay_ns(), item))

    async def run(self) -> None:
        while True:
            pacer, delay_ns, item = await self._queue.get()
            await pacer.until(delay_ns)
            await self._deliver(item)


Inbound = dict[str, Any] | bytes


class _Link:
    """A connection to one service: hello exchange, impaired send and receive."""

    def __init__(
        self,
        service: str,
        url: str,
        impairment: Impairment,
        ctx: SessionContext,
        intercept: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        self.service = service
        self.url = url
        self.backend = f"remote-{service}"
        self._clock = ctx.clock
        self._rate = ctx.sample_rate
        self._ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._error: BackendError | None = None
        self.hello: dict[str, Any] = {}
        self._inbox: asyncio.Queue[Inbound | BackendError] = asyncio.Queue()
        self._up: _Delayed[str | bytes] = _Delayed(self._clock, DelayModel(impairment, "up"), self._send_now)
        self._down: _Delayed[Inbound | BackendError] = _Delayed(
            self._clock, DelayModel(impairment, "down"), self._receive_now
        )
        self._tasks: list[asyncio.Task[None]] = []
        # Takes messages that are not replies to a request (ASR partials) as they arrive.
        self._intercept = intercept
        # Queued first, so it leaves first: anything sent before the connection
        # is up (audio fed at session start) waits behind it.
        hello = encode(
            "hello",
            protocol=SERVICE_PROTOCOL_VERSION,
            service=service,
            sample_rate=self._rate,
            software=f"vlt/{__version__}",
        )
        self._up.put(hello)

    def start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(c) for c in (self._connect(), self._up.run(), self._down.run())]

    # -- sending -------------------------------------------------------------

    def send(self, message: str | bytes) -> None:
        """Queue a frame upstream; it leaves after its delay, once connected."""
        self.start()
        self._up.put(message)

    async def _send_now(self, message: str | bytes) -> None:
        await self._connected.wait()
        if self._ws is None:
            return  # connecting failed: the error is waiting in the inbox
        try:
            await self._ws.send(message)
        except ConnectionClosed as exc:
            self._fail(f"connection lost while sending ({exc})")

    # -- receiving -----------------------------------------------------------

    async def recv(self) -> Inbound:
        """The next message from the service (after its delay); raises :class:`BackendError`."""
        self.start()
        item = await self._inbox.get()
        if isinstance(item, BackendError):
            self._inbox.put_nowait(item)  # every later call fails the same way
            raise item
        return item

    async def _receive_now(self, item: Inbound | BackendError) -> None:
        if isinstance(item, dict) and self._intercept is not None and self._intercept(item):
            return
        self._inbox.put_nowait(item)

    # -- the connection ------------------------------------------------------

    async def _connect(self) -> None:
        try:
            ws = await connect(
                self.url, compression=None, open_timeout=CONNECT_TIMEOUT_S, max_size=_MAX_MESSAGE_BYTES
            )
        except InvalidURI:
            return self._fail("not a websocket URL (expected ws://host:port)", connected=False)
        except (OSError, TimeoutError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            return self._fail(f"cannot connect: {reason}", connected=False)
        except InvalidHandshake as exc:
            return self._fail(f"did not accept a websocket ({exc})", connected=False)
        self._ws = ws
        self._connected.set()
        try:
            async for data in ws:
                if isinstance(data, bytes):
                    self._down.put(data)
                    continue
                message = decode(data)
                if message["type"] == "hello":
                    self._check_hello(message)
                elif message["type"] == "error" and "id" not in message:
                    self._fail(f"service error {message['code']}: {message['message']}")
                else:
                    self._down.put(message)
            self._fail(f"service closed the connection ({ws.close_code} {ws.close_reason})".strip())
        except ConnectionClosed as exc:
            self._fail(f"connection lost ({exc})")
        except ProtocolError as exc:
            self._fail(f"broke the service protocol: {exc}")

    def _check_hello(self, message: dict[str, Any]) -> None:
        if message["protocol"] != SERVICE_PROTOCOL_VERSION or message["service"] != self.service:
            self._fail(
                f"is a {message['service']!r} service speaking protocol {message['protocol']}; "
                f"expected {self.service!r}, protocol {SERVICE_PROTOCOL_VERSION}"
            )
        elif message["sample_rate"] != self._rate:
            self._fail(f"offers {message['sample_rate']} Hz audio; the session needs {self._rate} Hz")
        else:
            self.hello = message
            log.debug("%s: connected to %s (%s)", self.backend, self.url, message.get("stage"))

    def _fail(self, reason: str, *, connected: bool = True) -> None:
        """Record the first failure; it reaches the stage after the downstream delay."""
        if self._error is not None:
            return
        self._error = BackendError(self.backend, reason, url=self.url)
        if connected:
            self._down.put(self._error)
        else:
            self._inbox.put_nowait(self._error)  # nothing was on the wire: no delay to model
        self._connected.set()

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._ws is not None:
            await self._ws.close()


class RemoteASR(PartialTranscripts, ASRStats, Closable):
    """The ASR of a ``vlt serve asr`` service: audio streams up, finals come down.

    Partials the service sends (if its stage makes them) are offered to the
    session through ``poll_partial``, and a final's ``stats`` become
    ``last_stats``, as if the stage ran in-process.
    """

    def __init__(self, config: RemoteASRConfig, ctx: SessionContext) -> None:
        impairment = Impairment(config.delay_ms, config.jitter_ms, config.seed)
        self._link = _Link("asr", config.url, impairment, ctx, intercept=self._on_partial)
        self._link.start()
        self._ids = itertools.count(1)
        self._partial: str | None = None
        self.last_stats: dict[str, Any] | None = None
        """What the service's stage reported about the last finalize, if anything."""

    def feed(self, pcm: PCM, first_sample: int) -> None:
        # The service counts samples itself: the stream is contiguous from 0.
        del first_sample
        self._link.send(pcm_to_bytes(pcm))

    def poll_partial(self) -> str | None:
        """The latest partial transcript if a new one arrived since the last poll."""
        partial, self._partial = self._partial, None
        return partial

    def _on_partial(self, message: dict[str, Any]) -> bool:
        if message["type"] != "partial":
            return False
        self._partial = message["text"]
        return True

    async def finalize(self, end_sample: int, hint: Script | None) -> str:
        request_id = next(self._ids)
        self._link.send(encode("finalize", id=request_id, end_sample=end_sample, hint=script_to_dict(hint)))
        while True:
            message = await self._link.recv()
            if isinstance(message, bytes):
                raise BackendError(self._link.backend, "sent audio to an ASR client", url=self._link.url)
            kind = message["type"]
            if kind == "error" and message.get("id", request_id) == request_id:
                raise BackendError(self._link.backend, message["message"], url=self._link.url)
            if kind == "final" and message["id"] == request_id:
                stats = message.get("stats")
                self.last_stats = stats if isinstance(stats, dict) else None
                text: str = message["text"]
                return text
            # A final for an older request (its turn was cancelled) is stale.

    async def aclose(self) -> None:
        await self._link.aclose()


class RemoteTTS(Closable):
    """The TTS of a ``vlt serve tts`` service, which sends audio at the session's rate."""

    def __init__(self, config: RemoteTTSConfig, ctx: SessionContext) -> None:
        impairment = Impairment(config.delay_ms, config.jitter_ms, config.seed)
        # The service resamples to the rate asked for in hello, like a cloud TTS
        # asked for an output format: the session needs its rate before connecting.
        self.sample_rate = ctx.sample_rate
        self._link = _Link("tts", config.url, impairment, ctx)
        self._link.start()
        self._ids = itertools.count(1)
        self._unfinished: int | None = None  # a request abandoned before its done

    async def synthesize(self, text: str) -> AsyncIterator[PCM]:
        await self._skip_unfinished()
        request_id = next(self._ids)
        self._link.send(encode("synthesize", id=request_id, text=text))
        self._unfinished = request_id
        try:
            while True:
                message = await self._link.recv()
                if isinstance(message, bytes):
                    yield bytes_to_pcm(message)
                    continue
                if message["type"] == "error" and message.get("id", request_id) == request_id:
                    self._unfinished = None
                    raise BackendError(self._link.backend, message["message"], url=self._link.url)
                if message["type"] == "done" and message["id"] == request_id:
                    self._unfinished = None
                    return
        finally:
            if self._unfinished == request_id:
                # Abandoned (barge-in): stop the service; its remaining audio,
                # up to the done, is skipped before the next request's.
                self._link.send(encode("cancel", id=request_id))

    async def _skip_unfinished(self) -> None:
        while self._unfinished is not None:
            message = await self._link.recv()
            ended = isinstance(message, dict) and message["type"] in ("done", "error")
            if ended and isinstance(message, dict) and message.get("id") == self._unfinished:
                self._unfinished = None

    async def aclose(self) -> None:
        await self._link.aclose()
