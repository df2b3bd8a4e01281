"""Token-speed sweeps: replay scenarios across a grid of LLM timings, one point at a time.

A sweep folder holds::

    sweep.json        settings, status (running / partial / complete), one row per finished point,
                      the model's per-turn inputs per TTFT, and the knees
    sweep.csv         the same rows, flat (columns: docs/sweeps.md)
    points/<point>/rep<r>-<scenario>/   an ordinary run folder per replay
    v2v_vs_tps.{png,svg}, breakdown.{png,svg}   plots (agent/report/plots.py)

``sweep.json`` and ``sweep.csv`` are rewritten (atomically) after every point,
so a sweep stopped by Ctrl-C or a crash keeps every finished point and ``vlt
report`` can be built from it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.clock import Clock, utc_now
from agent.config.accelerators import get_profile
from agent.config.scenario import Scenario
from agent.errors import ConfigError
from agent.jobs.latency_model import Knee, TurnModel, dominant_components, measured_knee, model_knee, predict
from agent.jobs.latency_model import turn_model as make_turn_model
from agent.jobs.runner import AgentLoop, run_scenario
from agent.metrics.records import TurnRecord
from agent.metrics.results import check_new_run_dir, metric_values
from agent.metrics.stats import describe
from agent.metrics.timeline import HOP_NAMES
from agent.stages.pipeline import Pipeline

if TYPE_CHECKING:
    from agent.client.replay import ReplayResult
    from agent.telemetry.publisher import Telemetry

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_TPS",
    "DEFAULT_TTFT_MS",
    "PointReplay",
    "Progress",
    "SweepPoint",
    "grid_points",
    "knees",
    "profile_points",
    "read_sweep",
    "run_sweep",
    "summarize_point",
]

DEFAULT_TPS: tuple[float, ...] = (25, 50, 100, 200, 400, 800, 1600)
DEFAULT_TTFT_MS: tuple[float, ...] = (50, 200, 500)
SWEEP_FILE = "sweep.json"
CSV_FILE = "sweep.csv"

_HOPS = (*HOP_NAMES, "unaccounted")
#: One row per point; every column is documented in docs/sweeps.md.
CSV_COLUMNS: tuple[str, ...] = (
    "point",
    "profile",
    "tokens_per_s",
    "ttft_ms",
    "runs",
    "turns",
    "n",
    *(f"{hop}_{stat}" for hop in _HOPS for stat in ("mean", "p50", "p95")),
    "v2v_mean",
    "v2v_p50",
    "v2v_p90",
    "v2v_p95",
    "v2v_p99",
    "first_phrase_tokens_mean",
    "pred_n",
    "pred_v2v_p50",
    "pred_v2v_p95",
    "pred_error_ms",
)


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """One setting of the LLM's timing."""

    key: str
    """Folder name and identifier, e.g. ``tps=100,ttft=200`` or ``profile=groq-llama-3.3-70b``."""
    tokens_per_s: float
    ttft_ms: float
    overrides: Mapping[str, Any]
    """Pipeline overrides (``Pipeline.with_overrides``) that make this point."""
    profile: str = ""


def grid_points(tps: Sequence[float], ttft_ms: Sequence[float]) -> list[SweepPoint]:
    """The tokens/s x TTFT grid, TTFT-major so each TTFT's curve completes early."""
    return [
        SweepPoint(
            f"tps={t:g},ttft={f:g}",
            float(t),
            float(f),
            {"llm.tokens_per_s": float(t), "llm.ttft_ms": float(f)},
        )
        for f in ttft_ms
        for t in tps
    ]


