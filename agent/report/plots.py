"""Plots for sweeps and runs (matplotlib, Agg, no pyplot state), as PNG and SVG.

Figures are built with :class:`matplotlib.figure.Figure` directly rather than
``pyplot``: no global figure registry, no GUI backend, so reports can be drawn
from any thread or test without leaking figures.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from agent.jobs.latency_model import TurnModel, predict
from agent.metrics.records import TurnRecord
from agent.metrics.timeline import HOPS, V2V_START

__all__ = [
    "BREAKDOWN",
    "HUMAN_TURN_GAP_MS",
    "breakdown_figure",
    "png_base64",
    "save_figure",
    "svg_text",
    "v2v_figure",
    "waterfall_figure",
]

#: Median gap between turns in human conversation, ~200 ms across 10 languages
#: (Stivers et al. 2009, PNAS 106:10587): the bar a voice agent is measured against.
HUMAN_TURN_GAP_MS = 200.0

#: Stacked-bar segments: label → the sweep-row mean columns that make it up.
BREAKDOWN: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("endpointing", ("endpointing_mean",)),
    ("ASR finalize", ("asr_finalize_mean",)),
    ("TTFT", ("llm_ttft_mean",)),
    ("first phrase", ("first_phrase_mean",)),
    ("TTS first audio", ("tts_first_audio_mean",)),
    ("transport", ("transport_mean",)),
    # Leading silence in the agent's audio (Piper's is ~55 ms): not the network.
    ("audio onset", ("audio_onset_mean",)),
    ("unaccounted", ("unaccounted_mean",)),
)
_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#bbbbbb")


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg``; return both paths."""
    paths = []
    for ext in ("png", "svg"):
        path = stem.with_suffix(f".{ext}")
        # metadata Date=None keeps the SVG byte-identical across runs of the same data.
        fig.savefig(path, format=ext, dpi=120, metadata={"Date": None} if ext == "svg" else None)
        paths.append(path)
    return paths


def svg_text(fig: Figure) -> str:
    """The figure as an inline ``<svg>`` element (XML prolog and DOCTYPE removed)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]


def png_base64(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _models(doc: Mapping[str, Any]) -> dict[float, list[TurnModel]]:
    return {
        float(g["ttft_ms"]): [TurnModel(t["fixed_ms"], t["tokens"], t["components_ms"]) for t in g["turns"]]
        for g in doc.get("model_turns", [])
    }


def v2v_figure(doc: Mapping[str, Any]) -> Figure:
    """Voice-to-voice p50 (p95 band) vs tokens/s, log x, one line per TTFT; the model dashed."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    rows = [r for r in doc["points"] if r.get("v2v_p50") is not None]
    models = _models(doc)
    profiles = any(r.get("profile") for r in rows)
    for i, ttft in enumerate(sorted({r["ttft_ms"] for r in rows})):
        color = f"C{i % 10}"
        group = sorted((r for r in rows if r["ttft_ms"] == ttft), key=lambda r: r["tokens_per_s"])
        tps = [r["tokens_per_s"] for r in group]
        p50 = [r["v2v_p50"] for r in group]
        p95 = [r["v2v_p95"] for r in group]
        style = "o" if profiles else "o-"
        ax.plot(tps, p50, style, color=color, label=f"TTFT {ttft:g} ms, measured p50")
        if len(group) > 1:
            ax.fill_between(tps, p50, p95, color=color, alpha=0.15, linewidth=0)
        else:
            ax.errorbar(tps, p50, yerr=[[0.0], [p95[0] - p50[0]]], color=color, capsize=3, fmt="none")
        if profiles:
            for r in group:
                point = (r["tokens_per_s"], r["v2v_p50"])
                ax.annotate(r["profile"], point, fontsize=7, xytext=(4, 4), textcoords="offset points")
        turns = models.get(float(ttft), [])
        if turns and tps:
            lo, hi = min(tps), max(tps)
            xs = [lo * (hi / lo) ** (k / 99) for k in range(100)] if hi > lo else [lo]
            ys = [predict(turns, x) or 0.0 for x in xs]  # turns is non-empty: never None
            style = "--" if len(xs) > 1 else "x"
            ax.plot(xs, ys, style, color=color, alpha=0.8, label=f"TTFT {ttft:g} ms, model")
    ax.axhline(HUMAN_TURN_GAP_MS, color="0.4", linestyle=":", linewidth=1)
    ax.annotate(
        "human turn gap ~200 ms (Stivers et al. 2009)",
        (0.01, HUMAN_TURN_GAP_MS),
        xycoords=("axes fraction", "data"),
        xytext=(0, 3),
        textcoords="offset points",
        fontsize=8,
        color="0.3",
    )
    ax.set_xscale("log")
    ax.set_xlabel("LLM decode speed (tokens/s, log scale)")
    ax.set_ylabel("voice-to-voice (ms): p50, band to p95")
    ax.set_ylim(bottom=0)
    title = "Voice-to-voice vs token speed"
    if doc.get("status") != "complete":
        title += " (partial sweep)"
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if rows:
        ax.legend(fontsize=8)
    return fig


