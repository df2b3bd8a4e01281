"""The testbed's own overhead, and how fast virtual time runs.

1. Overhead: a pipeline whose stages all take zero time (endpoint 0 ms,
   finalize 0 ms, TTFT 0 ms, 10^9 tokens/s, TTS first audio 0 ms) is replayed
   for N turns in real time over the real loopback websocket. Whatever voice to
   voice remains is the testbed itself: websocket hops both ways, the
   orchestrator, the chunker, framing and pacing. The synthetic voice's own
   attack (the first ~2-3 ms of its waveform are below the -40 dBFS onset
   threshold) is signal content, not overhead, so it is subtracted
   (``audio_onset``; nothing is queued ahead of the first frame here).
2. For scale, a bare websockets echo of one 20 ms PCM frame, measured in the
   same run (the machines are shared and noisy: compare within one run).
3. Virtual-time speed-up: scenario audio seconds / wall seconds, for the
   realistic 10-turn scenario on the emulated pipeline and for the N-turn one.

Run:  .venv/bin/python benchmarks/overhead.py [--turns 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent import clock as clocks  # noqa: E402
from agent.config.scenario import Scenario, load_scenario  # noqa: E402
from agent.jobs.runner import run_scenario  # noqa: E402
from agent.stages.pipeline import load_pipeline, parse_pipeline  # noqa: E402

ZERO_PIPELINE = """
name = "zero-latency"
[vad]
kind = "oracle"
endpoint_ms = 0
[asr]
kind = "emulated"
finalize_ms = 0
[llm]
kind = "emulated"
ttft_ms = 0
tokens_per_s = 1000000000
[tts]
kind = "emulated"
first_audio_ms = 0
rtf = 0
"""


def zero_scenario(turns: int, path: Path) -> Scenario:
    lines = ["name: overhead", "defaults: {pause_ms: 60}", "turns:"]
    lines += ['  - user: "Yes."\n    reply: "Okay."'] * turns
    path.write_text("\n".join(lines) + "\n")
    return load_scenario(path)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


async def echo_rtts(n: int) -> list[float]:
    """Round trips of one 20 ms, 16 kHz PCM frame through a bare websockets echo."""

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    frame = bytes(640)
    async with serve(echo, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
            rtts = []
            for i in range(n + 50):
                t0 = time.perf_counter_ns()
                await ws.send(frame)
                await ws.recv()
                if i >= 50:  # warm-up
                    rtts.append((time.perf_counter_ns() - t0) / 1e6)
                await asyncio.sleep(0.02)  # one frame period, as a live stream would
            return rtts


def replay(scenario: Scenario, pipeline: Any, virtual: bool, out: Path) -> tuple[Any, float]:
    async def main(clock: clocks.Clock) -> Any:
        return await run_scenario(scenario, clock, pipeline=pipeline, run_dir=out)

    t0 = time.perf_counter()
    result = clocks.run(main, virtual=virtual)
    return result, time.perf_counter() - t0


def audio_seconds(run_dir: Path) -> float:
    with wave.open(str(run_dir / "recording.wav")) as wav:
        return wav.getnframes() / wav.getframerate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--echo", type=int, default=1000, help="echo round trips")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        zero = parse_pipeline(ZERO_PIPELINE, "zero-latency.toml")
        scenario = zero_scenario(args.turns, tmp / "overhead.yaml")

        result, real_wall = replay(scenario, zero, False, tmp / "real")
        ok = [r for r in result.records if r["status"] == "ok"]
        v2v = [r["latency_ms"]["voice_to_voice"] for r in ok]
        overhead = [r["latency_ms"]["voice_to_voice"] - r["latency_ms"]["audio_onset"] for r in ok]
        hops = {
            h: pct([r["latency_ms"][h] for r in ok], 50)
            for h in (
                "endpointing",
                "asr_finalize",
                "llm_ttft",
                "first_phrase",
                "tts_first_audio",
                "transport",
                "unaccounted",
            )
        }
        rtts = asyncio.run(echo_rtts(args.echo))

        _, zero_virtual_wall = replay(scenario, zero, True, tmp / "zero-virtual")
        zero_audio = audio_seconds(tmp / "zero-virtual")
        booking = load_scenario(ROOT / "scenarios" / "restaurant-booking.yaml")
        emulated = load_pipeline(ROOT / "pipelines" / "emulated.toml")
        _, booking_wall = replay(booking, emulated, True, tmp / "booking-virtual")
        booking_audio = audio_seconds(tmp / "booking-virtual")

    numbers = {
        "turns": len(ok),
        "overhead_p50_ms": pct(overhead, 50),
        "overhead_p99_ms": pct(overhead, 99),
        "v2v_p50_ms": pct(v2v, 50),
        "v2v_p99_ms": pct(v2v, 99),
        "echo_p50_ms": pct(rtts, 50),
        "echo_p99_ms": pct(rtts, 99),
        "hop_p50_ms": hops,
        "real_time_wall_s": real_wall,
        "virtual_speedup_booking": booking_audio / booking_wall,
        "virtual_speedup_zero": zero_audio / zero_virtual_wall,
        "booking_audio_s": booking_audio,
        "booking_wall_s": booking_wall,
    }
    print(f"testbed overhead, {len(ok)} turns of zero-latency stages over a real loopback websocket")
    print(f"{'':<34}{'p50 ms':>9}{'p99 ms':>9}{'target p50/p99':>17}")
    print(
        f"{'voice-to-voice overhead':<34}{numbers['overhead_p50_ms']:>9.2f}{numbers['overhead_p99_ms']:>9.2f}"
        f"{'<= 1.5 / <= 3.0':>17}"
    )
    print(
        f"{'  (raw v2v, incl. voice attack)':<34}{numbers['v2v_p50_ms']:>9.2f}{numbers['v2v_p99_ms']:>9.2f}"
    )
    print(
        f"{'bare websockets echo, 1 frame':<34}{numbers['echo_p50_ms']:>9.2f}{numbers['echo_p99_ms']:>9.2f}"
    )
    print(f"{'overhead / echo (p50)':<34}{numbers['overhead_p50_ms'] / numbers['echo_p50_ms']:>9.2f}")
    print("hop p50 (ms): " + ", ".join(f"{k} {v:.3f}" for k, v in hops.items()))
    print()
    print(f"{'virtual time':<34}{'audio s':>9}{'wall s':>9}{'speed-up':>10}{'target':>9}")
    print(
        f"{'restaurant-booking, emulated':<34}{booking_audio:>9.1f}{booking_wall:>9.2f}"
        f"{numbers['virtual_speedup_booking']:>9.0f}x{'>= 100x':>9}"
    )
    print(
        f"{f'overhead scenario, {args.turns} turns':<34}{zero_audio:>9.1f}{zero_virtual_wall:>9.2f}"
        f"{numbers['virtual_speedup_zero']:>9.0f}x"
    )
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
