"""An OpenAI-compatible LLM server whose timing follows an accelerator profile.

``POST /v1/chat/completions`` (streamed as server-sent events, or one JSON
response), ``GET /v1/models`` and ``GET /health``, served by aiohttp. Any client
— the testbed's own, the official ``openai`` SDK, another framework — can be
pointed at it and sees a server that behaves, in time, like the profile: TTFT
from queueing + prefill + base latency, then tokens at the profile's decode
speed, slowing down as concurrent streams share the emulated accelerator
(:mod:`agent.config.accelerator_timing` has the model; it is the same code the in-process
``emulated`` LLM stage uses).

Time is read and slept on only through the injected :class:`~agent.clock.Clock`,
so the server also runs under virtual time, in-process, and its pacing can be
checked to the nanosecond.

Where each reply's text comes from is a :class:`~agent.server.llm_text_sources.TextSource`
(:mod:`agent.server.llm_text_sources`); requests are checked, and errors
answered, in OpenAI's shape by :mod:`agent.server.chat_request`.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import random
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from agent.clock import Clock, Pacer, utc_now
from agent.config.accelerator_timing import TokenTimer, stream_tokens_per_s, ttft_parts
from agent.config.accelerators import AcceleratorProfile, get_profile
from agent.errors import ConfigError
from agent.server.chat_request import APIError, ChatRequest, decode_body, parse_chat_request
from agent.server.http_site import start_site
from agent.server.llm_text_sources import ScriptedTextSource, TextRequest, TextSource

__all__ = ["EmulatedAccelerator", "Faults", "LLMEmulatorServer"]

log = logging.getLogger("vlt.llm_emulator")

_NS_PER_MS = 1_000_000


# --------------------------------------------------------------------------- the emulated accelerator


class EmulatedAccelerator:
    """Which streams hold one of the accelerator's ``max_batch`` slots, and who waits.

    Slots are handed over first-come first-served: a finishing stream passes
    its slot straight to the longest waiter, so no newcomer can jump the queue.
    """

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self.active = 0
        """Streams in the batch (prefilling or decoding) now."""
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def waiting(self) -> int:
        return sum(not w.done() for w in self._waiters)

    async def acquire(self) -> None:
        if self.active < self.max_batch and not self.waiting:
            self.active += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over just as we gave up: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot changes hands; ``active`` stays the same
                return
        self.active -= 1


# --------------------------------------------------------------------------- faults (for client tests)


@dataclass(frozen=True, slots=True)
class Faults:
    """Misbehaviour on demand, to test clients against what real servers do."""

    status: int | None = None
    """Answer every chat request with this HTTP status (429, 500, 503, ...)."""
    retry_after_s: int | None = None
    """``Retry-After`` header sent with ``status``."""
    reject_stream_options: bool = False
    """400 when a request sends ``stream_options`` (some servers reject it)."""
    error_after_tokens: int | None = None
    """Send ``data: {"error": ...}`` after this many tokens and end the stream."""
    stall_after_tokens: int | None = None
    """Stop sending for ``stall_ms`` after this many tokens (a read timeout)."""
    stall_ms: float = 3_600_000.0
    split_events: bool = False
    """Write each SSE event in two pieces, split inside its JSON, ``split_pause_ms`` apart."""
    split_pause_ms: float = 1.0
    keepalive_comment: bool = False
    """Send a ``: keep-alive`` comment line before the first token."""
    extra_headers: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- the server


class LLMEmulatorServer:
    """``async with LLMEmulatorServer(profile, clock) as server: ... server.base_url``."""

    def __init__(
        self,
        profile: AcceleratorProfile | str,
        clock: Clock,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        text_source: TextSource | None = None,
        tokens_per_chunk: int = 1,
        seed: int = 0,
        faults: Faults | None = None,
        access_log: bool = False,
        max_json_depth: int = 64,
    ) -> None:
        if tokens_per_chunk < 1:
            raise ConfigError(f"must be >= 1, got {tokens_per_chunk}", field="tokens_per_chunk")
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        self.clock = clock
        self.host = host
        self.port = port
        self.text_source: TextSource = text_source or ScriptedTextSource()
        self.tokens_per_chunk = tokens_per_chunk
        self.seed = seed
        self.faults = faults or Faults()
        self.accelerator = EmulatedAccelerator(self.profile.max_batch)
        # Wall-clock stamp for the "created" field only (OpenAI's schema requires one).
        self._created = int(utc_now().timestamp())
        self._ids = itertools.count(1)
        self._access_log = access_log
        #: Deepest JSON nesting a request body may have (checked before parsing): 400 beyond.
        self.max_json_depth = max_json_depth
        self.app = web.Application(middlewares=[self._errors])
        self.app.router.add_post("/v1/chat/completions", self._chat)
        self.app.router.add_get("/v1/models", self._models)
        self.app.router.add_get("/v1/models/{model}", self._model)
        self.app.router.add_get("/health", self._health)
        self._runner: web.AppRunner | None = None

    # ---- lifecycle

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to give an OpenAI client as ``base_url``."""
        return f"{self.url}/v1"

    async def start(self) -> None:
        self._runner, self.port = await start_site(
            self.app,
            self.host,
            self.port,
            access_log=logging.getLogger("vlt.llm_emulator.access") if self._access_log else None,
            # Streams in flight at close are cut short rather than waited for.
            shutdown_timeout=0.1,
        )
        log.info("llm emulator on %s with profile %s", self.url, self.profile.name)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def serve_forever(self) -> None:
        await asyncio.Event().wait()

    async def __aenter__(self) -> LLMEmulatorServer:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ---- plumbing

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every error leaves in OpenAI's shape, including aiohttp's own 404/405/413."""
        try:
            return await handler(request)
        except APIError as exc:
            return exc.response()
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            codes = {404: "unknown_url", 405: "method_not_allowed", 413: "request_too_large"}
            message = exc.reason
            if exc.status in (404, 405):
                message = f"{exc.reason}: {request.method} {request.path}"
            return APIError(exc.status, message, code=codes.get(exc.status)).response()

    def _model_card(self) -> dict[str, Any]:
        return {
            "id": self.profile.name,
            "object": "model",
            "created": self._created,
            "owned_by": "vlt-emulator",
        }

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [self._model_card()]})

    async def _model(self, request: web.Request) -> web.Response:
        if request.match_info["model"] != self.profile.name:
            raise APIError(
                404,
                f"The model '{request.match_info['model']}' does not exist.",
                param="model",
                code="model_not_found",
            )
        return web.json_response(self._model_card())

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "profile": self.profile.name,
                "active_streams": self.accelerator.active,
                "waiting_streams": self.accelerator.waiting,
            }
        )

    # ---- chat completions

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        arrival_ns = self.clock.now_ns()
        chat = parse_chat_request(decode_body(await request.read(), self.max_json_depth))
        faults = self.faults
        if faults.status is not None:
            headers = dict(faults.extra_headers)
            if faults.retry_after_s is not None:
                headers["retry-after"] = str(faults.retry_after_s)
            kind = "rate_limit_exceeded" if faults.status == 429 else "server_error"
            raise APIError(
                faults.status, f"injected HTTP {faults.status}", type=kind, code=kind, headers=headers
            )
        if faults.reject_stream_options and chat.stream_options_given:
            raise APIError(
                400,
                "Unrecognized request argument supplied: stream_options",
                param="stream_options",
                code="unsupported_parameter",
            )
        return await _Completion(self, request, chat, arrival_ns).run()


class _Completion:
    """One chat completion: wait for a slot, plan the first token, pace the rest."""

    def __init__(self, server: LLMEmulatorServer, request: web.Request, chat: ChatRequest, arrival_ns: int):
        self.server = server
        self.request = request
        self.chat = chat
        self.number = next(server._ids)
        self.id = f"chatcmpl-vlt-{self.number}"
        self.model = chat.model or server.profile.name
        self.pacer = Pacer(server.clock, arrival_ns)
        self.response: web.StreamResponse | None = None

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.server._created,
            "model": self.model,
            "system_fingerprint": "vlt-emulator",
            "choices": choices,
        }
        if self.chat.include_usage:
            chunk["usage"] = None  # as OpenAI does: null on every chunk but the last
        chunk.update(extra)
        return chunk

    def _delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return self._chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}])

    async def _send(self, payload: dict[str, Any] | str) -> None:
        assert self.response is not None
        data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
        event = f"data: {data}\n\n".encode()
        faults = self.server.faults
        if faults.split_events and len(event) > 8:
            half = len(event) // 2
            await self.response.write(event[:half])
            pause_ns = round(faults.split_pause_ms * _NS_PER_MS)
            await self.server.clock.sleep_until(self.server.clock.now_ns() + pause_ns)
            event = event[half:]
        await self.response.write(event)

    async def run(self) -> web.StreamResponse:
        server, chat = self.server, self.chat
        profile, accelerator = server.profile, server.accelerator
        turn = chat.turn if chat.turn is not None else self.number - 1
        # Seeded like the in-process stage (seed:turn), so both plan the same schedule.
        rng = random.Random(f"{server.seed}:{turn}") if profile.jitter or profile.ttft_jitter_ms else None
        # Only the wait for a slot is queueing. Receiving and parsing the request is
        # transport, which the profile's base latency already includes; counted again it
        # inflated TTFT (by ~8 ms under a burst of 64 requests on 2 cores: emulator_fidelity.py).
        slot_wait_from_ns = self.pacer.elapsed_ns()
        await accelerator.acquire()
        released = False
        try:
            admitted_ns = self.pacer.elapsed_ns() - slot_wait_from_ns
            active = accelerator.active
            parts = ttft_parts(profile, chat.prompt_tokens, active, rng)
            first_ns = admitted_ns + parts.total_ns
            if chat.stream:
                await self._open_stream()
            decoded = await self._decode(TokenTimer(profile, first_ns, rng), first_ns)
            if decoded is None:  # an injected mid-stream error ended it
                return await self._fail_midway()
            texts, finish_reason, last_ns = decoded
            # Decoding is over: the slot goes to the next stream now, not after our epilogue.
            accelerator.release()
            released = True
            x_vlt = {
                "profile": profile.name,
                "queue_ms": (admitted_ns + parts.queue_ns) / _NS_PER_MS,
                "prefill_ms": parts.prefill_ns / _NS_PER_MS,
                "base_ms": parts.base_ns / _NS_PER_MS,
                "ttft_ms": first_ns / _NS_PER_MS,
                "completion_ms": (last_ns - first_ns) / _NS_PER_MS,
                # Over the stream's own schedule, so contention that came and went is in it.
                "tokens_per_s": round(
                    (len(texts) - 1) * 1e9 / (last_ns - first_ns)
                    if len(texts) > 1 and last_ns > first_ns
                    else stream_tokens_per_s(profile, active),
                    3,
                ),
                "active_streams": active,
            }
            return await self._respond(texts, finish_reason, x_vlt)
        except ConnectionResetError:
            # The client went away mid-stream: nothing left to send it.
            log.debug("%s: client disconnected", self.id)
            return self.response or web.Response(status=499)
        finally:
            if not released:
                accelerator.release()

    async def _open_stream(self) -> None:
        self.response = web.StreamResponse(
            headers={
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
                "x-request-id": self.id,
                **self.server.faults.extra_headers,
            }
        )
        await self.response.prepare(self.request)
        # Real servers open with a role-only delta, before any content.
        await self._send(self._delta({"role": "assistant", "content": ""}))
        if self.server.faults.keepalive_comment:
            await self.response.write(b": keep-alive\n\n")

    async def _decode(self, timer: TokenTimer, first_ns: int) -> tuple[list[str], str, int] | None:
        """Pace the text source's tokens: (tokens, finish reason, last offset); None on an injected error."""
        server, chat, faults = self.server, self.chat, self.server.faults
        texts: list[str] = []
        pending: list[str] = []
        finish_reason = "stop"
        last_ns = first_ns
        source = server.text_source.tokens(TextRequest(chat.messages, chat.scripted_reply, chat.max_tokens))
        try:
            async for token in source:
                if chat.max_tokens is not None and len(texts) >= chat.max_tokens:
                    finish_reason = "length"
                    break
                last_ns = timer.next_ns(server.accelerator.active)
                texts.append(token)
                pending.append(token)
                n = len(texts)
                due = n in (faults.error_after_tokens, faults.stall_after_tokens)
                if len(pending) >= server.tokens_per_chunk or due:
                    await self._emit(pending, last_ns)
                    pending = []
                if n == faults.error_after_tokens:
                    return None
                if n == faults.stall_after_tokens:
                    await self.pacer.until(last_ns + round(faults.stall_ms * _NS_PER_MS))
            if pending:
                await self._emit(pending, last_ns)
        finally:
            await source.aclose()  # stops a model generating past max_tokens
        await self.pacer.until(last_ns)  # an empty reply still takes its TTFT
        return texts, finish_reason, last_ns

    async def _respond(
        self, texts: list[str], finish_reason: str, x_vlt: dict[str, Any]
    ) -> web.StreamResponse:
        prompt_tokens = self.chat.prompt_tokens
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(texts),
            "total_tokens": prompt_tokens + len(texts),
        }
        if self.response is None:
            message = {"role": "assistant", "content": "".join(texts)}
            return web.json_response(
                {
                    "id": self.id,
                    "object": "chat.completion",
                    "created": self.server._created,
                    "model": self.model,
                    "system_fingerprint": "vlt-emulator",
                    "choices": [
                        {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
                    ],
                    "usage": usage,
                    "x_vlt": x_vlt,
                },
                headers={"x-request-id": self.id, **self.server.faults.extra_headers},
            )
        # The timing block rides on the last chunk, as Groq's x_groq and Cerebras' time_info do.
        finish = self._delta({}, finish_reason)
        if self.chat.include_usage:
            await self._send(finish)
            await self._send(self._chunk([], usage=usage, x_vlt=x_vlt))
        else:
            await self._send({**finish, "x_vlt": x_vlt})
        await self._send("[DONE]")
        return await self._finish()

    async def _emit(self, tokens: list[str], offset_ns: int) -> None:
        """Send tokens as one chunk at ``offset_ns`` after arrival (streaming only)."""
        # Encoded before the wait, so the chunk leaves at its time rather than ~0.1 ms
        # later (benchmarks/emulator_fidelity.py measured json.dumps at ~76 µs per chunk here).
        data = None
        if self.response is not None:
            data = json.dumps(self._delta({"content": "".join(tokens)}), separators=(",", ":"))
        await self.pacer.until(offset_ns)
        if data is not None:
            await self._send(data)

    async def _fail_midway(self) -> web.StreamResponse:
        error = APIError(500, "injected mid-stream error", type="server_error", code="server_error")
        if self.response is None:
            return error.response()
        await self._send(error.body())
        return await self._finish()

    async def _finish(self) -> web.StreamResponse:
        assert self.response is not None
        await self.response.write_eof()
        return self.response