def breakdown_figure(doc: Mapping[str, Any]) -> Figure:
    """A stacked bar per point (per accelerator profile in a profile sweep): where the ms go (means)."""
    rows = [r for r in doc["points"] if r.get("v2v_mean") is not None]
    fig = Figure(figsize=(9, max(2.5, 0.35 * len(rows) + 1.5)), layout="constrained")
    ax = fig.add_subplot()
    labels = [r.get("profile") or r["point"] for r in rows]
    left = [0.0] * len(rows)
    for (name, columns), color in zip(BREAKDOWN, _COLORS, strict=True):
        widths = [sum(float(r.get(c) or 0.0) for c in columns) for r in rows]
        ax.barh(labels, widths, left=left, color=color, label=name)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.invert_yaxis()  # first point on top, as in the table
    ax.margins(x=0.03)
    ax.set_xlabel("mean ms per turn (segments sum to mean voice-to-voice)")
    ax.set_title("Where the milliseconds go")
    ax.legend(fontsize=8, ncols=4, loc="lower center", bbox_to_anchor=(0.5, 1.08))
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def waterfall_figure(record: TurnRecord, context_ms: float = 800.0) -> Figure:
    """One turn on a time axis (ms from the end of the user's speech): speech, each hop, the reply."""
    marks: Mapping[str, int] = record.get("marks_ns", {})
    zero = marks.get(V2V_START)
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    ax = fig.add_subplot()
    if zero is None:
        ax.text(0.5, 0.5, "no user speech end mark", ha="center", transform=ax.transAxes)
        return fig

    def ms(name: str) -> float | None:
        t = marks.get(name)
        return None if t is None else (t - zero) / 1e6

    bars: list[tuple[str, float, float, str]] = []
    start = ms("user.speech_start")
    if start is not None:
        bars.append(("user speech", start, -start, "#999999"))
    for hop, color in zip(HOPS, (*_COLORS, "#64b5cd"), strict=False):
        a, b = ms(hop.start), ms(hop.end)
        if a is not None and b is not None:
            bars.append((hop.name, a, max(b - a, 0.0), color))
    barge_in = record.get("barge_in")
    if barge_in is not None and start is not None:
        # The interrupted reply: as the caller heard it, and the agent's flush inside it.
        stop, received, flush = barge_in.get("stop_ms"), barge_in.get("received_ms"), barge_in.get("flush_ms")
        if stop is not None:
            bars.append(("barge-in stop (heard)", start, max(stop, 0.0), "#c44e52"))
        if received is not None and flush is not None:
            bars.append(("barge-in flush", start + received - flush, max(flush, 0.0), "#dd8452"))
    heard = ms("client.first_audio_received")
    if heard is not None:
        bars.append(("agent speech", heard, float(record.get("agent_audio_ms") or 0.0), "#333333"))
    names = [b[0] for b in bars]
    ax.barh(names, [b[2] for b in bars], left=[b[1] for b in bars], color=[b[3] for b in bars])
    ax.invert_yaxis()
    end = heard if heard is not None else max((b[1] + b[2] for b in bars), default=0.0)
    ax.set_xlim(-context_ms, end + context_ms)
    ax.axvline(0, color="0.3", linewidth=0.8)
    if heard is not None:
        ax.axvline(heard, color="0.3", linewidth=0.8, linestyle="--")
    v2v = record.get("latency_ms", {}).get("voice_to_voice")
    v2v_text = "-" if v2v is None or math.isnan(v2v) else f"{v2v:.0f} ms"
    ax.set_title(
        f"turn {record.get('turn')}: voice-to-voice {v2v_text} ({record.get('status')})", fontsize=10
    )
    ax.set_xlabel("ms after the user stopped speaking")
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    return fig
