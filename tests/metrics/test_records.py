"""A real run folder's JSON has exactly the keys (and value types) agent.metrics.records declares.

The replay runs are virtual-time replays of shipped scenarios against the
emulated pipeline; the live run is a virtual-time ``vlt demo`` session with
clock-driven audio devices. Either client adding, dropping or renaming a key
fails here, as does a type that no longer says what is written.
"""

# No ``from __future__ import annotations``: the TypedDicts below would lose their
# Required/NotRequired markers on Python 3.11 (see agent/metrics/records.py).

import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, NotRequired, Required, TypedDict

import pytest

from agent import clock as clocks
from agent.client.live import LiveOptions
from agent.config.scenario import load_scenario
from agent.jobs.runner import run_scenario
from agent.metrics.records import (
    BargeIn,
    LatencyMs,
    Manifest,
    ManifestClock,
    Summary,
    TurnRecord,
)
from agent.metrics.results import METRICS
from agent.metrics.timeline import HOP_NAMES, PLAYOUT
from agent.stages.pipeline import load_pipeline
from tests.client.test_live_session import _converse
from tests.conftest import PIPELINES, SCENARIOS

# -- a checker of JSON values against type hints ------------------------------------


def problems(value: Any, hint: Any, where: str = "$") -> list[str]:
    """Where ``value`` (parsed JSON) departs from ``hint``: missing or undeclared keys, wrong types."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return []
    if typing.is_typeddict(hint):
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {value!r}"]
        hints = typing.get_type_hints(hint)
        out = [f"{where}.{k}: missing" for k in sorted(hint.__required_keys__ - value.keys())]
        out += [f"{where}.{k}: not declared" for k in sorted(value.keys() - hints.keys())]
        for key in value.keys() & hints.keys():
            out += problems(value[key], hints[key], f"{where}.{key}")
        return out
    if origin in (typing.Union, types.UnionType):
        found = [problems(value, arg, where) for arg in args]
        return [] if any(not p for p in found) else min(found, key=len)
    if origin is Literal:
        return [] if value in args else [f"{where}: {value!r} is not one of {args}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {value!r}"]
        return [p for i, item in enumerate(value) for p in problems(item, args[0], f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {value!r}"]
        return [p for k, v in value.items() for p in problems(v, args[1], f"{where}.{k}")]
    if hint is type(None):
        return [] if value is None else [f"{where}: expected null, got {value!r}"]
    # A JSON number: an int is a float too (as for a type checker), a bool is neither.
    kinds = (int, float) if hint is float else (hint,)
    if (isinstance(value, bool) and hint is not bool) or not isinstance(value, kinds):
        return [f"{where}: expected {hint.__name__}, got {value!r}"]
    return []


def declared(td: Any) -> set[str]:
    return set(td.__required_keys__ | td.__optional_keys__)


class _Inner(TypedDict):
    n: int
    note: NotRequired[str | None]


class _Outer(TypedDict, total=False):
    id: Required[int]
    inner: list[_Inner]
    kind: Literal["a", "b"]
    by_name: dict[str, float]


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ({"id": 1, "inner": [{"n": 2, "note": None}], "kind": "a", "by_name": {"x": 1.5, "y": 2}}, []),
        ({"inner": []}, ["$.id: missing"]),
        ({"id": 1, "extra": 0}, ["$.extra: not declared"]),
        ({"id": 1, "inner": [{"n": 1}, {"n": 2, "more": 1}]}, ["$.inner[1].more: not declared"]),
        ({"id": 1, "inner": [{}]}, ["$.inner[0].n: missing"]),
        ({"id": True}, ["$.id: expected int, got True"]),
        ({"id": 1.5}, ["$.id: expected int, got 1.5"]),
        ({"id": 1, "kind": "c"}, ["$.kind: 'c' is not one of ('a', 'b')"]),
        ({"id": 1, "by_name": {"x": "fast"}}, ["$.by_name.x: expected float, got 'fast'"]),
        ({"id": 1, "inner": [{"n": 1, "note": 3}]}, ["$.inner[0].note: expected str, got 3"]),
    ],
)
def test_the_checker_finds_every_kind_of_drift(value: Any, found: list[str]) -> None:
    assert problems(value, _Outer) == found


# -- the declarations against the code that names the metrics -----------------------


def test_latency_ms_declares_every_hop_and_summary_metric() -> None:
    keys = declared(LatencyMs)
    assert set(HOP_NAMES) | {PLAYOUT.name} <= keys
    assert set(METRICS) <= keys


# -- real run folders ----------------------------------------------------------------

#: Keys only the live client writes.
LIVE_ONLY = {
    "record": {"playout", "heard"},
    "latency_ms": {"playout", "voice_to_voice_arrival"},
    "barge_in": set(),
    "manifest": {"options", "devices", "playout", "closed", "analysis"},
    "summary": set(),
}
#: Keys only the replay client writes (and ``pipeline``, which only run_scenario's
#: in-process agent adds: the live test session passes no manifest_extra).
REPLAY_ONLY = {
    "record": {"scripted_reply", "barge_in_ms", "heard", "caller"},
    "latency_ms": set(),
    "barge_in": {"interrupted_status"},
    "manifest": {"scenario", "completed", "pipeline", "analysis"},
    "summary": {"caller"},
}


def _read(run_dir: Path) -> tuple[list[Any], Any, Any]:
    lines = (run_dir / "turns.jsonl").read_text(encoding="utf-8").splitlines()
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    return [json.loads(line) for line in lines], summary, manifest


@pytest.fixture(scope="module")
def replay_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Virtual-time replays: plain turns, and a barge-in (its record has a barge_in object)."""
    pipeline = load_pipeline(PIPELINES / "emulated.toml")
    out = []
    for name in ("quick-3-turn.yaml", "barge-in.yaml"):
        scenario = load_scenario(SCENARIOS / name)
        run_dir = tmp_path_factory.mktemp("records") / "run"

        async def main(clock: clocks.Clock, scenario: Any = scenario, run_dir: Path = run_dir) -> Any:
            return await run_scenario(scenario, clock, pipeline=pipeline, run_dir=run_dir)

        clocks.run(main, virtual=True)
        out.append(run_dir)
    return out


