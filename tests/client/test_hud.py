"""The live demo's terminal HUD (agent.client.hud): waterfall, stats, lines, reporters."""

from __future__ import annotations

import io
from itertools import pairwise
from typing import Any

import pytest
from rich.console import Console, RenderableType

from agent.client.hud import (
    BAR_CHAR,
    STATUSES,
    Hud,
    HudState,
    LineReporter,
    render_hud,
    render_waterfall,
    rolling_stats,
    turn_line,
)
from agent.metrics.timeline import HOP_NAMES

LATENCY = {
    "endpointing": 530.1,
    "asr_finalize": 12.0,
    "llm_ttft": 180.2,
    "first_phrase": 40.0,
    "tts_first_audio": 55.3,
    "transport": 0.4,
    "audio_onset": 60.1,
    "playout": 25.0,
    "unaccounted": 3.1,
    "voice_to_voice": 906.2,
    "barge_in_stop": None,
}


def record(turn: int = 2, **latency: float | None) -> dict[str, Any]:
    return {
        "turn": turn,
        "status": "ok",
        "reason": "",
        "transcript": "book a table for two",
        "reply": "Sure, for what time?",
        "latency_ms": {**LATENCY, **latency},
    }


def v2v_record(turn: int, v2v: float | None) -> dict[str, Any]:
    return {"turn": turn, "status": "ok", "latency_ms": {"voice_to_voice": v2v}}


