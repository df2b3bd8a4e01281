"""The ``openai`` stage against the accelerator emulator, over real HTTP on loopback.

Two pieces written apart — the client (:mod:`agent.stages.llm_openai`) and the
server (:mod:`agent.server.llm_emulator`) — must agree on the wire: the SSE
stream, usage, the ``x_vlt`` timing block, and every failure the emulator's
``Faults`` can inject. ``tests/test_llm_openai.py`` covers the client against a
byte-scripted server; this file covers it against the real emulator.

Everything runs on the virtual-time loop (``agent.clock.run(main,
virtual=True)``): the sockets are real, but time only moves when nothing is in
flight. So the TTFT the orchestrator would stamp must equal the emulator's
timing model to the nanosecond — a hidden retry, a buffered event or a slow
re-parse in the client would show as a difference — and the whole file runs
in about a second whatever the profile's latencies.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

from agent import clock as clocks
from agent.clock import Clock
from agent.config.accelerator_timing import token_schedule_ns
from agent.config.accelerators import PROFILES
from agent.errors import BackendError
from agent.server.llm_emulator import Faults, LLMEmulatorServer
from agent.server.orchestrator import TurnMarks, TurnResult, stamped
from agent.stages.interfaces import LLMDelta, LLMRequest, SessionContext
from agent.stages.llm import estimate_tokens, tokenize
from agent.stages.llm_openai import OpenAILLM
from agent.stages.openai_endpoint import OpenAILLMConfig

T = TypeVar("T")
MS = 1_000_000

# A jittered profile on purpose: the seeded draws (seed:turn) must agree end to end.
PROFILE = PROFILES["groq-llama-3.3-70b"]
SEED = 11
REPLY = "Sure, I can help with that. Your table for two is booked for seven tonight."
REQUEST = LLMRequest(
    messages=[
        {"role": "system", "content": "You are a voice assistant. Answer briefly."},
        {"role": "user", "content": "Can I get a table for two at seven?"},
    ],
    turn=4,
    scripted_reply=REPLY,
)
TOKENS = tokenize(REPLY)
PROMPT_TOKENS = sum(estimate_tokens(m["content"]) for m in REQUEST.messages)


def schedule(turn: int = REQUEST.turn) -> list[int]:
    """When the emulator's model says each token leaves, from the request (ns)."""
    rng = random.Random(f"{SEED}:{turn}")  # how the emulator seeds a turn
    return token_schedule_ns(PROFILE, len(TOKENS), prompt_tokens=PROMPT_TOKENS, rng=rng)


# --------------------------------------------------------------------------- harness


@dataclass
class Turn:
    """One turn as the orchestrator records it; times are ns after ``llm.request``."""

    marks: dict[str, int]
    result: TurnResult
    text: str = ""
    error: BackendError | None = None

    @property
    def chunk_ns(self) -> list[int]:
        return self.result.chunk_ns


async def orchestrated(llm: OpenAILLM, request: LLMRequest, clock: Clock) -> Turn:
    """Consume a stream exactly as ``agent.server.orchestrator.respond`` does (same
    stamps, same wrappers), minus the chunker and TTS, which add no LLM timing."""
    marks = TurnMarks(clock, request.turn)
    result = TurnResult()
    text: list[str] = []
    error = None
    marks.stamp("llm.request")
    chunks = stamped(llm.stream(request), marks, "llm.first_chunk")
    stream = stamped(chunks, marks, "llm.first_token", "llm.done", lambda d: bool(d.text))
    try:
        async for delta in stream:
            _record(delta, result, marks, text)
    except BackendError as exc:
        error = exc
        marks.stamp("llm.failed")
    start = marks.marks["llm.request"]
    result.chunk_ns = [t - start for t in result.chunk_ns]
    result.phrases = ["".join(text)]  # what stats() counts tokens in when usage is missing
    return Turn({k: v - start for k, v in marks.marks.items()}, result, "".join(text), error)


def _record(delta: LLMDelta, result: TurnResult, marks: TurnMarks, text: list[str]) -> None:
    if delta.usage is not None:
        result.usage = delta.usage
    if delta.server_timing is not None:
        result.server_timing = delta.server_timing
    if delta.text:
        result.token_chunks += 1
        result.chunk_ns.append(marks.now_ns())
        text.append(delta.text)


