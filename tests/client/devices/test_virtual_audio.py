"""The virtual PulseAudio microphone and speaker, end to end with real PulseAudio and PortAudio.

The real tests skip only where ``pulseaudio`` is not installed (CI installs
it: ``.ci/run``). They share the user's PulseAudio daemon, start the virtual
mic if it is not up, and leave it running (``vlt virtual-mic start`` is
idempotent; other tests and a running demo may use it). The start/stop test
runs its own daemon in a private XDG_RUNTIME_DIR.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.audio import FULL_SCALE, read_wav, write_wav
from agent.client.devices import speaker_recording, virtual_audio
from agent.client.devices.virtual_audio import MIC_SINK, MIC_SOURCE, SPEAKER_SINK, VirtualAudioError
from tests.conftest import ROOT

HAVE_PULSEAUDIO = shutil.which("pulseaudio") is not None
real_pulseaudio = pytest.mark.skipif(
    not HAVE_PULSEAUDIO,
    reason="pulseaudio is not installed (apt-get install pulseaudio pulseaudio-utils "
    "libasound2-plugins libportaudio2); CI installs it",
)

RATE = 16000
TONE_DBFS = 20 * np.log10(0.5 / np.sqrt(2))  # a sine at half of full scale: about -9 dBFS
VLT = [sys.executable, "-m", "agent.cli"]


def _tone(seconds: float, rate: int = RATE, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def _dbfs(pcm: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    return 20 * np.log10(max(rms, 1e-9) / FULL_SCALE)


# -- without PulseAudio -------------------------------------------------------------


def test_missing_pulseaudio_names_the_debian_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(VirtualAudioError) as err:
        virtual_audio.start()
    assert str(err.value) == (
        "pactl not found (package pulseaudio-utils); the virtual microphone needs PulseAudio: "
        "apt-get install pulseaudio pulseaudio-utils libasound2-plugins libportaudio2"
    )


def test_play_a_missing_file_is_a_one_line_error() -> None:
    result = subprocess.run(
        [*VLT, "virtual-mic", "play", "nope.wav"], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "vlt: error: nope.wav: no such audio file"


# -- with PulseAudio ----------------------------------------------------------------


@pytest.fixture(scope="module")
def virtual_mic() -> Iterator[virtual_audio.VirtualAudioStatus]:
    """The virtual mic, up (left up afterwards), and PortAudio seeing it."""
    from agent.client.devices import sound_devices

    up = virtual_audio.start()
    if not any(d.name == "pulse" for d in sound_devices.list_devices()):
        # PortAudio was loaded (by an earlier test) before PulseAudio ran.
        sound_devices.rescan()
    yield up


def _our_module_count() -> int:
    modules = subprocess.run(
        ["pactl", "list", "short", "modules"], capture_output=True, text=True, check=True
    ).stdout
    names = (f"sink_name={MIC_SINK}", f"sink_name={SPEAKER_SINK}", f"source_name={MIC_SOURCE}")
    return sum(any(name in line.split() for name in names) for line in modules.splitlines())


@real_pulseaudio
@pytest.mark.timeout(30)
def test_start_is_idempotent(virtual_mic: virtual_audio.VirtualAudioStatus) -> None:
    assert virtual_mic.ready, virtual_mic.missing()
    again = virtual_audio.start()
    assert again.ready
    assert again.feeder_pid == virtual_mic.feeder_pid  # no second feeder
    assert _our_module_count() == 3  # no second copy of the sinks or the source
    assert (again.default_source, again.default_sink) == (MIC_SOURCE, SPEAKER_SINK)
    assert again.mic_format == "s16le 1ch 16000Hz"
    now = virtual_audio.status()
    assert now.ready and now.describe().startswith("virtual mic ready: source vlt_mic")
    result = subprocess.run([*VLT, "virtual-mic", "status"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.startswith("virtual mic ready"), result


@real_pulseaudio
@pytest.mark.timeout(30)
def test_vlt_devices_lists_the_pulse_devices(virtual_mic: virtual_audio.VirtualAudioStatus) -> None:
    result = subprocess.run([*VLT, "devices"], capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr
    names = [line.split()[-1] for line in result.stdout.splitlines()[1:-1]]
    assert "pulse" in names and "default" in names, result.stdout


@real_pulseaudio
@pytest.mark.timeout(30)
def test_sounddevice_records_a_tone_played_into_the_mic(
    virtual_mic: virtual_audio.VirtualAudioStatus, tmp_path: Path
) -> None:
    from agent.client.devices.sound_devices import open_stream, plan_stream, resolve_device, stream_latency_ms

    wav = tmp_path / "tone.wav"
    write_wav(wav, _tone(0.5), RATE)
    plan = plan_stream(resolve_device(None, "input"), "input", RATE)
    assert not plan.resampled
    blocks: list[tuple[float, np.ndarray]] = []
    lock = threading.Lock()

    def callback(indata: Any, frames: int, time_info: Any, status: Any) -> None:
        with lock:
            blocks.append((time.monotonic(), indata[:, 0].copy()))

    stream = open_stream(plan, blocksize=320, callback=callback)
    opened = time.monotonic()
    stream.start()
    try:
        latency_ms = stream_latency_ms(stream)
        time.sleep(0.3)
        played = time.monotonic()
        virtual_audio.wait_played(virtual_audio.play_into_mic(wav), timeout=10)
        time.sleep(0.2)
    finally:
        stream.stop()
        stream.close()

    assert 0 < latency_ms < 200
    # The silence feeder keeps the source running: callbacks start at once.
    assert blocks and blocks[0][0] - opened < 0.2
    audio = np.concatenate([block for _, block in blocks])
    onset_block = next(i for i, (_, block) in enumerate(blocks) if np.abs(block).max() > 3000)
    onset_delay = blocks[onset_block][0] - played
    assert 0 < onset_delay < 0.15, f"tone arrived {onset_delay * 1000:.0f} ms after paplay started"
    before = np.concatenate([block for _, block in blocks[:onset_block]])
    assert _dbfs(before) < -80  # silence, not noise, until the tone
    onset = int(np.argmax(np.abs(audio) > 3000))
    assert _dbfs(audio[onset : onset + RATE * 4 // 10]) == pytest.approx(TONE_DBFS, abs=1.0)
    tone_samples = int(np.sum(np.abs(audio) > 3000))
    assert tone_samples > 0.4 * RATE * 0.5  # most of the tone's half-second (|sine| > 0.18 for ~0.8)


@real_pulseaudio
@pytest.mark.timeout(30)
def test_a_tone_played_to_the_default_output_reaches_record_speaker(
    virtual_mic: virtual_audio.VirtualAudioStatus, tmp_path: Path
) -> None:
    from agent.client.devices.sound_devices import open_stream, plan_stream, resolve_device

    tone = _tone(0.5)
    position = 0

    def callback(outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        nonlocal position
        chunk = tone[position : position + frames]
        outdata[: len(chunk), 0] = chunk
        outdata[len(chunk) :, 0] = 0
        position += len(chunk)

    plan = plan_stream(resolve_device(None, "output"), "output", RATE)
    with speaker_recording.record_speaker(tmp_path / "speaker.wav") as recording:
        time.sleep(0.2)
        # 20 ms blocks; a roomy buffer, so that a busy CI machine does not underrun.
        stream = open_stream(plan, blocksize=320, callback=callback, latency=0.1, start=True)
        try:
            time.sleep(0.8)
        finally:
            stream.stop()
            stream.close()
        time.sleep(0.1)
    pcm, rate = read_wav(recording.path)
    assert rate == RATE and pcm.ndim == 1
    assert len(pcm) / rate == pytest.approx(1.1, abs=0.3)  # the recording follows the wall clock
    onset = int(np.argmax(np.abs(pcm) > 3000))
    assert 0.15 < onset / rate < 0.5, onset / rate
    assert _dbfs(pcm[: onset - RATE // 100]) < -80  # silence before (the 10 ms before: filter ringing)
    windows = pcm[onset + 320 : onset + 320 + RATE * 4 // 10].reshape(-1, 320)
    levels = [_dbfs(w) for w in windows]
    assert min(levels) > TONE_DBFS - 1.5, levels  # no dropouts
    assert np.mean(levels) == pytest.approx(TONE_DBFS, abs=1.0)


@real_pulseaudio
@pytest.mark.timeout(60)
def test_start_and_stop_own_daemon_in_a_private_runtime_dir() -> None:
    """No daemon answers: start starts one, stop ends it (and leaves the user's alone)."""
    runtime = tempfile.mkdtemp(prefix="vlt-xdg-")  # short: the socket path must fit 108 bytes
    env = {**os.environ, "XDG_RUNTIME_DIR": runtime}

    def vlt(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*VLT, "virtual-mic", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=30
        )

    shared = virtual_audio.status()
    try:
        before = vlt("status")
        assert (before.returncode, before.stdout) == (1, "virtual mic not ready: no PulseAudio daemon\n")
        first = vlt("start")
        assert first.returncode == 0, first.stderr
        assert first.stdout.startswith("virtual mic ready: source vlt_mic (s16le 1ch 16000Hz")
        assert "(started by vlt)" in first.stdout
        assert Path(runtime, "pulse", "native").exists()
        second = vlt("start")
        assert second.stdout == first.stdout  # same feeder pid, nothing reloaded
        assert vlt("status").returncode == 0
        stopped = vlt("stop")
        assert stopped.stdout == "virtual mic stopped (and the PulseAudio daemon vlt had started)\n"
        after = vlt("status")
        assert (after.returncode, after.stdout) == (1, "virtual mic not ready: no PulseAudio daemon\n")
    finally:
        vlt("stop")
        shutil.rmtree(runtime, ignore_errors=True)
    if shared.ready:  # the user's virtual mic, if up, was not touched
        assert virtual_audio.status().feeder_pid == shared.feeder_pid