#: Keys written only with --mqtt (``telemetry``) or only by ``vlt record`` (``source``,
#: ``sources``); tests/telemetry/test_telemetry_cli.py checks those folders.
TELEMETRY_ONLY = {"record": {"source"}, "manifest": {"telemetry", "sources"}}
#: Keys only a run against a black-box target writes (docs/black-box.md).
BLACK_BOX_ONLY = {"manifest": {"target"}}


def _all_but(td: Any, kind: str, only_other: dict[str, set[str]]) -> set[str]:
    return declared(td) - only_other[kind] - TELEMETRY_ONLY.get(kind, set()) - BLACK_BOX_ONLY.get(kind, set())


def test_replay_turn_records_are_turn_records(replay_runs: list[Path]) -> None:
    barge_ins = 0
    for run_dir in replay_runs:
        records, _, _ = _read(run_dir)
        assert records
        for record in records:
            assert problems(record, TurnRecord) == []
            assert set(record) == _all_but(TurnRecord, "record", LIVE_ONLY)
            assert set(record["latency_ms"]) == _all_but(LatencyMs, "latency_ms", LIVE_ONLY)
            if record["barge_in"] is not None:
                barge_ins += 1
                assert set(record["barge_in"]) == declared(BargeIn)
    assert barge_ins, "the barge-in scenario should have a turn that barged in"


def test_replay_summary_is_a_summary(replay_runs: list[Path]) -> None:
    for run_dir in replay_runs:
        _, summary, _ = _read(run_dir)
        assert problems(summary, Summary) == []
        assert set(summary) == declared(Summary) - {"assertions"}  # only with an assert block
        assert list(summary["metrics_ms"]) == list(METRICS)


def test_replay_manifest_is_a_manifest(replay_runs: list[Path]) -> None:
    for run_dir in replay_runs:
        _, _, manifest = _read(run_dir)
        assert problems(manifest, Manifest) == []
        assert set(manifest) == _all_but(Manifest, "manifest", LIVE_ONLY)
        assert set(manifest["clock"]) == declared(ManifestClock)
        assert manifest["kind"] == "replay"


