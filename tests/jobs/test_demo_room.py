"""``vlt demo`` against an independent recording of the "room" (real PulseAudio, no mocks).

One stereo PulseAudio null sink is the room. The caller's WAVs are played into its
left channel (a remap sink), the demo's microphone is the left channel of its monitor
(a remap source), and the demo's output goes to its right channel (another remap
sink), so one ``parec`` of the monitor holds the caller and the agent on one sample
clock — the same arrangement that found the demo ~85-100 ms off (issue 12). The demo
reaches the room through PortAudio's ALSA ``pulse`` device with PULSE_SOURCE and
PULSE_SINK set for its process only, so the session's default devices (the virtual
microphone other tests use) are left alone.

Per turn, the silence in the room recording (the caller's last audible sample on the
left → the agent's first on the right, agent.metrics.recording_truth) is held
against the demo's voice-to-voice.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.audio import write_wav
from agent.metrics.recording_truth import audible_windows, first_audible, last_audible, read_recording
from agent.metrics.results import read_turns
from tests.conftest import OutputLines

_TOOLS = ("pulseaudio", "pactl", "parec", "paplay", "pacat")
pytestmark = [
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in _TOOLS), reason="PulseAudio and its tools are not installed"
    ),
    pytest.mark.timeout(400),
]

RATE = 16000
TEXTS = (
    "Hi, I'd like to book a table for Friday evening.",
    "There will be four of us.",
    "Seven thirty is perfect.",
    "Do you have any cordless drills in stock?",
    "Great, thanks. I'll come by in the morning.",
)
#: The demo's figure vs the room, per turn. The issue's target is 15 ms; before the
#: ADC/DAC times and the audible speech end the demo was 84 ms off on average.
TOLERANCE_MS = 30.0


@pytest.fixture
def room() -> Iterator[str]:
    """The room's null sink name; its remap sinks/source are NAME_caller, NAME_agent, NAME_mic."""
    from agent.client.devices import virtual_audio
    from agent.client.devices.pulse_tools import pactl

    virtual_audio.start()  # a running PulseAudio daemon (the shared virtual microphone's)
    name = f"vlt_room_{uuid.uuid4().hex[:6]}"
    modules: list[str] = []
    try:
        for args in (
            ("module-null-sink", f"sink_name={name}", "channels=2", "channel_map=front-left,front-right",
             f"rate={RATE}", "format=s16le"),
            ("module-remap-sink", f"sink_name={name}_caller", f"master={name}", "channels=1",
             "channel_map=mono", "master_channel_map=front-left", "remix=no"),
            ("module-remap-sink", f"sink_name={name}_agent", f"master={name}", "channels=1",
             "channel_map=mono", "master_channel_map=front-right", "remix=no"),
            ("module-remap-source", f"source_name={name}_mic", f"master={name}.monitor", "channels=1",
             "channel_map=mono", "master_channel_map=front-left", "remix=no"),
        ):  # fmt: skip
            modules.append(pactl("load-module", *args).stdout.strip())
        yield name
    finally:
        for module in reversed(modules):
            pactl("unload-module", module, check=False)


def _silence_feeder(sink: str) -> tuple[subprocess.Popen[bytes], threading.Event]:
    """Keep the room's sink running (a suspended sink's monitor delivers nothing)."""
    feeder = subprocess.Popen(
        ["pacat", "--raw", f"--device={sink}", "--channels=2", f"--rate={RATE}", "--format=s16le"],
        stdin=subprocess.PIPE,
    )
    stop = threading.Event()

    def feed() -> None:
        block = bytes(RATE * 4 // 100)  # 10 ms of stereo silence
        while not stop.is_set():
            try:
                assert feeder.stdin is not None
                feeder.stdin.write(block)
                feeder.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                return
            time.sleep(0.01)

    threading.Thread(target=feed, daemon=True).start()
    return feeder, stop


def _speech_ends(left: np.ndarray, gap_ms: float = 400.0) -> list[int]:
    """Where each caller utterance ends in the room: its last audible sample before a gap."""
    w = RATE * 5 // 1000
    need = round(gap_ms / 5)
    ends, quiet, speaking = [], 0, False
    for i, loud in enumerate(audible_windows(left, RATE)):
        if loud:
            speaking, quiet = True, 0
            continue
        quiet += 1
        if speaking and quiet == need:
            end = last_audible(left, RATE, (i - need + 1) * w + w)
            if end is not None:
                ends.append(end)
            speaking = False
    return ends


def test_the_demos_voice_to_voice_is_the_silence_in_the_room(tmp_path: Path, room: str) -> None:
    from agent.client.user_speech import render_user_audio

    wavs = []
    for i, text in enumerate(TEXTS):
        utt = render_user_audio(text, None, RATE)
        wavs.append(tmp_path / f"caller{i}.wav")
        write_wav(wavs[-1], np.concatenate((utt.pcm, np.zeros(RATE // 4, np.int16))), RATE)
    feeder, stop_feeding = _silence_feeder(room)
    recorder = subprocess.Popen(
        ["parec", f"--device={room}.monitor", "--channels=2", f"--rate={RATE}", "--format=s16le",
         "--file-format=wav", str(tmp_path / "room.wav")]
    )  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PULSE_SINK": f"{room}_agent", "PULSE_SOURCE": f"{room}_mic"}
    run_dir = tmp_path / "run"
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "demo",
            "--no-hud",
            "--turns",
            str(len(TEXTS)),
            "--out",
            str(run_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        out = OutputLines(demo)
        out.wait_for("listening", timeout=120)
        time.sleep(0.5)
        for i, wav in enumerate(wavs):
            subprocess.run(["paplay", f"--device={room}_caller", str(wav)], check=True, timeout=30)
            out.wait_for(f"turn {i} ", timeout=60)
            time.sleep(0.8)  # half-duplex: the microphone reopens after the agent's audio
        demo.wait(timeout=60)
        time.sleep(0.3)
    finally:
        if demo.poll() is None:
            demo.kill()
        _, err = demo.communicate()
        recorder.send_signal(signal.SIGINT)
        recorder.wait(timeout=10)
        stop_feeding.set()
        feeder.kill()
        feeder.wait()
        assert feeder.stdin is not None
        with contextlib.suppress(OSError):
            feeder.stdin.close()
    assert demo.returncode == 0, err

    stereo, rate = read_recording(tmp_path / "room.wav")
    records = read_turns(run_dir)
    ends = _speech_ends(stereo[:, 0])
    assert [r["status"] for r in records] == ["ok"] * len(TEXTS)
    assert len(ends) == len(TEXTS), ends
    diffs = []
    for record, end in zip(records, ends, strict=True):
        onset = first_audible(stereo[:, 1], rate, end)
        assert onset is not None
        heard = (onset - end) * 1000 / rate
        diffs.append(record["latency_ms"]["voice_to_voice"] - heard)
        # The device paths PortAudio observed are in the record (ALSA-pulse reports them).
        assert record["playout"]["output_latency_ms"] is not None
    print("demo voice-to-voice - silence in the room, per turn (ms):", [round(d, 1) for d in diffs])
    assert max(abs(d) for d in diffs) <= TOLERANCE_MS, diffs
