"""Token-speed sweeps in virtual time: monotone curves, an exact model, the knee, partial sweeps."""

from __future__ import annotations

import asyncio
import csv
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from agent import clock as clocks
from agent.cli import main as vlt
from agent.config.scenario import load_scenario
from agent.errors import ConfigError
from agent.jobs.latency_model import (
    TurnModel,
    first_phrase_tokens,
    knee_sentence,
    measured_knee,
    model_knee,
    predict,
)
from agent.jobs.sweep import CSV_COLUMNS, grid_points, knees, profile_points, read_sweep, run_sweep
from agent.metrics.timeline import HOP_NAMES
from agent.report.build import build_report, write_sweep_plots
from agent.stages.pipeline import load_pipeline
from tests.conftest import PIPELINES, ROOT

EMULATED = PIPELINES / "emulated.toml"
TPS = (25, 50, 100, 200, 400, 800, 1600)
TTFTS = (50, 200)
REPLY = "We open at nine tomorrow morning, and we close at six in the evening."
SCENARIO = f"""
name: sweep-short
defaults:
  pause_ms: 300
turns:
  - user: "What time do you open tomorrow?"
    reply: "{REPLY}"
"""


def _scenario_file(folder: Path) -> Path:
    path = folder / "short.yaml"
    path.write_text(SCENARIO, encoding="utf-8")
    return path


def _sweep(folder: Path, tps: tuple[float, ...] = TPS, ttfts: tuple[float, ...] = TTFTS) -> Any:
    scenario = load_scenario(_scenario_file(folder))
    pipeline = load_pipeline(EMULATED)

    async def main(clock: clocks.Clock) -> Any:
        return await run_sweep(pipeline, [scenario], grid_points(tps, ttfts), clock, folder / "sweep")

    return clocks.run(main, virtual=True)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("sweep")
    doc = _sweep(folder)
    return folder / "sweep", doc


def _groups(doc: dict[str, Any]) -> dict[float, list[dict[str, Any]]]:
    out: dict[float, list[dict[str, Any]]] = {}
    for row in doc["points"]:
        out.setdefault(row["ttft_ms"], []).append(row)
    return {k: sorted(v, key=lambda r: r["tokens_per_s"]) for k, v in out.items()}


def test_sweep_runs_every_point_and_keeps_run_folders(sweep: tuple[Path, dict[str, Any]]) -> None:
    folder, doc = sweep
    assert doc["status"] == "complete"
    assert doc["clock"] == "virtual"
    assert [r["point"] for r in doc["points"]] == [f"tps={t},ttft={f}" for f in TTFTS for t in TPS]
    for row in doc["points"]:
        assert row["n"] == 1 and row["runs"] == 1
        (run_dir,) = row["run_dirs"]
        assert (folder / run_dir / "turns.jsonl").is_file()
        assert run_dir == f"points/{row['point']}/rep0-sweep-short"
    assert read_sweep(folder)["status"] == "complete"


def test_v2v_is_non_increasing_in_tokens_per_s(sweep: tuple[Path, dict[str, Any]]) -> None:
    _, doc = sweep
    for ttft, rows in _groups(doc).items():
        v2v = [r["v2v_p50"] for r in rows]
        assert all(a >= b for a, b in itertools.pairwise(v2v)), (ttft, v2v)
        assert v2v[0] - v2v[-1] > 100  # 25 → 1600 tok/s must visibly matter
        assert rows[0]["llm_ttft_p50"] == pytest.approx(ttft)


def test_prediction_matches_measurement_within_2_ms(sweep: tuple[Path, dict[str, Any]]) -> None:
    _, doc = sweep
    for row in doc["points"]:
        assert row["pred_n"] == row["n"] == 1
        assert abs(row["pred_v2v_p50"] - row["v2v_p50"]) < 2, row["point"]
        assert abs(row["pred_error_ms"]) < 2
        # In virtual time the hops tile the path exactly: the model's error is ~0.
        assert row["unaccounted_p50"] == 0
        assert abs(row["pred_error_ms"]) < 1e-3


