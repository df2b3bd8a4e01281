"""Marks → hops, voice-to-voice and the unaccounted residual (agent.metrics.timeline)."""

from __future__ import annotations

import random

import pytest

from agent.metrics.timeline import (
    HOP_NAMES,
    HOPS,
    V2V_END,
    V2V_START,
    Hop,
    Mark,
    analyze,
    marks_by_turn,
)

MS = 1_000_000


def tiled_marks(**gaps_ms: int) -> dict[str, int]:
    """A full turn whose hops tile voice-to-voice, with optional gaps (ms) inserted
    before a hop's start mark (keyed by hop name). Durations in ms: endpointing 300,
    asr 150, ttft 200, first phrase 40, tts 90, transport 5, audio onset 15."""
    durations = {
        "endpointing": 300,
        "asr_finalize": 150,
        "llm_ttft": 200,
        "first_phrase": 40,
        "tts_first_audio": 90,
        "transport": 5,
        "audio_onset": 15,
    }
    t = 1_000 * MS  # an arbitrary non-zero origin
    marks: dict[str, int] = {}
    for hop in HOPS:
        if hop.start not in marks:
            t += gaps_ms.get(hop.name, 0) * MS
            marks[hop.start] = t
        t = marks[hop.start] + durations[hop.name] * MS
        marks[hop.end] = t
    return marks


def test_hops_tile_voice_to_voice_without_gaps() -> None:
    tl = analyze(tiled_marks())
    assert tl.hops_ns == {
        "endpointing": 300 * MS,
        "asr_finalize": 150 * MS,
        "llm_ttft": 200 * MS,
        "first_phrase": 40 * MS,
        "tts_first_audio": 90 * MS,
        "transport": 5 * MS,
        "audio_onset": 15 * MS,
    }
    assert tl.voice_to_voice_ns == 800 * MS
    assert tl.unaccounted_ns == 0
    assert tl.missing == ()
    assert tl.complete


def test_gap_between_asr_final_and_llm_request_is_unaccounted() -> None:
    marks = tiled_marks(llm_ttft=3)
    assert marks["llm.request"] - marks["asr.final"] == 3 * MS
    tl = analyze(marks)
    assert tl.hops_ns["llm_ttft"] == 200 * MS
    assert tl.hops_ns["asr_finalize"] == 150 * MS
    assert tl.voice_to_voice_ns == 803 * MS
    assert tl.unaccounted_ns == 3 * MS


def test_several_gaps_add_up() -> None:
    tl = analyze(tiled_marks(llm_ttft=3, tts_first_audio=7, transport=1))
    assert tl.unaccounted_ns == 11 * MS
    assert tl.voice_to_voice_ns == 811 * MS


def test_overlapping_hops_give_a_negative_residual() -> None:
    marks = tiled_marks()
    # TTS request sent 10 ms *before* the chunker's first phrase mark: that time
    # is counted in both first_phrase and tts_first_audio.
    marks["tts.request"] = marks["llm.first_phrase"] - 10 * MS
    tl = analyze(marks)
    assert tl.hops_ns["tts_first_audio"] == 100 * MS
    assert tl.voice_to_voice_ns == 800 * MS
    assert tl.unaccounted_ns == -10 * MS


def test_exact_nanosecond_values() -> None:
    marks = {
        "user.speech_end": 10,
        "vad.end_of_turn": 13,
        "asr.final": 20,
        "llm.request": 21,
        "llm.first_token": 30,
        "llm.first_phrase": 33,
        "tts.request": 33,
        "tts.first_audio": 40,
        "server.first_audio_sent": 42,
        "client.first_frame_received": 45,
        "client.first_audio_received": 50,
    }
    tl = analyze(marks)
    assert list(tl.hops_ns.values()) == [3, 7, 9, 3, 7, 3, 5]
    assert tl.voice_to_voice_ns == 40
    assert tl.unaccounted_ns == 40 - 37


def test_missing_mark_is_listed_and_residual_is_none() -> None:
    marks = tiled_marks()
    del marks["llm.first_token"]
    tl = analyze(marks)
    assert tl.missing == ("llm.first_token",)  # listed once though two hops use it
    assert tl.hops_ns["llm_ttft"] is None
    assert tl.hops_ns["first_phrase"] is None
    assert tl.hops_ns["endpointing"] == 300 * MS
    assert tl.voice_to_voice_ns == 800 * MS
    assert tl.unaccounted_ns is None
    assert not tl.complete


