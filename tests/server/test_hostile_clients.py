"""Hostile clients against a real ``vlt serve agent`` process (issue 16).

One server subprocess (emulated pipeline, small limits so each one is quick to
reach) takes every attack in turn: deep nesting, lone surrogates, huge error
texts, script floods, audio floods, idle sessions, too many sessions. Each
must end in a clear ``error`` message and close code — never 1011,
``internal_error`` or a traceback in the server's log — and the server must go
on serving: every test ends with a good session, and the module ends with a
normal scenario replay that passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from agent.clock import MonotonicClock
from agent.config.scenario import load_scenario
from agent.jobs.runner import run_scenario
from agent.wire import protocol as p

ROOT = Path(__file__).resolve().parents[2]
RATE, FRAME_MS = 16000, 20
FRAME = RATE * FRAME_MS // 1000
LIMITS = {
    "--max-sessions": 4,
    "--idle-timeout-s": 1.0,
    "--max-scripts": 8,
    "--script-retention-s": 0.5,
    "--max-script-chars": 4096,
    "--max-audio-ahead-s": 1.0,
    "--max-logged-chars": 100,
}


class Server:
    def __init__(self, process: subprocess.Popen[str], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        assert match is not None
        return int(match.group(1)) / 1024

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("hostile") / "server.log"
    command = [sys.executable, "-m", "agent.cli", "serve", "agent", "--pipeline", "emulated", "--port", "0"]
    for flag, value in LIMITS.items():
        command += [flag, str(value)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("w") as stderr:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "agent (emulated) listening on ws://127.0.0.1:PORT"
        match = re.search(r"ws://\S+", line)
        assert match is not None, f"no URL in {line!r}; log: {log.read_text()}"
        yield Server(process, match.group(), log)
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and "internal error" not in text, text[-3000:]


@pytest.fixture(autouse=True)
def _still_serving(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    server: Server = request.getfixturevalue("server")
    assert server.process.poll() is None, "the server died"
    asyncio.run(_assert_serves(server))


def _connect(server: Server) -> Any:
    return connect(server.url, compression=None, open_timeout=5, max_size=None)


async def _recv_message(ws: ClientConnection) -> p.Message:
    async with asyncio.timeout(5):
        while True:
            data = await ws.recv()
            if isinstance(data, str):
                return p.decode(data)


async def _hello(ws: ClientConnection) -> None:
    await ws.send(p.encode(p.Hello(protocol=p.PROTOCOL_VERSION, sample_rate=RATE, frame_ms=FRAME_MS)))
    assert isinstance(await _recv_message(ws), p.Hello)


async def _error_then_close(ws: ClientConnection, timeout_s: float = 5) -> tuple[p.Error, int]:
    """The server's error message (skipping what came before it), then its close code."""
    async with asyncio.timeout(timeout_s):
        while not isinstance(message := await _recv_message(ws), p.Error):
            pass
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await ws.recv()
    assert info.value.rcvd is not None, "the server must close with a close frame"
    return message, info.value.rcvd.code


async def _assert_serves(server: Server) -> None:
    async with _connect(server) as ws:
        await _hello(ws)
        await ws.send(p.encode(p.Ping(t0_ns=7)))
        pong = await _recv_message(ws)
        assert isinstance(pong, p.Pong) and pong.t0_ns == 7


def _script(turn: int, start: int, reply: str = "Fine.", text: str = "Hi.") -> str:
    return p.encode(p.Script(turn=turn, speech_start_sample=start, speech_end_sample=start + FRAME, text=text,
                             reply=reply))  # fmt: skip


# -- malformed text -------------------------------------------------------------------


@pytest.mark.parametrize("before_hello", [True, False])
@pytest.mark.parametrize("depth", [10_000, 500_000])
async def test_deep_nesting_is_json_too_deep(server: Server, before_hello: bool, depth: int) -> None:
    async with _connect(server) as ws:
        if not before_hello:
            await _hello(ws)
        await ws.send("[" * depth + "]" * min(depth, 100))
        error, code = await _error_then_close(ws)
    assert (error.code, code) == ("json_too_deep", p.CLOSE_PROTOCOL_ERROR)
    assert f"nested {depth} levels deep" in error.message


async def test_a_lone_surrogate_in_a_scripted_reply_is_malformed_text(server: Server) -> None:
    async with _connect(server) as ws:
        await _hello(ws)
        await ws.send(_script(0, 0, reply="Sure\ud800."))
        error, code = await _error_then_close(ws)
    assert (error.code, code) == ("malformed_text", p.CLOSE_PROTOCOL_ERROR)
    assert error.message.startswith("reply: lone UTF-16 surrogate \\ud800")


async def test_huge_error_texts_are_logged_clipped(server: Server) -> None:
    before = server.log.stat().st_size
    async with _connect(server) as ws:
        await _hello(ws)
        for _ in range(30):
            await ws.send(p.encode(p.Error(code="x" * 1000, message="y" * 1_000_000)))
        await ws.send(p.encode(p.Ping(t0_ns=1)))
        assert isinstance(await _recv_message(ws), p.Pong)  # every error was taken, the session lives
    grown = server.log.stat().st_size - before
    # The first 10 of them, each clipped to 60 + 100 characters and a note; not 30 MiB.
    assert 0 < grown < 10 * 400, grown
    log = server.log_text()
    assert "(1,000,000 characters)" in log
    assert "further client errors of this session are not logged" in log