def test_knee_is_where_the_arithmetic_says(sweep: tuple[Path, dict[str, Any]]) -> None:
    _, doc = sweep
    pipeline = load_pipeline(EMULATED)
    tokens = first_phrase_tokens(REPLY, pipeline.chunker)
    groups = _groups(doc)
    found = {k.ttft_ms: k for k in knees(doc)}
    assert set(found) == set(TTFTS)
    for ttft, rows in groups.items():
        row = rows[0]
        # v(T) = a + b/T; doubling T improves by b / (2 (a T + b)), < 5 % beyond T* = 9 b / a.
        a = sum(
            row[f"{h}_p50"]
            for h in (
                "endpointing",
                "asr_finalize",
                "llm_ttft",
                "tts_first_audio",
                "transport",
                "audio_onset",
            )
        )
        b = 1000.0 * (tokens - 1)
        expected = 9 * b / a
        knee = found[ttft]
        assert knee.model_tps == pytest.approx(expected, rel=1e-6)
        # On the grid: the first T whose doubling improves the measured p50 by < 5 %.
        assert knee.measured_tps == min(r["tokens_per_s"] for r in rows if r["tokens_per_s"] > expected)
        assert doc["knees"][list(groups).index(ttft)]["model_tps"] == pytest.approx(expected, rel=1e-6)
        assert re.search(r"beyond ~\d[\d,]* tok/s, .+ dominate", knee_sentence(knee))
    # A longer TTFT makes token speed matter less: the knee moves to slower tokens/s.
    assert found[200].model_tps is not None and found[50].model_tps is not None
    assert found[200].model_tps < found[50].model_tps


def test_csv_and_json_columns_present_and_documented(sweep: tuple[Path, dict[str, Any]]) -> None:
    folder, doc = sweep
    with (folder / "sweep.csv").open(encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
        rows = list(reader)
    assert len(rows) == len(TPS) * len(TTFTS)
    assert float(rows[0]["v2v_p50"]) == pytest.approx(doc["points"][0]["v2v_p50"])
    on_disk = json.loads((folder / "sweep.json").read_text())
    for row in on_disk["points"]:
        assert set(CSV_COLUMNS) <= set(row)
    for key in (
        "status",
        "pipeline",
        "scenarios",
        "clock",
        "repeat",
        "points_planned",
        "knees",
        "model_turns",
    ):
        assert key in on_disk
    docs = (ROOT / "docs" / "sweeps.md").read_text(encoding="utf-8")
    hops = (*HOP_NAMES, "unaccounted")
    for column in CSV_COLUMNS:
        # Per-hop columns are documented by pattern (`<hop>_mean` …), the rest by name.
        hop, _, stat = column.rpartition("_")
        documented = f"`<hop>_{stat}`" if hop in hops else f"`{column}`"
        assert documented in docs, column
    for hop in hops:
        assert f"`{hop}`" in docs, hop


def test_interrupted_sweep_keeps_finished_points_and_reports(tmp_path: Path) -> None:
    scenario = load_scenario(_scenario_file(tmp_path))
    pipeline = load_pipeline(EMULATED)
    out = tmp_path / "sweep"
    finished: list[str] = []

    async def main(clock: clocks.Clock) -> None:
        def on_point(row: dict[str, Any]) -> None:
            finished.append(row["point"])
            if len(finished) == 2:
                task.cancel()  # as Ctrl-C does to the main task

        task = asyncio.create_task(
            run_sweep(pipeline, [scenario], grid_points(TPS, (200,)), clock, out, on_point=on_point)
        )
        with pytest.raises(asyncio.CancelledError):
            await task

    clocks.run(main, virtual=True)
    doc = read_sweep(out)
    assert doc["status"] == "partial"
    assert [r["point"] for r in doc["points"]] == finished == ["tps=25,ttft=200", "tps=50,ttft=200"]
    assert len(doc["points_planned"]) == len(TPS)
    assert len((out / "sweep.csv").read_text().splitlines()) == 3
    html = build_report(out, "html")
    assert "Partial sweep" in html and "tps=50,ttft=200" in html
    assert "Partial" in build_report(out, "md")
    assert json.loads(build_report(out, "json"))["status"] == "partial"
    assert all(p.stat().st_size > 1000 for p in write_sweep_plots(out))


def test_a_sweep_that_died_reads_as_partial(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"kind": "vlt-sweep", "status": "running", "points": []}))
    assert read_sweep(out)["status"] == "partial"
    (out / "sweep.json").write_text(json.dumps({"kind": "something else"}))
    with pytest.raises(ConfigError, match="not a vlt sweep"):
        read_sweep(out)


