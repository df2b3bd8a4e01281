"""Latency baselines: per-metric samples with the identity of what was measured.

A baseline is a saved *sample set*: every value of every metric (not just
percentiles, so a later comparison can run a statistical test), plus what the
values are a measurement of — scenario, pipeline, clock mode — and the
environment they were taken in. The candidate of a comparison is the same kind
of object, built from fresh run folders; ``vlt baseline save`` writes one to a
file. The file format is documented in ``docs/regression.md``.

Identity rules (see :func:`check_compatible`):

- the clock mode must match: a virtual-time run and a real-time run measure
  different things;
- the scenario (name and content hash) and the pipeline name must match,
  unless the caller allows a mismatch;
- different pipeline *settings* only warn, listing the settings that changed,
  because a changed setting (a chunker tweak, a slower TTS) is exactly what a
  regression gate exists to judge.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, NoReturn

from agent.clock import utc_now
from agent.errors import ConfigError
from agent.metrics.records import Manifest, TurnRecord
from agent.metrics.results import METRICS, metric_values, read_turns

__all__ = [
    "ANSWERED_STATUSES",
    "FORMAT",
    "FORMAT_VERSION",
    "Baseline",
    "BaselineError",
    "check_compatible",
    "content_hash",
    "from_records",
    "from_run",
    "from_runs",
    "load_baseline",
    "pipeline_hash",
    "pool",
    "save_baseline",
    "scenario_hash",
    "settings_diff",
    "to_json",
]

FORMAT = "vlt-baseline"
FORMAT_VERSION = 1
#: Turn statuses that count as answered (a barge-in cuts a reply short on purpose).
ANSWERED_STATUSES = frozenset({"ok", "interrupted"})
#: Samples are stored rounded to a microsecond: finer digits are noise in a diff.
_DECIMALS = 3
_CLOCKS = ("real", "virtual")


class BaselineError(ConfigError):
    """A baseline or run folder is malformed, or does not match the candidate."""


@dataclass(frozen=True, slots=True)
class Baseline:
    """Every sample of every metric of one or more runs of one scenario x pipeline."""

    scenario_name: str
    scenario_hash: str
    pipeline_name: str
    pipeline_hash: str | None
    """``None`` for a remote agent (``--url``), whose settings the client cannot see."""
    clock: str
    """``"virtual"`` or ``"real"``."""
    samples: dict[str, tuple[float, ...]]
    """Metric → values in ms (rounded to µs), run by run, turn by turn."""
    runs: int = 1
    turns: int = 0
    unanswered: int = 0
    """Turns whose status was not ok/interrupted (failed, no response)."""
    pipeline: dict[str, Any] | None = None
    """Pipeline settings as loaded (without path and description), for diffs."""
    environment: dict[str, Any] = field(default_factory=dict)
    created_utc: str = ""

    @property
    def virtual(self) -> bool:
        return self.clock == "virtual"

    def values(self, metric: str) -> tuple[float, ...]:
        return self.samples.get(metric, ())


# -- identity -----------------------------------------------------------------


def content_hash(data: Any) -> str:
    """A short, stable hash of JSON-able data (canonical JSON, SHA-256)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def scenario_hash(scenario: Mapping[str, Any]) -> str:
    """Hash of a scenario as loaded (``Scenario.as_dict()``), independent of where it lives.

    The file path and each turn's line number are dropped (moving the file or
    adding a comment changes nothing a caller would hear); a WAV turn keeps only
    its file name.
    """
    data = {k: v for k, v in scenario.items() if k != "path"}
    turns = []
    for turn in scenario.get("turns", []):
        turn = {k: v for k, v in turn.items() if k != "line"}
        if turn.get("wav"):
            turn["wav"] = PurePath(str(turn["wav"])).name
        turns.append(turn)
    data["turns"] = turns
    return content_hash(data)