@dataclass
class Seen:
    """What reached the emulator: each chat request's JSON body, in order."""

    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)


def against_emulator(
    faults: Faults | None,
    body: Callable[[OpenAILLM, Clock], Awaitable[T]],
    **settings: Any,
) -> tuple[T, Seen]:
    """Run ``body(llm, clock)`` with an ``openai`` stage pointed at an in-process emulator,
    both on one virtual-time loop."""
    seen = Seen()

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Counted at the server, so a retry the client might hide cannot go unseen.
        if request.path.endswith("/chat/completions"):
            seen.bodies.append(json.loads(await request.read()))  # aiohttp caches the body
        return await handler(request)

    async def main(clock: Clock) -> T:
        server = LLMEmulatorServer(PROFILE, clock, seed=SEED, faults=faults)
        server.app.middlewares.append(record)  # before start(), which freezes the app
        async with server:
            seen.url = server.base_url + "/chat/completions"
            config = OpenAILLMConfig(provider="vlt-emulator", base_url=server.base_url, **settings)
            llm = OpenAILLM(config, SessionContext(clock=clock, sample_rate=16000, frame_samples=320))
            try:
                return await body(llm, clock)
            finally:
                await llm.aclose()

    return clocks.run(main, virtual=True), seen


def one_turn(faults: Faults | None = None, **settings: Any) -> tuple[Turn, Seen]:
    return against_emulator(faults, lambda llm, clock: orchestrated(llm, REQUEST, clock), **settings)


def failed(turn: Turn, seen: Seen, status: int | None) -> BackendError:
    """The turn's BackendError, checked to name the backend, URL and status."""
    assert turn.error is not None, turn
    exc = turn.error
    assert (exc.backend, exc.url, exc.status) == ("openai:vlt-emulator", seen.url, status)
    assert "llm.done" not in turn.marks
    return exc


# --------------------------------------------------------------------------- a normal stream


def test_normal_stream_text_usage_timing_and_exact_ttft() -> None:
    async def two_turns(llm: OpenAILLM, clock: Clock) -> list[Turn]:
        later = dataclasses.replace(REQUEST, turn=5)
        return [await orchestrated(llm, REQUEST, clock), await orchestrated(llm, later, clock)]

    (first, second), seen = against_emulator(None, two_turns)
    for turn, expected in ((first, schedule(4)), (second, schedule(5))):
        assert turn.error is None
        assert turn.text == REPLY  # the scripted reply, passed through the request's vlt field
        assert turn.marks["llm.first_chunk"] == 0  # the role-only delta, at once on an idle accelerator
        assert turn.marks["llm.first_token"] == expected[0]  # TTFT: the model's, to the nanosecond
        assert turn.chunk_ns == expected  # and every token after it (ITL)
        assert turn.marks["llm.done"] == expected[-1]  # finish, usage and [DONE] follow the last token
        stats = turn.result.stats()
        assert (stats["output_tokens"], stats["token_source"]) == (len(TOKENS), "usage")  # from the server
        assert stats["prompt_tokens"] == PROMPT_TOKENS
        assert stats["content_chunks"] == len(TOKENS)  # one token per SSE chunk
        timing = stats["server_timing"]
        assert (timing["source"], timing["profile"], timing["active_streams"]) == (
            "vlt-emulator",
            PROFILE.name,
            1,
        )
        assert round(timing["ttft_ms"] * MS) == expected[0]  # the server's plan, next to what the client saw
        assert timing["queue_ms"] == 0
    assert first.result.server_timing is not None and second.result.server_timing is not None
    assert first.result.server_timing["client"] == {"connection": "new", "finish_reason": "stop"}
    assert second.result.server_timing["client"]["connection"] == "reused"
    assert [b["vlt"] for b in seen.bodies] == [
        {"scripted_reply": REPLY, "turn": 4},
        {"scripted_reply": REPLY, "turn": 5},
    ]
    assert all(b["stream_options"] == {"include_usage": True} for b in seen.bodies)


