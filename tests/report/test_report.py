"""Reports: plots on disk, self-contained HTML (rendered in headless Chromium), Markdown, JSON."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib import image

from agent import clock as clocks
from agent.cli import main as vlt
from agent.config.scenario import load_scenario
from agent.jobs.runner import run_scenario
from agent.jobs.sweep import grid_points, run_sweep
from agent.report.build import build_report, write_sweep_plots
from agent.stages.pipeline import load_pipeline
from tests.conftest import PIPELINES, SCENARIOS

EMULATED = PIPELINES / "emulated.toml"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small virtual-time sweep and a 3-turn run folder."""
    root = tmp_path_factory.mktemp("report")
    pipeline = load_pipeline(EMULATED)
    scenario = load_scenario(SCENARIOS / "quick-3-turn.yaml")

    async def main(clock: clocks.Clock) -> Any:
        await run_sweep(pipeline, [scenario], grid_points((50, 200, 800), (50, 200)), clock, root / "sweep")
        await run_scenario(scenario, clock, pipeline=pipeline, run_dir=root / "run")

    clocks.run(main, virtual=True)
    return root / "sweep", root / "run"


def test_plots_are_written_as_valid_png_and_svg(folders: tuple[Path, Path]) -> None:
    sweep, _ = folders
    paths = write_sweep_plots(sweep)
    assert sorted(p.name for p in paths) == [
        "breakdown.png",
        "breakdown.svg",
        "v2v_vs_tps.png",
        "v2v_vs_tps.svg",
    ]
    for path in paths:
        data = path.read_bytes()
        assert len(data) > 10_000, path
        if path.suffix == ".png":
            assert data.startswith(b"\x89PNG\r\n\x1a\n")
            pixels = image.imread(str(path))
            assert pixels.std() > 0.05  # not a blank canvas
        else:
            assert data.lstrip().startswith(b"<?xml") and b"<svg" in data
            assert data.rstrip().endswith(b"</svg>")


def _self_contained(html: str) -> None:
    assert "<script" not in html.lower()
    # The only absolute URLs allowed are XML namespaces inside the inline SVG.
    for url in re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", html):
        assert not re.match(r"[a-z]+://", url) or url.startswith("http://www.w3.org/"), url
    assert "url(http" not in html


def test_sweep_report_formats(folders: tuple[Path, Path]) -> None:
    sweep, _ = folders
    html = build_report(sweep, "html")
    _self_contained(html)
    assert html.count("<svg") >= 2
    assert '<table id="summary">' in html and "tps=800,ttft=200" in html
    assert "beyond ~" in html
    md = build_report(sweep, "md")
    assert "| point | tok/s |" in md and "beyond ~" in md and "(complete)" in md
    doc = json.loads(build_report(sweep, "json"))
    assert doc["kind"] == "sweep" and len(doc["points"]) == 6
    assert all("sentence" in k for k in doc["knees"]) and len(doc["knees"]) == 2


def test_run_report_has_table_waterfalls_and_recording_link(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    _, run = folders
    html = build_report(run, "html")
    _self_contained(html)
    assert html.count("<svg") == 3  # one waterfall per turn
    assert 'href="recording.wav"' in html
    assert '<table id="summary">' in html and '<table id="turns">' in html
    # Written elsewhere, the link to the recording is relative to the report's folder.
    elsewhere = build_report(run, "html", tmp_path / "out" / "r.html")
    assert 'href="../../' in elsewhere and "recording.wav" in elsewhere
    assert "voice_to_voice" in build_report(run, "md")
    doc = json.loads(build_report(run, "json"))
    assert doc["kind"] == "run" and len(doc["turns"]) == 3


def test_cli_report(folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep, run = folders
    assert vlt(["report", str(run)]) == 0
    assert (run / "report.html").stat().st_size > 10_000
    assert vlt(["report", str(sweep), "--format", "md"]) == 0
    assert "| point |" in capsys.readouterr().out
    out = tmp_path / "report.json"
    assert vlt(["report", str(sweep), "--format", "json", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["kind"] == "sweep"
    assert vlt(["report", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=90, check=True)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (CI installs it)")
@pytest.mark.parametrize("which", ["sweep", "run"])
def test_html_report_renders_in_headless_chromium(
    folders: tuple[Path, Path], tmp_path: Path, which: str
) -> None:
    folder = folders[0] if which == "sweep" else folders[1]
    page = tmp_path / "report.html"
    page.write_text(build_report(folder, "html", page), encoding="utf-8")
    shot = tmp_path / "shot.png"
    _chromium([f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()], tmp_path / "profile")
    pixels = image.imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    assert pixels.std() > 0.05  # a blank (all-white) page has none
    assert (pixels.mean(axis=2) < 0.5).mean() > 0.005  # some dark ink: text, bars, lines
    dom = _chromium(["--dump-dom", page.as_uri()], tmp_path / "profile").stdout
    assert '<table id="summary">' in dom
    assert np.char.count(dom, "<svg").item() >= (2 if which == "sweep" else 3)
    assert ("v2v p50" if which == "sweep" else "voice_to_voice") in dom
