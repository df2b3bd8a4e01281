"""Run folders: per-turn records that survive a crash, the manifest, the summary.

A run folder holds:

- ``manifest.json`` — pipeline and scenario as loaded, versions, host, clock
  offset; written when the run starts and rewritten when it ends.
- ``turns.jsonl`` — one JSON object per turn, appended and flushed to disk
  (``fsync``) the moment the turn ends, so an interrupted run loses nothing
  already measured.
- ``summary.json`` — per-metric n, mean, p50, p90, p95, p99, min, max.
- ``recording.wav`` — stereo: left the caller, right the agent.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, cast

from agent.clock import utc_now
from agent.metrics.records import Environment, MetricStats, Summary, TurnRecord
from agent.metrics.stats import describe
from agent.metrics.timeline import HOP_NAMES
from agent.metrics.wer import corpus_wer

__all__ = [
    "METRICS",
    "RunWriter",
    "environment",
    "latencies",
    "metric_stats",
    "metric_values",
    "new_run_dir",
    "read_turns",
    "summarize",
]

#: Summary metric → how to read it from a turn record.
METRICS: tuple[str, ...] = (
    "voice_to_voice",
    *HOP_NAMES,
    # Live sessions only (vlt demo): arrival → handed to the output device.
    "playout",
    "unaccounted",
    "llm_tpot",
    "barge_in_stop",
)


def new_run_dir(root: str | Path, scenario_name: str) -> Path:
    """``root/<UTC timestamp>-<scenario>``, unique among existing folders."""
    stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", scenario_name).strip("-") or "run"
    base = Path(root) / f"{stamp}-{safe}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path  # created by RunWriter once the agent has answered


def environment() -> Environment:
    """Package versions and host facts, so a result can be reproduced."""
    versions: dict[str, str | None] = {}
    for dist in ("voice-latency-testbed", "websockets", "numpy", "pyyaml", "soxr"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "hostname": platform.node(),
        "packages": versions,
    }


class RunWriter:
    """Writes one run folder; every write is durable before it returns."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.turns_path = self.dir / "turns.jsonl"
        self._turns = self.turns_path.open("a", encoding="utf-8")
        #: Called with each record once it is on disk (live telemetry: agent.telemetry).
        self.on_turn: Callable[[TurnRecord], None] | None = None

    def write_json(self, name: str, data: Mapping[str, Any]) -> None:
        tmp = self.dir / f".{name}.tmp"
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, self.dir / name)

    def append_turn(self, record: TurnRecord) -> None:
        self._turns.write(json.dumps(record, default=str) + "\n")
        self._turns.flush()
        os.fsync(self._turns.fileno())
        if self.on_turn is not None:
            self.on_turn(record)

    def close(self) -> None:
        self._turns.close()


def read_turns(run_dir: str | Path) -> list[TurnRecord]:
    path = Path(run_dir) / "turns.jsonl"
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def latencies(record: TurnRecord) -> Mapping[str, float | None]:
    """A record's ``latency_ms`` read by a metric name held in a variable (every
    value is a number of ms or None); empty for a record without one."""
    return cast("Mapping[str, float | None]", record.get("latency_ms", {}))


def metric_values(records: Iterable[TurnRecord], metric: str) -> list[float]:
    """The values of one metric (ms) over the turns that measured it."""
    out = []
    for rec in records:
        value = latencies(rec).get(metric)
        if value is not None:
            out.append(float(value))
    return out


def metric_stats(values: Iterable[float]) -> MetricStats:
    """agent.metrics.stats.describe as summary.json holds it (its keys are MetricStats's)."""
    return cast(MetricStats, describe(values))


def summarize(records: Iterable[TurnRecord]) -> Summary:
    records = list(records)
    statuses: dict[str, int] = {}
    for rec in records:
        statuses[rec["status"]] = statuses.get(rec["status"], 0) + 1
    return {
        "turns": len(records),
        "status": statuses,
        "expectations_failed": sum(1 for r in records if not r.get("passed", True)),
        "metrics_ms": {m: metric_stats(metric_values(records, m)) for m in METRICS},
        # Word error rate of the final transcripts against the scenario's text, over
        # the turns that have both: pooled (errors / reference words) and per-turn mean.
        # (A turn has a wer only with a transcript; the check on it is for the type.)
        "wer": corpus_wer(
            (r["user_text"], transcript)
            for r in records
            if r.get("wer") is not None and (transcript := r["transcript"]) is not None
        ),
    }
