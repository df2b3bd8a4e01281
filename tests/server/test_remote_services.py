"""Standalone ASR/TTS services and the remote stages, over real loopback websockets.

Virtual-time runs put the service and the agent on one virtual-time loop, so
the impairment's arithmetic is exact. Message accounting (docs/speech.md):
a remote hop costs one upstream message (the request) and one downstream
message (the first result), so with a fixed delay D and no jitter
``tts_first_audio = first_audio_ms + 2 D`` and ``asr_finalize = finalize_ms + 2 D``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import statistics
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from websockets.asyncio.client import connect

from agent import clock as clocks
from agent.audio import frame_rms_dbfs
from agent.client.replay import ReplayResult, replay
from agent.clock import Clock
from agent.config.scenario import load_scenario
from agent.errors import BackendError, ProtocolError
from agent.server.app import AgentServer
from agent.server.services import StageService
from agent.stages.interfaces import SessionContext
from agent.stages.netem import DelayModel, Impairment, delivery_times
from agent.stages.pipeline import Pipeline, load_pipeline, parse_pipeline
from agent.stages.remote import RemoteASR, RemoteASRConfig, RemoteTTS, RemoteTTSConfig
from agent.stages.tts_piper import piper_available
from agent.wire.protocol import Script
from agent.wire.service_protocol import decode, encode
from tests.conftest import PIPELINES, ROOT, SCENARIOS

T = TypeVar("T")
EMULATED = PIPELINES / "emulated.toml"
MS = 1_000_000
RATE = 16_000


def _remote_pipeline(
    asr_url: str | None, tts_url: str | None, delay_ms: float, jitter_ms: float = 0
) -> Pipeline:
    """The emulated pipeline with its ASR and/or TTS moved behind services."""
    text = EMULATED.read_text()
    if asr_url is not None:
        text = text.replace(
            'kind = "emulated"\nfinalize_ms = 150',
            f'kind = "remote-asr"\nurl = "{asr_url}"\ndelay_ms = {delay_ms}\njitter_ms = {jitter_ms}',
        )
    if tts_url is not None:
        text = text.replace(
            'kind = "emulated"\nfirst_audio_ms = 90\nrtf = 0.2',
            f'kind = "remote-tts"\nurl = "{tts_url}"\ndelay_ms = {delay_ms}\njitter_ms = {jitter_ms}',
        )
    return parse_pipeline(text, "remote.toml")


async def _replay_through_services(
    clock: Clock, run_dir: Path, delay_ms: float, jitter_ms: float = 0, scenario: str = "quick-3-turn.yaml"
) -> ReplayResult:
    services = load_pipeline(EMULATED)
    async with (
        StageService(services, "asr", clock) as asr,
        StageService(services, "tts", clock) as tts,
    ):
        agent = _remote_pipeline(asr.url, tts.url, delay_ms, jitter_ms)
        async with AgentServer(agent, clock) as server:
            return await replay(load_scenario(SCENARIOS / scenario), server.url, clock, run_dir)


def _virtual(body: Callable[[Clock], Awaitable[T]]) -> T:
    return clocks.run(body, virtual=True)


# --------------------------------------------------------------------------- netem (pure)


def test_fixed_delay_needs_no_draws_and_is_exact() -> None:
    model = DelayModel(Impairment(delay_ms=40), "up")
    assert [model.next_delay_ns() for _ in range(5)] == [40 * MS] * 5


def test_jitter_is_seeded_bounded_and_per_direction() -> None:
    imp = Impairment(delay_ms=30, jitter_ms=10, seed=7)
    a = DelayModel(imp, "up")
    b = DelayModel(imp, "up")
    draws_a = [a.next_delay_ns() for _ in range(200)]
    assert draws_a == [b.next_delay_ns() for _ in range(200)]
    assert all(20 * MS <= d <= 40 * MS for d in draws_a)
    assert statistics.mean(draws_a) == pytest.approx(30 * MS, rel=0.05)
    down = DelayModel(imp, "down")
    assert [down.next_delay_ns() for _ in range(5)] != draws_a[:5]
    other_seed = DelayModel(Impairment(30, 10, seed=8), "up")
    assert [other_seed.next_delay_ns() for _ in range(5)] != draws_a[:5]


def test_jitter_never_makes_a_negative_delay() -> None:
    model = DelayModel(Impairment(delay_ms=1, jitter_ms=50), "down")
    assert min(model.next_delay_ns() for _ in range(500)) == 0


def test_delivery_keeps_order() -> None:
    # The second message draws a shorter delay but may not overtake the first.
    assert delivery_times([0, 10, 20], [50, 5, 5]) == [50, 50, 50]
    assert delivery_times([0, 10, 100], [5, 5, 5]) == [5, 15, 105]
    with pytest.raises(ValueError):
        delivery_times([0], [1, 2])


# --------------------------------------------------------------------------- service protocol


def test_service_messages_are_checked() -> None:
    assert decode(encode("done", id=3, cancelled=False)) == {"type": "done", "id": 3, "cancelled": False}
    for bad in ('{"type": "done"}', '{"type": "done", "id": true}', '{"type": "nope"}', "[]", "{"):
        with pytest.raises(ProtocolError, match=r"malformed|unknown"):
            decode(bad)


# --------------------------------------------------------------------------- virtual time: exact


@pytest.mark.timeout(120)
@pytest.mark.parametrize("delay_ms", [0.0, 40.0])
def test_remote_hops_add_exactly_two_one_way_delays(tmp_path: Path, delay_ms: float) -> None:
    emulated = load_pipeline(EMULATED)
    first_audio_ms = emulated.stages["tts"].config.first_audio_ms
    finalize_ms = emulated.stages["asr"].config.finalize_ms
    result = _virtual(lambda clock: _replay_through_services(clock, tmp_path / "run", delay_ms))
    scenario = load_scenario(SCENARIOS / "quick-3-turn.yaml")
    assert [r["status"] for r in result.records] == ["ok"] * 3
    for record, turn in zip(result.records, scenario.turns, strict=True):
        lat = record["latency_ms"]
        # One request up + the first result down, each held delay_ms.
        assert lat["tts_first_audio"] == pytest.approx(first_audio_ms + 2 * delay_ms, abs=1e-6)
        assert lat["asr_finalize"] == pytest.approx(finalize_ms + 2 * delay_ms, abs=1e-6)
        assert lat["unaccounted"] == pytest.approx(0, abs=1e-6)
        assert record["transcript"] == turn.text  # the script hint crossed the wire
        assert record["reply"] == turn.reply


@pytest.mark.timeout(120)
def test_jittered_link_is_reproducible_and_bounded(tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):

        async def body(clock: Clock, run_dir: Path = tmp_path / name) -> ReplayResult:
            return await _replay_through_services(clock, run_dir, 40, 20)

        runs.append(_virtual(body))
    tts = [[r["latency_ms"]["tts_first_audio"] for r in run.records] for run in runs]
    assert tts[0] == tts[1]  # seeded: the same draws every run
    for value in tts[0]:
        assert 90 + 2 * 20 <= value <= 90 + 2 * 60 + 1e-6


# --------------------------------------------------------------------------- stages directly


async def _with_stage(build: Callable[[SessionContext], Any], body: Callable[[Any], Awaitable[T]]) -> T:
    ctx = SessionContext(clock=clocks.MonotonicClock(), sample_rate=RATE, frame_samples=320)
    stage = build(ctx)
    try:
        return await body(stage)
    finally:
        await stage.aclose()


async def test_unreachable_service_names_the_url(free_port: int) -> None:
    url = f"ws://127.0.0.1:{free_port}"

    async def speak(tts: RemoteTTS) -> None:
        async for _ in tts.synthesize("Hello."):
            pass

    async def listen(asr: RemoteASR) -> str:
        asr.feed(np.zeros(320, dtype=np.int16), 0)
        return await asr.finalize(320, None)

    with pytest.raises(BackendError, match=rf"remote-tts {url}: cannot connect"):
        await _with_stage(lambda ctx: RemoteTTS(RemoteTTSConfig(url=url), ctx), speak)
    with pytest.raises(BackendError, match=rf"remote-asr {url}: cannot connect"):
        await _with_stage(lambda ctx: RemoteASR(RemoteASRConfig(url=url), ctx), listen)


async def test_wrong_service_is_a_clear_error() -> None:
    async with StageService(load_pipeline(EMULATED), "asr", clocks.MonotonicClock()) as asr:

        async def speak(tts: RemoteTTS) -> None:
            async for _ in tts.synthesize("Hello."):
                pass

        with pytest.raises(BackendError, match=r"remote-tts ws://.*wrong_service.*asr service"):
            await _with_stage(lambda ctx: RemoteTTS(RemoteTTSConfig(url=asr.url), ctx), speak)


async def test_tts_cancel_then_next_request_gets_only_its_audio() -> None:
    async with StageService(load_pipeline(EMULATED), "tts", clocks.MonotonicClock()) as service:

        async def body(tts: RemoteTTS) -> tuple[int, int]:
            stream = tts.synthesize("A long phrase that we will interrupt after its first chunk of audio.")
            first = await anext(stream)
            await stream.aclose()  # barge-in
            samples = [len(pcm) async for pcm in tts.synthesize("Short one.")]
            return len(first), sum(samples)

        first, second = await _with_stage(lambda ctx: RemoteTTS(RemoteTTSConfig(url=service.url), ctx), body)
        # The second request's audio is "Short one." alone (about 0.7 s at 165 wpm),
        # not the rest of the interrupted phrase.
        assert first > 0
        assert 0.3 * RATE < second < 1.5 * RATE


async def test_asr_service_forwards_the_hint_and_counts_samples() -> None:
    async with StageService(load_pipeline(EMULATED), "asr", clocks.MonotonicClock()) as service:

        async def body(asr: RemoteASR) -> str:
            for k in range(10):
                asr.feed(np.zeros(320, dtype=np.int16), k * 320)
            hint = Script(turn=0, speech_start_sample=0, speech_end_sample=3200, text="hello there")
            return await asr.finalize(3200, hint)

        text = await _with_stage(lambda ctx: RemoteASR(RemoteASRConfig(url=service.url), ctx), body)
        assert text == "hello there"


async def test_service_rejects_a_bad_hello() -> None:
    async with StageService(load_pipeline(EMULATED), "tts", clocks.MonotonicClock()) as service:
        async with connect(service.url) as ws:
            await ws.send(encode("hello", protocol=1, service="tts", sample_rate=12345))
            reply = json.loads(await ws.recv())
            assert reply["type"] == "error" and reply["code"] == "unsupported_format"
        async with connect(service.url) as ws:
            await ws.send(b"\x00\x00")
            reply = json.loads(await ws.recv())
            assert reply["code"] == "hello_required"


# --------------------------------------------------------------------------- real time, real Piper


@pytest.mark.skipif(not piper_available(), reason="piper-tts is not installed (extra: speech)")
@pytest.mark.timeout(300)
def test_real_time_replay_with_piper_behind_remote_tts(tmp_path: Path) -> None:
    service_pipeline = parse_pipeline(
        EMULATED.read_text().replace('kind = "emulated"\nfirst_audio_ms = 90\nrtf = 0.2', 'kind = "piper"'),
        "piper-service.toml",
    )
    delay_ms = 25.0

    async def main(clock: Clock) -> ReplayResult:
        async with StageService(service_pipeline, "tts", clock) as tts:
            agent = _remote_pipeline(None, tts.url, delay_ms)
            async with AgentServer(agent, clock) as server:
                return await replay(scenario, server.url, clock, tmp_path / "run")

    path = tmp_path / "two.yaml"
    path.write_text(
        "defaults: {pause_ms: 300}\nturns:\n"
        '  - {user: "Hello, are you open today?", reply: "Yes, we are open until six tonight."}\n'
        '  - {user: "Great, thank you.", reply: "You are welcome, see you soon."}\n'
    )
    scenario = load_scenario(path)
    result = clocks.run(main)
    assert [r["status"] for r in result.records] == ["ok"] * 2
    for record in result.records:
        lat = record["latency_ms"]
        # Two network legs at least; Piper on 2 busy cores stays well under 2 s.
        assert 2 * delay_ms <= lat["tts_first_audio"] < 2000
        assert 300 < lat["voice_to_voice"] < 4000
    with __import__("wave").open(str(tmp_path / "run" / "recording.wav")) as wav:
        audio = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    assert frame_rms_dbfs(audio[:, 1]) > -45  # the agent spoke (real Piper speech, resampled)


def test_service_tasks_do_not_leak() -> None:
    # A connection closed mid-request must not leave tasks behind on the loop.
    async def main(clock: Clock) -> int:
        async with StageService(load_pipeline(EMULATED), "tts", clock) as service:
            async with connect(service.url) as ws:
                await ws.send(encode("hello", protocol=1, service="tts", sample_rate=RATE))
                await ws.recv()
                await ws.send(encode("synthesize", id=1, text="Some words to say."))
                await ws.recv()
            await asyncio.sleep(0.05)
            return len([t for t in asyncio.all_tasks() if t is not asyncio.current_task()])

    # Only the server's own accept machinery may remain.
    assert _virtual(main) <= 1


class _PartialASR:
    """A stage that offers a partial after every 5 frames and stats after finalize."""

    def __init__(self, config: object, ctx: SessionContext) -> None:
        self.frames = 0
        self.last_stats: dict[str, Any] | None = None

    def feed(self, pcm: Any, first_sample: int) -> None:
        self.frames += 1

    def poll_partial(self) -> str | None:
        return f"heard {self.frames}" if self.frames % 5 == 0 else None

    async def finalize(self, end_sample: int, hint: Script | None) -> str:
        self.last_stats = {"frames": self.frames}
        return "done"


async def test_partials_and_stats_cross_the_wire() -> None:
    pipeline = load_pipeline(EMULATED)
    spec = pipeline.stages["asr"]
    fake = dataclasses.replace(spec, entry=dataclasses.replace(spec.entry, build=_PartialASR))
    pipeline = dataclasses.replace(pipeline, stages={**pipeline.stages, "asr": fake})
    async with StageService(pipeline, "asr", clocks.MonotonicClock()) as service:

        async def body(asr: RemoteASR) -> tuple[list[str], str, dict[str, Any] | None]:
            partials = []
            for k in range(10):
                asr.feed(np.zeros(320, dtype=np.int16), k * 320)
                await asyncio.sleep(0.01)
                if (partial := asr.poll_partial()) is not None:
                    partials.append(partial)
            text = await asr.finalize(3200, None)
            return partials, text, asr.last_stats

        partials, text, stats = await _with_stage(
            lambda ctx: RemoteASR(RemoteASRConfig(url=service.url), ctx), body
        )
        assert partials == ["heard 5", "heard 10"] or partials == ["heard 5"]
        assert text == "done"
        assert stats == {"frames": 10}


# --------------------------------------------------------------------------- the command line


@pytest.mark.timeout(60)
@pytest.mark.parametrize("service", ["asr", "tts"])
async def test_vlt_serve_service_command(service: str, free_port: int) -> None:
    """`vlt serve asr|tts` in its own process, reached by the remote stage."""
    args = ["-m", "agent.cli", "serve", service, "--pipeline", "emulated", "--port", str(free_port)]
    pipe = asyncio.subprocess.PIPE
    proc = await asyncio.create_subprocess_exec(sys.executable, *args, cwd=ROOT, stdout=pipe, stderr=pipe)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        url = f"ws://127.0.0.1:{free_port}"
        assert f"{service} service (emulated: emulated) listening on {url}" in line

        async def speak(tts: RemoteTTS) -> int:
            return sum([len(pcm) async for pcm in tts.synthesize("Hello there.")])

        async def listen(asr: RemoteASR) -> str:
            asr.feed(np.zeros(320, dtype=np.int16), 0)
            hint = Script(turn=0, speech_start_sample=0, speech_end_sample=320, text="hello there")
            return await asr.finalize(320, hint)

        if service == "tts":
            assert await _with_stage(lambda ctx: RemoteTTS(RemoteTTSConfig(url=url), ctx), speak) > 0
        else:
            assert (
                await _with_stage(lambda ctx: RemoteASR(RemoteASRConfig(url=url), ctx), listen)
                == "hello there"
            )
    finally:
        proc.terminate()
        await proc.communicate()