def _pipeline_settings(pipeline: Mapping[str, Any]) -> dict[str, Any]:
    # The path and the prose description do not change what the agent does.
    return {k: v for k, v in pipeline.items() if k not in ("path", "description")}


def pipeline_hash(pipeline: Mapping[str, Any]) -> str:
    """Hash of a pipeline's settings as loaded (``Pipeline.as_dict()``)."""
    return content_hash(_pipeline_settings(pipeline))


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def settings_diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """``["tts.first_audio_ms 90 → 130", ...]`` for the settings that differ."""
    a, b = _flatten(before), _flatten(after)

    def show(settings: dict[str, Any], key: str) -> str:
        return json.dumps(settings[key]) if key in settings else "(unset)"

    return [
        f"{key} {show(a, key)} → {show(b, key)}"
        for key in sorted(set(a) | set(b))
        if key not in a or key not in b or a[key] != b[key]
    ]


def check_compatible(
    baseline: Baseline, candidate: Baseline, *, path: str | Path | None = None, allow_mismatch: bool = False
) -> list[str]:
    """Raise :class:`BaselineError` if the two measure different things; return warnings."""
    if baseline.clock != candidate.clock:
        raise BaselineError(
            f"clock mode differs: baseline is {baseline.clock} time, candidate is {candidate.clock} time "
            f"(run the candidate with --clock {baseline.clock}, or save a baseline from a "
            f"{candidate.clock}-time run)",
            path=path,
        )
    problems = []
    if baseline.scenario_name != candidate.scenario_name:
        problems.append(
            f"scenario differs: baseline {baseline.scenario_name!r}, candidate {candidate.scenario_name!r}"
        )
    elif baseline.scenario_hash != candidate.scenario_hash:
        problems.append(
            f"scenario {baseline.scenario_name!r} content differs: baseline "
            f"{baseline.scenario_hash}, candidate {candidate.scenario_hash}"
        )
    if baseline.pipeline_name != candidate.pipeline_name:
        problems.append(
            f"pipeline differs: baseline {baseline.pipeline_name!r}, candidate {candidate.pipeline_name!r}"
        )
    if problems and not allow_mismatch:
        raise BaselineError("; ".join(problems) + " (--allow-mismatch compares anyway)", path=path)
    warnings = [f"{p} (compared anyway: --allow-mismatch)" for p in problems]
    if (
        baseline.pipeline_name == candidate.pipeline_name
        and baseline.pipeline_hash != candidate.pipeline_hash
    ):
        if baseline.pipeline is not None and candidate.pipeline is not None:
            changes = settings_diff(baseline.pipeline, candidate.pipeline)
            warnings.append("pipeline settings differ from the baseline: " + "; ".join(changes))
        else:
            warnings.append("pipeline settings cannot be compared (a remote agent's are unknown)")
    return warnings


# -- building from run folders ------------------------------------------------------


def _round(value: float) -> float:
    return round(value, _DECIMALS)


def from_records(
    records: Iterable[TurnRecord], manifest: Manifest, *, where: str | Path | None = None
) -> Baseline:
    """A sample set from one run's turn records and manifest."""
    records = list(records)

    def need(value: Any, what: str) -> Any:
        if value is None:
            raise BaselineError(f"manifest.json has no {what}; not a vlt run folder?", path=where)
        return value

    scenario = need(manifest.get("scenario"), "scenario")
    clock = need(manifest.get("clock"), "clock")
    pipeline = manifest.get("pipeline")
    if isinstance(pipeline, Mapping):
        pipeline_name = str(pipeline.get("name", "pipeline"))
        settings: dict[str, Any] | None = _pipeline_settings(pipeline)
        p_hash: str | None = pipeline_hash(pipeline)
    else:
        # A remote agent: only the name it announced is known.
        agent = manifest.get("agent") or {}
        pipeline_name = str((agent.get("pipeline") or {}).get("name") or manifest.get("url") or "remote")
        settings, p_hash = None, None
    return Baseline(
        scenario_name=str(scenario.get("name", "")),
        scenario_hash=scenario_hash(scenario),
        pipeline_name=pipeline_name,
        pipeline_hash=p_hash,
        clock="virtual" if clock.get("virtual") else "real",
        samples={m: tuple(_round(v) for v in metric_values(records, m)) for m in METRICS},
        runs=1,
        turns=len(records),
        unanswered=sum(1 for r in records if r.get("status") not in ANSWERED_STATUSES),
        pipeline=settings,
        environment=dict(manifest.get("environment") or {}),
        created_utc=utc_now().isoformat(timespec="seconds"),
    )