# -- floods ----------------------------------------------------------------------------


async def test_a_script_flood_ends_the_session_and_costs_no_memory(server: Server) -> None:
    rss_before = server.rss_mb()
    async with _connect(server) as ws:
        await _hello(ws)
        # Ahead of the audio, each as large as allowed: the 9th is refused.
        for turn in range(LIMITS["--max-scripts"] + 1):
            await ws.send(_script(turn, 10 * RATE * (turn + 1), reply="z" * 4000))
        error, code = await _error_then_close(ws)
    assert (error.code, code) == ("too_many_scripts", p.CLOSE_POLICY_VIOLATION)
    for _ in range(20):  # and again, from new sessions: nothing accumulates
        async with _connect(server) as ws:
            await _hello(ws)
            for turn in range(LIMITS["--max-scripts"] + 1):
                await ws.send(_script(turn, 10 * RATE * (turn + 1), reply="z" * 4000))
            await _error_then_close(ws)
    assert server.rss_mb() - rss_before < 20


async def test_an_oversized_script_is_refused(server: Server) -> None:
    async with _connect(server) as ws:
        await _hello(ws)
        await ws.send(_script(0, 0, reply="w" * 900_000))
        error, code = await _error_then_close(ws)
    assert (error.code, code) == ("script_too_large", p.CLOSE_POLICY_VIOLATION)
    assert "900,003 characters" in error.message


async def test_audio_faster_than_real_time_is_refused(server: Server) -> None:
    second = bytes(2 * RATE)
    async with _connect(server) as ws:
        await _hello(ws)
        with contextlib.suppress(ConnectionClosed):  # the server may close while we still send
            for _ in range(50):
                await ws.send(second)
        # The server stopped reading our backlog, so its close handshake ends by its
        # close timeout for a broken session (1 s), not websockets' default 10 s.
        t0 = time.monotonic()
        error, code = await _error_then_close(ws, timeout_s=5)
        assert time.monotonic() - t0 < 3
    assert (error.code, code) == ("audio_ahead", p.CLOSE_POLICY_VIOLATION)


async def test_scripts_behind_the_audio_are_dropped_not_counted(server: Server) -> None:
    """An honest long session: one script per utterance, far more than max_scripts in all."""
    async with _connect(server) as ws:
        await _hello(ws)
        # 20 ms frames in real time (0.5 s ahead), a script every 0.2 s: 15 in all, at
        # most 4 of them within the 0.5 s retention (the first at sample 0 is shadowed).
        silence = bytes(2 * FRAME)
        start = time.monotonic()
        for k in range(150):
            if k % 10 == 0:
                await ws.send(_script(k // 10, k * FRAME))
            await ws.send(silence)
            await asyncio.sleep(max(0.0, start + k * FRAME_MS / 1000 - 0.5 - time.monotonic()))
        await ws.send(p.encode(p.Ping(t0_ns=3)))
        while not isinstance(message := await _recv_message(ws), p.Pong):
            assert not isinstance(message, p.Error), message


# -- idle and too many sessions ----------------------------------------------------------


async def test_an_idle_session_times_out(server: Server) -> None:
    async with _connect(server) as ws:
        await _hello(ws)
        t0 = time.monotonic()
        error, code = await _error_then_close(ws, timeout_s=10)
    assert (error.code, code) == ("idle_timeout", p.CLOSE_POLICY_VIOLATION)
    assert 0.9 < time.monotonic() - t0 < 5


async def test_sessions_beyond_the_cap_are_refused_busy(server: Server) -> None:
    held = [await _connect(server).__aenter__() for _ in range(LIMITS["--max-sessions"])]
    try:
        for ws in held:
            await _hello(ws)
        async with _connect(server) as extra:
            error, code = await _error_then_close(extra)
        assert (error.code, code) == ("server_busy", p.CLOSE_TRY_AGAIN_LATER)
    finally:
        for ws in held:
            await ws.close()
    await asyncio.sleep(0.2)  # the server sees the closes; then a new session is served (autouse)


# -- last: a normal replay still passes -----------------------------------------------------


@pytest.mark.timeout(60)
async def test_a_normal_replay_passes_after_all_that(
    server: Server, write_scenario: Callable[[str], Path], tmp_path: Path
) -> None:
    scenario = write_scenario(
        'name: after-attacks\ndefaults: {pause_ms: 100, reply_timeout_ms: 10000}\n'
        'turns:\n  - user: "Hi there."\n    reply: "Hello, sure."\n    expect: {contains: "sure"}\n'
    )  # fmt: skip
    result = await run_scenario(
        load_scenario(scenario), MonotonicClock(), url=server.url, run_dir=tmp_path / "r"
    )
    assert result.completed
    [record] = result.records
    assert record["status"] == "ok", record