def test_sse_events_split_mid_json_across_writes() -> None:
    # Each event is written in two halves 1 ms apart: the client gets it in two reads
    # and must yield it only when complete — so every arrival is exactly 1 ms late.
    turn, _ = one_turn(Faults(split_events=True, split_pause_ms=1.0))
    expected = schedule()
    assert turn.error is None and turn.text == REPLY
    assert turn.marks["llm.first_chunk"] == 1 * MS
    assert turn.marks["llm.first_token"] == expected[0] + 1 * MS
    assert turn.chunk_ns == [t + 1 * MS for t in expected]
    assert turn.result.usage == {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": len(TOKENS)}


# --------------------------------------------------------------------------- the one retry


def test_include_usage_refused_is_retried_exactly_once() -> None:
    async def two_turns(llm: OpenAILLM, clock: Clock) -> list[Turn]:
        later = dataclasses.replace(REQUEST, turn=5)
        return [await orchestrated(llm, REQUEST, clock), await orchestrated(llm, later, clock)]

    (first, second), seen = against_emulator(Faults(reject_stream_options=True), two_turns)
    # 400 to stream_options, the same request once without it, and never sent again.
    assert ["stream_options" in b for b in seen.bodies] == [True, False, False]
    for turn, expected in ((first, schedule(4)), (second, schedule(5))):
        assert turn.error is None and turn.text == REPLY
        # On loopback in virtual time the refused round trip costs nothing; over a
        # network it would be inside this TTFT, which is why the record says so.
        assert turn.marks["llm.first_token"] == expected[0]
        stats = turn.result.stats()
        assert turn.result.usage is None  # no stream_options, so no usage chunk: tokens counted
        assert (stats["output_tokens"], stats["token_source"]) == (len(TOKENS), "counted")
        assert stats["server_timing"]["source"] == "vlt-emulator"  # x_vlt rides on the finish chunk
    assert first.result.server_timing is not None and second.result.server_timing is not None
    assert first.result.server_timing["client"]["stream_options_retry"] is True
    assert "stream_options_retry" not in second.result.server_timing["client"]


# --------------------------------------------------------------------------- failures


def test_mid_stream_error_names_backend_and_message() -> None:
    turn, seen = one_turn(Faults(error_after_tokens=3))
    exc = failed(turn, seen, 200)
    assert "error mid-stream after 3 content chunks" in exc.reason
    assert "injected mid-stream error" in exc.reason and "server_error" in exc.reason
    assert str(exc).startswith("openai:vlt-emulator")
    assert turn.text == "".join(TOKENS[:3])  # what came before the error was delivered
    assert turn.chunk_ns == schedule()[:3]
    assert turn.marks["llm.failed"] == schedule()[2]  # the error follows the third token at once
    assert len(seen.bodies) == 1


def test_429_reports_retry_after_and_is_not_retried() -> None:
    turn, seen = one_turn(Faults(status=429, retry_after_s=7))
    exc = failed(turn, seen, 429)
    assert "rate limited: injected HTTP 429" in exc.reason
    assert "(retry-after: 7; not retried)" in exc.reason
    assert "llm.first_chunk" not in turn.marks and turn.marks["llm.failed"] == 0
    assert len(seen.bodies) == 1


def test_500_reports_the_status_and_is_not_retried() -> None:
    turn, seen = one_turn(Faults(status=500))
    exc = failed(turn, seen, 500)
    assert "injected HTTP 500" in exc.reason and "server_error" in exc.reason
    assert "HTTP 500" in str(exc)
    assert len(seen.bodies) == 1


def test_read_timeout_when_the_stream_stalls() -> None:
    # The emulator stalls (an hour) after two tokens; the stage's read timeout is 0.5 s.
    turn, seen = one_turn(Faults(stall_after_tokens=2, keepalive_comment=True), read_timeout_s=0.5)
    exc = failed(turn, seen, 200)
    assert "read timed out: no data for 0.5 s after 2 content chunks" in exc.reason
    assert turn.text == "".join(TOKENS[:2])
    assert turn.marks["llm.failed"] == schedule()[1] + 500 * MS  # 0.5 s after the last read, exactly
    assert len(seen.bodies) == 1
