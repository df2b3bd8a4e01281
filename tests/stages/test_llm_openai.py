"""The ``openai`` LLM stage against a scripted HTTP server on loopback.

The server is hand-written on ``asyncio.start_server`` because these tests need
byte-level control that a framework would hide: chunked transfer encoding with
SSE events split in the middle of their JSON, keep-alive comments, CRLF line
endings, a connection dropped mid-body, a request that is never answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest

from agent import clock as clocks
from agent.config.scenario import load_scenario
from agent.errors import BackendError, ConfigError
from agent.jobs.runner import run_scenario
from agent.stages.interfaces import LLMDelta, LLMRequest, SessionContext
from agent.stages.llm_openai import OpenAILLM
from agent.stages.openai_endpoint import PRESETS, OpenAILLMConfig, resolve
from agent.stages.pipeline import load_pipeline, parse_pipeline
from tests.conftest import PIPELINES

SECRET = "sk-vlt-test-0123456789abcdef"
HOSTED = ("groq", "cerebras", "sambanova", "together", "fireworks", "openai")
REQUEST = LLMRequest(
    messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}],
    turn=3,
    scripted_reply="Hello there!",
)


# -- the scripted server -------------------------------------------------------


@dataclass
class Reply:
    """One scripted HTTP response, its body sent in chunked transfer encoding."""

    status: int = 200
    chunks: list[bytes] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/event-stream"
    end: bool = True
    """Send the terminating zero-length chunk; False drops the connection mid-body."""
    hang: bool = False
    """Read the request and never answer."""
    stall: bool = False
    """Send the chunks, then neither more nor the end."""
    keepalive_ms: float | None = None
    """While stalled, send an SSE ``: keep-alive`` comment this often (so reads never time out)."""


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class ScriptedServer:
    """An HTTP/1.1 server on 127.0.0.1 that answers requests with scripted replies, in order."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[Seen] = []
        self.connections = 0
        self.open_connections = 0
        self._release = asyncio.Event()
        self._idle = asyncio.Event()  # set while no connection is open
        self._idle.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    def url(self, path: str = "/v1") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def wait_all_closed(self, timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            await self._idle.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_connections += 1
        self._idle.clear()
        self._writers.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_connections -= 1
            if not self.open_connections:
                self._idle.set()
            self._writers.discard(writer)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection should end."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False  # the client closed its (idle, keep-alive) connection
        request_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines if x)}
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append(Seen(request_line.split()[1], headers, json.loads(raw)))
        reply = self.replies.pop(0) if self.replies else Reply(500, [b'{"error": "no scripted reply"}'])
        if reply.hang:
            await reader.read(1)  # returns when the client (or __aexit__) closes the connection
            return False
        reason = HTTPStatus(reply.status).phrase
        out = [f"HTTP/1.1 {reply.status} {reason}", "Transfer-Encoding: chunked"]
        content_type = reply.content_type if reply.status < 400 else "application/json"
        out += [f"Content-Type: {content_type}", *(f"{k}: {v}" for k, v in reply.headers.items())]
        writer.write(("\r\n".join(out) + "\r\n\r\n").encode())
        for chunk in reply.chunks:
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0)  # let each chunk go out on its own
        if reply.stall:
            if reply.keepalive_ms is not None:
                comment = b": keep-alive\n\n"
                while not reader.at_eof() and not self._release.is_set():
                    writer.write(f"{len(comment):x}\r\n".encode() + comment + b"\r\n")
                    await writer.drain()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(reply.keepalive_ms / 1000):
                            await reader.read(1)
                return False
            await reader.read(1)  # returns when the client (or __aexit__) closes the connection
            return False
        if not reply.end:
            return False
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


# -- stream builders -----------------------------------------------------------


def event(payload: Any, newline: str = "\n") -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}{newline}{newline}".encode()


def chunk(
    content: str | None = None, *, role: str | None = None, finish: str | None = None
) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def usage_chunk(prompt: int, completion: int, **extra: Any) -> dict[str, Any]:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return {"id": "chatcmpl-1", "choices": [], "usage": {**usage, **extra}}


