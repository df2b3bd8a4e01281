"""The stereo recording of a session: left the caller as sent (the replay places
each frame at its send time), right the agent as the client would have played it
(placed at its playout time)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.audio import PCM, write_wav

__all__ = ["StereoRecorder"]


class StereoRecorder:
    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._left: list[PCM] = []
        self._left_len = 0
        self._right: list[tuple[int, PCM]] = []
        self._placed: list[tuple[int, PCM]] = []  # caller frames placed by send time (replay)

    def add_user(self, pcm: PCM) -> None:
        """Append the next upstream frame (the caller's track is contiguous)."""
        self._left.append(pcm)
        self._left_len += len(pcm)

    def place_user(self, start_sample: int, pcm: PCM) -> None:
        """Place an upstream frame at ``start_sample`` (where it was really sent); a gap
        before it stays silent, and where frames overlap the earlier one is kept."""
        self._placed.append((max(0, start_sample), pcm))

    def add_agent(self, start_sample: int, pcm: PCM) -> None:
        """Place agent audio at ``start_sample`` of the session timeline."""
        self._right.append((max(0, start_sample), pcm))

    def stereo(self) -> PCM:
        right_len = max((s + len(p) for s, p in self._right), default=0)
        placed_len = max((s + len(p) for s, p in self._placed), default=0)
        out = np.zeros((max(self._left_len, right_len, placed_len), 2), dtype=np.int16)
        if self._left:
            out[: self._left_len, 0] = np.concatenate(self._left)
        # Frames of a late burst went out together and overlap: the earliest is kept, so
        # the last frame of speech is not hidden by the silence sent right behind it.
        for start, pcm in reversed(self._placed):
            out[start : start + len(pcm), 0] = pcm
        for start, pcm in self._right:
            out[start : start + len(pcm), 1] = pcm
        return out

    def write(self, path: str | Path) -> None:
        write_wav(path, self.stereo(), self.sample_rate)
