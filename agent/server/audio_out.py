"""Agent audio → binary websocket frames, paced like a telephony stream.

The server sends audio no more than ``lead_ms`` ahead of real-time playout.
The client's buffer therefore stays short, a barge-in silences the agent within
about that lead, and the client's arrival times reflect when audio was really
available. The pacing model is the same playout model the client uses: a chunk
starts playing at ``max(arrival, end of the previous chunk)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np

from agent.audio import PCM, pcm_to_bytes
from agent.clock import NS_PER_S, Clock

__all__ = ["AudioOut"]

Send = Callable[[bytes], Awaitable[None]]
OnSent = Callable[[int], None]


class AudioOut:
    """Frames and paces one session's outgoing agent audio."""

    def __init__(
        self, send: Send, clock: Clock, sample_rate: int, frame_samples: int, lead_ms: float
    ) -> None:
        self._send = send
        self._clock = clock
        self._frame = frame_samples
        self._frame_ns = frame_samples * NS_PER_S // sample_rate
        self._sample_ns = NS_PER_S / sample_rate
        self._lead_ns = round(lead_ms * 1e6)
        self._pending = np.zeros(0, dtype=np.int16)
        self.playout_end_ns = 0
        """When the client will have finished playing everything sent so far."""

    async def write(self, pcm: PCM, on_sent: OnSent | None = None) -> int | None:
        """Send every whole frame of ``pcm`` (the rest waits for more audio or
        :meth:`flush`). Returns the send time of the first frame sent, if any.

        ``on_sent(t_ns)`` is called as soon as each frame has been sent, so a
        caller cancelled mid-write (barge-in) still learns what went out."""
        if len(self._pending):
            pcm = np.concatenate((self._pending, pcm))
        whole = len(pcm) - len(pcm) % self._frame
        self._pending = pcm[whole:]
        first: int | None = None
        for start in range(0, whole, self._frame):
            sent = await self._send_frame(pcm[start : start + self._frame])
            if on_sent is not None:
                on_sent(sent)
            if first is None:
                first = sent
        return first

    async def flush(self, on_sent: OnSent | None = None) -> int | None:
        """Send a final partial frame, if any (the end of a phrase)."""
        if not len(self._pending):
            return None
        pcm, self._pending = self._pending, np.zeros(0, dtype=np.int16)
        sent = await self._send_frame(pcm)
        if on_sent is not None:
            on_sent(sent)
        return sent

    def discard(self) -> None:
        """Drop unsent audio (barge-in)."""
        self._pending = np.zeros(0, dtype=np.int16)

    async def _send_frame(self, frame: PCM) -> int:
        due = self.playout_end_ns - self._lead_ns
        if due > self._clock.now_ns():  # no needless yield on the first frame's critical path
            await self._clock.sleep_until(due)
        await self._send(pcm_to_bytes(frame))
        now = self._clock.now_ns()
        duration = self._frame_ns if len(frame) == self._frame else round(len(frame) * self._sample_ns)
        self.playout_end_ns = max(self.playout_end_ns, now) + duration
        return now