def test_live_run_folder_matches_the_types(tmp_path: Path) -> None:
    texts = ["Tell me everything about your menu please.", "Stop, stop."]
    options = LiveOptions(turns=2, barge_in=True, vad="energy")
    result, _ = _converse(tmp_path, texts, options, barge_after_ms=300)
    records, summary, manifest = _read(result.run_dir)
    assert len(records) == 2
    for record in records:
        assert problems(record, TurnRecord) == []
        assert set(record) == _all_but(TurnRecord, "record", REPLAY_ONLY)
        assert set(record["latency_ms"]) == _all_but(LatencyMs, "latency_ms", REPLAY_ONLY)
    barge_in = records[1]["barge_in"]
    assert barge_in is not None and set(barge_in) == _all_but(BargeIn, "barge_in", REPLAY_ONLY)
    assert problems(summary, Summary) == []
    assert set(summary) == _all_but(Summary, "summary", REPLAY_ONLY) - {"assertions"}
    assert list(summary["metrics_ms"]) == [*METRICS, "voice_to_voice_arrival"]
    assert problems(manifest, Manifest) == []
    assert set(manifest) == _all_but(Manifest, "manifest", REPLAY_ONLY)
    assert set(manifest["clock"]) == declared(ManifestClock) - {"offset_end"}
    assert manifest["kind"] == "demo"


def test_black_box_run_folder_matches_the_types(tmp_path: Path) -> None:
    """A replay through the plain PCM target: the replay's shapes, plus the manifest's
    ``target``, minus the clock offsets (a black box has no clock to ask)."""
    from agent.client.replay import replay
    from agent.jobs.pcm_facade import PcmFacade
    from agent.server.app import AgentServer
    from tests.conftest import live_test_pipeline

    (tmp_path / "energy.toml").write_text(live_test_pipeline())
    pipeline = load_pipeline(tmp_path / "energy.toml")
    scenario = load_scenario(SCENARIOS / "barge-in.yaml")

    async def main(clock: clocks.Clock) -> Any:
        async with AgentServer(pipeline, clock) as server, PcmFacade(server.url, clock) as facade:
            return await replay(scenario, facade.pcm_url(), clock, tmp_path / "run")

    clocks.run(main, virtual=True)
    records, summary, manifest = _read(tmp_path / "run")
    assert len(records) == len(scenario.turns)
    for record in records:
        assert problems(record, TurnRecord) == []
        assert set(record) == _all_but(TurnRecord, "record", LIVE_ONLY)
        assert set(record["latency_ms"]) == _all_but(LatencyMs, "latency_ms", LIVE_ONLY)
    assert problems(summary, Summary) == []
    assert problems(manifest, Manifest) == []
    assert set(manifest) == _all_but(Manifest, "manifest", LIVE_ONLY) - {"pipeline"} | {"target"}
    assert set(manifest["clock"]) == declared(ManifestClock) - {"offset_start", "offset_end"}


def test_analyze_run_folder_matches_the_types(replay_runs: list[Path], tmp_path: Path) -> None:
    """``vlt analyze`` of a replay's recording: a replay's record shapes less what only a
    protocol tells (scripted reply, barge-in status) and what only the replay's own send
    loop knows (``caller`` pacing), plus ``heard``; its own manifest."""
    from agent.jobs.analyze import analyze_recording
    from agent.metrics.records import AnalysisSettings, HeardFigures

    for run_dir in replay_runs:
        result = analyze_recording([run_dir / "recording.wav"], tmp_path / run_dir.parent.name)
        records, summary, manifest = _read(result.run_dir)
        for record in records:
            assert problems(record, TurnRecord) == []
            assert set(record) == _all_but(TurnRecord, "record", LIVE_ONLY) - {
                "scripted_reply",
                "barge_in_ms",
                "caller",
            } | {"heard"}
            assert set(record["heard"]) == declared(HeardFigures)
            if record["barge_in"] is not None:
                assert set(record["barge_in"]) == declared(BargeIn) - {"interrupted_status"}
        assert problems(summary, Summary) == []
        assert list(summary["metrics_ms"]) == list(METRICS)
        assert problems(manifest, Manifest) == []
        assert set(manifest["analysis"]) == declared(AnalysisSettings)
        assert manifest["kind"] == "analyze"
