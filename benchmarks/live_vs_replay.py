"""Voice-to-voice at the listener (``vlt demo`` on the virtual mic) vs the replay client.

Speaks the 10 user turns of scenarios/restaurant-booking.yaml (Piper's caller
voice) into the PulseAudio virtual microphone while ``vlt demo --no-hud`` talks
to the default pipeline, then replays the same scenario with ``vlt replay``
against the same pipeline, and prints both runs' hops side by side.

The two figures differ by design in three places:

- *speech end*: the replay client knows where its speech ends (ground truth);
  the demo finds it with its own Silero VAD in what the microphone captured
  (32 ms windows), which shows up in the endpointing hop;
- *playout*: the demo's voice-to-voice ends when the first audible agent
  sample is handed to the output device (jitter buffer + device callback),
  the replay's when it would play on arrival;
- the device latencies PortAudio reports (ADC → callback, callback → DAC) are
  outside both figures; they are printed for reference.

Run:  .venv/bin/python benchmarks/live_vs_replay.py [--pipeline default] [--out runs/live-vs-replay]
(needs PulseAudio; starts the virtual microphone with agent.client.devices.virtual_audio.start()).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.audio import write_wav  # noqa: E402
from agent.client.devices import virtual_audio  # noqa: E402
from agent.client.user_speech import render_user_audio  # noqa: E402
from agent.config.scenario import load_scenario  # noqa: E402
from agent.metrics.results import metric_values, read_turns  # noqa: E402
from agent.metrics.stats import describe  # noqa: E402
from agent.metrics.timeline import HOP_NAMES  # noqa: E402

SCENARIO = ROOT / "scenarios" / "restaurant-booking.yaml"
ROWS = (*HOP_NAMES, "playout", "unaccounted", "voice_to_voice", "voice_to_voice_arrival")
RATE = 16000


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    out: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stream = proc.stdout

    def pump() -> None:
        for line in stream:
            sys.stdout.write("  demo| " + line)
            out.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return out


def _wait(lines: queue.Queue[str], prefix: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if lines.get(timeout=0.2).startswith(prefix):
                return
        except queue.Empty:
            continue
    raise SystemExit(f"demo printed no {prefix!r} within {timeout} s")


def run_live(pipeline: str, out: Path, texts: list[str]) -> None:
    wavs = []
    for i, text in enumerate(texts):
        utt = render_user_audio(text, None, RATE)
        path = out.parent / f"caller-{i}.wav"
        write_wav(path, np.concatenate((utt.pcm, np.zeros(RATE // 4, dtype=np.int16))), RATE)
        wavs.append(path)
    cmd = [sys.executable, "-m", "agent.cli", "demo", "--no-hud", "--pipeline", pipeline]
    cmd += ["--turns", str(len(texts)), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = _lines(proc)
    _wait(lines, "listening", 180)
    for i, wav in enumerate(wavs):
        virtual_audio.play_into_mic_and_wait(wav, timeout=60)
        _wait(lines, f"turn {i} ", 60)
        time.sleep(0.6)  # the demo is half-duplex: the mic reopens 200 ms after the agent
    if proc.wait(timeout=60) != 0:
        raise SystemExit(f"vlt demo exited with {proc.returncode}")


def unscripted_scenario(texts: list[str], path: Path) -> Path:
    """The scenario's user turns only (no replies, no expectations), as a live caller speaks them."""
    body = {"name": "live-vs-replay", "turns": [{"user": text} for text in texts]}
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def run_replay(pipeline: str, scenario: Path, out: Path) -> None:
    cmd = [sys.executable, "-m", "agent.cli", "replay", str(scenario), "--pipeline", pipeline]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([*cmd, "--quiet", "--out", str(out)], check=True, env=env)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", default="default")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "live-vs-replay")
    parser.add_argument("--rounds", type=int, default=1, help="live then replay, this many times")
    args = parser.parse_args()
    texts = [t.text for t in load_scenario(SCENARIO).turns]
    args.out.mkdir(parents=True, exist_ok=True)
    scenario = unscripted_scenario(texts, args.out / "scenario.yaml")
    virtual_audio.start()
    load = os.getloadavg()[0]
    live: list[dict[str, Any]] = []
    replay: list[dict[str, Any]] = []
    for r in range(args.rounds):
        live_dir, replay_dir = args.out / f"live-{r}", args.out / f"replay-{r}"
        run_live(args.pipeline, live_dir, texts)
        run_replay(args.pipeline, scenario, replay_dir)
        live += read_turns(live_dir)
        replay += read_turns(replay_dir)
    manifest = json.loads((args.out / "live-0" / "manifest.json").read_text())
    print()
    print(f"{len(live)} live turns (vlt demo, virtual mic), {len(replay)} replay turns; {args.pipeline}")
    print(f"{'hop (ms)':<24}{'live mean':>10}{'p50':>8}{'replay mean':>13}{'p50':>8}{'Δ mean':>9}")
    numbers: dict[str, Any] = {}
    for row in ROWS:
        a, b = describe(metric_values(live, row)), describe(metric_values(replay, row))
        delta = a["mean"] - b["mean"] if a["n"] and b["n"] else None
        numbers[row] = {"live": a, "replay": b, "delta_mean": delta}
        cells = f"{_fmt(a['mean']):>10}{_fmt(a['p50']):>8}{_fmt(b['mean']):>13}{_fmt(b['p50']):>8}"
        print(f"{row:<24}{cells}{_fmt(delta):>9}")
    # The same utterance, turn by turn: live minus replay.
    paired = [
        (a["latency_ms"]["voice_to_voice"], b["latency_ms"]["voice_to_voice"])
        for a, b in zip(live, replay, strict=False)
        if a["latency_ms"]["voice_to_voice"] is not None and b["latency_ms"]["voice_to_voice"] is not None
    ]
    diffs = describe([x - y for x, y in paired])
    print(
        f"paired v2v (live - replay), {diffs['n']} turns: mean {_fmt(diffs['mean'])}, "
        f"p50 {_fmt(diffs['p50'])}, min {_fmt(diffs['min'])}, max {_fmt(diffs['max'])} ms"
    )
    numbers["paired_v2v_diff"] = diffs
    devices = manifest.get("devices", {})
    for kind in ("input", "output"):
        d = devices.get(kind, {})
        print(
            f"{kind} device: {d.get('device')} {d.get('rate')} Hz, block {d.get('block_ms')} ms, "
            f"PortAudio latency {_fmt(d.get('latency_ms'))} ms"
        )
    print(f"playout buffer: {manifest.get('playout')}")
    print(f"load average at start {load:.2f}; runs in {args.out}")
    (args.out / "comparison.json").write_text(json.dumps(numbers, indent=2))


if __name__ == "__main__":
    main()
