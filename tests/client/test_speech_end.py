"""The live client's speech end at the last audible sample (the replay's -40 dBFS rule),
whether the VAD's edge falls after it (a window late) or before it (a faint last sound)."""

from __future__ import annotations

import numpy as np

from agent.client.speech_end import RecentAudio

RATE = 16000
FRAME = 320


def _fed(signal: np.ndarray) -> RecentAudio:
    recent = RecentAudio(RATE)
    for first in range(0, len(signal), FRAME):
        recent.add(first, signal[first : first + FRAME])
    return recent


def _tone(n: int, amplitude: float) -> np.ndarray:
    return (amplitude * np.sin(np.arange(n) * 2 * np.pi * 220 / RATE)).astype(np.int16)


def test_a_late_vad_edge_moves_back_to_the_last_audible_sample() -> None:
    speech_end = 16000 + 123
    signal = np.concatenate((_tone(speech_end, 8000), np.zeros(RATE, np.int16)))
    found = _fed(signal).audible_end(speech_end + 41 * 16)  # the VAD: 41 ms late
    # Within the 0.5 ms that the tone's zero crossings allow.
    assert found is not None and abs(found - speech_end) <= 8


def test_a_faint_final_sound_the_vad_called_silence_still_counts() -> None:
    loud, faint = _tone(16000, 8000), _tone(1200, 600)  # -35 dBFS tail: audible, below a VAD's threshold
    signal = np.concatenate((loud, faint, np.zeros(RATE, np.int16)))
    found = _fed(signal).audible_end(16000)  # the VAD ended at the loud part
    assert found is not None and abs(found - (16000 + 1200)) <= 8


def test_nothing_audible_near_the_edge_keeps_the_vads_edge() -> None:
    signal = np.concatenate((_tone(8000, 8000), np.zeros(3 * RATE, np.int16)))
    assert _fed(signal).audible_end(40000) is None  # the speech ended 2 s before: not this edge
    assert RecentAudio(RATE).audible_end(100) is None