def profile_points(names: Sequence[str]) -> list[SweepPoint]:
    """One point per accelerator profile.

    The profile's timing numbers are set explicitly as well: a pipeline that
    sets ``ttft_ms``/``tokens_per_s`` itself (emulated.toml does) would
    otherwise override the profile it is switched to.
    """
    points = []
    for name in names:
        p = get_profile(name)
        overrides = {
            "llm.profile": p.name,
            "llm.ttft_ms": p.ttft_ms,
            "llm.tokens_per_s": p.tokens_per_s,
            "llm.jitter": p.jitter,
            "llm.ttft_jitter_ms": p.ttft_jitter_ms,
        }
        points.append(SweepPoint(f"profile={p.name}", p.tokens_per_s, p.ttft_ms, overrides, p.name))
    return points


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a sweep is: reported before each replay and after the last."""

    runs_done: int
    runs_total: int
    points_done: int
    points_total: int
    point: str
    elapsed_s: float
    """Wall-clock seconds since the sweep started (virtual sweeps too: this is for the ETA)."""

    @property
    def eta_s(self) -> float | None:
        if not self.runs_done:
            return None
        return self.elapsed_s / self.runs_done * (self.runs_total - self.runs_done)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "scenario"


def summarize_point(
    point: SweepPoint, records: Sequence[TurnRecord], models: Sequence[TurnModel], runs: int
) -> dict[str, Any]:
    """One row: settings, per-hop and v2v statistics, the model's prediction and its error."""
    row: dict[str, Any] = {
        "point": point.key,
        "profile": point.profile,
        "tokens_per_s": point.tokens_per_s,
        "ttft_ms": point.ttft_ms,
        "runs": runs,
        "turns": len(records),
    }
    for hop in _HOPS:
        stats = describe(metric_values(records, hop))
        for stat in ("mean", "p50", "p95"):
            row[f"{hop}_{stat}"] = stats[stat]
    v2v = describe(metric_values(records, "voice_to_voice"))
    row["n"] = v2v["n"]
    for stat in ("mean", "p50", "p90", "p95", "p99"):
        row[f"v2v_{stat}"] = v2v[stat]
    row["first_phrase_tokens_mean"] = sum(m.tokens for m in models) / len(models) if models else None
    row["pred_n"] = len(models)
    row["pred_v2v_p50"] = predict(models, point.tokens_per_s, 50)
    row["pred_v2v_p95"] = predict(models, point.tokens_per_s, 95)
    measured = row["v2v_p50"]
    row["pred_error_ms"] = (
        None if measured is None or row["pred_v2v_p50"] is None else row["pred_v2v_p50"] - measured
    )
    return row


def _models_by_ttft(doc: Mapping[str, Any]) -> dict[float, list[TurnModel]]:
    out: dict[float, list[TurnModel]] = {}
    for group in doc.get("model_turns", []):
        out[float(group["ttft_ms"])] = [
            TurnModel(t["fixed_ms"], t["tokens"], t["components_ms"]) for t in group["turns"]
        ]
    return out


def knees(doc: Mapping[str, Any]) -> list[Knee]:
    """The knee for each TTFT of a sweep document (grid sweeps; profile sweeps have one point per TTFT)."""
    models = _models_by_ttft(doc)
    out = []
    for ttft in sorted(models):
        turns = models[ttft]
        grid = [
            (row["tokens_per_s"], row["v2v_p50"])
            for row in doc["points"]
            if row["ttft_ms"] == ttft and row["v2v_p50"] is not None
        ]
        model_tps = model_knee(turns)
        at = predict(turns, model_tps) if model_tps is not None else None
        out.append(Knee(ttft, model_tps, measured_knee(grid), at, dominant_components(turns)))
    return out


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_COLUMNS})
    return buf.getvalue()


@dataclass
class _State:
    out: Path
    doc: dict[str, Any]
    models: dict[float, list[TurnModel]] = field(default_factory=dict)

    def write(self) -> None:
        self.doc["model_turns"] = [
            {
                "ttft_ms": ttft,
                "turns": [
                    {"fixed_ms": t.fixed_ms, "tokens": t.tokens, "components_ms": dict(t.components_ms)}
                    for t in turns
                ],
            }
            for ttft, turns in sorted(self.models.items())
        ]
        self.doc["knees"] = [
            {
                "ttft_ms": k.ttft_ms,
                "model_tps": k.model_tps,
                "measured_tps": k.measured_tps,
                "v2v_at_knee_ms": k.v2v_at_knee_ms,
                "dominant": list(k.dominant),
            }
            for k in knees(self.doc)
        ]
        _atomic_write(self.out / SWEEP_FILE, json.dumps(self.doc, indent=2, default=str) + "\n")
        _atomic_write(self.out / CSV_FILE, _csv_text(self.doc["points"]))