# -- the model, pure --------------------------------------------------------------------


def test_model_knee_closed_form_and_measured_grid() -> None:
    turn = TurnModel(fixed_ms=700.0, tokens=11, components_ms={"endpointing": 300.0, "llm_ttft": 400.0})
    assert predict([turn], 100) == pytest.approx(800.0)
    assert model_knee([turn]) == pytest.approx(9 * 10_000 / 700, rel=1e-6)
    assert model_knee([TurnModel(700.0, 1, {})]) is None  # no token term: speed never matters
    grid = [(t, 700 + 10_000 / t) for t in (25, 50, 100, 200, 400)]
    assert measured_knee(grid) == 200  # 9 b / a = 128.6: first grid speed beyond it
    assert measured_knee(grid[:2]) is None  # never flattens within the grid
    # "Sure" "," " I" " can" " help" " with" " that" ".": released at the full stop.
    assert first_phrase_tokens("Sure, I can help with that.") == 8


def test_profile_points_set_the_profile_numbers() -> None:
    (point,) = profile_points(["groq-llama-3.3-70b"])
    pipeline = load_pipeline(EMULATED).with_overrides(dict(point.overrides))
    config = pipeline.stages["llm"].config
    assert config.profile == "groq-llama-3.3-70b"
    assert config.tokens_per_s == point.tokens_per_s and config.ttft_ms == point.ttft_ms


# -- the command line -----------------------------------------------------------------


def test_cli_sweep_grid_and_profiles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = _scenario_file(tmp_path)
    out = tmp_path / "grid"
    code = vlt(["sweep", "--scenario", str(scenario), "--pipeline", str(EMULATED), "--tps", "50,100,200",
                "--ttft-ms", "200", "--repeat", "2", "--out", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr()
    assert "beyond ~" in printed.out and "ETA" in printed.err
    doc = read_sweep(out)
    assert doc["status"] == "complete" and doc["repeat"] == 2
    assert [r["runs"] for r in doc["points"]] == [2, 2, 2]
    for name in ("v2v_vs_tps", "breakdown"):
        assert (out / f"{name}.png").stat().st_size > 10_000
        assert (out / f"{name}.svg").stat().st_size > 10_000

    out = tmp_path / "profiles"
    code = vlt(["sweep", "--scenario", str(scenario), "--pipeline", str(EMULATED),
                "--profiles", "groq-llama-3.3-70b,cerebras-llama-3.1-70b", "--out", str(out)])  # fmt: skip
    assert code == 0
    doc = read_sweep(out)
    assert [r["profile"] for r in doc["points"]] == ["groq-llama-3.3-70b", "cerebras-llama-3.1-70b"]
    assert all(r["n"] == 1 and r["pred_v2v_p50"] is not None for r in doc["points"])


def test_cli_sweep_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = str(_scenario_file(tmp_path))
    base = ["sweep", "--scenario", scenario, "--pipeline", str(EMULATED), "--out", str(tmp_path / "x")]
    assert vlt([*base, "--profiles", "all", "--tps", "100"]) == 2
    assert vlt([*base, "--tps", "100,fast"]) == 2
    assert vlt([*base, "--profiles", "no-such-accelerator"]) == 2
    virtual_real = ["sweep", "--scenario", scenario, "--pipeline", str(PIPELINES / "default.toml")]
    assert vlt([*virtual_real, "--clock", "virtual", "--out", str(tmp_path / "y")]) == 2
    assert not (tmp_path / "y").exists()  # refused before any folder is made
    err = capsys.readouterr().err
    assert "--profiles replaces the grid" in err and "--tps" in err and "no-such-accelerator" in err
    assert "virtual time needs an all-emulated pipeline" in err
