"""Where each reply begins and ends, from the agent's audio alone (sans I/O).

A black-box agent sends audio and nothing else: no marks, no transcript, no
``response_done``. :class:`HeardReplies` gives the replay client what the
protocol would have, from what a caller hears:

- a reply *opens* for a user turn once the frame carrying that turn's speech
  end has been sent (the replay client's own ``user.speech_end``);
- it is *heard* from its first audible frame (the listener rule of
  :func:`agent.audio.find_onset`: a 10 ms window above ``AUDIBLE_DBFS``);
- it *ends* (``ok``) once ``reply_end_ms`` of playout has passed since its last
  audible sound, or (``interrupted``) when the caller's next turn ends first.

Frames are handed on as they came, each with its own arrival time, except that
inaudible frames are held until an audible one follows (then handed on first,
so playout is placed exactly as if every frame had been passed on): a target
that streams silence between replies does not look like a reply that never
ends, and the reply's last frame is its last audible one (a barge-in's
``received_ms``; its stop is that frame's last audible sample as played out).
Inaudible audio after a reply's last sound is dropped, and with it from the
recording: below the listener threshold by definition.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from agent.audio import PCM, find_onset
from agent.clock import NS_PER_S

__all__ = ["AudioOut", "HeardReplies", "ReplyEnd"]


@dataclass(frozen=True, slots=True)
class AudioOut:
    """Agent audio to hand on, stamped with its arrival."""

    pcm: PCM
    arrived_ns: int


@dataclass(frozen=True, slots=True)
class ReplyEnd:
    """The reply to ``turn`` has ended (what ``response_done`` says in the protocol)."""

    turn: int
    status: str
    reason: str


Out = AudioOut | ReplyEnd


@dataclass
class _Open:
    turn: int
    heard: bool = False
    #: The caller started speaking again while this reply was heard (a barge-in).
    talked_over: bool = False


class HeardReplies:
    def __init__(self, sample_rate: int, reply_end_ms: float) -> None:
        self.rate = sample_rate
        self._reply_end_ns = round(reply_end_ms * 1e6)
        self._sent = 0  # caller samples sent
        self._speech_starts: deque[int] = deque()  # speech start samples not yet sent
        self._speech_ends: deque[tuple[int, int]] = deque()  # (turn, speech end sample), in order
        self._open: deque[_Open] = deque()
        self._held: list[AudioOut] = []  # inaudible frames, queued back to back in playout
        self._playout_end_ns = 0
        self._held_playout_end_ns = 0
        self._last_sound_end_ns: int | None = None

    # -- the caller's side --------------------------------------------------------

    def script(self, turn: int, speech_start_sample: int, speech_end_sample: int) -> None:
        """The replay client is about to speak ``turn`` between these stream positions."""
        self._speech_starts.append(speech_start_sample)
        self._speech_ends.append((turn, speech_end_sample))

    def sent(self, samples: int) -> list[Out]:
        """``samples`` more caller samples were sent; replies this ends."""
        self._sent += samples
        out: list[Out] = []
        while self._speech_starts and self._sent > self._speech_starts[0]:
            self._speech_starts.popleft()
            for o in self._open:
                o.talked_over = o.talked_over or o.heard
        while self._speech_ends and self._sent >= self._speech_ends[0][1]:
            turn, _ = self._speech_ends.popleft()
            # The caller finished speaking again: a reply still playing was talked over;
            # one never heard stays with the client, whose reply timeout ends it.
            out += [
                ReplyEnd(o.turn, "interrupted", "the caller's next turn ended first (audio only)")
                for o in self._open
                if o.heard
            ]
            self._open.clear()
            self._held.clear()
            self._last_sound_end_ns = None
            self._open.append(_Open(turn))
        return out

    # -- the agent's side ---------------------------------------------------------

    def frame(self, pcm: PCM, now: int) -> list[Out]:
        """A frame of agent audio arrived at ``now``: what to hand on."""
        if now >= self._held_playout_end_ns:
            # What is held has played out before this frame came: it cannot move it, so it can go.
            self._held.clear()
        start = max(now, self._playout_end_ns)
        self._playout_end_ns = start + len(pcm) * NS_PER_S // self.rate
        if find_onset(pcm, self.rate) is None:
            self._held.append(AudioOut(pcm, now))
            self._held_playout_end_ns = self._playout_end_ns
            return []
        out: list[Out] = [*self._held, AudioOut(pcm, now)]
        self._held.clear()
        if self._open:
            self._open[0].heard = True
            self._last_sound_end_ns = self._playout_end_ns
        return out

    def deadline_ns(self) -> int | None:
        """When the open reply ends if nothing audible comes first (None: no timer)."""
        if not self._open or not self._open[0].heard or self._last_sound_end_ns is None:
            return None
        return self._last_sound_end_ns + self._reply_end_ns

    def tick(self, now: int) -> list[Out]:
        """Time has passed: the reply whose deadline is due has ended."""
        deadline = self.deadline_ns()
        if deadline is None or now < deadline:
            return []
        ended = self._open.popleft()
        self._held.clear()
        self._last_sound_end_ns = None
        if ended.talked_over:
            return [ReplyEnd(ended.turn, "interrupted", "the caller spoke over it (audio only)")]
        return [ReplyEnd(ended.turn, "ok", "")]