async def run_sweep(
    pipeline: Pipeline,
    scenarios: Sequence[Scenario],
    points: Sequence[SweepPoint],
    clock: Clock,
    out: str | Path,
    *,
    repeat: int = 1,
    on_progress: Callable[[Progress], None] | None = None,
    on_point: Callable[[dict[str, Any]], None] | None = None,
    telemetry: Telemetry | None = None,
    agent_loop: AgentLoop = "process",
) -> dict[str, Any]:
    """Replay every scenario ``repeat`` times at every point; return the sweep document.

    In real time each point's agent runs in a child process (``agent_loop``,
    docs/speech.md "The caller's clock"), so its CPU work cannot hold up the caller.

    Cancellation (Ctrl-C) marks the sweep ``partial``, keeps the finished points
    on disk, and re-raises.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    if clock.virtual and not pipeline.virtual_time_ok:
        stages = ", ".join(pipeline.real_time_stages())
        raise ConfigError(
            f"virtual time needs an all-emulated pipeline; {pipeline.name} has real stages: {stages}"
        )
    out = Path(out)
    check_new_run_dir(out, option="sweep folder")  # a second sweep's points would mix with the first's
    out.mkdir(parents=True, exist_ok=True)
    # Build every point's pipeline first: a bad override fails before any replay.
    pipelines = [pipeline.with_overrides(dict(p.overrides)) for p in points]

    @contextlib.asynccontextmanager
    async def replaying(index: int, point: SweepPoint) -> AsyncIterator[PointReplay]:
        async def one(scenario: Scenario, run_dir: Path) -> ReplayResult:
            return await run_scenario(
                scenario,
                clock,
                pipeline=pipelines[index],
                run_dir=run_dir,
                telemetry=telemetry,
                agent_loop=agent_loop,
            )

        yield one

    def models(index: int, records: Sequence[TurnRecord]) -> list[TurnModel]:
        chunker = pipelines[index].chunker
        return [m for m in (make_turn_model(r, chunker) for r in records) if m is not None]

    return await run_points(
        out,
        pipeline.as_dict(),
        scenarios,
        points,
        "virtual" if clock.virtual else "real",
        repeat,
        replaying,
        models,
        on_progress=on_progress,
        on_point=on_point,
    )


#: Replays one scenario into a run folder, against the agent of the point being measured.
PointReplay = Callable[[Scenario, Path], Awaitable["ReplayResult"]]


async def run_points(
    out: Path,
    pipeline_doc: Mapping[str, Any],
    scenarios: Sequence[Scenario],
    points: Sequence[SweepPoint],
    clock_kind: str,
    repeat: int,
    replaying: Callable[[int, SweepPoint], contextlib.AbstractAsyncContextManager[PointReplay]],
    models: Callable[[int, Sequence[TurnRecord]], list[TurnModel]],
    *,
    on_progress: Callable[[Progress], None] | None = None,
    on_point: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The sweep loop every kind of sweep shares: for each point, ``replaying(i, point)``
    sets its agent up and gives the replay to run; every scenario ``repeat`` times;
    the point's row (and ``models(i, records)`` for the latency model) on disk at once.

    Anything that ends it early (Ctrl-C, an agent failing) marks the sweep
    ``partial``, keeps the finished points on disk, and re-raises.
    """
    started = utc_now()
    state = _State(
        out,
        {
            "kind": "vlt-sweep",
            "version": 1,
            "status": "running",
            "pipeline": dict(pipeline_doc),
            "scenarios": [s.name for s in scenarios],
            "clock": clock_kind,
            "repeat": repeat,
            "points_planned": [p.key for p in points],
            "started_utc": started.isoformat(),
            "finished_utc": None,
            "elapsed_s": None,
            "points": [],
        },
    )
    state.write()
    runs_total = len(points) * len(scenarios) * repeat
    runs_done = 0

    def progress(point: str) -> None:
        if on_progress is not None:
            elapsed = (utc_now() - started).total_seconds()
            on_progress(
                Progress(runs_done, runs_total, len(state.doc["points"]), len(points), point, elapsed)
            )

    try:
        for index, point in enumerate(points):
            records: list[TurnRecord] = []
            run_dirs: list[str] = []
            async with replaying(index, point) as replay_one:
                for rep in range(repeat):
                    for scenario in scenarios:
                        progress(point.key)
                        run_dir = out / "points" / point.key / f"rep{rep}-{_safe(scenario.name)}"
                        result = await replay_one(scenario, run_dir)
                        records.extend(result.records)
                        run_dirs.append(str(run_dir.relative_to(out)))
                        runs_done += 1
            point_models = models(index, records)
            state.models.setdefault(point.ttft_ms, []).extend(point_models)
            row = summarize_point(point, records, point_models, len(run_dirs))
            state.doc["points"].append({**row, "run_dirs": run_dirs})
            state.doc["elapsed_s"] = (utc_now() - started).total_seconds()
            state.write()
            if on_point is not None:
                on_point(row)
    except BaseException:
        state.doc["status"] = "partial"
        state.doc["elapsed_s"] = (utc_now() - started).total_seconds()
        state.write()
        raise
    state.doc["status"] = "complete"
    state.doc["finished_utc"] = utc_now().isoformat()
    state.doc["elapsed_s"] = (utc_now() - started).total_seconds()
    state.write()
    progress("done")
    return state.doc


def read_sweep(sweep_dir: str | Path) -> dict[str, Any]:
    """A sweep folder's document; a sweep never marked complete reads as partial."""
    path = Path(sweep_dir) / SWEEP_FILE
    try:
        doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the sweep file ({exc})", path=path) from None
    if not isinstance(doc, dict) or doc.get("kind") != "vlt-sweep":
        raise ConfigError("not a vlt sweep.json (no kind = vlt-sweep)", path=path)
    if doc.get("status") != "complete":
        doc["status"] = "partial"  # "running" on disk means the process died mid-sweep
    return doc