def from_run(run_dir: str | Path) -> Baseline:
    """A sample set from a run folder (``turns.jsonl`` + ``manifest.json``)."""
    run_dir = Path(run_dir)
    manifest_path = run_dir / "manifest.json"
    if not run_dir.is_dir():
        raise BaselineError("run folder not found", path=run_dir)
    try:
        manifest: Manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        records = read_turns(run_dir)
    except FileNotFoundError as exc:
        raise BaselineError(f"not a run folder (no {Path(str(exc.filename)).name})", path=run_dir) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BaselineError(f"unreadable run folder ({exc})", path=run_dir) from None
    if not isinstance(manifest, dict):
        raise BaselineError("manifest.json is not a JSON object", path=run_dir)
    if not manifest.get("completed", False):
        raise BaselineError("the run did not complete (interrupted?); use a complete run", path=run_dir)
    return from_records(records, manifest, where=run_dir)


def pool(sets: Sequence[Baseline], *, strict: bool = True) -> Baseline:
    """Merge sample sets of repeated runs into one.

    ``strict`` requires identical identity (scenario, pipeline settings,
    clock); without it only the clock must match (e.g. pooling runs that
    differ only in a jitter seed).
    """
    if not sets:
        raise ValueError("nothing to pool")
    first = sets[0]
    for other in sets[1:]:
        if other.clock != first.clock:
            raise BaselineError("cannot pool virtual-time and real-time runs")
        same = (other.scenario_name, other.scenario_hash, other.pipeline_name, other.pipeline_hash) == (
            first.scenario_name,
            first.scenario_hash,
            first.pipeline_name,
            first.pipeline_hash,
        )
        if strict and not same:
            this, that = (
                f"{first.scenario_name}/{first.pipeline_name}",
                f"{other.scenario_name}/{other.pipeline_name}",
            )
            raise BaselineError(
                f"cannot pool runs of different scenarios or pipeline settings ({this} vs {that})"
            )
    metrics = list(dict.fromkeys(m for s in sets for m in s.samples))
    return dataclasses.replace(
        first,
        samples={m: tuple(v for s in sets for v in s.values(m)) for m in metrics},
        runs=sum(s.runs for s in sets),
        turns=sum(s.turns for s in sets),
        unanswered=sum(s.unanswered for s in sets),
    )


def from_runs(run_dirs: Sequence[str | Path]) -> Baseline:
    """One sample set from one or more run folders of the same scenario x pipeline."""
    return pool([from_run(d) for d in run_dirs])


# -- the file ------------------------------------------------------------------------


def to_json(baseline: Baseline) -> str:
    """The baseline file's text: sorted keys, one metric per block, one sample per line."""
    data = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "created_utc": baseline.created_utc,
        "clock": baseline.clock,
        "identity": {
            "scenario": {"name": baseline.scenario_name, "hash": baseline.scenario_hash},
            "pipeline": {"name": baseline.pipeline_name, "hash": baseline.pipeline_hash},
        },
        "runs": baseline.runs,
        "turns": {"total": baseline.turns, "unanswered": baseline.unanswered},
        "metrics": {
            metric: {"n": len(values), "samples_ms": [_round(v) for v in values]}
            for metric, values in baseline.samples.items()
        },
        "pipeline": baseline.pipeline,
        "environment": baseline.environment,
    }
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"


