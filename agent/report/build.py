"""Reports of a run folder or a sweep folder: self-contained HTML, Markdown, JSON.

The HTML is one file with everything inline (SVG plots, CSS), no scripts and
no external fetches, so it can be attached to an issue or opened offline. The
only links are relative ones to the run's own ``recording.wav`` and files.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from agent.jobs.latency_model import Knee, knee_sentence
from agent.jobs.sweep import SWEEP_FILE, knees, read_sweep
from agent.metrics.records import Manifest, TurnRecord
from agent.metrics.results import read_turns, summarize
from agent.metrics.timeline import HOP_NAMES

__all__ = ["FORMATS", "build_report", "is_sweep", "write_sweep_plots"]

FORMATS = ("html", "md", "json")
_MAX_WATERFALLS = 60  # a 500-turn run would make a 50 MB page; the table still lists every turn
_TABLE_HOPS = (*HOP_NAMES, "unaccounted")
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; } td.l, th.l { text-align: left; }
.partial { background: #fff3cd; border: 1px solid #e0b400; padding: 0.6em 1em; }
figure { margin: 1em 0; } svg { max-width: 100%; height: auto; }
"""


def is_sweep(path: Path) -> bool:
    return (path / SWEEP_FILE).is_file()


def write_sweep_plots(sweep_dir: str | Path) -> list[Path]:
    """(Re)write the sweep folder's plots, PNG and SVG, from its ``sweep.json``."""
    from agent.report.plots import breakdown_figure, save_figure, v2v_figure

    sweep_dir = Path(sweep_dir)
    doc = read_sweep(sweep_dir)
    paths = save_figure(v2v_figure(doc), sweep_dir / "v2v_vs_tps")
    paths += save_figure(breakdown_figure(doc), sweep_dir / "breakdown")
    return paths


def build_report(path: str | Path, fmt: str = "html", output: str | Path | None = None) -> str:
    """The report of a run or sweep folder as text. ``output`` (where it will be written)
    only makes the HTML's links to the recording relative to it."""
    path = Path(path)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown report format {fmt!r}; valid: {', '.join(FORMATS)}")
    out_dir = Path(output).resolve().parent if output is not None else path.resolve()
    if is_sweep(path):
        doc = read_sweep(path)
        if fmt == "json":
            return _sweep_json(doc)
        return _sweep_md(doc) if fmt == "md" else _sweep_html(doc, path)
    if (path / "turns.jsonl").is_file():
        records = read_turns(path)
        manifest = _manifest(path)
        if fmt == "json":
            brief = [_turn_brief(r) for r in records]
            doc = {"kind": "run", "manifest": manifest or {}, "summary": summarize(records), "turns": brief}
            return json.dumps(doc, indent=2, default=str)
        if fmt == "md":
            return _run_md(path, records, manifest)
        return _run_html(path, records, manifest, out_dir)
    raise ConfigError("not a run folder (no turns.jsonl) or a sweep folder (no sweep.json)", path=path)


# -- helpers ------------------------------------------------------------------------


def _f(value: Any, digits: int = 1) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _manifest(run_dir: Path) -> Manifest | None:
    """The run's manifest; None if it is missing or unreadable (the report goes on without it)."""
    try:
        data: Manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
        return data
    except (OSError, ValueError):
        return None


def _turn_brief(record: TurnRecord) -> dict[str, Any]:
    return {k: record.get(k) for k in ("turn", "status", "reason", "user_text", "reply", "latency_ms")}


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    def cell(tag: str, i: int, text: str) -> str:
        cls = ' class="l"' if i < left else ""
        return f"<{tag}{cls}>{html.escape(text)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(r)) + "</tr>\n" for r in rows)
    return f'<table id="summary">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table>'


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n"
        f"<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


# -- sweeps -------------------------------------------------------------------------

_SWEEP_HEADER = ("point", "tok/s", "TTFT ms", "n", "v2v p50", "p90", "p95", "p99", "model p50", "error ms")


def _sweep_rows(doc: Mapping[str, Any]) -> list[list[str]]:
    return [
        [
            r["point"],
            _f(r["tokens_per_s"], 0),
            _f(r["ttft_ms"], 0),
            _f(r["n"]),
            *(_f(r[f"v2v_{s}"]) for s in ("p50", "p90", "p95", "p99")),
            _f(r["pred_v2v_p50"]),
            _f(r["pred_error_ms"], 2),
        ]
        for r in doc["points"]
    ]


def _hop_rows(doc: Mapping[str, Any]) -> list[list[str]]:
    return [[r["point"], *(_f(r.get(f"{h}_p50")) for h in _TABLE_HOPS)] for r in doc["points"]]


def _sweep_subject(doc: Mapping[str, Any]) -> str:
    pipeline = doc.get("pipeline", {}).get("name", "?")
    planned = len(doc.get("points_planned", []))
    return (
        f"pipeline {pipeline}, scenarios {', '.join(doc.get('scenarios', []))}, {doc.get('clock')} time, "
        f"repeat {doc.get('repeat')}, {len(doc['points'])}/{planned} points, "
        f"{_f(doc.get('elapsed_s'))} s wall clock"
    )


def _knees(doc: Mapping[str, Any]) -> list[Knee]:
    return knees(doc)


def _sweep_json(doc: Mapping[str, Any]) -> str:
    out = {
        "kind": "sweep",
        "status": doc["status"],
        "pipeline": doc.get("pipeline", {}).get("name"),
        "scenarios": doc.get("scenarios"),
        "clock": doc.get("clock"),
        "repeat": doc.get("repeat"),
        "points_planned": doc.get("points_planned"),
        "points": doc["points"],
        "knees": [{**k, "sentence": s} for k, s in zip(doc.get("knees", []), _sentences(doc), strict=False)],
    }
    return json.dumps(out, indent=2, default=str)


