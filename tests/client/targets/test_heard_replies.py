"""Where replies begin and end from the agent's audio alone (pure: sample counts and stamps in)."""

from __future__ import annotations

import numpy as np

from agent.audio import PCM
from agent.client.targets.heard_replies import AudioOut, HeardReplies, ReplyEnd

RATE = 16000
FRAME = 320  # 20 ms
FRAME_NS = 20_000_000


def loud() -> PCM:
    return (np.sin(np.arange(FRAME) / 3) * 8000).astype(np.int16)


def quiet() -> PCM:
    return np.zeros(FRAME, dtype=np.int16)


def test_a_reply_opens_at_the_speech_end_and_ends_after_its_silence() -> None:
    h = HeardReplies(RATE, reply_end_ms=500)
    h.script(0, 0, 3200)
    assert h.sent(3200) == []  # the speech end has been sent: the reply is open
    assert h.deadline_ns() is None  # nothing heard yet: no timer (the client's timeout stays)
    t = 1_000_000_000
    out = h.frame(loud(), t)
    assert [type(o) for o in out] == [AudioOut]
    assert h.deadline_ns() == t + FRAME_NS + 500_000_000
    assert h.tick(t + FRAME_NS + 499_000_000) == []
    assert h.tick(t + FRAME_NS + 500_000_000) == [ReplyEnd(0, "ok", "")]
    assert h.deadline_ns() is None


def test_inaudible_frames_are_held_until_sound_follows_and_keep_their_stamps() -> None:
    h = HeardReplies(RATE, reply_end_ms=500)
    h.script(0, 0, 320)
    h.sent(320)
    t = 10 * FRAME_NS
    # A burst: two quiet frames then a loud one arrive at once; playout queues them.
    assert h.frame(quiet(), t) == []
    assert h.frame(quiet(), t) == []
    out = h.frame(loud(), t)
    assert [o.arrived_ns for o in out if isinstance(o, AudioOut)] == [t, t, t]
    # Trailing quiet frames are never handed on: the reply's last frame is its last sound.
    assert h.frame(quiet(), t + FRAME_NS * 3) == []


def test_silence_streamed_in_real_time_is_dropped_not_a_reply() -> None:
    h = HeardReplies(RATE, reply_end_ms=500)
    h.script(0, 0, 320)
    h.sent(320)
    for k in range(50):  # a second of silence frames, each arriving as the previous ends
        assert h.frame(quiet(), k * FRAME_NS) == []
    out = h.frame(loud(), 50 * FRAME_NS)
    # Each silent frame had played out before the sound came: none is handed on.
    assert len(out) == 1 and isinstance(out[0], AudioOut) and out[0].arrived_ns == 50 * FRAME_NS


def test_the_callers_next_turn_ends_a_reply_still_playing_as_interrupted() -> None:
    h = HeardReplies(RATE, reply_end_ms=5000)
    h.script(0, 0, 320)
    h.sent(320)
    h.frame(loud(), FRAME_NS)
    h.script(1, 640, 960)
    assert h.sent(320) == []
    ends = h.sent(320)
    assert [(e.turn, e.status) for e in ends if isinstance(e, ReplyEnd)] == [(0, "interrupted")]
    # Turn 1's reply is open now, not yet heard.
    assert h.deadline_ns() is None


def test_a_reply_talked_over_then_silent_is_interrupted() -> None:
    h = HeardReplies(RATE, reply_end_ms=100)
    h.script(0, 0, 320)
    h.sent(320)
    h.frame(loud(), FRAME_NS)
    h.script(1, 640, 16000)
    h.sent(640)  # the caller's speech has started: the reply was talked over
    ends = h.tick(10**9)
    assert ends == [ReplyEnd(0, "interrupted", "the caller spoke over it (audio only)")]


def test_a_reply_never_heard_is_left_to_the_clients_timeout() -> None:
    h = HeardReplies(RATE, reply_end_ms=100)
    h.script(0, 0, 320)
    h.sent(320)
    h.script(1, 640, 960)
    assert h.sent(640) == []  # no ReplyEnd for turn 0: nothing of it was heard
    assert h.tick(10**12) == []