def test_only_v2v_marks_still_give_voice_to_voice() -> None:
    tl = analyze({V2V_START: 5 * MS, V2V_END: 905 * MS})
    assert tl.voice_to_voice_ns == 900 * MS
    assert tl.unaccounted_ns is None
    assert all(v is None for v in tl.hops_ns.values())
    assert set(tl.hops_ns) == set(HOP_NAMES)
    assert V2V_START not in tl.missing and V2V_END not in tl.missing
    assert "vad.end_of_turn" in tl.missing and "asr.final" in tl.missing


def test_no_marks_at_all() -> None:
    tl = analyze({})
    assert tl.voice_to_voice_ns is None
    assert tl.unaccounted_ns is None
    # every mark named by a hop, each once, in hop order
    expected: list[str] = []
    for hop in HOPS:
        for name in (hop.start, hop.end):
            if name not in expected:
                expected.append(name)
    assert tl.missing == tuple(expected)


def test_missing_v2v_end_gives_no_v2v_and_no_residual() -> None:
    marks = tiled_marks()
    del marks[V2V_END]
    tl = analyze(marks)
    assert tl.voice_to_voice_ns is None
    assert tl.unaccounted_ns is None
    assert tl.missing == (V2V_END,)


def test_custom_hops() -> None:
    hops = (Hop("a", "x", "y", ""), Hop("b", "y", "z", ""))
    tl = analyze({"x": 0, "y": 4, "z": 10, V2V_START: 0, V2V_END: 12}, hops)
    assert tl.hops_ns == {"a": 4, "b": 6}
    assert tl.unaccounted_ns == 2


def test_as_ms() -> None:
    tl = analyze(tiled_marks(llm_ttft=3))
    ms = tl.as_ms()
    assert ms["endpointing"] == 300.0
    assert ms["llm_ttft"] == 200.0
    assert ms["unaccounted"] == 3.0
    assert ms["voice_to_voice"] == 803.0
    assert set(ms) == {*HOP_NAMES, "unaccounted", "voice_to_voice"}

    partial = analyze({V2V_START: 0, V2V_END: 1_500_000}).as_ms()
    assert partial["voice_to_voice"] == 1.5
    assert partial["unaccounted"] is None
    assert partial["llm_ttft"] is None


def test_identity_holds_on_random_marks() -> None:
    """sum(hops) + unaccounted == voice_to_voice exactly, whatever the marks."""
    rng = random.Random(20240601)
    names = sorted({n for h in HOPS for n in (h.start, h.end)} | {V2V_START, V2V_END})
    for _ in range(500):
        marks = {n: rng.randrange(-(10**12), 10**12) for n in names}
        tl = analyze(marks)
        assert tl.voice_to_voice_ns is not None and tl.unaccounted_ns is not None
        hops = [v for v in tl.hops_ns.values() if v is not None]
        assert len(hops) == len(HOPS)
        assert sum(hops) + tl.unaccounted_ns == tl.voice_to_voice_ns
        assert tl.voice_to_voice_ns == marks[V2V_END] - marks[V2V_START]
        for hop in HOPS:
            assert tl.hops_ns[hop.name] == marks[hop.end] - marks[hop.start]


def test_marks_by_turn_groups_and_keeps_first_occurrence() -> None:
    marks = [
        Mark("user.speech_end", 100, 1),
        Mark("vad.end_of_turn", 400, 1),
        Mark("user.speech_end", 5_000, 2),
        Mark("vad.end_of_turn", 450, 1),  # repeated: ignored
        Mark("vad.end_of_turn", 5_300, 2),
        Mark("user.speech_end", 999, 1),  # repeated: ignored
    ]
    grouped = marks_by_turn(marks)
    assert grouped == {
        1: {"user.speech_end": 100, "vad.end_of_turn": 400},
        2: {"user.speech_end": 5_000, "vad.end_of_turn": 5_300},
    }
    assert marks_by_turn([]) == {}


def test_mark_is_frozen() -> None:
    mark = Mark("a", 1, 0)
    with pytest.raises(AttributeError):
        mark.t_ns = 2  # type: ignore[misc]


def test_listener_hops_end_voice_to_voice_at_the_device() -> None:
    from agent.metrics.timeline import LISTENER_HOPS, LISTENER_V2V_END

    marks = tiled_marks()
    marks[LISTENER_V2V_END] = marks[V2V_END] + 25 * MS
    tl = analyze(marks, LISTENER_HOPS, LISTENER_V2V_END)
    assert tl.hops_ns["playout"] == 25 * MS
    assert tl.voice_to_voice_ns == marks[LISTENER_V2V_END] - marks[V2V_START]
    assert tl.unaccounted_ns is not None
    assert sum(v for v in tl.hops_ns.values() if v is not None) + tl.unaccounted_ns == tl.voice_to_voice_ns
