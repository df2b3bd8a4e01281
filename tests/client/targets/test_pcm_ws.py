"""The plain PCM websocket target, against real plain-PCM agents on loopback.

Two agents: vlt's own behind :class:`PcmFacade` (a protocol session inside,
bare audio outside), and a few lines of websockets server that streams silence
in real time, waits for a start message, and answers each utterance with a
tone — a foreign agent of the kind telephony bridges are. Virtual time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from agent import clock as clocks
from agent.audio import find_onset, pcm_to_bytes
from agent.client.replay import replay
from agent.client.targets.pcm_ws import parse_pcm_ws_url
from agent.config.scenario import load_scenario
from agent.errors import ConfigError, ConnectError
from agent.jobs.pcm_facade import PcmFacade
from agent.metrics.recording_truth import WINDOW_MS, heard_barge_in_stop_ms, read_recording
from agent.server.app import AgentServer
from agent.stages.pipeline import load_pipeline
from tests.conftest import SCENARIOS, live_test_pipeline


def _pipeline(tmp_path: Path) -> Any:
    path = tmp_path / "energy.toml"
    # Decode so fast that the reply's text (scripted through the protocol, the bank's
    # through the facade, which passes no scripts) cannot change the first phrase's time.
    path.write_text(live_test_pipeline().replace("tokens_per_s = 100", "tokens_per_s = 1000000"))
    return load_pipeline(path)


async def _without_scripts(caller: ServerConnection, agent_url: str) -> None:
    """Relays vlt's protocol both ways, with the words taken out of the client's
    ``script`` messages (where each utterance lies stays, so turns are numbered as
    the scenario's): the agent hears no text, as a black box's does not, and so
    answers with the same words."""
    async with connect(agent_url, compression=None, max_size=1 << 20) as agent:

        async def upstream() -> None:
            async for data in caller:
                if isinstance(data, str) and (message := json.loads(data)).get("type") == "script":
                    data = json.dumps({**message, "text": "", "reply": None})
                await agent.send(data)

        async def downstream() -> None:
            async for data in agent:
                await caller.send(data)

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await task


def _both(tmp_path: Path, scenario_name: str, *, scripts: bool = True) -> tuple[Any, Any, list[str]]:
    """The scenario replayed through the protocol and through the plain PCM facade.

    ``scripts=False`` withholds the scenario's scripts from the protocol run too, so
    both agents answer from the audio alone (the bank's reply, not the scenario's):
    the same reply audio, which a figure that depends on where the cut falls in a
    word (barge-in stop as heard) needs in order to be compared at all."""
    pipeline = _pipeline(tmp_path)
    scenario = load_scenario(SCENARIOS / scenario_name)

    async def main(clock: clocks.Clock) -> Any:
        async with AgentServer(pipeline, clock) as server:
            if scripts:
                protocol = await replay(scenario, server.url, clock, tmp_path / "protocol")
            else:
                async with serve(lambda ws: _without_scripts(ws, server.url), "127.0.0.1", 0) as relay:
                    port = next(iter(relay.sockets)).getsockname()[1]
                    protocol = await replay(scenario, f"ws://127.0.0.1:{port}", clock, tmp_path / "protocol")
            async with PcmFacade(server.url, clock) as facade:
                url = facade.pcm_url('start={"event":"start"}')
                black_box = await replay(scenario, url, clock, tmp_path / "pcm")
                return protocol, black_box, facade.start_messages

    return clocks.run(main, virtual=True)


def test_black_box_voice_to_voice_agrees_with_the_protocol(tmp_path: Path) -> None:
    protocol, black_box, starts = _both(tmp_path, "quick-3-turn.yaml")
    assert starts == ['{"event":"start"}']
    assert [r["status"] for r in black_box.records] == ["ok"] * 3
    for a, b in zip(protocol.records, black_box.records, strict=True):
        assert b["latency_ms"]["voice_to_voice"] == pytest.approx(a["latency_ms"]["voice_to_voice"], abs=2.0)
        # Hops the target cannot report are absent, not zero.
        for hop in ("endpointing", "asr_finalize", "llm_ttft", "tts_first_audio", "transport", "unaccounted"):
            assert b["latency_ms"][hop] is None
        assert "vad.end_of_turn" in b["missing_marks"]
        assert b["transcript"] is None and b["wer"] is None
        assert not any(name.startswith(("vad.", "llm.", "tts.", "server.")) for name in b["marks_ns"])
    manifest = json.loads((black_box.run_dir / "manifest.json").read_text())
    assert manifest["target"]["kind"] == "pcm-ws" and manifest["target"]["sample_rate"] == 16000
    assert manifest["agent"]["software"] == "pcm-ws (black box)"
    assert "offset_start" not in manifest["clock"]  # no clock to ask
    assert manifest["state"] == "complete"


def test_black_box_barge_in_stop_and_status_from_audio(tmp_path: Path) -> None:
    # Scripted replies would make the two agents say different words, and stop-as-heard
    # then differs by where the cut falls in a word (each run true to its own recording).
    protocol, black_box, _ = _both(tmp_path, "barge-in.yaml", scripts=False)
    assert [r["status"] for r in black_box.records] == [r["status"] for r in protocol.records]
    for a, b in zip(protocol.records, black_box.records, strict=True):
        stop_a, stop_b = a["latency_ms"]["barge_in_stop"], b["latency_ms"]["barge_in_stop"]
        assert (stop_a is None) == (stop_b is None)
        if stop_a is not None:
            assert stop_b == pytest.approx(stop_a, abs=1.0)
    # And the figure is the one the recording holds (a whole buffered lead counted
    # audible would be wrong by up to that lead). The recording's rule works in
    # non-overlapping windows, so it can sit up to one window earlier.
    stereo, rate = read_recording(black_box.run_dir / "recording.wav")
    stops = 0
    for b in black_box.records:
        if b["latency_ms"]["barge_in_stop"] is not None:
            start = b["marks_ns"]["user.speech_start"] * rate // 10**9
            heard = heard_barge_in_stop_ms(stereo, rate, start)
            assert heard == pytest.approx(b["latency_ms"]["barge_in_stop"], abs=WINDOW_MS)
            stops += 1
    assert stops == 2


# -- a foreign plain-PCM agent ---------------------------------------------------------

RATE, FRAME_MS = 24000, 40
FRAME = RATE * FRAME_MS // 1000
ANSWER_MS = 600  # the tone agent answers this long after the caller goes quiet


async def _tone_agent(ws: ServerConnection, clock: clocks.Clock, log: dict[str, Any]) -> None:
    """Streams silence frame by frame in real time; after a start message, answers
    each utterance (then ANSWER_MS of caller silence) with a 400 ms tone."""
    log["start"] = json.loads(await ws.recv())
    pending: list[bytes] = []
    heard, quiet_frames = False, 0
    silence = pcm_to_bytes(np.zeros(FRAME, dtype=np.int16))
    tone = (np.sin(np.arange(RATE * 4 // 10) * 2 * np.pi * 440 / RATE) * 10000).astype(np.int16)

    async def speak() -> None:
        t0 = clock.now_ns()
        k = 0
        while True:
            await clock.sleep_until(t0 + k * FRAME_MS * 1_000_000)
            await ws.send(pending.pop(0) if pending else silence)
            k += 1

    speaker = asyncio.ensure_future(speak())
    try:
        async for data in ws:
            assert isinstance(data, bytes) and len(data) == 2 * FRAME  # the frame size the URL set
            pcm = np.frombuffer(data, "<i2")
            if find_onset(pcm, RATE) is not None:
                heard, quiet_frames = True, 0
            elif heard:
                quiet_frames += 1
                if quiet_frames * FRAME_MS >= ANSWER_MS:
                    heard = False
                    log["answers"] = log.get("answers", 0) + 1
                    pending.extend(pcm_to_bytes(tone[i : i + FRAME]) for i in range(0, len(tone), FRAME))
    finally:
        speaker.cancel()


def test_a_foreign_agent_streaming_silence_at_another_rate(tmp_path: Path, write_scenario: Any) -> None:
    scenario = load_scenario(
        write_scenario(
            "name: two\nturns:\n  - user: Hello there is anyone around\n  - user: Thanks that is all\n"
        )
    )
    log: dict[str, Any] = {}

    async def main(clock: clocks.Clock) -> Any:
        async with serve(lambda ws: _tone_agent(ws, clock, log), "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            url = f'pcm+ws://127.0.0.1:{port}/#rate={RATE}&frame_ms={FRAME_MS}&start={{"op":"go"}}&reply_end_ms=600'
            return await replay(scenario, url, clock, tmp_path / "run")

    result = clocks.run(main, virtual=True)
    assert log["start"] == {"op": "go"} and log["answers"] == 2
    for record in result.records:
        assert record["status"] == "ok"
        v2v = record["latency_ms"]["voice_to_voice"]
        # ANSWER_MS counted in whole frames, then the next frame slot of its real-time stream.
        assert ANSWER_MS <= v2v <= ANSWER_MS + 3 * FRAME_MS
        assert record["agent_audio_ms"] == pytest.approx(400, abs=FRAME_MS)


# -- naming a target ---------------------------------------------------------------------


def test_the_url_fragment_holds_vlts_settings_and_never_reaches_the_agent() -> None:
    t = parse_pcm_ws_url("pcm+wss://agent.example/audio?token=x#rate=8000&frame_ms=30&reply_end_ms=900")
    assert (t.url, t.sample_rate, t.frame_ms, t.reply_end_ms) == (
        "wss://agent.example/audio?token=x",
        8000,
        30,
        900,
    )
    assert parse_pcm_ws_url("pcm+ws://h:1").sample_rate == 16000


def test_start_message_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "start.json").write_text('{"config": {"lang": "en"}}')
    assert (
        parse_pcm_ws_url(f"pcm+ws://h:1#start=@{tmp_path}/start.json").start_message
        == '{"config": {"lang": "en"}}'
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("pcm+ws://h:1#rate=fast", "rate='fast' is not a number"),
        ("pcm+ws://h:1#rate=100", "rate=100 is outside 8000..192000"),
        ("pcm+ws://h:1#frame_ms=7&rate=22050", "frame_ms=7 is not a whole number of samples at 22050 Hz"),
        ("pcm+ws://h:1#start={oops", "the start message is not JSON"),
        ("pcm+ws://h:1#start=@/nonexistent.json", "start message file /nonexistent.json cannot be read"),
        ("pcm+ws://h:1#rat=16000", "unknown setting 'rat'"),
        ("pcm+ws://h:1#reply_end_ms=nan", "reply_end_ms=nan is outside"),
    ],
)
def test_bad_settings_are_one_line_errors(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace("{", r"\{")):
        parse_pcm_ws_url(url)


def test_an_unreachable_target_is_a_connect_error(tmp_path: Path) -> None:
    scenario = load_scenario(SCENARIOS / "quick-3-turn.yaml")

    async def main(clock: clocks.Clock) -> Any:
        return await replay(scenario, "pcm+ws://127.0.0.1:1/", clock, tmp_path / "run")

    with pytest.raises(ConnectError, match=re.escape("cannot reach agent at ws://127.0.0.1:1/")):
        clocks.run(main, virtual=False)
