"""The live demo's terminal HUD: status, transcripts and each turn's latency waterfall.

Everything here except :class:`Hud` and :class:`LineReporter` is pure: the
renderers take a :class:`HudState` (or a finished turn record, as written to
turns.jsonl) and return rich renderables or plain strings, reading no clock and
doing no I/O, so they can be tested by rendering into a recording console.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TextIO

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from agent.metrics.records import TurnRecord
from agent.metrics.stats import percentile
from agent.metrics.timeline import LISTENER_HOPS, SHORT_NAMES

__all__ = [
    "HOP_ORDER",
    "STATUSES",
    "Hud",
    "HudState",
    "LineReporter",
    "Waterfall",
    "render_hud",
    "render_waterfall",
    "rolling_stats",
    "turn_line",
]

STATUSES: tuple[str, ...] = ("connecting", "listening", "user speaking", "thinking", "agent speaking")

#: The measured hops in path order, the live demo's "playout" (agent audio
#: arrival → handed to the output device) included.
HOP_ORDER: tuple[str, ...] = tuple(h.name for h in LISTENER_HOPS)
#: Hops a record may lack altogether (rather than carry as None): replay records
#: have no playout, and a row of "-" there would suggest a mark went missing.
_OPTIONAL_HOPS = frozenset({"playout"})

#: One colour per hop, so a bar can be told apart from its neighbours at a glance.
_HOP_STYLE = {
    "endpointing": "cyan",
    "asr_finalize": "blue",
    "llm_ttft": "magenta",
    "first_phrase": "bright_magenta",
    "tts_first_audio": "green",
    "transport": "yellow",
    "audio_onset": "bright_yellow",
    "playout": "bright_cyan",
    "unaccounted": "red",
}
_STATUS_STYLE = {
    "connecting": "bold black on yellow",
    "listening": "bold black on green",
    "user speaking": "bold white on blue",
    "thinking": "bold white on magenta",
    "agent speaking": "bold black on cyan",
}

V2V_LABEL = "voice-to-voice"
BAR_CHAR = "█"
#: Below this many bar cells, labels switch to the short names to give the bars room.
_MIN_BAR_FULL_LABELS = 20
_MIN_BAR = 8
#: Mic meter: -60 dBFS (room noise at best) to 0 dBFS (clipping), one cell per 3 dB.
_METER_FLOOR_DBFS = -60.0
_METER_CELLS = 20
#: Longest transcript/reply shown in the HUD; the HUD must keep a bounded height or
#: Live crops its bottom (the waterfall) off on a small terminal.
MAX_TEXT_CHARS = 160
RECENT_TURNS = 5
STATS_WINDOW = 20


@dataclass
class HudState:
    """Everything the HUD shows; the demo mutates it and calls ``update``."""

    status: str
    mode: str
    agent: str
    devices: str
    partial: str = ""
    transcript: str = ""
    agent_text: str = ""
    turns: list[TurnRecord] = field(default_factory=list)
    level_dbfs: float | None = None
    notice: str = ""
    barge_in_stop_ms: float | None = None
    run_dir: str = ""


# --- formatting helpers -------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _latency(record: Mapping[str, Any]) -> Mapping[str, Any]:
    # Error records may carry no latency at all; treat that as every value missing.
    lat = record.get("latency_ms")
    return lat if isinstance(lat, Mapping) else {}


def _hops_of(lat: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(h for h in HOP_ORDER if h in lat or h not in _OPTIONAL_HOPS)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clip(text: str, limit: int = MAX_TEXT_CHARS, *, keep: str = "head") -> str:
    """Collapse whitespace and cut to ``limit`` characters with an ellipsis.

    Streaming text keeps its tail (the newest words are what the user is
    following); settled text keeps its head.
    """
    text = _one_line(text)
    if len(text) <= limit:
        return text
    return "…" + text[-(limit - 1) :] if keep == "tail" else text[: limit - 1] + "…"


# --- waterfall ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Row:
    label: str
    short: str
    ms: float | None
    #: Where the bar starts and how long it is, in ms; no bar when ``bar_ms`` is 0.
    start_ms: float
    bar_ms: float
    style: str


class Waterfall:
    """A latency waterfall whose bars are drawn to the width it is given.

    The rows are computed up front (so a record mutated later cannot change what
    is drawn, and Live's refresh thread only reads immutable data); only the bar
    length depends on the width, which rich knows at render time.
    """

    def __init__(self, rows: Sequence[_Row], scale_ms: float) -> None:
        self.rows = tuple(rows)
        self.scale_ms = scale_ms

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(min(options.max_width, 30), options.max_width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        values = [_fmt_ms(r.ms) for r in self.rows]
        value_w = max(len(v) for v in values)
        label_w = max(len(r.label) for r in self.rows)
        short = options.max_width - label_w - value_w - 2 < _MIN_BAR_FULL_LABELS
        if short:
            label_w = max(len(r.short) for r in self.rows)
        bar_w = max(_MIN_BAR, options.max_width - label_w - value_w - 2)
        for row, value in zip(self.rows, values, strict=True):
            # no_wrap + crop: on a terminal too narrow even for short labels, a
            # cropped row reads better than one wrapped into the next.
            line = Text(no_wrap=True, overflow="crop")
            line.append((row.short if short else row.label).ljust(label_w), style=row.style)
            line.append(" ")
            line.append_text(self._bar(row, bar_w))
            line.append(" ")
            line.append(value.rjust(value_w), style="bold" if row.label == V2V_LABEL else "")
            yield line

    def _bar(self, row: _Row, width: int) -> Text:
        if row.bar_ms <= 0 or self.scale_ms <= 0:
            return Text(" " * width)
        # Cells come from cumulative ms, not from adding up rounded cells, so rounding
        # never drifts along the waterfall; a positive hop gets at least one cell.
        start = min(width - 1, round(row.start_ms / self.scale_ms * width))
        end = round((row.start_ms + row.bar_ms) / self.scale_ms * width)
        end = min(width, max(end, start + 1))
        bar = Text(" " * start)
        bar.append(BAR_CHAR * (end - start), style=row.style)
        bar.append(" " * (width - end))
        return bar


def _positive(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and value > 0 else 0.0


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def render_waterfall(record: Mapping[str, Any]) -> RenderableType:
    """One row per hop (name, bar, ms), then unaccounted and voice-to-voice.

    Each bar starts where the previous hops end (a missing or negative hop adds
    nothing: its length is unknown, and the "-" says so) and is scaled to the
    turn's voice-to-voice, or to the hops' sum where overlapping hops exceed it.
    A negative unaccounted (hops overlap) is shown as a number without a bar.
    """
    lat = _latency(record)
    rows: list[_Row] = []
    offset = 0.0
    for name in (*_hops_of(lat), "unaccounted"):
        value = _number(lat.get(name))
        length = _positive(value)
        rows.append(_Row(name, SHORT_NAMES.get(name, name), value, offset, length, _HOP_STYLE.get(name, "")))
        offset += length
    v2v = _number(lat.get("voice_to_voice"))
    rows.append(_Row(V2V_LABEL, "v2v", v2v, 0.0, _positive(v2v), "bold"))
    return Waterfall(rows, max(offset, _positive(v2v)))


# --- statistics and plain lines -----------------------------------------------------------------


def rolling_stats(
    records: Iterable[Mapping[str, Any]], window: int = STATS_WINDOW
) -> dict[str, float | None]:
    """n, p50 and p95 of voice-to-voice (ms) over the last ``window`` records that have one.

    Percentiles are agent.metrics.stats' (linear interpolation, numpy's default), the same
    as the run summary, so the HUD and the summary agree on the same turns.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    values = [v for r in records if (v := _number(_latency(r).get("voice_to_voice"))) is not None]
    recent = sorted(values[-window:])
    if not recent:
        return {"n": 0, "p50": None, "p95": None}
    return {"n": len(recent), "p50": percentile(recent, 50), "p95": percentile(recent, 95)}


