"""The agent server against raw websocket clients: handshake, errors, close codes, robustness.

Every test talks to a real :class:`AgentServer` on a loopback port, in real
time. Bad sessions are followed by a good one, to show one broken client
cannot take the server down.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from agent.clock import MonotonicClock
from agent.config.scenario import load_scenario
from agent.errors import ConfigError
from agent.jobs.runner import run_scenario
from agent.server.app import MAX_MESSAGE_BYTES, AgentServer
from agent.stages.pipeline import load_pipeline, parse_pipeline
from agent.wire import protocol as p
from tests.conftest import PIPELINES

RATE = 16000
FRAME_MS = 20
FRAME = RATE * FRAME_MS // 1000

ONE_TURN = """\
name: one-turn
defaults:
  pause_ms: 100
  reply_timeout_ms: 10000
turns:
  - user: "Hi there."
    reply: "Hello, sure."
"""


@pytest.fixture
async def server() -> AsyncIterator[AgentServer]:
    async with AgentServer(load_pipeline(PIPELINES / "emulated.toml"), MonotonicClock()) as srv:
        yield srv


def _connect(server: AgentServer) -> Any:
    return connect(server.url, compression=None, open_timeout=5)


async def _recv_message(ws: ClientConnection) -> p.Message:
    """The next text message, skipping any agent audio."""
    async with asyncio.timeout(5):
        while True:
            data = await ws.recv()
            if isinstance(data, str):
                return p.decode(data)


async def _hello(ws: ClientConnection, **fields: Any) -> p.Message:
    await ws.send(p.encode(p.Hello(protocol=p.PROTOCOL_VERSION, **fields)))
    return await _recv_message(ws)


async def _error_then_close(ws: ClientConnection) -> tuple[p.Error, int]:
    """The server's error message, then the close code it closes with."""
    message = await _recv_message(ws)
    assert isinstance(message, p.Error), message
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(5):
            await ws.recv()
    assert info.value.rcvd is not None, "the server must close with a close frame"
    return message, info.value.rcvd.code


async def _assert_serves(server: AgentServer) -> None:
    """A full good session: hello, then ping/pong."""
    async with _connect(server) as ws:
        hello = await _hello(ws, sample_rate=RATE, frame_ms=FRAME_MS)
        assert isinstance(hello, p.Hello)
        await ws.send(p.encode(p.Ping(t0_ns=42)))
        pong = await _recv_message(ws)
        assert isinstance(pong, p.Pong)
        assert pong.t0_ns == 42


def _tone(samples: int, hz: float = 220.0) -> np.ndarray:
    t = np.arange(samples) / RATE
    return (8000 * np.sin(2 * np.pi * hz * t)).astype("<i2")


# -- handshake --------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "frame_ms"), [(16000, 20), (8000, 10), (24000, 40), (48000, 60)])
async def test_hello_is_answered_with_the_same_format_and_a_session_id(
    server: AgentServer, rate: int, frame_ms: int
) -> None:
    async with _connect(server) as ws:
        reply = await _hello(ws, sample_rate=rate, frame_ms=frame_ms, software="test/1")
    assert isinstance(reply, p.Hello)
    assert reply.protocol == p.PROTOCOL_VERSION
    assert (reply.sample_rate, reply.frame_ms) == (rate, frame_ms)
    assert reply.role == "agent"
    assert reply.software.startswith("vlt/")
    assert reply.session
    assert reply.pipeline is not None and reply.pipeline["name"] == "emulated"


async def test_each_session_gets_its_own_id(server: AgentServer) -> None:
    ids = []
    for _ in range(2):
        async with _connect(server) as ws:
            reply = await _hello(ws)
            assert isinstance(reply, p.Hello)
            ids.append(reply.session)
    assert ids[0] != ids[1]


async def test_unsupported_version_closes_with_4001(server: AgentServer) -> None:
    async with _connect(server) as ws:
        await ws.send(json.dumps({"type": "hello", "protocol": 99}))
        error, code = await _error_then_close(ws)
    assert error.code == "unsupported_version"
    assert "99" in error.message
    assert code == p.CLOSE_UNSUPPORTED_VERSION == 4001
    await _assert_serves(server)