def save_baseline(baseline: Baseline, path: str | Path) -> Path:
    """Write the baseline file atomically (a half-written baseline would fail every build)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(to_json(baseline), encoding="utf-8")
    os.replace(tmp, path)
    return path


class _Reader:
    """Typed field access that names the file and field on every failure."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, field_name: str | None, message: str) -> NoReturn:
        raise BaselineError(message, path=self.path, field=field_name)

    def get(self, data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
        name = f"{where}.{key}" if where else key
        if key not in data:
            self.fail(name, "missing field")
        value = data[key]
        bad_bool = isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
        if not isinstance(value, kind) or bad_bool:
            self.fail(name, f"expected {_kind_name(kind)}, got {json.dumps(value)[:40]}")
        return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", dict: "an object", list: "a list"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, "null" if k is type(None) else k.__name__) for k in kinds)


def load_baseline(path: str | Path) -> Baseline:
    """Read and validate a baseline file; any problem is one :class:`BaselineError` line."""
    path = Path(path)
    r = _Reader(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BaselineError("baseline file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineError(f"cannot read baseline file ({exc})", path=path) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BaselineError(f"not valid JSON: {exc.msg}", path=path, line=exc.lineno) from None
    if not isinstance(data, dict):
        r.fail(None, "expected a JSON object")
    if data.get("format") != FORMAT:
        r.fail("format", f'not a vlt baseline (expected "format": "{FORMAT}")')
    version = r.get(data, "version", int)
    if version != FORMAT_VERSION:
        r.fail(
            "version", f"format version {version} is not supported (this vlt reads version {FORMAT_VERSION})"
        )
    clock = r.get(data, "clock", str)
    if clock not in _CLOCKS:
        r.fail("clock", f"expected one of {', '.join(_CLOCKS)}, got {clock!r}")
    identity = r.get(data, "identity", dict)
    scenario = r.get(identity, "scenario", dict, "identity")
    pipeline = r.get(identity, "pipeline", dict, "identity")
    turns = r.get(data, "turns", dict)
    metrics = r.get(data, "metrics", dict)
    samples: dict[str, tuple[float, ...]] = {}
    for metric, block in metrics.items():
        where = f"metrics.{metric}"
        if metric not in METRICS:
            r.fail(where, f"unknown metric; valid: {', '.join(METRICS)}")
        if not isinstance(block, dict):
            r.fail(where, "expected an object")
        values = r.get(block, "samples_ms", list, where)
        for i, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                r.fail(f"{where}.samples_ms[{i}]", f"expected a number, got {json.dumps(value)[:40]}")
        if "n" in block and block["n"] != len(values):
            r.fail(f"{where}.n", f"says {block['n']} but samples_ms has {len(values)} values")
        samples[metric] = tuple(float(v) for v in values)
    pipeline_settings = data.get("pipeline")
    if pipeline_settings is not None and not isinstance(pipeline_settings, dict):
        r.fail("pipeline", "expected an object or null")
    environment = data.get("environment", {})
    if not isinstance(environment, dict):
        r.fail("environment", "expected an object")
    runs = r.get(data, "runs", int)
    total = r.get(turns, "total", int, "turns")
    unanswered = r.get(turns, "unanswered", int, "turns")
    if runs < 1 or total < 0 or not 0 <= unanswered <= total:
        r.fail("turns", f"inconsistent counts (runs {runs}, turns {total}, unanswered {unanswered})")
    return Baseline(
        scenario_name=r.get(scenario, "name", str, "identity.scenario"),
        scenario_hash=r.get(scenario, "hash", str, "identity.scenario"),
        pipeline_name=r.get(pipeline, "name", str, "identity.pipeline"),
        pipeline_hash=r.get(pipeline, "hash", (str, type(None)), "identity.pipeline"),
        clock=clock,
        samples=samples,
        runs=runs,
        turns=total,
        unanswered=unanswered,
        pipeline=pipeline_settings,
        environment=environment,
        created_utc=str(data.get("created_utc", "")),
    )
