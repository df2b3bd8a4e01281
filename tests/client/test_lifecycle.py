"""The client run lifecycle, against a scripted agent over a real loopback websocket.

The agent here is a few lines of websockets server: it answers the hello and
pings (its clock a fixed offset ahead of the client's) and otherwise does what
each test scripts. Everything runs in virtual time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve

from agent import clock as clocks
from agent.audio import PCM, pcm_to_bytes
from agent.client.lifecycle import ClientRun, client_run
from agent.client.recorder import StereoRecorder
from agent.errors import ConfigError, ConnectError
from agent.wire.protocol import PROTOCOL_VERSION, Bye, Hello, MarkList, Ping, Pong, decode, encode

RATE = 16000
SERVER_AHEAD_NS = 5_000_000
ONE_WAY_NS = 2_000_000
AGENT_HELLO = Hello(protocol=PROTOCOL_VERSION, sample_rate=RATE, frame_ms=20, role="agent", software="fake/1")

#: What the scripted agent does once the hellos are exchanged (before answering pings).
Script = Callable[[ServerConnection], Awaitable[None]]


class FakeClient:
    """A RunClient that writes down what the lifecycle asks of it."""

    def __init__(self) -> None:
        self.recorder = StereoRecorder(RATE)
        self.records: list[dict[str, Any]] = [
            {"turn": 0, "status": "ok", "latency_ms": {"voice_to_voice": 800.0}}
        ]
        self.calls: list[str] = []
        self.audio: list[tuple[int, int]] = []

    def on_audio(self, pcm: PCM, now: int) -> None:
        self.audio.append((len(pcm), now))

    def stop(self) -> None:
        self.calls.append("stop")

    def final_records(self) -> list[dict[str, Any]]:
        self.calls.append("final_records")
        return self.records

    def conclude(self, summary: dict[str, Any], manifest: dict[str, Any], finished_utc: str) -> None:
        self.calls.append("conclude")
        summary["completed"] = False
        manifest["finished_utc"] = finished_utc
        manifest["client_figure"] = 42


def _run(
    tmp_path: Path,
    body: Callable[[ClientRun, FakeClient, clocks.Clock], Awaitable[Any]],
    script: Script | None = None,
    *,
    answer_pings: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Run ``body`` inside a lifecycle whose client began; returns its result
    (or the exception it raised) and what the agent saw."""
    seen: dict[str, Any] = {"closed": False}

    async def main(clock: clocks.Clock) -> Any:
        async def agent(ws: ServerConnection) -> None:
            decode(await ws.recv())  # the client's hello
            hello = Hello(
                protocol=PROTOCOL_VERSION, sample_rate=RATE, frame_ms=20, role="agent", software="fake/1"
            )
            await ws.send(encode(hello))
            if script is not None:
                await script(ws)
            async for data in ws:
                message = decode(data)
                if isinstance(message, Ping):
                    if not answer_pings:
                        await ws.close()
                        break
                    # Loopback is instant in virtual time: the agent waits out each way itself.
                    await clock.sleep_until(clock.now_ns() + ONE_WAY_NS)
                    t1 = clock.now_ns() + SERVER_AHEAD_NS
                    await clock.sleep_until(clock.now_ns() + ONE_WAY_NS)
                    await ws.send(encode(Pong(t0_ns=message.t0_ns, t1_ns=t1, t2_ns=t1)))
                elif isinstance(message, Bye):
                    seen["bye"] = message.reason
            seen["closed"] = True

        async with serve(agent, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            client = FakeClient()
            seen["client"] = client
            try:
                async with client_run(f"ws://127.0.0.1:{port}", clock, tmp_path / "run") as run:
                    seen["run"] = run
                    run.begin(client, "test", {"options": {"x": 1}}, {"extra": True})
                    return await body(run, client, clock)
            except Exception as exc:
                return exc
            finally:
                await asyncio.sleep(0.01)  # let the agent's handler see the close

    return clocks.run(main, virtual=True), seen


def _read(tmp_path: Path, name: str) -> Any:
    return json.loads((tmp_path / "run" / name).read_text())


def test_an_exception_still_writes_summary_manifest_and_recording(tmp_path: Path) -> None:
    cancelled: list[bool] = []

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def body(run: ClientRun, client: FakeClient, clock: clocks.Clock) -> None:
        await run.sync_clock(4, at="start")
        run.fix_origin()
        run.spawn(forever())
        await asyncio.sleep(0)
        raise RuntimeError("the client broke")

    result, seen = _run(tmp_path, body)
    assert isinstance(result, RuntimeError) and str(result) == "the client broke"
    assert cancelled == [True]  # the run's tasks end with it
    assert seen["closed"]  # and so does the connection
    client: FakeClient = seen["client"]
    # Devices stop before the records are final, and the client concludes last.
    assert client.calls == ["stop", "final_records", "conclude"]
    summary = _read(tmp_path, "summary.json")
    # Summarized from the client's final records.
    assert summary["turns"] == 1 and summary["status"] == {"ok": 1}
    assert summary["metrics_ms"]["voice_to_voice"]["n"] == 1
    assert summary["completed"] is False
    manifest = _read(tmp_path, "manifest.json")
    assert list(manifest)[:7] == ["kind", "state", "started_utc", "url", "agent", "audio", "options"]
    assert manifest["state"] == "interrupted"  # an exception ended the run
    assert manifest["kind"] == "test" and manifest["options"] == {"x": 1} and manifest["extra"] is True
    assert manifest["agent"]["software"] == "fake/1"
    assert manifest["audio"] == {"sample_rate": RATE, "frame_ms": 20}
    # The client's closing fields follow its own order, after everything else.
    assert list(manifest)[-2:] == ["finished_utc", "client_figure"]
    assert (tmp_path / "run" / "recording.wav").stat().st_size > 0


def test_clock_sync_and_origin_are_recorded_in_the_manifest(tmp_path: Path) -> None:
    async def body(run: ClientRun, client: FakeClient, clock: clocks.Clock) -> dict[str, Any]:
        await clock.sleep_until(clock.now_ns() + 50_000_000)
        await run.sync_clock(4, at="start")
        run.write_manifest()
        first = _read(tmp_path, "manifest.json")
        run.fix_origin()
        await run.sync_clock(2, at="end")
        return first

    first, seen = _run(tmp_path, body)
    run: ClientRun = seen["run"]
    # Symmetric 2 ms hops and a server 5 ms ahead: the estimate is exact.
    assert run.offset is not None and run.offset.offset_ns == SERVER_AHEAD_NS
    assert "origin_ns" not in first["clock"]  # written before the origin was fixed
    clock = _read(tmp_path, "manifest.json")["clock"]
    assert clock["virtual"] is True
    assert clock["offset_start"]["offset_ns"] == SERVER_AHEAD_NS and clock["offset_start"]["samples"] == 4
    assert clock["offset_end"]["samples"] == 2
    # 50 ms of waiting, then 4 pings of 2 ms each way before the origin.
    assert clock["origin_ns"] == 50_000_000 + 4 * 2 * ONE_WAY_NS


def test_the_agent_closing_during_clock_sync_is_a_connect_error_and_files_are_written(tmp_path: Path) -> None:
    async def body(run: ClientRun, client: FakeClient, clock: clocks.Clock) -> None:
        await run.sync_clock(4, at="start")

    result, seen = _run(tmp_path, body, answer_pings=False)
    assert isinstance(result, ConnectError)
    assert str(result).startswith("agent closed the connection")
    assert seen["run"].closed_reason == str(result)
    assert "offset_start" not in _read(tmp_path, "manifest.json")["clock"]
    assert (tmp_path / "run" / "summary.json").exists()


def test_messages_and_audio_reach_the_client_and_bye_closes_the_session(tmp_path: Path) -> None:
    async def script(ws: ServerConnection) -> None:
        await ws.send(pcm_to_bytes(np.zeros(320, dtype=np.int16)))
        await ws.send(encode(MarkList(turn=0, marks={"vad.end_of_turn": 1})))
        await ws.send(encode(Bye(reason="enough")))

    async def body(
        run: ClientRun, client: FakeClient, clock: clocks.Clock
    ) -> tuple[str | None, str, list[Any]]:
        marks: list[Any] = []
        run.dispatcher.on(MarkList, lambda m, now: marks.append(m.marks))
        before = run.closed_reason
        reason = await run.wait_closed()
        return before, reason, marks

    (before, reason, marks), seen = _run(tmp_path, body, script)
    assert before is None
    assert reason == "agent said bye: enough"
    assert marks == [{"vad.end_of_turn": 1}]
    assert [n for n, _ in seen["client"].audio] == [320]


def test_a_run_whose_client_never_began_writes_no_summary(tmp_path: Path) -> None:
    seen: dict[str, bool] = {}

    async def main(clock: clocks.Clock) -> None:
        async def agent(ws: ServerConnection) -> None:
            await ws.recv()
            await ws.send(
                encode(Hello(protocol=PROTOCOL_VERSION, sample_rate=RATE, frame_ms=20, role="agent"))
            )
            async for _ in ws:
                pass
            seen["closed"] = True

        async with serve(agent, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(OSError, match="no sound card"):
                async with client_run(f"ws://127.0.0.1:{port}", clock, tmp_path / "run"):
                    raise OSError("no sound card")  # e.g. opening the devices failed
            await asyncio.sleep(0.01)

    clocks.run(main, virtual=True)
    assert seen == {"closed": True}
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["turns.jsonl"]


def test_the_manifest_says_running_from_begin_and_complete_at_a_clean_end(tmp_path: Path) -> None:
    async def body(run: ClientRun, client: FakeClient, clock: clocks.Clock) -> dict[str, Any]:
        client.conclude = lambda summary, manifest, finished: None  # type: ignore[method-assign]
        return _read(tmp_path, "manifest.json")  # on disk as soon as the client began

    first, _ = _run(tmp_path, body)
    assert first["state"] == "running"
    assert _read(tmp_path, "manifest.json")["state"] == "complete"


def test_a_clean_end_the_client_calls_incomplete_is_interrupted(tmp_path: Path) -> None:
    async def body(run: ClientRun, client: FakeClient, clock: clocks.Clock) -> None:
        return None  # FakeClient.conclude says summary.completed = False (e.g. the agent closed)

    _run(tmp_path, body)
    assert _read(tmp_path, "manifest.json")["state"] == "interrupted"


def test_a_run_folder_that_is_not_empty_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "turns.jsonl").write_text('{"turn": 0}\n')

    async def body(run: ClientRun, client: FakeClient, clock: clocks.Clock) -> None:
        raise AssertionError("never reached")

    result, _ = _run(tmp_path, body)
    assert isinstance(result, ConfigError) and "not empty" in str(result)
    assert (tmp_path / "run" / "turns.jsonl").read_text() == '{"turn": 0}\n'