@pytest.mark.parametrize("fields", [{"sample_rate": 11025}, {"frame_ms": 25}])
async def test_unsupported_format_closes_with_1003(server: AgentServer, fields: dict[str, int]) -> None:
    async with _connect(server) as ws:
        await ws.send(p.encode(p.Hello(protocol=p.PROTOCOL_VERSION, **fields)))
        error, code = await _error_then_close(ws)
    assert error.code == "unsupported_format"
    assert str(next(iter(fields.values()))) in error.message
    assert code == p.CLOSE_UNSUPPORTED_DATA == 1003
    await _assert_serves(server)


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (b"\x00\x00" * FRAME, "hello_required"),
        (p.encode(p.Ping(t0_ns=1)), "hello_required"),
        ("{not json", "malformed_json"),
        ('{"type": "hello"}', "malformed_message"),
    ],
    ids=["binary", "ping", "bad-json", "no-protocol"],
)
async def test_bad_first_message_closes_with_1002(
    server: AgentServer, first: str | bytes, expected: str
) -> None:
    async with _connect(server) as ws:
        await ws.send(first)
        error, code = await _error_then_close(ws)
    assert error.code == expected
    assert code == p.CLOSE_PROTOCOL_ERROR == 1002
    await _assert_serves(server)


async def test_no_hello_times_out(server: AgentServer) -> None:
    server.limits = dataclasses.replace(server.limits, handshake_timeout_s=0.2)
    async with _connect(server) as ws:
        error, code = await _error_then_close(ws)
    assert error.code == "handshake_timeout"
    assert code == 1002
    await _assert_serves(server)


# -- after the handshake ------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ("{not json", "malformed_json"),
        ('{"type": "teleport"}', "unknown_type"),
        ('["ping"]', "malformed_message"),
        ('{"type": "ping", "t0_ns": "now"}', "malformed_message"),
        (p.encode(p.Pong(t0_ns=1, t1_ns=2, t2_ns=3)), "unexpected_message"),
        (p.encode(p.Hello(protocol=p.PROTOCOL_VERSION)), "unexpected_message"),
        (b"\x00" * (2 * FRAME + 1), "malformed_audio"),  # odd length
        (b"\x00\x00" * (RATE + 1), "malformed_audio"),  # over one second of audio
    ],
    ids=["bad-json", "unknown-type", "non-object", "wrong-type", "pong", "hello-again", "odd", "oversized"],
)
async def test_bad_message_after_hello_closes_with_1002(
    server: AgentServer, frame: str | bytes, expected: str
) -> None:
    async with _connect(server) as ws:
        assert isinstance(await _hello(ws), p.Hello)
        await ws.send(b"\x00\x00" * FRAME)  # a good frame first
        await ws.send(frame)
        error, code = await _error_then_close(ws)
    assert error.code == expected
    assert code == 1002
    await _assert_serves(server)


