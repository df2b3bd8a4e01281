"""Turn-taking found in synthetic two-channel recordings whose gaps, overlaps and
barge-ins are known to the sample."""

from __future__ import annotations

import numpy as np
import pytest

from agent.audio import PCM, speech_bounds
from agent.metrics.heard_turns import HeardTurn, bridge, caller_turns, heard_turns, sound_runs

RATE = 16000


def ms(t: float) -> int:
    return round(t * RATE / 1000)


def track(length_ms: float, *spans: tuple[float, float], freq: float = 220.0) -> PCM:
    """Silence with a -12 dBFS tone over each (start ms, end ms)."""
    x = np.zeros(ms(length_ms), dtype=np.int16)
    for a, b in spans:
        n = ms(b) - ms(a)
        x[ms(a) : ms(b)] = (np.sin(2 * np.pi * freq * np.arange(n) / RATE) * 8000).astype(np.int16)
    return x


def analyse(caller: PCM, agent: PCM, turn_gap_ms: float = 600) -> list[HeardTurn]:
    c = sound_runs(caller, RATE, window_ms=10)
    a = sound_runs(agent, RATE)
    return heard_turns(caller_turns(c, a, ms(turn_gap_ms)), a, bridge_samples=ms(300), gap_samples=ms(300))


def test_sound_runs_end_where_speech_bounds_does() -> None:
    x = track(2000, (200, 700), (1000, 1500))
    runs = sound_runs(x, RATE, window_ms=10)
    assert len(runs) == 2
    assert runs[0][0] == speech_bounds(x, RATE)[0]  # type: ignore[index]
    assert runs[-1][1] == speech_bounds(x, RATE)[1]  # type: ignore[index]
    # A tone starting at a zero crossing is audible within a few samples of its start.
    assert abs(runs[0][0] - ms(200)) < 10 and abs(runs[1][1] - ms(1500)) < 10


def test_response_gaps_are_the_silences_between_speech_end_and_reply() -> None:
    caller = track(6000, (100, 900), (3000, 3600))
    agent = track(6000, (1650, 2500), (4000, 5000))
    turns = analyse(caller, agent)
    assert len(turns) == 2
    gaps = [(t.reply_start - t.speech[1]) * 1000 / RATE for t in turns if t.reply_start is not None]
    assert gaps == pytest.approx([750, 400], abs=1.0)
    assert all(t.overlap == 0 and t.barge_in_heard_end is None and not t.talked_over for t in turns)


def test_a_pause_inside_the_callers_turn_is_not_a_new_turn_unless_the_agent_spoke() -> None:
    caller = track(5000, (100, 600), (900, 1400), (2600, 3000))  # 300 ms pause, then a new turn
    agent = track(5000, (1900, 2400), (3500, 4000))
    turns = analyse(caller, agent)
    assert [round(t.speech[0] * 1000 / RATE, -1) for t in turns] == [100, 2600]
    # The same 300 ms pause with the agent answering inside it splits the turn.
    agent_early = track(5000, (620, 880), (1900, 2400))
    assert len(analyse(caller, agent_early)) == 3


def test_barge_in_stop_as_heard_and_overlap() -> None:
    caller = track(8000, (100, 800), (2000, 2600))  # barges in at 2000 ms
    agent = track(8000, (1500, 2180), (3400, 4000))  # quiet 180 ms after the barge-in
    first, second = analyse(caller, agent)
    assert first.talked_over  # its reply was still audible when the caller spoke again
    assert second.barge_in_heard_end is not None
    assert (second.barge_in_heard_end - second.speech[0]) * 1000 / RATE == pytest.approx(180, abs=1.0)
    assert second.overlap * 1000 / RATE == pytest.approx(180, abs=1.0)
    assert second.talk_over == 0  # the agent was already speaking: a barge-in, not talk-over
    assert second.reply_start is not None and (
        second.reply_start - second.speech[1]
    ) * 1000 / RATE == pytest.approx(800, abs=1.0)


def test_agent_talking_over_the_caller() -> None:
    caller = track(6000, (100, 2000))
    agent = track(6000, (1500, 3000))  # starts 500 ms before the caller stops
    (turn,) = analyse(caller, agent)
    assert turn.talk_over * 1000 / RATE == pytest.approx(500, abs=1.0)
    assert turn.overlap == turn.talk_over
    # The answer began before the caller finished: a negative gap, not a missing answer.
    assert turn.reply_start is not None
    assert (turn.reply_start - turn.speech[1]) * 1000 / RATE == pytest.approx(-500, abs=1.0)


def test_silences_inside_a_reply_a_stalled_second_phrase() -> None:
    caller = track(8000, (100, 900))
    agent = track(8000, (1500, 2200), (2300, 2900), (4100, 5000))  # 100 ms word gap, 1200 ms stall
    (turn,) = analyse(caller, agent)
    assert [(b - a) * 1000 / RATE for a, b in turn.reply_silences] == pytest.approx([1200], abs=1.0)
    assert turn.reply_end is not None and turn.reply_end * 1000 / RATE == pytest.approx(5000, abs=1.0)
    assert turn.reply_sound * 1000 / RATE == pytest.approx(700 + 600 + 900, abs=3.0)


def test_a_turn_without_any_agent_sound_has_no_reply() -> None:
    caller = track(5000, (100, 900), (3000, 3500))
    agent = track(5000, (3700, 4200))
    first, second = analyse(caller, agent)
    assert first.reply_start is None and second.reply_start is not None


def test_bridge_joins_short_gaps_only() -> None:
    assert bridge([(0, 10), (15, 20), (100, 110)], 10) == [(0, 20), (100, 110)]


def test_silence_has_no_sound() -> None:
    assert sound_runs(np.zeros(1000, dtype=np.int16), RATE) == []
    assert sound_runs(np.zeros(0, dtype=np.int16), RATE) == []