def render(renderable: RenderableType, width: int = 100) -> str:
    console = Console(record=True, width=width, force_terminal=False, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def row(text: str, label: str) -> str:
    """The waterfall line whose label is ``label``."""
    lines = [line for line in text.splitlines() if line.split() and line.split()[0] == label]
    assert len(lines) == 1, (label, text)
    return lines[0]


def bar(line: str) -> tuple[int, int]:
    """(start column, length) of the bar in a waterfall line."""
    start = line.index(BAR_CHAR)
    return start, len(line) - len(line[start:].lstrip(BAR_CHAR)) - start


def state(**fields: Any) -> HudState:
    defaults: dict[str, Any] = {
        "status": "listening",
        "mode": "half-duplex: the mic is ignored while the agent speaks (use --barge-in with headphones)",
        "agent": "pipeline default (in-process)",
        "devices": "in: pulse 16000 Hz, 20 ms · out: pulse 16000 Hz, 40 ms",
    }
    return HudState(**{**defaults, **fields})


# --- waterfall ----------------------------------------------------------------------------------


def test_waterfall_shows_every_hop_with_its_ms() -> None:
    text = render(render_waterfall(record()))
    for name in (*HOP_NAMES, "playout", "unaccounted"):
        assert row(text, name).rstrip().endswith(f"{LATENCY[name]:.1f} ms"), name
    assert row(text, "voice-to-voice").rstrip().endswith("906.2 ms")
    # The rows keep the path's order: the timeline's hops, playout, then the residual.
    names = [line.split()[0] for line in text.splitlines() if line.strip()]
    assert names == [*HOP_NAMES, "playout", "unaccounted", "voice-to-voice"]


def test_waterfall_bars_are_proportional_and_cascade() -> None:
    lat = {
        "endpointing": 500.0,
        "asr_finalize": 50.0,
        "llm_ttft": 200.0,
        "first_phrase": 50.0,
        "tts_first_audio": 100.0,
        "transport": 20.0,
        "audio_onset": 80.0,
        "playout": None,
        "unaccounted": 0.0,
        "voice_to_voice": 1000.0,
    }
    text = render(render_waterfall(record(**lat)))
    full_start, full = bar(row(text, "voice-to-voice"))
    assert full_start == row(text, "endpointing").index(BAR_CHAR)
    bars = {name: bar(row(text, name)) for name in HOP_NAMES}
    # Scaled to voice-to-voice, within a cell of rounding.
    for name in HOP_NAMES:
        assert abs(bars[name][1] - lat[name] / 1000.0 * full) <= 1, (name, bars[name], full)
    assert bars["endpointing"][1] > 5 * bars["asr_finalize"][1]
    # A true waterfall: each hop starts where the previous ones end.
    for earlier, later in pairwise(HOP_NAMES):
        assert bars[later][0] >= sum(bars[earlier]) - 1, (earlier, later, bars)
        assert bars[later][0] > bars[earlier][0], (earlier, later, bars)
    assert bars["llm_ttft"][0] >= sum(bars["asr_finalize"])
    last_start, last_len = bars["audio_onset"]
    assert abs(last_start + last_len - (full_start + full)) <= 1


def test_missing_hops_show_a_dash_and_no_bar() -> None:
    text = render(render_waterfall(record(asr_finalize=None, unaccounted=None, voice_to_voice=None)))
    for label in ("asr_finalize", "unaccounted", "voice-to-voice"):
        line = row(text, label)
        assert line.split()[-1] == "-", line
        assert BAR_CHAR not in line
    assert BAR_CHAR in row(text, "endpointing")


def test_negative_unaccounted_is_a_number_without_a_bar() -> None:
    text = render(render_waterfall(record(unaccounted=-30.0)))
    line = row(text, "unaccounted")
    assert line.rstrip().endswith("-30.0 ms")
    assert BAR_CHAR not in line


def test_playout_row_only_when_the_record_has_it() -> None:
    replay = record()
    del replay["latency_ms"]["playout"]
    assert "playout" not in render(render_waterfall(replay))
    assert "playout" in render(render_waterfall(record(playout=None)))


@pytest.mark.parametrize("width", [40, 60, 80, 120, 160])
def test_waterfall_fits_the_width(width: int) -> None:
    text = render(render_waterfall(record()), width=width)
    lines = [line.rstrip() for line in text.splitlines()]
    assert len(lines) == len(HOP_NAMES) + 3
    assert all(len(line) <= width for line in lines)
    # Every value stays visible; a narrow terminal trades the long names for short ones.
    assert row(text, "voice-to-voice" if width >= 60 else "v2v").endswith("906.2 ms")
    if width < 60:
        assert row(text, "endpt").endswith("530.1 ms")
    # Wider terminals get longer bars.
    assert bar(row(text, "voice-to-voice" if width >= 60 else "v2v"))[1] >= width // 3


# --- rolling statistics -------------------------------------------------------------------------


def test_rolling_stats_of_a_known_list() -> None:
    stats = rolling_stats([v2v_record(i, v) for i, v in enumerate([500.0, 100.0, 300.0, 200.0, 400.0])])
    assert stats == {"n": 5, "p50": 300.0, "p95": pytest.approx(480.0)}


def test_rolling_stats_window_counts_only_turns_with_a_value() -> None:
    records = []
    for i in range(1, 31):
        records.append(v2v_record(i, 10.0 * i))
        records.append(v2v_record(100 + i, None))  # no_response turns: no voice-to-voice
    records.append({"turn": 999, "status": "error"})  # no latency at all
    stats = rolling_stats(records, window=20)
    # The last 20 measured turns are 110..300 ms.
    assert stats["n"] == 20
    assert stats["p50"] == pytest.approx(205.0)
    assert stats["p95"] == pytest.approx(290.5)


def test_rolling_stats_with_nothing_measured() -> None:
    assert rolling_stats([v2v_record(1, None)]) == {"n": 0, "p50": None, "p95": None}
    with pytest.raises(ValueError):
        rolling_stats([], window=0)


# --- render_hud ---------------------------------------------------------------------------------


def test_hud_shows_state_stats_and_last_turn() -> None:
    turns = [record(turn=i, voice_to_voice=v) for i, v in enumerate([500.0, 100.0, 300.0, 200.0, 400.0], 1)]
    turns[-1]["latency_ms"]["llm_ttft"] = 987.6
    text = render(
        render_hud(
            state(
                status="user speaking",
                partial="book a tab",
                transcript="hello there",
                agent_text="Sure, for what time?",
                turns=turns,
                level_dbfs=-30.0,
                notice="output underrun (jitter buffer empty)",
                barge_in_stop_ms=123.4,
                run_dir="runs/demo-20250101",
            )
        )
    )
    for expected in (
        "USER SPEAKING",
        "book a tab",
        "hello there",
        "Sure, for what time?",
        "pipeline default (in-process)",
        "in: pulse 16000 Hz, 20 ms · out: pulse 16000 Hz, 40 ms",
        "half-duplex",
        "runs/demo-20250101",
        "p50 300.0 ms",
        "p95 480.0 ms",
        "barge-in stop 123.4 ms",
        "output underrun (jitter buffer empty)",
        "turn 5 · ok",  # the last turn's waterfall
        "987.6 ms",
        "-30.0 dBFS",
    ):
        assert expected in text, expected
    # Half the meter is lit at -30 dBFS (-60..0 dBFS over 20 cells).
    assert "▮" * 10 + "▯" * 10 in text
    # The recent-turns table holds the last five turns.
    table_rows = [line.split() for line in text.splitlines() if line.split()[:1] in (["1"], ["5"])]
    assert [r[:3] for r in table_rows] == [["1", "ok", "500.0"], ["5", "ok", "400.0"]]


def test_hud_recent_table_keeps_the_last_five() -> None:
    turns = [record(turn=i, voice_to_voice=100.0 + i) for i in range(1, 9)]
    text = render(render_hud(state(turns=turns)))
    listed = [line.split()[0] for line in text.splitlines() if line.split()[1:2] == ["ok"]]
    assert listed == ["4", "5", "6", "7", "8"]


def test_hud_before_any_turn() -> None:
    text = render(render_hud(state(status="connecting")))
    assert "CONNECTING" in text
    assert "no measured turn yet" in text
    assert "barge-in stop" not in text
    assert "mic -" in text


def test_each_status_has_its_own_style() -> None:
    styles = set()
    console = Console(width=100, force_terminal=True, color_system="truecolor", file=io.StringIO())
    for status in STATUSES:
        segments = list(console.render(render_hud(state(status=status))))
        (style,) = {str(s.style) for s in segments if s.text.strip() == status.upper()}
        styles.add(style)
    assert len(styles) == len(STATUSES)


def test_long_streaming_text_keeps_its_tail() -> None:
    reply = "START " + "word " * 300 + "THE END"
    text = render(render_hud(state(agent_text=reply, partial="P-START " + "um " * 200 + "P-END")))
    assert "THE END" in text
    assert "P-END" in text
    assert "START" not in text.replace("P-START", "")
    assert "P-START" not in text
    assert "…" in text


@pytest.mark.parametrize("width", [60, 160])
def test_hud_renders_at_narrow_and_wide_widths(width: int) -> None:
    turns = [record(turn=1), record(turn=2, unaccounted=-12.5, asr_finalize=None, barge_in_stop=80.0)]
    text = render(
        render_hud(state(status="agent speaking", turns=turns, barge_in_stop_ms=80.0, notice="x" * 500)),
        width=width,
    )
    assert "AGENT SPEAKING" in text
    assert "-12.5 ms" in text
    assert all(len(line.rstrip()) <= width for line in text.splitlines())


# --- turn_line ----------------------------------------------------------------------------------


def test_turn_line_format() -> None:
    assert turn_line(record()) == (
        "turn 2 ok  v2v 906.2 ms  endpt 530.1 asr 12.0 ttft 180.2 phrase 40.0 tts 55.3 net 0.4 "
        'onset 60.1 play 25.0 unacc 3.1  "book a table for two" -> "Sure, for what time?"'
    )


def test_turn_line_with_missing_values_barge_in_and_reason() -> None:
    rec = {
        "turn": 7,
        "status": "interrupted",
        "reason": "user spoke over the agent",
        "transcript": "wait,\nno",
        "reply": "",
        "latency_ms": {
            "endpointing": 410.0,
            "asr_finalize": None,
            "llm_ttft": 150.5,
            "first_phrase": None,
            "tts_first_audio": 60.0,
            "transport": None,
            "audio_onset": None,
            "unaccounted": None,
            "voice_to_voice": None,
            "barge_in_stop": 95.25,
        },
    }
    line = turn_line(rec)
    assert line == (
        "turn 7 interrupted  v2v -  endpt 410.0 asr - ttft 150.5 phrase - tts 60.0 net - onset - "
        'unacc -  barge-in stop 95.2 ms  reason: user spoke over the agent  "wait, no" -> ""'
    )
    assert "\x1b" not in line and "\n" not in line


def test_turn_line_of_an_error_without_latency_or_text() -> None:
    line = turn_line({"turn": 3, "status": "error", "reason": "agent closed the connection"})
    assert line == (
        "turn 3 error  v2v -  endpt - asr - ttft - phrase - tts - net - onset - unacc -  "
        "reason: agent closed the connection"
    )


# --- reporters ----------------------------------------------------------------------------------


def test_line_reporter_prints_each_turn_once() -> None:
    out = io.StringIO()
    st = state(turns=[record(turn=1)])
    with LineReporter(out) as reporter:
        reporter.update(st)
        reporter.update(st)
        st.status = "thinking"
        st.level_dbfs = -20.0
        reporter.update(st)
        st.turns.append(record(turn=2, voice_to_voice=777.0))
        reporter.update(st)
        reporter.update(st)
    lines = out.getvalue().splitlines()
    assert lines == [turn_line(record(turn=1)), turn_line(record(turn=2, voice_to_voice=777.0))]


def test_line_reporter_prints_notices_when_they_change() -> None:
    out = io.StringIO()
    reporter = LineReporter(out)
    st = state()
    reporter.update(st)
    st.notice = "mic overflow"
    reporter.update(st)
    reporter.update(st)
    st.notice = ""
    reporter.update(st)
    st.notice = "mic overflow"
    reporter.update(st)
    reporter.stop()
    assert out.getvalue().splitlines() == ["notice: mic overflow", "notice: mic overflow"]


def test_line_reporter_survives_a_capped_turn_list() -> None:
    out = io.StringIO()
    reporter = LineReporter(out)
    st = state(turns=[record(turn=1), record(turn=2)])
    reporter.update(st)
    # The caller keeps only the latest turns: the list's length no longer grows.
    st.turns = [record(turn=2), record(turn=3)]
    reporter.update(st)
    assert [line.split()[1] for line in out.getvalue().splitlines()] == ["1", "2", "3"]


def test_hud_draws_the_latest_state() -> None:
    console = Console(record=True, width=100, force_terminal=False, file=io.StringIO())
    with Hud(console) as hud:
        hud.update(state(status="thinking", partial="first"))
        hud.update(state(status="agent speaking", agent_text="the final words", turns=[record()]))
    hud.stop()  # a second stop is harmless
    text = console.export_text()
    # Not a terminal: Live draws once, at stop, the last state it was given.
    assert "AGENT SPEAKING" in text
    assert "the final words" in text
    assert "THINKING" not in text
    assert "906.2 ms" in text


def test_hud_defaults_to_stderr() -> None:
    assert Hud().console.stderr