async def test_message_over_the_size_limit_closes_with_1009(server: AgentServer) -> None:
    async with _connect(server) as ws:
        await _hello(ws)
        await ws.send(b"\x00\x00" * (MAX_MESSAGE_BYTES // 2 + 1))
        with pytest.raises(ConnectionClosed) as info:
            async with asyncio.timeout(5):
                await ws.recv()  # websockets itself refuses it: no error message comes first
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    await _assert_serves(server)


async def test_stage_that_cannot_be_built_closes_with_1011(tmp_path: Path) -> None:
    pipeline = load_pipeline(PIPELINES / "emulated.toml")

    def unavailable(config: Any, ctx: Any) -> Any:
        raise ConfigError("the model is not installed")

    llm = pipeline.stages["llm"]
    broken = dataclasses.replace(llm, entry=dataclasses.replace(llm.entry, build=unavailable))
    pipeline = dataclasses.replace(pipeline, stages={**pipeline.stages, "llm": broken})
    async with AgentServer(pipeline, MonotonicClock()) as srv, _connect(srv) as ws:
        await ws.send(p.encode(p.Hello(protocol=p.PROTOCOL_VERSION)))
        error, code = await _error_then_close(ws)
    assert error.code == "backend_unavailable"
    assert "not installed" in error.message
    assert code == p.CLOSE_INTERNAL_ERROR == 1011


async def test_server_shutdown_closes_sessions_with_1001() -> None:
    srv = AgentServer(load_pipeline(PIPELINES / "emulated.toml"), MonotonicClock())
    await srv.start()
    try:
        async with _connect(srv) as ws:
            await _hello(ws)
            await srv.close()
            with pytest.raises(ConnectionClosed) as info:
                async with asyncio.timeout(5):
                    await ws.recv()
    finally:
        await srv.close()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1001


async def test_unknown_type_error_lists_the_valid_types(server: AgentServer) -> None:
    async with _connect(server) as ws:
        await _hello(ws)
        await ws.send('{"type": "teleport"}')
        error, _ = await _error_then_close(ws)
    assert "teleport" in error.message
    assert "response_done" in error.message


async def test_bye_closes_normally(server: AgentServer) -> None:
    async with _connect(server) as ws:
        await _hello(ws)
        await ws.send(p.encode(p.Bye(reason="done")))
        with pytest.raises(ConnectionClosed) as info:
            async with asyncio.timeout(5):
                await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == p.CLOSE_NORMAL
    await _assert_serves(server)


async def test_client_error_and_unknown_fields_do_not_end_the_session(server: AgentServer) -> None:
    async with _connect(server) as ws:
        await ws.send(json.dumps({"type": "hello", "protocol": p.PROTOCOL_VERSION, "codec": "pcm_s16le"}))
        assert isinstance(await _recv_message(ws), p.Hello)  # the unknown field is ignored
        await ws.send(p.encode(p.Error(code="client_glitch", message="just saying")))
        await ws.send(json.dumps({"type": "ping", "t0_ns": 5, "extra": [1, 2]}))
        pong = await _recv_message(ws)
    assert isinstance(pong, p.Pong) and pong.t0_ns == 5


async def test_ping_pong(server: AgentServer) -> None:
    clock = MonotonicClock()
    async with _connect(server) as ws:
        await _hello(ws)
        for _ in range(5):
            t0 = clock.now_ns()
            await ws.send(p.encode(p.Ping(t0_ns=t0)))
            pong = await _recv_message(ws)
            t3 = clock.now_ns()
            assert isinstance(pong, p.Pong)
            assert pong.t0_ns == t0
            assert pong.t1_ns <= pong.t2_ns
            # Same host, same monotonic clock: the server's times lie within the round trip.
            assert t0 <= pong.t1_ns <= pong.t2_ns <= t3


async def test_ping_echoes_any_t0(server: AgentServer) -> None:
    async with _connect(server) as ws:
        await _hello(ws)
        await ws.send(p.encode(p.Ping(t0_ns=-7)))
        pong = await _recv_message(ws)
    assert isinstance(pong, p.Pong) and pong.t0_ns == -7


# -- turns ----------------------------------------------------------------------------


async def _speak_until_agent_audio(
    ws: ClientConnection, speech_samples: int, reply: str, on_message: Callable[[p.Message], None]
) -> None:
    """Hello, a script for speech at [0, speech_samples), then tone + silence frames at
    real pace until the first agent audio frame arrives."""
    assert isinstance(await _hello(ws, sample_rate=RATE, frame_ms=FRAME_MS), p.Hello)
    script = p.Script(turn=0, speech_start_sample=0, speech_end_sample=speech_samples, text="hi", reply=reply)
    await ws.send(p.encode(script))
    audio = _tone(speech_samples)
    got_audio = asyncio.Event()

    async def receive() -> None:
        async for data in ws:
            if isinstance(data, bytes):
                got_audio.set()
                return
            on_message(p.decode(data))

    receiver = asyncio.create_task(receive())
    loop = asyncio.get_running_loop()
    start = loop.time()
    k = 0
    try:
        async with asyncio.timeout(10):
            while not got_audio.is_set():
                pcm = audio[k * FRAME : (k + 1) * FRAME]
                pcm = np.concatenate((pcm, np.zeros(FRAME - len(pcm), dtype="<i2")))
                await ws.send(pcm.tobytes())
                k += 1
                await asyncio.sleep(max(0.0, start + k * FRAME_MS / 1000 - loop.time()))
    finally:
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)


async def _run_one_turn(server: AgentServer, scenario: Path, run_dir: Path) -> dict[str, Any]:
    result = await run_scenario(load_scenario(scenario), MonotonicClock(), url=server.url, run_dir=run_dir)
    assert result.completed
    [record] = result.records
    return record


@pytest.mark.timeout(60)
async def test_client_killed_mid_turn_leaves_the_server_serving(
    server: AgentServer,
    write_scenario: Callable[[str], Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="vlt.server")
    seen: list[p.Message] = []
    ws = await _connect(server)
    try:
        await _speak_until_agent_audio(ws, RATE, "Hello there, this reply is cut short.", seen.append)
    finally:
        ws.transport.abort()  # no close frame, no FIN handshake: the TCP connection just dies
    assert any(isinstance(m, p.Transcript) and m.turn == 0 for m in seen)

    record = await _run_one_turn(server, write_scenario(ONE_TURN), tmp_path / "run")
    assert record["status"] == "ok"
    assert record["latency_ms"]["voice_to_voice"] is not None
    assert "client went away" in caplog.text
    assert "internal error" not in caplog.text
    assert "never retrieved" not in caplog.text


@pytest.mark.timeout(60)
async def test_interrupt_ends_the_response(server: AgentServer) -> None:
    seen: list[p.Message] = []
    async with _connect(server) as ws:
        await _speak_until_agent_audio(ws, FRAME * 5, "One two three four five six seven eight.", seen.append)
        await ws.send(p.encode(p.Interrupt(reason="stop please")))
        async with asyncio.timeout(5):
            while not any(isinstance(m, p.ResponseDone) for m in seen):
                seen.append(await _recv_message(ws))
    transcript = next(m for m in seen if isinstance(m, p.Transcript))
    assert (transcript.turn, transcript.text, transcript.final) == (0, "hi", True)
    marks = next(m for m in seen if isinstance(m, p.MarkList))
    done = seen[-1]
    assert isinstance(done, p.ResponseDone)
    assert seen.index(marks) < seen.index(done)
    assert (done.turn, done.status, done.reason) == (0, "interrupted", "stop please")
    assert "server.interrupted" in marks.marks and "server.first_audio_sent" in marks.marks
    assert marks.marks["vad.end_of_turn"] <= marks.marks["server.first_audio_sent"]


@pytest.mark.timeout(60)
async def test_two_concurrent_clients_each_complete_a_turn(
    server: AgentServer, write_scenario: Callable[[str], Path], tmp_path: Path
) -> None:
    scenario = write_scenario(ONE_TURN)
    records = await asyncio.gather(
        _run_one_turn(server, scenario, tmp_path / "a"),
        _run_one_turn(server, scenario, tmp_path / "b"),
    )
    for record in records:
        assert record["status"] == "ok"
        assert record["latency_ms"]["voice_to_voice"] is not None
        assert record["transcript"] == "Hi there."
        assert record["reply"] == "Hello, sure."


async def test_hello_without_format_gets_the_pipelines_audio_defaults(tmp_path: Path) -> None:
    """A client that leaves sample_rate/frame_ms out gets the pipeline's [audio] table."""
    text = (PIPELINES / "emulated.toml").read_text().replace("sample_rate = 16000", "sample_rate = 24000")
    pipeline = parse_pipeline(text, tmp_path / "p.toml")
    async with AgentServer(pipeline, MonotonicClock()) as server, connect(server.url, compression=None) as ws:
        await ws.send('{"type": "hello", "protocol": 1}')
        reply = p.decode(await ws.recv())
    assert isinstance(reply, p.Hello)
    assert (reply.sample_rate, reply.frame_ms) == (24000, 20)
