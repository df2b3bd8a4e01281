"""The OpenAI-compatible accelerator emulator over real HTTP on loopback.

Shape and errors are checked in real time with a fast profile; timing is
checked in virtual time (server and client on the virtual-time loop), where the
client must see exactly the model's TTFT and gaps — which proves the server
paces with the injected clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import itertools
import json
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest

from agent import clock as clock_mod
from agent.cli import main as vlt_main
from agent.clock import Clock, MonotonicClock
from agent.config.accelerator_timing import stream_tokens_per_s, token_schedule_ns, ttft_ns
from agent.config.accelerators import PROFILES, AcceleratorProfile
from agent.errors import ConfigError, ConnectError
from agent.server.chat_request import parse_chat_request
from agent.server.llm_emulator import Faults, LLMEmulatorServer
from agent.server.llm_text_sources import TextRequest, make_text_source
from agent.stages.interfaces import SessionContext
from agent.stages.llm import REPLY_BANK, EmulatedLLM, EmulatedLLMConfig, bank_reply, estimate_tokens, tokenize

T = TypeVar("T")
MS = 1_000_000
REPLY = "Sure, I can help with that. Your table for two is booked for seven tonight."
MESSAGES = [
    {"role": "system", "content": "You are a voice assistant. Answer briefly."},
    {"role": "user", "content": "Can I get a table for two at seven?"},
]
PROMPT_TOKENS = sum(estimate_tokens(m["content"]) for m in MESSAGES)
# Fast and even, so real-time tests take milliseconds.
FAST = dataclasses.replace(
    PROFILES["groq-llama-3.3-70b"], ttft_ms=2, tokens_per_s=5000, jitter=0, ttft_jitter_ms=0
)


def body(stream: bool = True, usage: bool = True, reply: str | None = REPLY, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"model": FAST.name, "messages": MESSAGES, "stream": stream, **extra}
    if stream and usage:
        out["stream_options"] = {"include_usage": True}
    if reply is not None:
        out["vlt"] = {"scripted_reply": reply, "turn": 1}
    return out


async def sse(client: httpx.AsyncClient, payload: dict[str, Any], clock: Clock) -> list[tuple[int, Any]]:
    """POST and read the event stream: (arrival offset ns, decoded event or "[DONE]") per event."""
    start = clock.now_ns()
    events: list[tuple[int, Any]] = []
    async with client.stream("POST", "/chat/completions", json=payload) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                events.append((clock.now_ns() - start, data if data == "[DONE]" else json.loads(data)))
    return events


def content_times(events: list[tuple[int, Any]]) -> list[int]:
    return [
        t for t, e in events if e != "[DONE]" and e["choices"] and e["choices"][0]["delta"].get("content")
    ]


def text_of(events: list[tuple[int, Any]]) -> str:
    return "".join(
        e["choices"][0]["delta"].get("content") or "" for _, e in events if e != "[DONE]" and e["choices"]
    )


@pytest.fixture
async def server() -> AsyncIterator[LLMEmulatorServer]:
    async with LLMEmulatorServer(FAST, MonotonicClock()) as srv:
        yield srv


@pytest.fixture
async def client(server: LLMEmulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as c:
        yield c


def virtual(body_fn: Callable[[Clock], Awaitable[T]]) -> T:
    return clock_mod.run(body_fn, virtual=True)


# --------------------------------------------------------------------------- shape (real time)


async def test_stream_shape(client: httpx.AsyncClient, server: LLMEmulatorServer) -> None:
    events = await sse(client, body(), server.clock)
    chunks = [e for _, e in events]
    assert chunks[-1] == "[DONE]"
    first, finish, usage_chunk = chunks[0], chunks[-3], chunks[-2]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}  # role-only first delta
    assert first["object"] == "chat.completion.chunk" and first["model"] == FAST.name
    assert len({c["id"] for c in chunks[:-1]}) == 1
    assert text_of(events) == REPLY
    contents = [c["choices"][0]["delta"]["content"] for c in chunks[1:-3]]
    assert contents == list(tokenize(REPLY))  # one token per chunk
    assert finish["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": len(tokenize(REPLY)),
        "total_tokens": PROMPT_TOKENS + len(tokenize(REPLY)),
    }
    assert all(c["usage"] is None for c in chunks[:-2])  # as OpenAI: null until the last chunk
    timing = usage_chunk["x_vlt"]
    assert timing["profile"] == FAST.name and timing["active_streams"] == 1
    assert timing["ttft_ms"] == pytest.approx(timing["queue_ms"] + timing["prefill_ms"] + timing["base_ms"])
    assert timing["prefill_ms"] == pytest.approx(PROMPT_TOKENS * 1000 / 8000)  # prefill at 8,000 tok/s
    assert timing["tokens_per_s"] == 5000


async def test_stream_without_usage_puts_timing_on_the_finish_chunk(
    client: httpx.AsyncClient, server: LLMEmulatorServer
) -> None:
    chunks = [e for _, e in await sse(client, body(usage=False), server.clock)]
    assert chunks[-1] == "[DONE]"
    finish = chunks[-2]
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert "usage" not in finish and finish["x_vlt"]["profile"] == FAST.name
    assert all(c["choices"] for c in chunks[:-1])


async def test_tokens_per_chunk_and_max_tokens() -> None:
    async with (
        LLMEmulatorServer(FAST, MonotonicClock(), tokens_per_chunk=3) as srv,
        httpx.AsyncClient(base_url=srv.base_url) as c,
    ):
        events = await sse(c, body(), srv.clock)
        contents = [e["choices"][0]["delta"]["content"] for _, e in events[1:-3]]
        tokens = tokenize(REPLY)
        assert contents == ["".join(tokens[i : i + 3]) for i in range(0, len(tokens), 3)]
        events = await sse(c, body(max_tokens=4), srv.clock)
        assert text_of(events) == "".join(tokens[:4])
        assert events[-3][1]["choices"][0]["finish_reason"] == "length"
        assert events[-2][1]["usage"]["completion_tokens"] == 4


async def test_non_streaming_response(client: httpx.AsyncClient) -> None:
    response = await client.post("/chat/completions", json=body(stream=False))
    assert response.status_code == 200
    data = response.json()
    assert data["object"] == "chat.completion" and data["id"].startswith("chatcmpl-")
    assert data["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": REPLY},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert data["usage"]["completion_tokens"] == len(tokenize(REPLY))
    assert data["x_vlt"]["completion_ms"] == pytest.approx((len(tokenize(REPLY)) - 1) / 5, abs=1e-6)


async def test_bank_reply_without_script(client: httpx.AsyncClient) -> None:
    response = await client.post("/chat/completions", json=body(stream=False, reply=None))
    content = response.json()["choices"][0]["message"]["content"]
    assert content in REPLY_BANK and content == bank_reply(MESSAGES)


async def test_models_and_health(client: httpx.AsyncClient, server: LLMEmulatorServer) -> None:
    models = (await client.get("/models")).json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == [FAST.name]
    assert (await client.get(f"/models/{FAST.name}")).json()["id"] == FAST.name
    missing = await client.get("/models/gpt-9")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    health = (await client.get(f"{server.url}/health")).json()
    assert health == {"status": "ok", "profile": FAST.name, "active_streams": 0, "waiting_streams": 0}


@pytest.mark.parametrize(
    ("payload", "status", "param", "code"),
    [
        (b"{not json", 400, None, None),
        (b"[1, 2]", 400, None, None),
        (b"\xff\xfe", 400, None, None),
        (b"{}", 400, "messages", "missing_required_parameter"),
        (b'{"messages": "hi"}', 400, "messages", "invalid_type"),
        (b'{"messages": []}', 400, "messages", "empty_array"),
        (b'{"messages": [{"content": "hi"}]}', 400, "messages[0].role", "missing_required_parameter"),
        (b'{"messages": [{"role": "robot", "content": "hi"}]}', 400, "messages[0].role", "invalid_value"),
        (b'{"messages": [{"role": "user", "content": 3}]}', 400, "messages[0].content", "invalid_type"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "stream": "no"}', 400, "stream", "invalid_type"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "model": 7}', 400, "model", "invalid_type"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', 400, "max_tokens",
         "integer_below_min_value"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "n": 2}', 400, "n", "unsupported_value"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "stream_options": {"include_usage": true}}', 400,
         "stream_options", "invalid_value"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "vlt": {"turn": "one"}}', 400, "vlt.turn",
         "invalid_type"),
        # Hostile bodies (issue 16): nesting checked before parsing, not a plain-text 500 with a traceback.
        (b'{"model":"x","messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, None, "json_too_deep"),
        (b"[" * 500_000, 400, None, "json_too_deep"),
        # A lone surrogate is refused by its param instead of aborting the stream mid-body.
        (b'{"messages": [{"role": "user", "content": "hi \\ud800"}]}', 400, "messages[0].content",
         "invalid_value"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "vlt": {"scripted_reply": "\\udfff"}}', 400,
         "vlt.scripted_reply", "invalid_value"),
    ],
)  # fmt: skip
async def test_bad_requests_get_openai_shaped_errors(
    client: httpx.AsyncClient, payload: bytes, status: int, param: str | None, code: str | None
) -> None:
    response = await client.post("/chat/completions", content=payload)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert error["message"]


async def test_a_paired_surrogate_escape_is_ordinary_text(client: httpx.AsyncClient) -> None:
    payload = json.dumps(body(stream=False, reply="Grinning \U0001f600.")).encode()
    assert b"\\ud83d\\ude00" in payload  # json.dumps escapes it as a surrogate pair
    response = await client.post("/chat/completions", content=payload)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Grinning \U0001f600."


def test_bank_reply_takes_a_lone_surrogate() -> None:
    # It used to raise UnicodeEncodeError, failing the turn (or aborting the emulator's stream).
    messages = [{"role": "user", "content": "caf\ud800"}]
    assert bank_reply(messages) in REPLY_BANK
    assert bank_reply(messages) == bank_reply(list(messages))


async def test_unknown_paths_and_methods(client: httpx.AsyncClient) -> None:
    response = await client.post("/completions", json={})
    assert response.status_code == 404
    assert (
        response.json()["error"]["code"] == "unknown_url"
        and "/v1/completions" in response.json()["error"]["message"]
    )
    response = await client.get("/chat/completions")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


def test_content_parts_count_as_text() -> None:
    parts = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]
    chat = parse_chat_request({"messages": [{"role": "user", "content": parts}]})
    assert chat.messages == [{"role": "user", "content": "Hello there"}]
    assert chat.prompt_tokens == estimate_tokens("Hello there")


async def test_openai_sdk_streams_from_it(server: LLMEmulatorServer) -> None:
    openai = pytest.importorskip("openai")
    sdk = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    try:
        stream = await sdk.chat.completions.create(
            model=FAST.name,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"vlt": {"scripted_reply": REPLY, "turn": 0}},
        )
        text, usage, roles = [], None, []
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                roles += [choice.delta.role] if choice.delta.role else []
                text.append(choice.delta.content or "")
        assert "".join(text) == REPLY and roles == ["assistant"]
        assert usage is not None and usage.completion_tokens == len(tokenize(REPLY))
        assert usage.prompt_tokens == PROMPT_TOKENS
        reply = await sdk.chat.completions.create(model=FAST.name, messages=MESSAGES)
        assert reply.choices[0].message.content in REPLY_BANK
        assert [m.id async for m in sdk.models.list()] == [FAST.name]
        with pytest.raises(openai.BadRequestError) as info:
            await sdk.chat.completions.create(model=FAST.name, messages=[])
        assert info.value.code == "empty_array"
    finally:
        await sdk.close()


# --------------------------------------------------------------------------- faults


async def faulty(faults: Faults, payload: dict[str, Any]) -> tuple[httpx.Response, str]:
    async with (
        LLMEmulatorServer(FAST, MonotonicClock(), faults=faults) as srv,
        httpx.AsyncClient(base_url=srv.base_url) as c,
    ):
        response = await c.post("/chat/completions", json=payload)
        return response, response.text


async def test_fault_status_with_retry_after() -> None:
    response, _ = await faulty(Faults(status=429, retry_after_s=3), body())
    assert response.status_code == 429 and response.headers["retry-after"] == "3"
    assert response.json()["error"]["type"] == "rate_limit_exceeded"
    response, _ = await faulty(Faults(status=500), body())
    assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"


async def test_fault_reject_stream_options() -> None:
    response, _ = await faulty(Faults(reject_stream_options=True), body())
    assert response.status_code == 400 and response.json()["error"]["param"] == "stream_options"
    response, _ = await faulty(Faults(reject_stream_options=True), body(usage=False))
    assert response.status_code == 200


async def test_fault_mid_stream_error_and_split_events() -> None:
    _, text = await faulty(Faults(error_after_tokens=3, split_events=True), body())
    events = [json.loads(line[6:]) for line in text.split("\n\n") if line.startswith("data: ")]
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1]) == "".join(
        tokenize(REPLY)[:3]
    )
    assert events[-1] == {
        "error": {
            "message": "injected mid-stream error",
            "type": "server_error",
            "param": None,
            "code": "server_error",
        }
    }
    assert "[DONE]" not in text


def test_fault_stall_triggers_a_client_read_timeout() -> None:
    async def main(clock: Clock) -> int:
        async with (
            LLMEmulatorServer(
                FAST, clock, faults=Faults(stall_after_tokens=2, keepalive_comment=True)
            ) as srv,
            httpx.AsyncClient(base_url=srv.base_url, timeout=httpx.Timeout(5, read=0.5)) as c,
        ):
            start = clock.now_ns()
            lines: list[str] = []
            with pytest.raises(httpx.ReadTimeout):
                async with c.stream("POST", "/chat/completions", json=body()) as response:
                    async for line in response.aiter_lines():
                        lines.append(line)
            assert ": keep-alive" in lines  # a comment line, which clients must skip
            assert text_of([(0, json.loads(x[6:])) for x in lines if x.startswith("data: ")]) == "Sure,"
            return clock.now_ns() - start

    # the read timeout fires 0.5 s after the second token
    assert virtual(main) == 2 * MS + round(PROMPT_TOKENS * 1e9 / 8000) + MS // 5 + 500 * MS


# --------------------------------------------------------------------------- timing (virtual time)


JITTERY = dataclasses.replace(PROFILES["groq-llama-3.3-70b"], jitter=0.2, ttft_jitter_ms=15)


def test_virtual_time_ttft_and_gaps_are_the_models_exactly() -> None:
    async def main(clock: Clock) -> list[tuple[int, Any]]:
        async with (
            LLMEmulatorServer(JITTERY, clock, seed=7) as srv,
            httpx.AsyncClient(base_url=srv.base_url) as c,
        ):
            return await sse(c, body(), clock)

    events = virtual(main)
    times = content_times(events)
    n = len(tokenize(REPLY))
    expected = token_schedule_ns(JITTERY, n, prompt_tokens=PROMPT_TOKENS, rng=random.Random("7:1"))
    assert times == expected  # client-observed, to the nanosecond
    assert events[0][0] == 0  # the role-only delta comes at once on an idle accelerator
    timing = events[-2][1]["x_vlt"]
    assert round(timing["ttft_ms"] * MS) == expected[0]
    # One piece of code used two ways: the in-process stage plans the same schedule.
    stage = EmulatedLLM(
        EmulatedLLMConfig(profile=JITTERY.name, jitter=0.2, ttft_jitter_ms=15, seed=7),
        SessionContext(clock=MonotonicClock(), sample_rate=16000, frame_samples=320),
    )
    assert stage.schedule_ns(n, turn=1, prompt_tokens=PROMPT_TOKENS) == expected


def test_virtual_time_without_jitter_matches_the_profile_numbers() -> None:
    profile = dataclasses.replace(PROFILES["cerebras-llama-3.1-70b"], jitter=0, ttft_jitter_ms=0)

    async def main(clock: Clock) -> list[int]:
        async with (
            LLMEmulatorServer(profile, clock) as srv,
            httpx.AsyncClient(base_url=srv.base_url) as c,
        ):
            return content_times(await sse(c, body(), clock))

    times = virtual(main)
    first = 200e6 + PROMPT_TOKENS * 1e9 / 15_000
    for i, t in enumerate(times):
        assert abs(t - (first + i * 1e9 / 450)) <= 1


CONTENDED = AcceleratorProfile(
    name="contended",
    label="test",
    model="m",
    ttft_ms=50,
    tokens_per_s=100,
    prefill_tokens_per_s=None,
    batch_slowdown=0.1,
    aggregate_tokens_per_s=400,
    max_batch=16,
    source="test",
    date="test",
)


async def concurrent_streams(
    clock: Clock, profile: AcceleratorProfile, n: int
) -> list[list[tuple[int, Any]]]:
    async with (
        LLMEmulatorServer(profile, clock) as srv,
        httpx.AsyncClient(base_url=srv.base_url, limits=httpx.Limits(max_connections=n)) as c,
    ):
        return list(await asyncio.gather(*(sse(c, body(), clock) for _ in range(n))))


def test_eight_concurrent_streams_share_the_accelerator() -> None:
    streams = virtual(lambda clock: concurrent_streams(clock, CONTENDED, 8))
    rate = stream_tokens_per_s(CONTENDED, 8)
    assert rate == 50  # the aggregate cap binds: 400 / 8 (the batch curve alone gives 58.8)
    for events in streams:
        times = content_times(events)
        assert text_of(events) == REPLY
        assert times[0] == 50 * MS  # no queueing cost in this profile: all start together
        assert [b - a for a, b in itertools.pairwise(times)] == [20 * MS] * (len(times) - 1)
        assert events[-2][1]["x_vlt"]["tokens_per_s"] == rate


def test_ttft_grows_with_the_streams_ahead() -> None:
    profile = dataclasses.replace(CONTENDED, queue_ms_per_stream=5)
    streams = virtual(lambda clock: concurrent_streams(clock, profile, 8))
    seen = []
    for events in streams:
        timing = events[-2][1]["x_vlt"]
        k = timing["active_streams"]
        seen.append(k)
        assert content_times(events)[0] == ttft_ns(profile, PROMPT_TOKENS, k) == (50 + 5 * (k - 1)) * MS
    assert sorted(seen) == list(range(1, 9))


def test_beyond_max_batch_requests_wait_for_a_slot() -> None:
    profile = dataclasses.replace(CONTENDED, max_batch=2, aggregate_tokens_per_s=None, batch_slowdown=0)
    streams = virtual(lambda clock: concurrent_streams(clock, profile, 4))
    n = len(tokenize(REPLY))
    one_stream_ns = 50 * MS + (n - 1) * 10 * MS  # TTFT + decode at 100 tok/s
    firsts = sorted(content_times(events)[0] for events in streams)
    assert firsts == [50 * MS, 50 * MS, one_stream_ns + 50 * MS, one_stream_ns + 50 * MS]
    waited = sorted(events[-2][1]["x_vlt"]["queue_ms"] for events in streams)
    assert waited == [0, 0, one_stream_ns / MS, one_stream_ns / MS]


# --------------------------------------------------------------------------- server and CLI plumbing


async def test_busy_port_is_a_one_line_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ConnectError, match=rf"^cannot listen on 127.0.0.1:{port}: port is busy$"):
            await LLMEmulatorServer(FAST, MonotonicClock(), port=port).start()


def test_text_sources() -> None:
    clock = MonotonicClock()
    with pytest.raises(ConfigError, match="unknown text source 'gpt'; valid: scripted, bank, llamacpp"):
        make_text_source("gpt", clock)
    if importlib.util.find_spec("llama_cpp") is None:
        with pytest.raises(ConfigError, match="needs llama-cpp-python"):
            make_text_source("llamacpp", clock)

    async def collect(name: str, scripted: str | None) -> str:
        source = make_text_source(name, clock)
        return "".join([t async for t in source.tokens(TextRequest(MESSAGES, scripted))])

    assert asyncio.run(collect("scripted", "Hi.")) == "Hi."
    assert asyncio.run(collect("scripted", None)) == bank_reply(MESSAGES)
    assert asyncio.run(collect("bank", "Hi.")) == bank_reply(MESSAGES)


def test_stage_adapter_re_paces_any_llm_stage() -> None:
    # The llamacpp text source is this adapter around the llamacpp stage; here around the emulated one.
    from agent.server.llm_text_sources import StageTextSource

    async def main(clock: Clock) -> list[int]:
        ctx = SessionContext(clock=clock, sample_rate=16000, frame_samples=320)
        stage = EmulatedLLM(EmulatedLLMConfig(ttft_ms=0, tokens_per_s=1e9), ctx)
        profile = dataclasses.replace(FAST, ttft_ms=30, tokens_per_s=100, prefill_tokens_per_s=None)
        async with (
            LLMEmulatorServer(profile, clock, text_source=StageTextSource(stage, "emulated")) as srv,
            httpx.AsyncClient(base_url=srv.base_url) as c,
        ):
            events = await sse(c, body(reply=None), clock)
            assert text_of(events) == bank_reply(MESSAGES)
            return content_times(events)

    times = virtual(main)
    assert times[:3] == [30 * MS, 40 * MS, 50 * MS]


def test_cli_unknown_profile_lists_the_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert vlt_main(["serve", "llm-emulator", "--profile", "tpu-v9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vlt: error: profile: unknown accelerator profile 'tpu-v9'; valid: ")
    assert "groq-llama-3.3-70b" in err and "\n" not in err
    assert vlt_main(["serve", "llm-emulator", "--tps", "0"]) == 2
    assert "tokens_per_s: must be > 0" in capsys.readouterr().err
