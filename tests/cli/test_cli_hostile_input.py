"""Hostile or careless command lines (issue 16): one clear line and exit 2, never a
traceback; runs that end on SIGTERM are finished like Ctrl-C (run as subprocesses)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli.test_cli import VLT, _assert_one_line_error, vlt
from tests.conftest import ROOT

QUICK = "scenarios/quick-3-turn.yaml"


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
@pytest.mark.parametrize("server", ["agent", "llm-emulator", "asr", "tts"])
def test_every_port_option_refuses_a_port_out_of_range(server: str, port: str) -> None:
    args = ["serve", server, f"--port={port}"]
    if server in ("asr", "tts"):
        args += ["--pipeline", "emulated"]
    _assert_one_line_error(vlt(*args), "--port must be between 0 and 65535", port)


def test_nan_on_the_command_line_is_refused() -> None:
    result = vlt("serve", "llm-emulator", "--tps", "nan")
    assert result.returncode == 2 and "expected a finite number" in result.stderr
    assert "Traceback" not in result.stderr
    _assert_one_line_error(
        vlt(
            "sweep", "--scenario", QUICK, "--pipeline", "emulated", "--tps", "50,nan", "--out", "/nonexistent"
        ),
        "--tps",
    )


def test_a_nan_pipeline_number_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "nan.toml"
    bad.write_text(
        (ROOT / "pipelines" / "emulated.toml").read_text().replace("ttft_ms = 200", "ttft_ms = nan")
    )
    result = vlt("replay", QUICK, "--pipeline", str(bad), "--clock", "virtual", "--out", str(tmp_path / "r"))
    _assert_one_line_error(result, "nan.toml:", "llm.ttft_ms", "must be a finite number")


def test_a_pipeline_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.toml"
    bad.write_bytes((ROOT / "pipelines" / "emulated.toml").read_bytes().replace(b"Oracle", b"Or\xe1cle"))
    result = vlt("replay", QUICK, "--pipeline", str(bad), "--clock", "virtual", "--out", str(tmp_path / "r"))
    _assert_one_line_error(result, "latin1.toml:", "not UTF-8 text (byte")


def test_runs_dir_or_out_on_a_file_is_one_line(tmp_path: Path) -> None:
    file = tmp_path / "a-file"
    file.write_text("x")
    replay = ("replay", QUICK, "--clock", "virtual")
    _assert_one_line_error(vlt(*replay, "--runs-dir", str(file)), "--runs-dir", "is not a folder")
    _assert_one_line_error(vlt(*replay, "--runs-dir", str(file / "sub")), "--runs-dir", "is not a folder")
    _assert_one_line_error(vlt(*replay, "--out", str(file)), "--out", "is not a folder")
    assert file.read_text() == "x"


def test_reusing_out_is_refused_and_the_first_run_is_untouched(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert vlt("replay", QUICK, "--clock", "virtual", "--out", str(out), "--quiet").returncode == 0
    before = (out / "turns.jsonl").read_text()
    _assert_one_line_error(
        vlt("replay", QUICK, "--clock", "virtual", "--out", str(out)), "--out", "not empty"
    )
    assert (out / "turns.jsonl").read_text() == before and len(before.splitlines()) == 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["state"] == "complete"


def test_a_sweep_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_text("{}")
    args = ("sweep", "--scenario", QUICK, "--pipeline", "emulated", "--tps", "100", "--ttft-ms", "200")
    _assert_one_line_error(vlt(*args, "--out", str(out)), "--out", "not empty")


def test_report_of_a_run_with_a_torn_last_line_warns_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert vlt("replay", QUICK, "--clock", "virtual", "--out", str(out), "--quiet").returncode == 0
    with (out / "turns.jsonl").open("a") as fh:
        fh.write('{"turn": 3, "status": "o')  # a crash mid-write
    result = vlt("report", str(out), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "turns.jsonl:4: skipped an incomplete last line" in result.stderr
    baseline = tmp_path / "base.json"
    saved = vlt("baseline", "save", str(out), "-o", str(baseline))
    assert saved.returncode == 0, saved.stderr
    assert "skipped an incomplete last line" in saved.stderr


@pytest.mark.timeout(90)
def test_sigterm_finishes_the_run_like_ctrl_c(tmp_path: Path) -> None:
    """SIGTERM mid-run (real time): exit 143, finished turns, summary, manifest and recording on disk."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [*VLT, "replay", QUICK, "--pipeline", "emulated", "--out", str(out)],
        preexec_fn=lambda: signal.signal(
            signal.SIGINT, signal.SIG_DFL
        ),  # as test_ctrl_c_keeps_finished_turns
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    turns = out / "turns.jsonl"
    manifest_path = out / "manifest.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (turns.exists() and turns.read_text().count("\n") >= 1):
        time.sleep(0.05)
    assert json.loads(manifest_path.read_text())["state"] == "running"  # kept current while it runs
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    assert "terminated (SIGTERM); finished turns are on disk" in stderr
    records = [json.loads(line) for line in turns.read_text().splitlines()]
    assert 1 <= len(records) < 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] is False and summary["turns"] == len(records)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["state"] == "interrupted" and "finished_utc" in manifest
    assert (out / "recording.wav").stat().st_size > 44


@pytest.mark.timeout(90)
def test_sigterm_ends_a_sweep_as_partial(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    proc = subprocess.Popen(
        [
            *VLT,
            "sweep",
            "--scenario",
            QUICK,
            "--pipeline",
            "emulated",
            "--clock",
            "real",
            "--tps",
            "100,200",
            "--ttft-ms",
            "200",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(out.glob("points/*/*/turns.jsonl")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    assert json.loads((out / "sweep.json").read_text())["status"] == "partial"
    (run,) = out.glob("points/*/*/manifest.json")
    assert json.loads(run.read_text())["state"] == "interrupted"