def turn_line(record: Mapping[str, Any]) -> str:
    """One plain line (no ANSI) per finished turn, for ``--no-hud`` logs."""
    lat = _latency(record)
    v2v = _number(lat.get("voice_to_voice"))
    parts = [f"turn {record.get('turn', '?')} {record.get('status', '?')}"]
    parts.append("v2v -" if v2v is None else f"v2v {v2v:.1f} ms")
    hops = (*_hops_of(lat), "unaccounted")
    parts.append(" ".join(f"{SHORT_NAMES.get(h, h)} {_fmt(_number(lat.get(h)))}" for h in hops))
    stop = _number(lat.get("barge_in_stop"))
    if stop is not None:
        parts.append(f"barge-in stop {stop:.1f} ms")
    if record.get("reason"):
        parts.append(f"reason: {_one_line(str(record['reason']))}")
    transcript, reply = str(record.get("transcript") or ""), str(record.get("reply") or "")
    if transcript or reply:
        # Whitespace is collapsed so that one turn stays one line in the log.
        parts.append(f'"{_one_line(transcript)}" -> "{_one_line(reply)}"')
    return "  ".join(parts)


# --- the HUD ------------------------------------------------------------------------------------


def _header(state: HudState) -> Panel:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("agent", state.agent)
    grid.add_row("audio", state.devices)
    grid.add_row("mode", state.mode)
    if state.run_dir:
        grid.add_row("run", state.run_dir)
    return Panel(grid, title="vlt demo", title_align="left", border_style="dim")


def _meter(level_dbfs: float | None) -> Text:
    meter = Text("mic ")
    if level_dbfs is None:
        return meter.append("-", style="dim")
    frac = (max(_METER_FLOOR_DBFS, min(0.0, level_dbfs)) - _METER_FLOOR_DBFS) / -_METER_FLOOR_DBFS
    cells = round(frac * _METER_CELLS)
    # Green for speech, yellow when loud, red near clipping (the usual VU-meter code).
    style = "red" if level_dbfs > -3 else "yellow" if level_dbfs > -12 else "green"
    meter.append("▮" * cells, style=style)
    meter.append("▯" * (_METER_CELLS - cells), style="dim")
    return meter.append(f" {level_dbfs:6.1f} dBFS")


