"""Cutting device blocks into session frames (agent/client/devices/live_audio.py Framer).

Pure arithmetic on sample counts and timestamps; the resampling path is the one
a device that rejects 16 kHz takes (it is opened at its own rate).
"""

from __future__ import annotations

import numpy as np

from agent.client.devices.live_audio import Framer

MS = 1_000_000


def test_frames_carry_the_receive_time_of_their_last_sample() -> None:
    framer = Framer(16000, 16000, 320)
    # A 30 ms block received at t=1000 ms: one 20 ms frame out, 10 ms left over.
    out = framer.push(np.arange(480, dtype=np.int16), 1000 * MS)
    assert len(out) == 1
    frame, t = out[0]
    assert frame.tolist() == list(range(320))
    assert t == 1000 * MS - 10 * MS  # 160 samples of the block came after its last sample
    out = framer.push(np.arange(480, 960, dtype=np.int16), 1030 * MS)
    assert [t for _, t in out] == [1010 * MS, 1030 * MS]
    assert out[0][0].tolist() == list(range(320, 640))


def test_a_48_khz_device_is_resampled_to_session_frames() -> None:
    framer = Framer(48000, 16000, 320)
    t = np.arange(48000) / 48000
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    frames = []
    for k in range(50):  # 50 blocks of 20 ms at 48 kHz
        frames += framer.push(tone[k * 960 : (k + 1) * 960], (k + 1) * 20 * MS)
    # The resampler's filter holds back some audio (~40 ms here), so fewer frames come out...
    assert 45 <= len(frames) <= 50
    assert all(len(f) == 320 for f, _ in frames)
    audio = np.concatenate([f for f, _ in frames]).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(audio[1600:14400]))
    peak_hz = np.argmax(spectrum) * 16000 / len(audio[1600:14400])
    assert abs(peak_hz - 440) < 5
    # ... and they are stamped as that much older: frame k ends at (k + 1) * 20 ms
    # of the input, to within a sample or two of the filter's phase.
    for k, (_, t) in enumerate(frames):
        assert abs(t - (k + 1) * 20 * MS) <= MS // 4
