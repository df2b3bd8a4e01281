"""Turn-taking as a listener hears it, from a two-channel recording (sans I/O).

Pure numpy: the caller's and the agent's tracks in, one :class:`HeardTurn` per
caller turn out. Sound is found with the listener rule the replay client uses
(:func:`agent.audio.find_onset`: a sliding window whose RMS is above
``AUDIBLE_DBFS``, refined to its first sample above that amplitude; backwards
for an end), so a vlt recording analysed here gives the run's own figures:

- the caller's speech ends as :func:`agent.audio.speech_bounds` finds them
  (10 ms windows, how the replay client places ``user.speech_end``);
- the agent's sound starts as the replay client finds each reply's first
  audible sample (5 ms windows).

Per caller turn: the response gap (caller speech end → the first agent sound
that starts after it, before the caller speaks again: voice-to-voice), the
barge-in stop as heard (the caller starts while the agent is audible → the end
of that agent sound, word gaps under ``bridge_ms`` bridged), overlap (both
audible) and agent talk-over (the part of it from agent sound that began while
the caller spoke), and the silences inside the reply of at least ``gap_ms``
(a stalled second phrase).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from agent.audio import AUDIBLE_DBFS, PCM, to_mono

__all__ = [
    "AGENT_WINDOW_MS",
    "CALLER_WINDOW_MS",
    "HeardTurn",
    "Span",
    "caller_turns",
    "heard_turns",
    "sound_runs",
]

#: The window the replay client finds the caller's speech bounds with (speech_bounds).
CALLER_WINDOW_MS = 10.0
#: The window it finds the agent's first audible sample with (find_onset, per frame).
AGENT_WINDOW_MS = 5.0

#: (first sample, last sample + 1).
Span = tuple[int, int]


def sound_runs(
    pcm: PCM, sample_rate: int, *, threshold_dbfs: float = AUDIBLE_DBFS, window_ms: float = AGENT_WINDOW_MS
) -> list[Span]:
    """Every stretch of audible sound in ``pcm``, by the listener rule, in order."""
    x = to_mono(pcm).astype(np.int64)
    n = x.shape[0]
    if n == 0:
        return []
    amp = 32768.0 * 10.0 ** (threshold_dbfs / 20.0)
    w = min(max(1, round(sample_rate * window_ms / 1000)), n)
    csum = np.concatenate(([0], np.cumsum(x * x)))
    loud = (csum[w:] - csum[:-w]) > (w * amp * amp)  # by window start
    edges = np.diff(loud.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    runs: list[Span] = []
    above = np.abs(x) > amp
    for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        first = int(s + np.argmax(above[s : s + w]))
        last_window = above[e - 1 : e - 1 + w]
        last = int(e - 1 + len(last_window) - 1 - np.argmax(last_window[::-1]))
        if runs and first <= runs[-1][1]:
            # Neighbouring windows share samples: sound that touches is one stretch.
            runs[-1] = (runs[-1][0], max(runs[-1][1], last + 1))
        else:
            runs.append((first, last + 1))
    return runs


def bridge(runs: Sequence[Span], gap: int) -> list[Span]:
    """``runs`` with gaps shorter than ``gap`` samples closed."""
    out: list[Span] = []
    for start, end in runs:
        if out and start - out[-1][1] < gap:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def caller_turns(caller: Sequence[Span], agent: Sequence[Span], turn_gap: int) -> list[Span]:
    """The caller's turns: its sound runs, joined across pauses shorter than
    ``turn_gap`` samples unless the agent began to speak in the pause."""
    turns: list[Span] = []
    for start, end in caller:
        if turns:
            prev_end = turns[-1][1]
            agent_spoke = any(prev_end <= a < start for a, _ in agent)
            if start - prev_end < turn_gap and not agent_spoke:
                turns[-1] = (turns[-1][0], end)
                continue
        turns.append((start, end))
    return turns


@dataclass
class HeardTurn:
    """One caller turn and the agent's answer, in samples from the recording's start."""

    index: int
    speech: Span
    #: The first agent sound starting after the speech end, before the caller's next turn.
    reply_start: int | None = None
    #: The end of the reply's last sound (it may run past the caller's next start).
    reply_end: int | None = None
    #: Agent sound inside the reply, in samples.
    reply_sound: int = 0
    #: Silences of at least gap_ms between the reply's sounds, as spans.
    reply_silences: list[Span] = field(default_factory=list)
    #: The caller started while the agent was audible: where that agent sound ended.
    barge_in_heard_end: int | None = None
    #: Both audible during this turn's speech, in samples.
    overlap: int = 0
    #: The part of ``overlap`` from agent sound that began while the caller spoke.
    talk_over: int = 0
    #: The reply was still audible when the caller's next turn started.
    talked_over: bool = False


def _overlap(a: Span, b: Span) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))


def heard_turns(
    turns: Sequence[Span], agent: Sequence[Span], *, bridge_samples: int, gap_samples: int
) -> list[HeardTurn]:
    """Each caller turn with the agent's answer found in ``agent``'s sound runs."""
    bridged = bridge(agent, bridge_samples)
    out: list[HeardTurn] = []
    for i, (start, end) in enumerate(turns):
        next_start = turns[i + 1][0] if i + 1 < len(turns) else None
        heard = HeardTurn(i, (start, end))
        for a0, a1 in bridged:
            if a0 < start < a1:
                heard.barge_in_heard_end = a1
        for a0, a1 in agent:
            shared = _overlap((a0, a1), (start, end))
            heard.overlap += shared
            if a0 > start:
                heard.talk_over += shared
        # The reply begins with agent sound that starts after the speech end, not with
        # the next word of a reply that is still going (hence the bridged runs).
        before_next = next_start if next_start is not None else 1 << 62
        first = next((b0 for b0, _ in bridged if end <= b0 < before_next), None)
        if first is None:
            # An answer that began while the caller still spoke (talk-over) and went on
            # past the speech end: the gap is negative, not missing.
            first = next((b0 for b0, b1 in bridged if start < b0 < end < b1), None)
        reply = [] if first is None else [r for r in agent if first <= r[0] < before_next]
        if reply:
            heard.reply_start = reply[0][0]
            heard.reply_end = reply[-1][1]
            heard.reply_sound = sum(r1 - r0 for r0, r1 in reply)
            heard.reply_silences = [
                (p1, n0) for (_, p1), (n0, _) in itertools.pairwise(reply) if n0 - p1 >= gap_samples
            ]
            heard.talked_over = next_start is not None and heard.reply_end > next_start
        out.append(heard)
    return out