def _status_line(state: HudState) -> Text:
    # An unknown status still renders (in plain bold) rather than raising in the
    # refresh path: a HUD that crashes hides the very state one needs to see.
    style = _STATUS_STYLE.get(state.status, "bold")
    return Text.assemble((f" {state.status.upper()} ", style), "   ", _meter(state.level_dbfs))


def _speech(state: HudState) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    if state.partial:
        grid.add_row("you …", Text(_clip(state.partial, keep="tail"), style="italic"))
    grid.add_row("you", _clip(state.transcript) or Text("-", style="dim"))
    grid.add_row("agent", _clip(state.agent_text, keep="tail") or Text("-", style="dim"))
    return grid


def _recent_table(turns: Sequence[Mapping[str, Any]]) -> Table:
    # SIMPLE_HEAD without edges: no borders above, below or around, lines the HUD's height can spare.
    table = Table(title="recent turns (ms)", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("turn", justify="right")
    table.add_column("status")
    for header in ("v2v", "endpt", "ttft", "tts"):
        table.add_column(header, justify="right")
    for record in turns[-RECENT_TURNS:]:
        lat = _latency(record)
        table.add_row(
            str(record.get("turn", "?")),
            str(record.get("status", "?")),
            *(
                _fmt(_number(lat.get(k)))
                for k in ("voice_to_voice", "endpointing", "llm_ttft", "tts_first_audio")
            ),
        )
    return table


def _stats_line(turns: Sequence[Mapping[str, Any]]) -> Text:
    stats = rolling_stats(turns)
    line = Text("v2v ", style="bold")
    if not stats["n"]:
        return line.append("no measured turn yet", style="dim")
    n = stats["n"]
    return line.append(f"p50 {_fmt_ms(stats['p50'])}  p95 {_fmt_ms(stats['p95'])}  (last {n:.0f} turns)")


def render_hud(state: HudState) -> RenderableType:
    """The whole HUD for one state. Pure: no clock reads, no I/O."""
    parts: list[RenderableType] = [_header(state), _status_line(state), _speech(state)]
    if state.turns:
        last = state.turns[-1]
        parts.append(
            Panel(
                render_waterfall(last),
                title=f"turn {last.get('turn', '?')} · {last.get('status', '?')}",
                title_align="left",
                border_style="dim",
            )
        )
        parts.append(_recent_table(state.turns))
    parts.append(_stats_line(state.turns))
    if state.barge_in_stop_ms is not None:
        # A line of its own: at 60 columns it would wrap mid-phrase after the percentiles.
        parts.append(Text.assemble(("barge-in stop ", "bold"), _fmt_ms(state.barge_in_stop_ms)))
    if state.notice:
        parts.append(Text(f"! {_clip(state.notice)}", style="bold yellow"))
    return Group(*parts)


class Hud:
    """The live HUD on a terminal, redrawn from the latest state.

    The console defaults to stderr: the HUD is an interactive display, not
    output, so stdout stays free to be redirected or piped. Redraws come from
    Live's auto-refresh thread at ``refresh_per_second`` (10 by default), not from
    ``update``: the demo updates on every mic level (~50 per second), and the
    thread coalesces those into at most 10 redraws without the caller tracking
    time. ``update`` builds the renderable on the caller's thread, from a state
    that is consistent there, and only hands it over.
    """

    def __init__(self, console: Console | None = None, refresh_per_second: float = 10.0) -> None:
        self.console = console if console is not None else Console(stderr=True)
        self._live = Live(
            console=self.console,
            auto_refresh=True,
            refresh_per_second=refresh_per_second,
            # The final state stays on screen after stop(): it is the last turn's numbers.
            transient=False,
        )

    def start(self) -> None:
        self._live.start()

    def update(self, state: HudState) -> None:
        self._live.update(render_hud(state))

    def stop(self) -> None:
        # Live.stop() returns at once when not started, so stop() may be repeated.
        self._live.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LineReporter:
    """The ``--no-hud`` stand-in for :class:`Hud`: one plain line per finished turn.

    New turns are recognised by their turn number, not by the list's length, so
    a caller may cap ``state.turns`` to the latest few without lines repeating
    or stopping.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        # Resolved at construction, not as a default argument, so a replaced
        # sys.stdout (pytest's capture, a redirect) is the one written to.
        self.stream = stream if stream is not None else sys.stdout
        self._last_turn: int | None = None
        self._notice = ""

    def start(self) -> None:
        """Nothing to set up; present so the demo can drive either reporter alike."""

    def update(self, state: HudState) -> None:
        for record in state.turns:
            turn = record.get("turn")
            if isinstance(turn, int) and (self._last_turn is None or turn > self._last_turn):
                self._write(turn_line(record))
                self._last_turn = turn
        if state.notice != self._notice:
            self._notice = state.notice
            if state.notice:
                self._write(f"notice: {_one_line(state.notice)}")

    def stop(self) -> None:
        self.stream.flush()

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        # Flushed per line: these are progress lines someone is watching (or tailing).
        self.stream.flush()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
