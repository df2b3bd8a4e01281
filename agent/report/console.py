"""Terminal output: a per-turn waterfall row as each turn ends, then the summary."""

from __future__ import annotations

from collections.abc import Mapping

from agent.metrics.pacing import caller_warning
from agent.metrics.records import Summary, TurnRecord
from agent.metrics.results import latencies
from agent.metrics.timeline import HOP_NAMES, SHORT_NAMES

__all__ = ["LEGEND", "format_header", "format_summary", "format_turn"]

#: One letter per hop in the waterfall bar; '?' is unaccounted time.
_LETTERS = {
    "endpointing": "E",
    "asr_finalize": "A",
    "llm_ttft": "T",
    "first_phrase": "P",
    "tts_first_audio": "S",
    "transport": "N",
    "audio_onset": "O",
    "unaccounted": "?",
}
LEGEND = "  ".join(f"{letter}={name}" for name, letter in _LETTERS.items())
_COLUMNS = (*HOP_NAMES, "unaccounted")
MS_PER_CHAR = 25.0
BAR_MAX = 48


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_header() -> str:
    cols = "".join(f"{SHORT_NAMES[c]:>8}" for c in _COLUMNS)
    return f"{'turn':>4} {'status':<11}{cols}{'v2v':>9}  waterfall (1 char = {MS_PER_CHAR:g} ms)"


def _bar(latency: Mapping[str, float | None]) -> str:
    out = []
    for name in _COLUMNS:
        value = latency.get(name)
        if value is not None and value > 0:
            out.append(_LETTERS[name] * max(1, round(value / MS_PER_CHAR)))
    bar = "".join(out)
    return bar if len(bar) <= BAR_MAX else bar[: BAR_MAX - 1] + ">"


def format_turn(record: TurnRecord) -> str:
    lat = latencies(record)
    cols = "".join(f"{_fmt(lat.get(c)):>8}" for c in _COLUMNS)
    line = (
        f"{record['turn']:>4} {record['status']:<11}{cols}{_fmt(lat.get('voice_to_voice')):>9}  {_bar(lat)}"
    )
    notes = []
    if lat.get("barge_in_stop") is not None:
        flush = lat.get("barge_in_flush")
        notes.append(
            f"barge-in stop {lat['barge_in_stop']:.1f} ms as heard"
            + ("" if flush is None else f" (agent stop → last frame received {flush:.1f} ms)")
        )
    caller = record.get("caller")
    if caller is not None and caller["flagged"]:
        notes.append(caller_warning(record["turn"], caller))
    if record.get("reason"):
        notes.append(record["reason"])
    notes += [
        f"expectation failed: {c['check']} {c['value']}"
        for c in record.get("expectations", [])
        if not c["ok"]
    ]
    return line + ("".join(f"\n{'':>5}{n}" for n in notes))


def format_summary(summary: Summary) -> str:
    lines = [f"{'metric (ms)':<18}{'n':>5}{'mean':>9}{'p50':>9}{'p90':>9}{'p95':>9}{'p99':>9}{'max':>9}"]
    for metric, stats in summary["metrics_ms"].items():
        if not stats["n"]:
            continue
        values = "".join(f"{_fmt(stats[k]):>9}" for k in ("mean", "p50", "p90", "p95", "p99", "max"))
        lines.append(f"{metric:<18}{stats['n']:>5}{values}")
    caller = summary.get("caller")
    if caller is not None and caller["frames"]:
        flagged = (
            " — FLAGGED: some frames went out late (see the turns' warnings)" if caller["flagged"] else ""
        )
        lines.append(
            f"caller send lateness: p99 {_fmt(caller['lateness_p99_ms'])} ms, max "
            f"{_fmt(caller['lateness_max_ms'])} ms over {caller['frames']} frames; "
            f"{caller['late_frames']} later than {caller['threshold_ms']:g} ms{flagged}"
        )
    status = ", ".join(f"{n} {s}" for s, n in sorted(summary["status"].items()))
    lines.append(
        f"turns: {summary['turns']} ({status}); expectations failed: {summary['expectations_failed']}"
    )
    return "\n".join(lines)
