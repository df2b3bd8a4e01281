"""``vlt demo`` end to end on a virtual microphone: PulseAudio, PortAudio, the default pipeline.

The caller's speech (Piper) is played into a PulseAudio null sink whose monitor
is remapped as the default source; ``vlt demo`` records it through PortAudio's
ALSA ``pulse`` device like any microphone, and plays the agent into another
null sink, which this test records. Nothing is mocked. CI installs and starts
the virtual microphone (.ci/run); elsewhere the test starts it, and is skipped
only where PulseAudio is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from agent.audio import frame_rms_dbfs, read_wav, write_wav
from agent.metrics.results import read_turns
from agent.metrics.timeline import LISTENER_HOPS
from tests.conftest import OutputLines

pytestmark = [
    pytest.mark.skipif(shutil.which("pulseaudio") is None, reason="PulseAudio is not installed"),
    pytest.mark.timeout(300),
]

RATE = 16000
UTTERANCES = ("I would like to book a table for two tonight.", "Seven thirty would be perfect, thank you.")


@pytest.fixture(scope="module")
def virtual_mic() -> None:
    from agent.client.devices import virtual_audio

    virtual_audio.start()


def _caller_wav(text: str, path: Path) -> Path:
    from agent.client.user_speech import render_user_audio

    utt = render_user_audio(text, None, RATE)
    tail = np.zeros(RATE // 4, dtype=np.int16)  # the speech's natural end, then a little room tone
    write_wav(path, np.concatenate((utt.pcm, tail)), RATE)
    return path


def test_demo_answers_through_the_virtual_microphone(tmp_path: Path, virtual_mic: None) -> None:
    from agent.client.devices import speaker_recording, virtual_audio

    wavs = [_caller_wav(text, tmp_path / f"caller{i}.wav") for i, text in enumerate(UTTERANCES)]
    run_dir = tmp_path / "run"
    vlt = [sys.executable, "-m", "agent.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with speaker_recording.record_speaker(tmp_path / "speaker.wav") as speaker:
        proc = subprocess.Popen(
            [*vlt, "demo", "--no-hud", "--turns", "2", "--out", str(run_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            out = OutputLines(proc)
            out.wait_for("listening", timeout=120)  # the default pipeline's models load first
            for i, wav in enumerate(wavs):
                virtual_audio.play_into_mic_and_wait(wav, timeout=30)
                out.wait_for(f"turn {i} ", timeout=60)
                time.sleep(0.5)  # half-duplex: the mic reopens 200 ms after the agent's audio
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            _, err = proc.communicate()
    assert proc.returncode == 0, err

    records = read_turns(run_dir)
    assert [r["status"] for r in records] == ["ok", "ok"], records
    for record in records:
        # Every mark, from the client VAD's speech end to the device callback.
        assert record["missing_marks"] == []
        lat = record["latency_ms"]
        assert all(lat[h.name] is not None for h in LISTENER_HOPS)
        # Plausible voice-to-voice: the agent's 512 ms endpoint is in it, and on
        # this machine the default pipeline answers well within 3 s.
        assert 500 < lat["voice_to_voice"] < 3000
        assert 0 <= lat["playout"] < 250
        assert lat["voice_to_voice"] >= lat["voice_to_voice_arrival"]
    assert "table" in (records[0]["transcript"] or "").lower()

    # The agent's audio reached the output sink: audible for a while.
    played, rate = read_wav(speaker.path)
    window = rate // 50
    loud = [frame_rms_dbfs(played[i : i + window]) > -40 for i in range(0, len(played) - window, window)]
    assert sum(loud) * 20 >= 500, "less than 0.5 s of agent audio reached the speaker sink"

    with wave.open(str(run_dir / "recording.wav")) as recording:
        assert recording.getnchannels() == 2  # left the caller as sent, right the agent as played
    assert (run_dir / "summary.json").exists() and (run_dir / "manifest.json").exists()


def _start_demo(args: list[str], run_dir: Path) -> tuple[subprocess.Popen[str], OutputLines]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "demo", "--no-hud", *args, "--out", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # A background job inherits SIGINT ignored; give the child the default back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    return proc, OutputLines(proc)


def test_barge_in_stops_the_agent_and_measures_the_stop(tmp_path: Path, virtual_mic: None) -> None:
    from agent.client.devices import virtual_audio

    first = _caller_wav("Could you tell me about all of your specials tonight?", tmp_path / "a.wav")
    second = _caller_wav("Sorry, wait a moment.", tmp_path / "b.wav")
    run_dir = tmp_path / "run"
    proc, out = _start_demo(["--barge-in", "--turns", "2"], run_dir)
    try:
        out.wait_for("listening", timeout=120)
        virtual_audio.play_into_mic_and_wait(first, timeout=30)
        # The agent answers about a second after the speech ends and talks for
        # seconds: 1.6 s later it is mid-sentence. (The virtual speaker does not
        # echo into the virtual mic, so only the caller's speech can interrupt.)
        time.sleep(1.6)
        virtual_audio.play_into_mic_and_wait(second, timeout=30)
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    assert proc.returncode == 0, err
    interrupted, interrupting = read_turns(run_dir)
    assert interrupted["status"] == "interrupted"
    assert "client.playback_stopped" in interrupted["marks_ns"]
    barge = interrupting["barge_in"]
    assert barge is not None and barge["interrupted_turn"] == interrupted["turn"]
    # Silero confirms speech after 90 ms (3 windows of 32 ms), then the flush
    # silences the next device block.
    assert 50 < barge["stop_ms"] < 400


def test_ctrl_c_keeps_every_finished_turn_and_the_recording(tmp_path: Path, virtual_mic: None) -> None:
    from agent.client.devices import virtual_audio

    wav = _caller_wav(UTTERANCES[0], tmp_path / "a.wav")
    run_dir = tmp_path / "run"
    proc, out = _start_demo([], run_dir)
    try:
        out.wait_for("listening", timeout=120)
        virtual_audio.play_into_mic_and_wait(wav, timeout=30)
        out.wait_for("turn 0 ", timeout=60)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == 130
    records = read_turns(run_dir)
    assert len(records) == 1 and records[0]["status"] == "ok"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["turns"] == 1
    with wave.open(str(run_dir / "recording.wav")) as recording:
        assert recording.getnframes() > RATE  # more than a second of conversation