def split_every(data: bytes, size: int) -> list[bytes]:
    """Cut a byte string into reads that fall anywhere, mid-JSON included."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def ok_stream(*words: str, prompt: int = 12, extra_final: dict[str, Any] | None = None) -> bytes:
    final = {**chunk(finish="stop"), **(extra_final or {})}
    return b"".join(
        [
            event(chunk("", role="assistant")),  # the role-only first delta
            *(event(chunk(w)) for w in words),
            event(final),
            event(usage_chunk(prompt, len(words))),
            event("[DONE]"),
        ]
    )


def error_reply(status: int, message: str, **headers: str) -> Reply:
    body = {"error": {"message": message, "type": "server_error", "param": None, "code": "boom"}}
    return Reply(status, [json.dumps(body).encode()], headers)


# -- helpers -------------------------------------------------------------------


def ctx() -> SessionContext:
    return SessionContext(clock=clocks.MonotonicClock(), sample_rate=16000, frame_samples=320)


def make_llm(server: ScriptedServer, **settings: Any) -> OpenAILLM:
    settings.setdefault("base_url", server.url())
    settings.setdefault("model", "test-model")
    return OpenAILLM(OpenAILLMConfig(**settings), ctx())


async def collect(llm: OpenAILLM, request: LLMRequest = REQUEST) -> list[LLMDelta]:
    return [delta async for delta in llm.stream(request)]


async def failure(llm: OpenAILLM) -> BackendError:
    with pytest.raises(BackendError) as info:
        await collect(llm)
    await llm.aclose()
    assert SECRET not in str(info.value)
    return info.value


def text_of(deltas: list[LLMDelta]) -> str:
    return "".join(d.text for d in deltas)


def last(deltas: list[LLMDelta], attr: str) -> Any:
    return next(getattr(d, attr) for d in reversed(deltas) if getattr(d, attr) is not None)


@pytest.fixture
def groq_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("GROQ_API_KEY", SECRET)
    return SECRET


# -- streaming -----------------------------------------------------------------

GROQ_FINAL = {
    "x_groq": {
        "id": "req_1",
        "usage": {
            "queue_time": 0.012,
            "prompt_tokens": 12,
            "prompt_time": 0.003,
            "completion_tokens": 3,
            "completion_time": 0.01,
            "total_tokens": 15,
            "total_time": 0.013,
        },
    }
}


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
async def test_stream_split_mid_json_with_keepalives(groq_key: str, newline: str) -> None:
    data = b": keep-alive\n\n" + ok_stream("Hello", " there", "!", extra_final=GROQ_FINAL)
    data = data.replace(b"\n", newline.encode())
    async with ScriptedServer(Reply(chunks=split_every(data, 7))) as server:
        llm = make_llm(server, provider="groq", base_url=server.url("/openai/v1"))
        deltas = await collect(llm)
        await llm.aclose()
    # One delta per event: the role-only first one is empty, so TTFT skips it.
    assert [d.text for d in deltas[:5]] == ["", "Hello", " there", "!", ""]
    assert text_of(deltas) == "Hello there!"
    assert last(deltas, "usage") == {"prompt_tokens": 12, "completion_tokens": 3}
    assert last(deltas, "server_timing") == {
        "source": "groq",
        "queue_time": 0.012,
        "prompt_time": 0.003,
        "completion_time": 0.01,
        "total_time": 0.013,
        "client": {"connection": "new", "finish_reason": "stop"},
    }
    (seen,) = server.requests
    assert seen.path == "/openai/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {SECRET}"
    assert seen.headers["user-agent"].startswith("vlt/")
    assert seen.body == {
        "model": "test-model",
        "messages": list(REQUEST.messages),
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 150,
        "temperature": 0.7,
    }


async def test_connection_is_reused_across_turns() -> None:
    async with ScriptedServer(Reply(chunks=[ok_stream("a")]), Reply(chunks=[ok_stream("b")])) as server:
        llm = make_llm(server)
        first, second = await collect(llm), await collect(llm)
        await llm.aclose()
        await server.wait_all_closed()
    assert (text_of(first), text_of(second)) == ("a", "b")
    assert last(first, "server_timing")["client"]["connection"] == "new"
    assert last(second, "server_timing")["client"]["connection"] == "reused"
    assert server.connections == 1
    assert "authorization" not in server.requests[0].headers  # no key configured, none sent


CEREBRAS_TIME_INFO = {"queue_time": 0.001, "prompt_time": 0.002, "completion_time": 0.02, "total_time": 0.03}
LLAMACPP_TIMINGS = {"prompt_n": 9, "prompt_ms": 41.5, "predicted_n": 2, "predicted_per_second": 100.0}
EMULATOR_X_VLT = {"profile": "groq-llama-70b", "queue_ms": 0.0, "ttft_ms": 200.0, "active_streams": 1}


@pytest.mark.parametrize(
    ("final", "expected"),
    [
        ({"time_info": CEREBRAS_TIME_INFO}, {"source": "cerebras", **CEREBRAS_TIME_INFO}),
        ({"timings": LLAMACPP_TIMINGS}, {"source": "llama.cpp", **LLAMACPP_TIMINGS}),
        ({"x_vlt": EMULATOR_X_VLT}, {"source": "vlt-emulator", **EMULATOR_X_VLT}),
    ],
    ids=["cerebras", "llamacpp", "emulator"],
)
async def test_server_timing_is_passed_through(final: dict[str, Any], expected: dict[str, Any]) -> None:
    async with ScriptedServer(Reply(chunks=[ok_stream("x", "y", extra_final=final)])) as server:
        llm = make_llm(server)
        timing = last(await collect(llm), "server_timing")
        await llm.aclose()
    assert {k: v for k, v in timing.items() if k != "client"} == expected


async def test_usage_timing_fields_are_kept() -> None:
    """SambaNova-style: throughput and latency figures inside the usage object."""
    data = event(chunk("hi")) + event(usage_chunk(5, 1, time_to_first_token=0.08)) + event("[DONE]")
    async with ScriptedServer(Reply(chunks=[data])) as server:
        llm = make_llm(server)
        deltas = await collect(llm)
        await llm.aclose()
    assert last(deltas, "usage") == {"prompt_tokens": 5, "completion_tokens": 1}
    assert last(deltas, "server_timing")["source"] == "usage"
    assert last(deltas, "server_timing")["time_to_first_token"] == 0.08


async def test_the_emulator_alone_gets_the_scripted_reply() -> None:
    async with ScriptedServer(Reply(chunks=[ok_stream("ok")]), Reply(chunks=[ok_stream("ok")])) as server:
        emulator = make_llm(server, provider="vlt-emulator", model="")
        await collect(emulator)
        plain = make_llm(server, provider="vllm")
        await collect(plain)
        await emulator.aclose()
        await plain.aclose()
    to_emulator, to_vllm = (seen.body for seen in server.requests)
    assert to_emulator["vlt"] == {"scripted_reply": "Hello there!", "turn": 3}
    assert to_emulator["model"] == "vlt-emulator"  # the preset's default model
    assert "vlt" not in to_vllm


async def test_include_usage_false_sends_no_stream_options() -> None:
    async with ScriptedServer(Reply(chunks=[ok_stream("ok")])) as server:
        llm = make_llm(server, include_usage=False, max_tokens=20, temperature=0.0, headers={"X-Test": "1"})
        await collect(llm)
        await llm.aclose()
    (seen,) = server.requests
    assert "stream_options" not in seen.body
    assert (seen.body["max_tokens"], seen.body["temperature"]) == (20, 0.0)
    assert seen.headers["x-test"] == "1"


# -- the one retry -------------------------------------------------------------


async def test_stream_options_refused_is_retried_once_and_remembered() -> None:
    refused = error_reply(400, "Unrecognized request argument supplied: stream_options")
    replies = (refused, Reply(chunks=[ok_stream("a")]), Reply(chunks=[ok_stream("b")]))
    async with ScriptedServer(*replies) as server:
        llm = make_llm(server)
        first = await collect(llm)
        second = await collect(llm)
        await llm.aclose()
    assert (text_of(first), text_of(second)) == ("a", "b")
    assert ["stream_options" in seen.body for seen in server.requests] == [True, False, False]
    assert last(first, "server_timing")["client"]["stream_options_retry"] is True
    assert "stream_options_retry" not in last(second, "server_timing")["client"]


async def test_stream_options_refused_twice_is_not_retried_again() -> None:
    refused = error_reply(400, "stream_options: include_usage not supported")
    async with ScriptedServer(refused, refused) as server:
        exc = await failure(make_llm(server))
    assert exc.status == 400
    assert len(server.requests) == 2


async def test_other_400_is_not_retried() -> None:
    async with ScriptedServer(error_reply(400, "model `nope` does not exist")) as server:
        exc = await failure(make_llm(server))
    assert exc.status == 400
    assert "model `nope` does not exist" in exc.reason
    assert len(server.requests) == 1


# -- failures ------------------------------------------------------------------


async def test_http_500_reports_the_server_message(groq_key: str) -> None:
    async with ScriptedServer(error_reply(500, "the model crashed")) as server:
        exc = await failure(make_llm(server, provider="groq", base_url=server.url()))
    assert exc.backend == "openai:groq"
    assert exc.status == 500
    assert exc.url == server.url() + "/chat/completions"
    assert "the model crashed" in exc.reason and "server_error" in exc.reason
    assert len(server.requests) == 1  # no retry


async def test_429_reports_retry_after_and_is_not_retried(groq_key: str) -> None:
    reply = error_reply(429, "Rate limit reached for model", **{"retry-after": "7"})
    async with ScriptedServer(reply) as server:
        exc = await failure(make_llm(server, provider="groq", base_url=server.url()))
    assert exc.status == 429
    assert "Rate limit reached" in exc.reason and "retry-after: 7" in exc.reason
    assert len(server.requests) == 1


async def test_mid_stream_error_after_200(groq_key: str) -> None:
    data = event(chunk("", role="assistant")) + event(chunk("Hel"))
    data += event({"error": {"message": "upstream overloaded", "type": "overloaded_error", "code": 503}})
    async with ScriptedServer(Reply(chunks=[data])) as server:
        llm = make_llm(server, provider="groq", base_url=server.url())
        seen: list[str] = []
        with pytest.raises(BackendError) as info:
            async for delta in llm.stream(REQUEST):
                seen.append(delta.text)
        await llm.aclose()
    assert seen == ["", "Hel"]  # what came before the error was delivered
    exc = info.value
    assert exc.status == 200
    assert "upstream overloaded" in exc.reason and "after 1 content chunk" in exc.reason
    assert SECRET not in str(exc)


async def test_malformed_json_event() -> None:
    data = event(chunk("ok")) + b'data: {"choices": [{"delta": {"content": "x"}\n\n' + event("[DONE]")
    async with ScriptedServer(Reply(chunks=[data])) as server:
        exc = await failure(make_llm(server))
    assert "malformed JSON" in exc.reason


async def test_stream_ending_without_done_is_truncated() -> None:
    data = event(chunk("", role="assistant")) + event(chunk("Hi")) + event(chunk(" there"))
    async with ScriptedServer(Reply(chunks=[data])) as server:
        exc = await failure(make_llm(server))
    assert "truncated" in exc.reason and "after 2 content chunks" in exc.reason


async def test_connection_dropped_mid_body_is_truncated() -> None:
    data = event(chunk("Hi")) + b'data: {"choi'
    async with ScriptedServer(Reply(chunks=[data], end=False)) as server:
        exc = await failure(make_llm(server))
    assert "truncated" in exc.reason


async def test_read_timeout_when_the_server_never_answers() -> None:
    async with ScriptedServer(Reply(hang=True)) as server:
        exc = await failure(make_llm(server, read_timeout_s=0.2))
    assert exc.status is None
    assert "read timed out" in exc.reason and "0.2 s" in exc.reason


async def test_cancelling_mid_stream_closes_the_response() -> None:
    """A barge-in cancels the turn while tokens are streaming: the connection is dropped."""
    data = event(chunk("", role="assistant")) + event(chunk("Hel"))
    async with ScriptedServer(Reply(chunks=[data], stall=True)) as server:
        llm = make_llm(server)
        got_text = asyncio.Event()

        async def consume() -> None:
            async for delta in llm.stream(REQUEST):
                if delta.text:
                    got_text.set()

        task = asyncio.create_task(consume())
        await got_text.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.wait_all_closed()
        await llm.aclose()
    assert server.connections == 1


async def test_connect_refused(free_port: int) -> None:
    llm = OpenAILLM(OpenAILLMConfig(base_url=f"http://127.0.0.1:{free_port}/v1", model="m"), ctx())
    exc = await failure(llm)
    assert exc.backend == f"openai:127.0.0.1:{free_port}"
    assert exc.status is None
    assert "cannot connect" in exc.reason


async def test_an_echoed_key_is_redacted(groq_key: str) -> None:
    async with ScriptedServer(error_reply(401, f"Invalid API Key {SECRET}")) as server:
        exc = await failure(make_llm(server, provider="groq", base_url=server.url()))
    assert exc.status == 401
    assert "Invalid API Key ***" in exc.reason


async def test_a_json_answer_to_a_stream_request_is_an_error() -> None:
    body = json.dumps({"error": {"message": "streaming disabled"}}).encode()
    async with ScriptedServer(Reply(chunks=[body], content_type="application/json")) as server:
        exc = await failure(make_llm(server))
    assert exc.status == 200 and "streaming disabled" in exc.reason


# -- configuration -------------------------------------------------------------


def test_missing_key_fails_when_the_stage_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="set the environment variable GROQ_API_KEY"):
        OpenAILLM(OpenAILLMConfig(provider="groq", model="m"), ctx())
    monkeypatch.delenv("MY_VLLM_KEY", raising=False)
    with pytest.raises(ConfigError, match="MY_VLLM_KEY"):  # naming a variable makes the key required
        OpenAILLM(OpenAILLMConfig(provider="vllm", model="m", api_key_env="MY_VLLM_KEY"), ctx())


def test_resolve_presets_and_errors() -> None:
    groq = resolve(OpenAILLMConfig(provider="groq", model="m"))
    assert groq.url == "https://api.groq.com/openai/v1/chat/completions"
    assert (groq.api_key_env, groq.key_required, groq.emulator) == ("GROQ_API_KEY", True, False)
    local = resolve(OpenAILLMConfig(provider="llamacpp-server"))
    assert (local.url, local.key_required) == ("http://127.0.0.1:8080/v1/chat/completions", False)
    assert resolve(OpenAILLMConfig(provider="vlt-emulator")).emulator
    with pytest.raises(ConfigError, match="valid presets: groq, cerebras"):
        resolve(OpenAILLMConfig(provider="nope", model="m"))
    with pytest.raises(ConfigError, match="set base_url"):
        resolve(OpenAILLMConfig(model="m"))
    with pytest.raises(ConfigError, match="needs a model"):
        resolve(OpenAILLMConfig(provider="groq"))
    with pytest.raises(ConfigError, match="api_key_env"):
        resolve(OpenAILLMConfig(provider="groq", model="m", headers={"Authorization": "Bearer x"}))
    with pytest.raises(ConfigError, match="http"):
        resolve(OpenAILLMConfig(base_url="ftp://x/v1", model="m"))


def test_unknown_provider_in_a_pipeline_file_names_the_line() -> None:
    text = _pipeline_toml("http://127.0.0.1:1/v1")
    text = text.replace('kind = "openai"', 'kind = "openai"\nprovider = "nope"')
    with pytest.raises(ConfigError, match=r"x.toml:\d+: llm.provider: must be one of groq"):
        parse_pipeline(text, "x.toml")


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for preset in PRESETS.values():
        if preset.api_key_env:
            monkeypatch.delenv(preset.api_key_env, raising=False)


@pytest.mark.usefixtures("no_keys")
@pytest.mark.parametrize("path", sorted(PIPELINES.glob("*.toml")), ids=lambda p: p.name)
def test_every_pipeline_file_loads_without_keys(path: Path) -> None:
    load_pipeline(path)


@pytest.mark.usefixtures("no_keys")
def test_hosted_pipelines_need_their_key_when_built() -> None:
    for name in HOSTED:
        llm = load_pipeline(PIPELINES / f"{name}.toml").stages["llm"]
        assert (llm.kind, llm.config.provider) == ("openai", name)
        endpoint = resolve(llm.config)
        assert endpoint.key_required
        assert f"export {endpoint.api_key_env}=" in (PIPELINES / f"{name}.toml").read_text()
        with pytest.raises(ConfigError, match=endpoint.api_key_env):
            llm.entry.build(llm.config, ctx())


def test_httpx_is_not_imported_by_the_registry() -> None:
    import subprocess
    import sys

    code = "import sys, agent.stages.pipeline; print('httpx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- end to end: the agent replaying a scenario over the scripted server --------


def _pipeline_toml(base_url: str, extra: str = "", read_timeout_s: float = 10) -> str:
    return f"""
