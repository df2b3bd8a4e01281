"""The live client's playout (jitter) buffer, between the websocket and the speaker.

The agent paces its audio in real time with a small lead, so frames arrive
about as fast as they play, give or take network and scheduling jitter. The
output device pulls a fixed block every few milliseconds from its own thread.
Between the two sits this buffer:

- a response starts playing once ``prebuffer`` samples are queued — or at once
  when the response has ended (a reply shorter than the prebuffer must not wait
  forever) — so a late frame does not become a click of silence mid-word;
- when the queue runs dry before the response ended, that is an *underrun*: the
  device gets silence, it is counted, and playback waits for the prebuffer
  again;
- a barge-in ``flush`` drops everything queued, so the agent goes quiet within
  one device block.

Pure bookkeeping on sample counts: no clock, no I/O. ``pull`` reports where in
the block each piece of agent audio starts (and where a turn's first audible
sample is), so the caller can timestamp it with the time of the callback.
Thread-safe: ``push``/``flush`` run on the event loop, ``pull`` in the audio
device's callback thread.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from agent.audio import PCM

__all__ = ["Chunk", "PlayEvent", "PlayoutBuffer", "Pulled"]


@dataclass(slots=True)
class Chunk:
    """Agent audio queued for the device.

    ``onset`` is the index of the turn's first audible sample if it lies in this
    chunk; ``played`` counts the samples already handed to the device.
    """

    pcm: PCM
    turn: int
    onset: int | None = None
    played: int = 0
    id: int = 0


@dataclass(frozen=True, slots=True)
class PlayEvent:
    """Something that happened at sample ``offset`` of a pulled block.

    ``kind`` is ``chunk`` (samples ``start`` to ``start + length`` of agent audio
    chunk ``chunk_id`` of ``turn`` are at this offset of the block), ``onset`` (the turn's first
    audible sample) or ``drained`` (the turn's last queued sample has been
    handed over and its response had ended).
    """

    kind: str
    turn: int
    offset: int
    chunk_id: int = 0
    start: int = 0
    length: int = 0


@dataclass(frozen=True, slots=True)
class Pulled:
    pcm: PCM
    events: tuple[PlayEvent, ...]


class PlayoutBuffer:
    def __init__(self, prebuffer: int) -> None:
        if prebuffer < 0:
            raise ValueError("prebuffer must be >= 0 samples")
        self.prebuffer = prebuffer
        self._lock = threading.Lock()
        self._queue: deque[Chunk] = deque()
        self._queued = 0  # samples in the queue not yet played
        self._playing = False
        self._ended: set[int] = set()  # turns whose response has ended (nothing more comes)
        self._next_id = 0
        self._last_turn: int | None = None  # turn of the last sample handed over
        self._gap_turn: int | None = None  # a response went silent before it ended
        #: Times the queue ran dry in the middle of a response.
        self.underruns = 0
        #: Agent samples handed to the device, and dropped by flushes.
        self.played_samples = 0
        self.dropped_samples = 0

    @property
    def queued(self) -> int:
        """Samples waiting to be played."""
        with self._lock:
            return self._queued

    @property
    def active(self) -> bool:
        """Agent audio is queued or playing."""
        with self._lock:
            return self._queued > 0

    def push(self, pcm: PCM, turn: int, onset: int | None = None) -> int:
        """Queue agent audio of ``turn``; returns the chunk's id."""
        with self._lock:
            self._next_id += 1
            if self._gap_turn == turn and len(pcm):
                # The device played silence in the middle of this response.
                self.underruns += 1
            self._gap_turn = None
            if len(pcm):
                self._queue.append(Chunk(pcm, turn, onset, 0, self._next_id))
                self._queued += len(pcm)
            return self._next_id

    def end(self, turn: int) -> bool:
        """The response of ``turn`` has ended: play what is queued without waiting.

        Returns True when none of the turn's audio is still queued (it has all
        been handed to the device already, or there was none).
        """
        with self._lock:
            self._ended.add(turn)
            if self._gap_turn == turn:
                self._gap_turn = None
            return not any(chunk.turn == turn for chunk in self._queue)

    def flush(self) -> list[Chunk]:
        """Drop all queued audio (barge-in); returns the chunks that were cut or dropped."""
        with self._lock:
            dropped = list(self._queue)
            self.dropped_samples += self._queued
            self._queue.clear()
            self._queued = 0
            self._playing = False
            return dropped

    def pull(self, n: int) -> Pulled:
        """``n`` samples for the device: agent audio where there is some, else silence."""
        out = np.zeros(n, dtype=np.int16)
        events: list[PlayEvent] = []
        with self._lock:
            if not self._playing and self._queue:
                self._playing = self._queued >= self.prebuffer or self._queue[-1].turn in self._ended
            pos = 0
            while self._playing and pos < n and self._queue:
                chunk = self._queue[0]
                take = min(n - pos, len(chunk.pcm) - chunk.played)
                out[pos : pos + take] = chunk.pcm[chunk.played : chunk.played + take]
                events.append(PlayEvent("chunk", chunk.turn, pos, chunk.id, chunk.played, take))
                if chunk.onset is not None and chunk.played <= chunk.onset < chunk.played + take:
                    events.append(PlayEvent("onset", chunk.turn, pos + chunk.onset - chunk.played))
                chunk.played += take
                self._last_turn = chunk.turn
                pos += take
                self._queued -= take
                self.played_samples += take
                if chunk.played == len(chunk.pcm):
                    self._queue.popleft()
                    last_of_turn = not self._queue or self._queue[0].turn != chunk.turn
                    if last_of_turn and chunk.turn in self._ended:
                        events.append(PlayEvent("drained", chunk.turn, pos))
            if not self._queue:
                self._playing = False
                if pos < n and self._last_turn is not None and self._last_turn not in self._ended:
                    self._gap_turn = self._last_turn
        return Pulled(out, tuple(events))