def _sentences(doc: Mapping[str, Any]) -> list[str]:
    return [knee_sentence(k) for k in _knees(doc)]


def _sweep_md(doc: Mapping[str, Any]) -> str:
    parts = [f"### Token-speed sweep ({doc['status']})", "", _sweep_subject(doc), ""]
    if doc["status"] != "complete":
        parts += ["**Partial sweep**: interrupted; only the finished points are shown.", ""]
    parts += [f"- {s}" for s in _sentences(doc)]
    parts += ["", _md_table(_SWEEP_HEADER, _sweep_rows(doc)), "", "Hop p50 (ms):", ""]
    parts += [_md_table(("point", *_TABLE_HOPS), _hop_rows(doc)), ""]
    parts += ["![voice-to-voice vs tokens/s](v2v_vs_tps.png)", "", "![where the ms go](breakdown.png)", ""]
    return "\n".join(parts)


def _sweep_html(doc: Mapping[str, Any], sweep_dir: Path) -> str:
    from agent.report.plots import breakdown_figure, svg_text, v2v_figure

    body = [f"<p>{html.escape(_sweep_subject(doc))}</p>"]
    if doc["status"] != "complete":
        body.append('<p class="partial">Partial sweep: interrupted; only the finished points are shown.</p>')
    body.append("<h2>The knee</h2><ul>")
    body += [f"<li>{html.escape(s)}</li>" for s in _sentences(doc)]
    body.append("</ul><h2>Voice-to-voice per point (ms)</h2>")
    body.append(_html_table(_SWEEP_HEADER, _sweep_rows(doc)))
    body.append(f"<figure>{svg_text(v2v_figure(doc))}</figure>")
    body.append(f"<figure>{svg_text(breakdown_figure(doc))}</figure>")
    body.append("<h2>Hop p50 per point (ms)</h2>")
    body.append(_html_table(("point", *_TABLE_HOPS), _hop_rows(doc)).replace('id="summary"', 'id="hops"'))
    body.append('<p>Data: <a href="sweep.csv">sweep.csv</a>, <a href="sweep.json">sweep.json</a>.</p>')
    return _page(f"vlt sweep: {sweep_dir.name}", "\n".join(body))


# -- runs ---------------------------------------------------------------------------

_RUN_STATS = ("n", "mean", "p50", "p90", "p95", "p99", "max")


def _summary_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    return [
        [metric, *(_f(stats[k]) for k in _RUN_STATS)]
        for metric, stats in summary["metrics_ms"].items()
        if stats["n"]
    ]


def _run_subject(run_dir: Path, records: Sequence[TurnRecord], manifest: Manifest | None) -> str:
    known: Mapping[str, Any] = manifest or {}  # none readable: every field unknown
    scenario = known.get("scenario", {}).get("name", "?")
    pipeline = known.get("pipeline", {}).get("name", known.get("url", "?"))
    clock = "virtual" if known.get("clock", {}).get("virtual") else "real"
    done = "" if known.get("completed") else ", incomplete run"
    return f"scenario {scenario}, pipeline {pipeline}, {clock} time, {len(records)} turns{done}"


def _turn_rows(records: Sequence[TurnRecord]) -> list[list[str]]:
    return [
        [str(r["turn"]), r["status"], *(_f(r["latency_ms"].get(h)) for h in (*_TABLE_HOPS, "voice_to_voice"))]
        for r in records
    ]


def _run_md(run_dir: Path, records: Sequence[TurnRecord], manifest: Manifest | None) -> str:
    summary = summarize(records)
    parts = [f"### vlt run {run_dir.name}", "", _run_subject(run_dir, records, manifest), ""]
    parts += [_md_table(("metric (ms)", *_RUN_STATS), _summary_rows(summary)), ""]
    parts += [_md_table(("turn", "status", *_TABLE_HOPS, "v2v"), _turn_rows(records)), ""]
    return "\n".join(parts)


def _run_html(run_dir: Path, records: Sequence[TurnRecord], manifest: Manifest | None, out_dir: Path) -> str:
    from agent.report.plots import svg_text, waterfall_figure

    summary = summarize(records)
    body = [f"<p>{html.escape(_run_subject(run_dir, records, manifest))}</p>"]
    wav = run_dir / "recording.wav"
    if wav.exists():
        href = html.escape(Path(os.path.relpath(wav.resolve(), out_dir)).as_posix())
        body.append(
            f'<p>Recording (stereo: left the caller, right the agent): <a href="{href}">recording.wav</a>'
            f'<br><audio controls preload="none" src="{href}"></audio></p>'
        )
    body.append("<h2>Summary (ms)</h2>")
    body.append(_html_table(("metric", *_RUN_STATS), _summary_rows(summary)))
    body.append("<h2>Turns (ms)</h2>")
    body.append(
        _html_table(("turn", "status", *_TABLE_HOPS, "v2v"), _turn_rows(records), left=2).replace(
            'id="summary"', 'id="turns"'
        )
    )
    body.append("<h2>Waterfall per turn</h2>")
    for record in records[:_MAX_WATERFALLS]:
        body.append(f"<figure>{svg_text(waterfall_figure(record))}</figure>")
    if len(records) > _MAX_WATERFALLS:
        body.append(f"<p>… {len(records) - _MAX_WATERFALLS} more turns in the table above.</p>")
    return _page(f"vlt run: {run_dir.name}", "\n".join(body))