name = "openai-scripted"
[vad]
kind = "oracle"
[asr]
kind = "emulated"
finalize_ms = 20
[llm]
kind = "openai"
base_url = "{base_url}"
model = "scripted"
read_timeout_s = {read_timeout_s}
[tts]
kind = "emulated"
first_audio_ms = 20
{extra}
"""


ONE_TURN = """
name: one-turn
defaults: {pause_ms: 200}
turns:
  - user: "Is the shop open today?"
    reply: "Yes, until six. Anything else?"
"""


def _replay(server: ScriptedServer, scenario: Path, run_dir: Path, **toml: Any) -> Any:
    async def main(clock: clocks.Clock) -> Any:
        async with server:
            pipeline = parse_pipeline(_pipeline_toml(server.url(), **toml))
            result = await run_scenario(load_scenario(scenario), clock, pipeline=pipeline, run_dir=run_dir)
            await server.wait_all_closed()  # the session closed its HTTP client
            return result

    return clocks.run(main, virtual=False)


@pytest.mark.timeout(60)
def test_agent_replay_over_openai_backend(tmp_path: Path, write_scenario: Callable[[str], Path]) -> None:
    words = ["Yes", ",", " until", " six", ".", " Anything", " else", "?"]
    server = ScriptedServer(Reply(chunks=split_every(ok_stream(*words, prompt=40), 40)))
    result = _replay(server, write_scenario(ONE_TURN), tmp_path / "run")
    (record,) = result.records
    assert record["status"] == "ok", record["reason"]
    assert record["reply"] == "Yes, until six. Anything else?"
    assert record["latency_ms"]["llm_ttft"] > 0
    llm = record["llm"]
    assert (llm["token_source"], llm["output_tokens"], llm["prompt_tokens"]) == ("usage", 8, 40)
    assert llm["content_chunks"] == 8
    assert llm["itl_ms"]["n"] == 7
    assert llm["tpot_ms"] is not None and llm["tpot_ms"] >= 0
    assert llm["server_timing"]["client"] == {"connection": "new", "finish_reason": "stop"}
    # The role-only first chunk arrived no later than the first content.
    marks = record["marks_ns"]
    assert marks["llm.request"] <= marks["llm.first_chunk"] <= marks["llm.first_token"]
    (seen,) = server.requests
    assert seen.body["messages"][-1] == {"role": "user", "content": "Is the shop open today?"}
    assert seen.body["messages"][0]["role"] == "system"
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["pipeline"]["llm"]["kind"] == "openai"


@pytest.mark.timeout(60)
def test_agent_replay_records_a_failed_turn(tmp_path: Path, write_scenario: Callable[[str], Path]) -> None:
    server = ScriptedServer(error_reply(500, "the model crashed"))
    result = _replay(server, write_scenario(ONE_TURN), tmp_path / "run")
    (record,) = result.records
    assert record["status"] == "failed"
    assert f"openai:127.0.0.1:{server.port}" in record["reason"]
    assert "HTTP 500" in record["reason"] and "the model crashed" in record["reason"]


# -- deadlines and the reply cap (the pipeline's [limits], issue 16) -------------------------


@pytest.mark.timeout(60)
def test_keepalive_comments_do_not_keep_a_stalled_turn_alive(
    tmp_path: Path, write_scenario: Callable[[str], Path]
) -> None:
    # Comments every 50 ms keep a 300 ms read timeout from ever firing (as 5 s comments
    # kept a 30 s one alive); the content deadline does not count them.
    role_and_two = event(chunk("", role="assistant")) + event(chunk("Yes")) + event(chunk(","))
    server = ScriptedServer(Reply(chunks=[role_and_two], stall=True, keepalive_ms=50))
    limits = "[limits]\nllm_content_ms = 800"
    result = _replay(server, write_scenario(ONE_TURN), tmp_path / "run", extra=limits, read_timeout_s=0.3)
    (record,) = result.records
    assert record["status"] == "failed"
    assert record["reason"] == "llm: no content for 800 ms after 2 content chunks"
    # The marks stamped before the hang reached the record.
    marks = record["marks_ns"]
    for name in ("vad.end_of_turn", "asr.final", "llm.request", "llm.first_chunk", "llm.first_token"):
        assert name in marks, name
    assert "llm.done" not in marks
    waited_ms = (marks["server.response_done"] - marks["llm.first_token"]) / 1e6
    assert 750 < waited_ms < 3000


@pytest.mark.timeout(60)
def test_a_backend_that_never_answers_fails_the_turn_naming_the_llm(
    tmp_path: Path, write_scenario: Callable[[str], Path]
) -> None:
    server = ScriptedServer(Reply(hang=True))
    result = _replay(
        server, write_scenario(ONE_TURN), tmp_path / "run", extra="[limits]\nllm_content_ms = 500"
    )
    (record,) = result.records
    assert record["status"] == "failed"
    assert record["reason"] == "llm: no content within 500 ms (no response yet)"
    assert {"asr.final", "llm.request"} <= set(record["marks_ns"])


@pytest.mark.timeout(60)
def test_a_total_reply_deadline_ends_a_steady_trickle(
    tmp_path: Path, write_scenario: Callable[[str], Path]
) -> None:
    words = [" and"] * 400
    # Content keeps coming (the gap deadline is never reached), but never ends in time.
    trickle = [event(chunk("", role="assistant")), *(event(chunk(w)) for w in words)]
    server = ScriptedServer(Reply(chunks=trickle, stall=True, keepalive_ms=20))
    limits = "[limits]\nllm_content_ms = 5000\nllm_reply_ms = 600\nmax_reply_chars = 100000"
    result = _replay(server, write_scenario(ONE_TURN), tmp_path / "run", extra=limits)
    (record,) = result.records
    assert record["status"] == "failed"
    assert record["reason"] == "llm: not finished within 600 ms (after 400 content chunks)"


@pytest.mark.timeout(60)
def test_a_backend_ignoring_max_tokens_is_cut_at_max_reply_chars(
    tmp_path: Path, write_scenario: Callable[[str], Path]
) -> None:
    words = ["Yes."] + [" more"] * 3000  # 15,004 characters; max_tokens (150) was ignored
    server = ScriptedServer(Reply(chunks=split_every(ok_stream(*words), 4096)))
    result = _replay(
        server, write_scenario(ONE_TURN), tmp_path / "run", extra="[limits]\nmax_reply_chars = 120"
    )
    (record,) = result.records
    assert record["status"] == "ok", record["reason"]
    assert record["llm"]["truncated"] == "max_reply_chars"
    assert 100 <= len(record["reply"]) <= 120
    assert record["llm"]["content_chunks"] == 25  # "Yes.", 23 " more" and the first character of one
    assert "llm.done" in record["marks_ns"]
