"""What a stereo run recording says, measured independently of the turn records. Pure.

The recording's left channel is the caller, its right the agent, on one sample
clock (sample 0 = the run's origin). Audible means a 5 ms window (non-overlapping)
whose RMS is above -40 dBFS — the replay client's own onset rule — refined to the
first or last sample in that window above the threshold's amplitude. From that:

- :func:`heard_silence_ms`: the caller's last audible sample of a turn → the agent's
  first audible sample after it (the silence voice-to-voice claims to be);
- :func:`heard_barge_in_stop_ms`: the interrupting speech's first audible sample →
  the end of the agent's audio it cut off (the first inaudible stretch of ``gap_ms``).

Used by benchmarks/truth.py and the tests that hold the records to the recording.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from agent.audio import AUDIBLE_DBFS, FULL_SCALE, PCM, AudioFileError

__all__ = [
    "WINDOW_MS",
    "audible_windows",
    "first_audible",
    "heard_barge_in_stop_ms",
    "heard_silence_ms",
    "last_audible",
    "read_recording",
]

WINDOW_MS = 5.0


def read_recording(path: str | Path) -> tuple[PCM, int]:
    """A run's stereo ``recording.wav`` as (samples x 2 int16, rate)."""
    try:
        with wave.open(str(path), "rb") as f:
            if f.getsampwidth() != 2 or f.getnchannels() != 2:
                raise AudioFileError(path, "is not a 16-bit stereo run recording")
            rate, data = f.getframerate(), f.readframes(f.getnframes())
    except FileNotFoundError:
        raise AudioFileError(path, "file not found") from None
    except (wave.Error, EOFError) as exc:
        raise AudioFileError(path, f"is not a readable PCM WAV file ({exc or 'truncated'})") from exc
    return np.frombuffer(data, dtype="<i2").reshape(-1, 2).astype(np.int16), rate


def _amp(threshold_dbfs: float) -> float:
    return FULL_SCALE * 10 ** (threshold_dbfs / 20)


def audible_windows(track: PCM, rate: int, threshold_dbfs: float = AUDIBLE_DBFS) -> np.ndarray:
    """One bool per whole ``WINDOW_MS`` window of the mono ``track``: its RMS is above the threshold."""
    w = max(1, round(rate * WINDOW_MS / 1000))
    n = track.shape[0] // w
    x = track[: n * w].astype(np.float64).reshape(n, w)
    return np.asarray(np.sqrt((x * x).mean(axis=1)) > _amp(threshold_dbfs))


def first_audible(track: PCM, rate: int, start: int = 0, threshold_dbfs: float = AUDIBLE_DBFS) -> int | None:
    """The first audible sample at or after ``start`` (window rule, refined to the sample)."""
    w = max(1, round(rate * WINDOW_MS / 1000))
    start = max(0, start)
    loud = audible_windows(track[start:], rate, threshold_dbfs)
    hits = np.flatnonzero(loud)
    if not hits.size:
        return None
    i = start + int(hits[0]) * w
    above = np.flatnonzero(np.abs(track[i : i + w].astype(np.int32)) > _amp(threshold_dbfs))
    return i + (int(above[0]) if above.size else 0)


def last_audible(track: PCM, rate: int, end: int, threshold_dbfs: float = AUDIBLE_DBFS) -> int | None:
    """The sample after the last audible one before ``end`` (its end: where silence begins)."""
    end = min(end, track.shape[0])
    found = first_audible(track[:end][::-1].copy(), rate, 0, threshold_dbfs)
    return None if found is None else end - found


def heard_silence_ms(
    stereo: PCM, rate: int, speech_end: int, search_ms: float = 200.0
) -> tuple[float | None, int | None, int | None]:
    """(silence in ms, caller's speech end, agent's onset) around the caller's speech end
    near sample ``speech_end`` (the last audible caller sample up to ``search_ms`` after it)."""
    left, right = stereo[:, 0], stereo[:, 1]
    end = last_audible(left, rate, speech_end + round(search_ms * rate / 1000))
    if end is None:
        return None, None, None
    onset = first_audible(right, rate, end)
    if onset is None:
        return None, end, None
    return (onset - end) * 1000 / rate, end, onset


def heard_barge_in_stop_ms(
    stereo: PCM, rate: int, speech_start: int, search_ms: float = 200.0, gap_ms: float = 100.0
) -> float | None:
    """The caller's interrupting speech start (first audible caller sample from ``search_ms``
    before ``speech_start``) → where the agent's audio stops for at least ``gap_ms``."""
    left, right = stereo[:, 0], stereo[:, 1]
    start = first_audible(left, rate, speech_start - round(search_ms * rate / 1000))
    if start is None:
        return None
    w = max(1, round(rate * WINDOW_MS / 1000))
    loud = audible_windows(right[start:], rate)
    need = max(1, round(gap_ms / WINDOW_MS))
    quiet = 0
    for i, is_loud in enumerate(loud):
        quiet = 0 if is_loud else quiet + 1
        if quiet == need:
            gap_start = start + (i - need + 1) * w
            stop = last_audible(right, rate, gap_start + w)
            if stop is None or stop < start:
                return 0.0
            return (stop - start) * 1000 / rate
    return None
