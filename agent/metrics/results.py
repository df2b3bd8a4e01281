"""Run folders: per-turn records that survive a crash, the manifest, the summary.

A run folder holds:

- ``manifest.json`` — pipeline and scenario as loaded, versions, host, clock
  offset, and ``state`` (running / complete / interrupted); written when the
  run starts and rewritten when it ends.
- ``turns.jsonl`` — one JSON object per turn, appended and flushed to disk
  (``fsync``) the moment the turn ends, so an interrupted run loses nothing
  already measured.
- ``summary.json`` — per-metric n, mean, p50, p90, p95, p99, min, max.
- ``recording.wav`` — stereo: left the caller, right the agent.

A run folder holds one run: :class:`RunWriter` refuses a folder that is not
empty, since a second run appended to the first would be read as one run of
twice the turns. Everything written passes through
:func:`agent.metrics.redact.redact_value` first, so no API key reaches disk.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, cast

from agent.clock import utc_now
from agent.errors import ConfigError
from agent.metrics.records import Environment, MetricStats, Summary, TurnRecord
from agent.metrics.redact import redact_value
from agent.metrics.stats import describe
from agent.metrics.timeline import HOP_NAMES
from agent.metrics.wer import corpus_wer

__all__ = [
    "METRICS",
    "RunWriter",
    "TurnsFile",
    "check_new_run_dir",
    "check_runs_root",
    "environment",
    "latencies",
    "metric_stats",
    "metric_values",
    "new_run_dir",
    "read_turns",
    "read_turns_file",
    "summarize",
]

log = logging.getLogger("vlt.results")

#: Summary metric → how to read it from a turn record.
METRICS: tuple[str, ...] = (
    "voice_to_voice",
    *HOP_NAMES,
    # Live sessions only (vlt demo): arrival → handed to the output device.
    "playout",
    "unaccounted",
    "llm_tpot",
    "barge_in_stop",
    "barge_in_flush",
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


def _writable_folder(path: Path, option: str) -> None:
    """``path`` is a folder, or can be made one: its nearest existing ancestor is a writable folder."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{option}: {probe} is not a folder", path=path)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{option}: {probe} is not writable", path=path)


def check_runs_root(root: str | Path, *, option: str = "runs folder") -> None:
    """A :class:`ConfigError` (one line) if run folders cannot be made under ``root``."""
    _writable_folder(Path(root), option)


def check_new_run_dir(path: str | Path, *, option: str = "run folder") -> None:
    """A :class:`ConfigError` if ``path`` is not a new or empty folder this process can write.

    A run folder holds one run: appending a second run's turns to the first's
    would make every reader count them as one run.
    """
    path = Path(path)
    if path.is_dir() and any(path.iterdir()):
        raise ConfigError(
            f"{option}: the folder is not empty (it holds an earlier run?); give a new folder",
            path=path,
        )
    _writable_folder(path, option)


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
        check_new_run_dir(self.dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            # "x": a run started at the same moment into the same folder fails here.
            self._turns = (self.dir / "turns.jsonl").open("x", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write the run folder ({exc.strerror})", path=self.dir) from None
        self.turns_path = self.dir / "turns.jsonl"
        #: Called with each record once it is on disk (live telemetry: agent.telemetry).
        self.on_turn: Callable[[TurnRecord], None] | None = None

    def write_json(self, name: str, data: Mapping[str, Any]) -> None:
        tmp = self.dir / f".{name}.tmp"
        tmp.write_text(json.dumps(redact_value(data), indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, self.dir / name)

    def append_turn(self, record: TurnRecord) -> None:
        clean = redact_value(record)  # what leaves the process never holds a key
        self._turns.write(json.dumps(clean, default=str) + "\n")
        self._turns.flush()
        os.fsync(self._turns.fileno())
        if self.on_turn is not None:
            self.on_turn(clean)

    def close(self) -> None:
        self._turns.close()


@dataclass(frozen=True, slots=True)
class TurnsFile:
    """A run folder's turns.jsonl as read: its records, and whether a torn last line was left out."""

    records: list[TurnRecord]
    torn_line: int | None = None
    """1-based line number of an incomplete last line (a crash mid-write) that was skipped."""

    @property
    def warning(self) -> str | None:
        """One line saying what was skipped, for a reader to print; None when nothing was."""
        if self.torn_line is None:
            return None
        return (
            f"turns.jsonl:{self.torn_line}: skipped an incomplete last line (the run was cut off mid-write)"
        )


def read_turns_file(run_dir: str | Path) -> TurnsFile:
    """The turn records of ``run_dir``; a torn *last* line is skipped and reported
    (:attr:`TurnsFile.torn_line`), a bad line anywhere else is a :class:`ConfigError`."""
    path = Path(run_dir) / "turns.jsonl"
    with path.open(encoding="utf-8", errors="replace") as fh:
        lines = fh.read().split("\n")
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    records: list[TurnRecord] = []
    for i, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(cast(TurnRecord, record))
        elif i == len(numbered) - 1:
            return TurnsFile(records, number)
        else:
            raise ConfigError("not a JSON turn record", path=path, line=number)
    return TurnsFile(records)


def read_turns(run_dir: str | Path) -> list[TurnRecord]:
    """The turn records of ``run_dir``, skipping a torn last line with a logged warning."""
    turns = read_turns_file(run_dir)
    if turns.warning is not None:
        log.warning("%s: %s", run_dir, turns.warning)
    return turns.records


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
