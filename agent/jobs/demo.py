"""``vlt demo``: talk to the agent through the microphone, with a live latency HUD.

Wires the pieces together: the sound devices (``agent.client.devices.sound_devices``),
the agent (in-process from a pipeline, or a running one at a URL), the live
session (``agent.client.live``) and the HUD or, with ``--no-hud``, one line
per turn (``agent.client.hud``). Devices are resolved before any model loads,
so a missing microphone is reported in a second, not after the ASR warmed up.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from agent import clock as clocks
from agent.client.hud import Hud, HudState, LineReporter
from agent.client.live import LiveOptions, LiveResult, live_session
from agent.metrics.records import ManifestExtra
from agent.metrics.results import new_run_dir
from agent.stages.pipeline import Pipeline

if TYPE_CHECKING:
    from agent.telemetry.publisher import Telemetry

__all__ = ["DemoSettings", "agent_url", "device_line", "mode_line", "run_demo"]

HALF_DUPLEX = "half-duplex: the mic is ignored while the agent speaks (use --barge-in with headphones)"
FULL_DUPLEX = "barge-in: the mic stays open; talk over the agent to interrupt it (use headphones)"


@dataclass(frozen=True, slots=True)
class DemoSettings:
    pipeline: Pipeline | None
    url: str | None
    input_device: str | None
    output_device: str | None
    options: LiveOptions
    hud: bool
    run_dir: Path | None
    runs_root: Path
    #: With --mqtt: publish the session's turns (and the in-process agent's marks).
    telemetry: Telemetry | None = None


def mode_line(barge_in: bool) -> str:
    return FULL_DUPLEX if barge_in else HALF_DUPLEX


def device_line(inp: dict[str, Any], out: dict[str, Any]) -> str:
    """``in: pulse 16000 Hz, 20 ms block, 40 ms · out: …`` for the HUD's header."""

    def one(d: dict[str, Any]) -> str:
        text = f"{d['device']} {d['rate']} Hz"
        if d.get("resampled_from"):
            text += f" (resampled from/to the agent's {d['resampled_from']} Hz)"
        if d.get("latency_ms") is not None:
            text += f", device latency {d['latency_ms']:.0f} ms"
        return text

    return f"in: {one(inp)} · out: {one(out)}"


@contextlib.asynccontextmanager
async def agent_url(
    pipeline: Pipeline | None, url: str | None, clock: clocks.Clock, telemetry: Telemetry | None = None
) -> AsyncIterator[str]:
    """The agent to talk to: ``url``, or ``pipeline`` served in-process while the block runs."""
    if url is not None:
        yield url
        return
    from agent.server.app import AgentServer

    assert pipeline is not None
    async with AgentServer(pipeline, clock, telemetry=telemetry) as server:
        yield server.url


def run_demo(settings: DemoSettings, out: TextIO = sys.stdout) -> LiveResult:
    """Run the demo until ``--turns``/``--duration`` are reached, Ctrl-C, or the agent leaves."""
    from agent.client.devices import sound_devices
    from agent.client.devices.live_audio import DeviceMicrophone, DeviceSpeaker

    # Fail fast, before models load: PortAudio present, the devices exist.
    input_device = sound_devices.resolve_device(settings.input_device, "input")
    output_device = sound_devices.resolve_device(settings.output_device, "output")
    target = settings.url or f"pipeline {settings.pipeline.name if settings.pipeline else ''} (in-process)"
    state = HudState(
        status="connecting",
        mode=mode_line(settings.options.barge_in),
        agent=target,
        devices=f"in: {input_device.name} · out: {output_device.name}",
    )
    run_dir = settings.run_dir or new_run_dir(settings.runs_root, "demo")
    view: Hud | LineReporter = Hud() if settings.hud else LineReporter(out)
    announced = False
    opened: dict[str, Any] = {}

    def on_change() -> None:
        nonlocal announced
        mic, speaker = opened.get("mic"), opened.get("speaker")
        if mic is not None and speaker is not None and mic.latency_ms is not None and "line" not in opened:
            # The streams report their latency once started.
            state.devices = opened["line"] = device_line(mic.describe(), speaker.describe())
        if not settings.hud and not announced and state.status == "listening":
            # Scripts (and the virtual-mic test) wait for this line before speaking.
            print(f"listening: speak now ({state.mode}); Ctrl-C ends the session", file=out, flush=True)
            announced = True
        view.update(state)

    async def main(clock: clocks.Clock) -> LiveResult:
        def make_audio(rate: int, frame_ms: int) -> tuple[DeviceMicrophone, DeviceSpeaker]:
            in_plan = sound_devices.plan_stream(input_device, "input", rate)
            out_plan = sound_devices.plan_stream(output_device, "output", rate)
            mic = DeviceMicrophone(in_plan, clock, rate, rate * frame_ms // 1000, frame_ms)
            speaker = DeviceSpeaker(out_plan, clock, frame_ms)
            opened.update(mic=mic, speaker=speaker)
            return mic, speaker

        extra: ManifestExtra = (
            {"pipeline": settings.pipeline.as_dict()} if settings.pipeline is not None else {}
        )
        async with agent_url(settings.pipeline, settings.url, clock, settings.telemetry) as url:
            return await live_session(
                url,
                clock,
                run_dir,
                make_audio,
                options=settings.options,
                state=state,
                on_change=on_change,
                manifest_extra=extra,
                telemetry=settings.telemetry,
            )

    if not settings.hud:
        print(f"demo: talking to {target}; {state.devices}", file=out, flush=True)
    with view:
        return clocks.run(main)
