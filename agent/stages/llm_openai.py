"""Stage kind ``openai``: any OpenAI-compatible streaming chat-completions server.

One ``httpx.AsyncClient`` per stage instance (one per agent session), so the
connection to the provider is reused across turns as a real voice agent's
would be; :meth:`OpenAILLM.aclose` closes it when the session ends. The
provider presets, the stage's config and the endpoint resolved from them are
:mod:`agent.stages.openai_endpoint`.

What this module deliberately does **not** do:

* **time anything** — the orchestrator stamps ``llm.request``,
  ``llm.first_chunk``, ``llm.first_token``, every content chunk and
  ``llm.done`` around :meth:`OpenAILLM.stream`; a backend that read a clock
  could only get those numbers wrong;
* **retry** — official SDKs silently retry 408/409/429/5xx with backoff, which
  a latency tool would then report as TTFT. The one exception is a server that
  rejects ``stream_options`` with HTTP 400: the request is repeated once
  without it (before any token exists) and never sent again by this stage;
  the turn's record says so.

Every failure becomes a :class:`~agent.errors.BackendError` naming the backend
(``openai:<provider or host>``), the URL and the HTTP status, with the
server's own message. The API key is read from the environment variable named
by ``api_key_env`` and never appears in a file, a log line or an error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.errors import BackendError, ConfigError
from agent.metrics.redact import add_secret, known_secrets, redact, redact_value
from agent.stages.interfaces import Closable, LLMDelta, LLMRequest, SessionContext
from agent.stages.openai_endpoint import OpenAILLMConfig, resolve
from agent.wire.sse import SSEError, SSEParser

if TYPE_CHECKING:  # httpx is imported when a stage is built, not when the registry loads
    import httpx

__all__ = ["OpenAILLM"]

log = logging.getLogger("vlt.llm.openai")

_ERROR_SNIPPET = 300  # characters of an unparseable body quoted in an error
_DRAIN_LIMIT = 64 * 1024  # bytes read after [DONE] so the connection can be reused


# Top-level usage fields that are token counts; anything else a server puts
# there (SambaNova's throughput and latency figures) is kept as server timing.
_USAGE_TOKEN_FIELDS = frozenset(
    {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
    }
)
# Which server-reported timing is the record's primary ``source`` when several arrive.
_TIMING_PRIORITY = ("groq", "cerebras", "llama.cpp", "vlt-emulator", "usage")


@dataclass
class _Stream:
    """What one response has shown so far (no times: those are the orchestrator's)."""

    content_chunks: int = 0
    finish_reason: str | None = None
    timing: dict[str, dict[str, Any]] = field(default_factory=dict)


class OpenAILLM(Closable):
    """Streaming chat completions from an OpenAI-compatible server."""

    def __init__(self, config: OpenAILLMConfig, ctx: SessionContext) -> None:
        import httpx

        self.config = config
        self.endpoint = resolve(config)
        self.name = self.endpoint.backend
        env = self.endpoint.api_key_env
        self._key = os.environ.get(env, "") if env else ""
        if self.endpoint.key_required and not self._key:
            # Raised while the session builds its stages, so it fails at once, not per turn.
            raise ConfigError(
                f"{self.name} needs an API key: set the environment variable {env}",
                field="llm.api_key_env",
            )
        headers = {"User-Agent": f"vlt/{__version__}", **config.headers}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
            add_secret(self._key)  # so the run folder, logs and stdout mask it too
        # Built here, at session start, so creating the TLS context is not inside turn 0's TTFT.
        # retries=0 is httpx's default, made explicit: a retry would hide in TTFT. A
        # transport of our own also keeps HTTP(S)_PROXY from the environment out of the path.
        self._client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(
                retries=0,
                limits=httpx.Limits(max_keepalive_connections=4, keepalive_expiry=config.keepalive_s),
            ),
            headers=headers,
            timeout=httpx.Timeout(
                connect=config.connect_timeout_s,
                read=config.read_timeout_s,
                write=config.connect_timeout_s,
                pool=config.connect_timeout_s,
            ),
        )
        self._send_usage_option = config.include_usage

    async def aclose(self) -> None:
        """Close the HTTP client (the session calls this when it ends)."""
        await self._client.aclose()

    def body(self, request: LLMRequest) -> dict[str, Any]:
        """The JSON body for ``request``."""
        cfg = self.config
        body: dict[str, Any] = {
            "model": self.endpoint.model,
            "messages": [dict(m) for m in request.messages],
            "stream": True,
            "max_tokens": cfg.max_tokens,
            "temperature": cfg.temperature,
        }
        if self._send_usage_option:
            body["stream_options"] = {"include_usage": True}
        if self.endpoint.emulator:
            # Only the emulator: real providers may reject unknown fields.
            body["vlt"] = {"scripted_reply": request.scripted_reply, "turn": request.turn}
        return body

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMDelta]:
        """Yield one delta per stream event: its text (often empty, e.g. the
        role-only first chunk), usage when reported, and at the end the
        server-reported timing with what the client saw (``client``)."""
        notes: dict[str, Any] = {"connection": "reused"}
        response = await self._open(self.body(request), notes)
        # One byte iterator for the events and the drain after [DONE]: httpx
        # allows a response body to be iterated only once.
        chunks = response.aiter_bytes()
        try:
            state = _Stream()
            async for delta in self._events(response, chunks, state):
                yield delta
            notes["finish_reason"] = state.finish_reason
            # A server may echo the key in any timing field it sends.
            yield LLMDelta(server_timing=redact_value(_server_timing(state.timing, notes), self._secrets()))
            await _drain(chunks)
        finally:
            if isinstance(chunks, AsyncGenerator):  # it is; closed now rather than by the GC
                await chunks.aclose()
            await response.aclose()

    # -- request ------------------------------------------------------------

    async def _open(self, body: dict[str, Any], notes: dict[str, Any]) -> httpx.Response:
        """Send the request; return a 2xx streaming response or raise BackendError."""
        response = await self._post(body, notes)
        if response.status_code == 400 and "stream_options" in body:
            text = await self._read_body(response)
            if "stream_options" not in text and "include_usage" not in text:
                raise self._http_error(response, text)
            # The only retry: nothing has been generated yet, and the record says so.
            self._send_usage_option = False
            notes["stream_options_retry"] = True
            log.warning(
                "%s refused stream_options (HTTP 400): retrying once without it; this session "
                "will not send it again, and token counts will be counted, not server-reported",
                self.name,
            )
            body = {k: v for k, v in body.items() if k != "stream_options"}
            response = await self._post(body, notes)
        if not 200 <= response.status_code < 300:
            raise self._http_error(response, await self._read_body(response))
        return response

    async def _post(self, body: dict[str, Any], notes: dict[str, Any]) -> httpx.Response:
        import httpx

        async def trace(event: str, info: Mapping[str, Any]) -> None:
            # Whether this turn paid for a TCP (and TLS) handshake inside its TTFT.
            if event == "connection.connect_tcp.complete":
                notes["connection"] = "new"

        request = self._client.build_request(
            "POST", self.endpoint.url, json=body, extensions={"trace": trace}
        )
        try:
            return await self._client.send(request, stream=True)
        except httpx.RequestError as exc:
            raise self._transport_error(exc, "before the response") from None

    async def _read_body(self, response: httpx.Response) -> str:
        import httpx

        try:
            await response.aread()
        except httpx.RequestError as exc:
            raise self._transport_error(
                exc, f"reading an HTTP {response.status_code} body", response
            ) from None
        finally:
            await response.aclose()
        return response.text

    # -- response -----------------------------------------------------------

    async def _events(
        self, response: httpx.Response, chunks: AsyncIterator[bytes], state: _Stream
    ) -> AsyncIterator[LLMDelta]:
        import httpx

        content_type = response.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            # Not a stream: an error in a 200, or a server that ignored stream=true.
            text = await self._read_body(response)
            raise self._error(
                _error_message(_json_or_none(text)) or f"server did not stream (content-type {content_type})",
                response,
            )
        parser = SSEParser()
        try:
            async for chunk in chunks:
                for event in parser.feed(chunk):
                    if event.is_done:
                        return
                    if event.event not in ("message", "error"):
                        continue  # a custom event type no OpenAI-compatible client reads
                    yield self._delta(event.data, event.event == "error", state, response)
        except httpx.RequestError as exc:
            raise self._transport_error(exc, _mid_stream(state), response) from None
        except SSEError as exc:
            raise self._error(f"invalid event stream: {exc}", response) from None
        # Lenient about a last "data: [DONE]" missing its blank line; nothing else.
        if any(event.is_done for event in parser.close(flush=True)):
            return
        raise self._error(f"stream truncated: ended without data: [DONE] {_mid_stream(state)}", response)

    def _delta(self, data: str, error_event: bool, state: _Stream, response: httpx.Response) -> LLMDelta:
        payload = _json_or_none(data)
        if not isinstance(payload, dict):
            if error_event:
                raise self._error(f"error event mid-stream: {self._snippet(data)}", response)
            raise self._error(f"malformed JSON in a stream event: {self._snippet(data)!r}", response)
        if error_event or payload.get("error") is not None:
            message = _error_message(payload) or self._snippet(data)
            raise self._error(f"error mid-stream {_mid_stream(state)}: {message}", response)
        text = ""
        choices = payload.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n=1 is requested; other indices would be another reply
            delta = choice.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                text += delta["content"]
            if choice.get("finish_reason"):
                state.finish_reason = str(choice["finish_reason"])
        if text:
            state.content_chunks += 1
        usage = _usage(payload.get("usage"), state, "usage")
        x_groq = payload.get("x_groq")
        groq_usage = _usage(x_groq.get("usage") if isinstance(x_groq, dict) else None, state, "groq")
        if isinstance(payload.get("time_info"), dict):
            state.timing["cerebras"] = _scalars(payload["time_info"])
        if isinstance(payload.get("timings"), dict):
            state.timing["llama.cpp"] = _scalars(payload["timings"])
        if isinstance(payload.get("x_vlt"), dict):  # the emulator's timing model, per stream
            state.timing["vlt-emulator"] = _scalars(payload["x_vlt"])
        return LLMDelta(text=text, usage=usage or groq_usage)

    # -- errors -------------------------------------------------------------

    def _secrets(self) -> tuple[str, ...]:
        return (self._key, *known_secrets()) if self._key else known_secrets()

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets())

    def _snippet(self, text: str) -> str:
        """At most _ERROR_SNIPPET characters of a body, redacted *before* it is cut:
        a cut key no longer matches the key, and its prefix would survive."""
        return self._redact(" ".join(text.split()))[:_ERROR_SNIPPET]

    def _error(self, message: str, response: httpx.Response | None = None) -> BackendError:
        return BackendError(
            self.name,
            self._redact(message),
            url=self._redact(self.endpoint.url),
            status=None if response is None else response.status_code,
        )

    def _http_error(self, response: httpx.Response, text: str) -> BackendError:
        status = response.status_code
        message = _error_message(_json_or_none(text))
        if message is None:
            message = self._snippet(text) or response.reason_phrase or "no body"
        if 300 <= status < 400:
            message += f" (redirected to {response.headers.get('location', '?')}: set base_url to it)"
        if status == 429:
            after = response.headers.get("retry-after")
            message = f"rate limited: {message} (retry-after: {after or 'not given'}; not retried)"
        return self._error(message, response)

    def _transport_error(
        self, exc: httpx.RequestError, when: str, response: httpx.Response | None = None
    ) -> BackendError:
        import httpx

        cfg = self.config
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ConnectTimeout):
            message = f"connect timed out after {cfg.connect_timeout_s:g} s"
        elif isinstance(exc, httpx.ConnectError):
            message = f"cannot connect: {detail}"
        elif isinstance(exc, httpx.ReadTimeout):
            message = f"read timed out: no data for {cfg.read_timeout_s:g} s {when}"
        elif isinstance(exc, httpx.TimeoutException):
            message = f"timed out ({type(exc).__name__}) {when}"
        elif isinstance(exc, httpx.RemoteProtocolError) and response is not None:
            message = f"stream truncated: the connection broke {when} ({detail})"
        else:
            message = f"{type(exc).__name__} {when}: {detail}"
        return self._error(message, response)


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read what follows [DONE] (normally just the end of the chunked body),
    so the connection goes back to the pool for the next turn."""
    import httpx

    read = 0
    with contextlib.suppress(httpx.RequestError):
        async for chunk in chunks:
            read += len(chunk)
            if read > _DRAIN_LIMIT:
                break  # a server still talking after [DONE]: the connection is dropped


def _mid_stream(state: _Stream) -> str:
    return f"after {state.content_chunks} content chunk{'s' if state.content_chunks != 1 else ''}"


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _error_message(payload: Any) -> str | None:
    """The server's message from OpenAI's ``{"error": {"message", "type", "code"}}``
    (or the looser shapes other servers use), or None."""
    if not isinstance(payload, dict):
        return None
    error = payload.get("error", payload)
    if isinstance(error, str):
        return error
    if not isinstance(error, dict):
        return None
    message = error.get("message") or error.get("detail")
    if not isinstance(message, str):
        return None
    extra = [f"{k}={error[k]}" for k in ("type", "code") if error.get(k) not in (None, "")]
    return f"{message} ({', '.join(extra)})" if extra else message


def _scalars(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if isinstance(v, str | int | float | bool) or v is None}


def _usage(obj: Any, state: _Stream, source: str) -> dict[str, int] | None:
    """Token counts from a usage object; timing fields in it go to ``state.timing``."""
    if not isinstance(obj, dict):
        return None
    timing = _scalars({k: v for k, v in obj.items() if k not in _USAGE_TOKEN_FIELDS})
    if timing:
        state.timing[source] = timing
    counts = {k: obj[k] for k in ("prompt_tokens", "completion_tokens") if type(obj.get(k)) is int}
    return counts if "completion_tokens" in counts else None


def _server_timing(timing: dict[str, dict[str, Any]], notes: dict[str, Any]) -> dict[str, Any]:
    """``{"source": <primary>, <its fields>, <other source>: {...}, "client": {...}}``."""
    out: dict[str, Any] = {}
    primary = next((s for s in _TIMING_PRIORITY if s in timing), None)
    if primary is not None:
        out = {"source": primary, **timing[primary]}
        out.update({name: fields for name, fields in timing.items() if name != primary})
    out["client"] = {k: v for k, v in notes.items() if v is not None}
    return out
