"""The caller's speech end at the last audible sample, not at the VAD's window edge.

A live client's VAD (Silero: 32 ms windows, then its own hysteresis) places the end of
speech up to a window late — ~41 ms (median) after the last audible sample, measured
against an independent recording — and once 88 ms *early*, on a faint final consonant
it called silence. The replay's ground truth is the -40 dBFS rule (5 ms RMS windows);
:class:`RecentAudio` keeps the last seconds of microphone audio so the live client can
apply the same rule around the VAD's edge.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from agent.audio import PCM
from agent.metrics.recording_truth import last_audible

__all__ = ["AFTER_MS", "BEFORE_MS", "RecentAudio"]

#: How far before / after the VAD's speech end the last audible sample is looked for.
BEFORE_MS = 300.0
AFTER_MS = 150.0


class RecentAudio:
    """The last ``keep_s`` seconds of the microphone's samples, by session sample index."""

    def __init__(self, rate: int, keep_s: float = 3.0) -> None:
        self.rate = rate
        self._keep = round(keep_s * rate)
        self._frames: deque[tuple[int, PCM]] = deque()
        self._samples = 0

    def add(self, first: int, pcm: PCM) -> None:
        self._frames.append((first, pcm))
        self._samples += len(pcm)
        while self._frames and self._samples - len(self._frames[0][1]) >= self._keep:
            self._samples -= len(self._frames.popleft()[1])

    def audible_end(self, vad_end: int) -> int | None:
        """The sample after the last audible one within [vad_end - BEFORE_MS, vad_end + AFTER_MS]
        (as much of it as has been received); None when none is audible or kept."""
        if not self._frames:
            return None
        lo = max(vad_end - round(BEFORE_MS * self.rate / 1000), self._frames[0][0])
        hi = vad_end + round(AFTER_MS * self.rate / 1000)
        base = self._frames[0][0]
        track = np.concatenate([pcm for _, pcm in self._frames])
        end = last_audible(track[: max(hi - base, 0)], self.rate, hi - base)
        if end is None or base + end <= lo:
            return None
        return base + end
