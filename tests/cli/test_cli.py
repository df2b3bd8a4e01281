"""The `vlt` command: help, version, exit codes and one-line errors (run as a subprocess)."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

VLT = [sys.executable, "-m", "agent.cli"]


def vlt(*args: str, timeout: float = 60, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VLT, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False
    )


def test_version_and_help() -> None:
    assert re.fullmatch(r"vlt \d+\.\d+\.\d+\S*\n", vlt("--version").stdout)
    top = vlt("--help")
    assert top.returncode == 0 and "replay" in top.stdout and "serve" in top.stdout
    for args in (("replay", "--help"), ("serve", "--help"), ("serve", "agent", "--help")):
        result = vlt(*args)
        assert result.returncode == 0, args
        assert "usage:" in result.stdout


def test_replay_virtual_prints_waterfall_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = vlt("replay", "scenarios/quick-3-turn.yaml", "--clock", "virtual", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "voice_to_voice" in result.stdout
    assert re.search(r"^\s+2 ok\s", result.stdout, re.M)
    assert f"results: {out}" in result.stdout
    assert len((out / "turns.jsonl").read_text().splitlines()) == 3


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str, code: int = 2) -> None:
    assert result.returncode == code
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_malformed_scenario_names_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("turns:\n  - user: hi\n    pause_ms: soon\n")
    _assert_one_line_error(vlt("replay", str(bad), "--clock", "virtual"), "bad.yaml:3", "pause_ms")


def test_unknown_stage_kind_lists_valid_kinds(tmp_path: Path) -> None:
    text = (
        (ROOT / "pipelines" / "emulated.toml")
        .read_text()
        .replace('kind = "emulated"\nttft', 'kind = "gpt"\nttft')
    )
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if s == 'kind = "gpt"')
    result = vlt("replay", "scenarios/quick-3-turn.yaml", "--pipeline", str(bad), "--clock", "virtual")
    _assert_one_line_error(result, f"bad.toml:{line}", "llm.kind", "valid: emulated")


def test_missing_files_and_bad_targets() -> None:
    _assert_one_line_error(vlt("replay", "nope.yaml"), "nope.yaml", "not found")
    _assert_one_line_error(
        vlt("replay", "scenarios/quick-3-turn.yaml", "--pipeline", "nope"), "no pipeline named 'nope'"
    )
    _assert_one_line_error(
        vlt("replay", "scenarios/quick-3-turn.yaml", "--url", "ws://127.0.0.1:9"),
        "cannot reach agent",
        code=3,
    )
    # The black-box target: the same distinct status when nothing listens.
    _assert_one_line_error(
        vlt("replay", "scenarios/quick-3-turn.yaml", "--url", "pcm+ws://127.0.0.1:9"),
        "cannot reach agent",
        code=3,
    )
    _assert_one_line_error(
        vlt("replay", "scenarios/quick-3-turn.yaml", "--url", "pcm+ws://127.0.0.1:9#rate=fast"), "rate='fast'"
    )
    _assert_one_line_error(
        vlt("replay", "scenarios/quick-3-turn.yaml", "--url", "ws://127.0.0.1:9", "--clock", "virtual"),
        "--clock virtual",
    )


@pytest.mark.parametrize(
    ("flag", "value"), [("--max-sessions", "0"), ("--idle-timeout-s", "nan"), ("--max-audio-ahead-s", "-1")]
)
def test_bad_server_limits_are_one_line_errors(flag: str, value: str) -> None:
    _assert_one_line_error(vlt("serve", "agent", flag, value), flag, "must be a finite number > 0")


def test_debug_shows_traceback() -> None:
    result = vlt("--debug", "replay", "nope.yaml")
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_busy_port_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        _assert_one_line_error(vlt("serve", "agent", "--port", str(port)), f"{port}", "port is busy")


def test_failed_expectation_exits_1(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        'turns:\n  - user: "Hi"\n    reply: "Hello there."\n    pause_ms: 50\n'
        "    expect: {contains: [goodbye]}\n"
    )
    result = vlt("replay", str(scenario), "--clock", "virtual", "--out", str(tmp_path / "run"))
    assert result.returncode == 1
    assert "expectation failed: contains goodbye" in result.stdout


@pytest.mark.timeout(90)
def test_serve_agent_and_replay_against_its_url(tmp_path: Path, free_port: int) -> None:
    """`vlt serve agent` in one process, `vlt replay --url` in another, real time."""
    server = subprocess.Popen(
        [*VLT, "serve", "agent", "--pipeline", "emulated", "--port", str(free_port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert f"ws://127.0.0.1:{free_port}" in server.stdout.readline()
        scenario = tmp_path / "s.yaml"
        scenario.write_text(
            'turns:\n  - user: "Hello?"\n    reply: "Hi, how can I help?"\n    pause_ms: 100\n'
        )
        out = tmp_path / "run"
        result = vlt("replay", str(scenario), "--url", f"ws://127.0.0.1:{free_port}", "--out", str(out))
        assert result.returncode == 0, result.stderr
        record: dict[str, Any] = json.loads((out / "turns.jsonl").read_text())
        assert record["status"] == "ok"
        assert record["latency_ms"]["voice_to_voice"] > 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["agent"]["pipeline"]["name"] == "emulated"
    finally:
        server.terminate()
        server.communicate(timeout=10)  # also closes the pipes


@pytest.mark.timeout(90)
def test_ctrl_c_keeps_finished_turns(tmp_path: Path) -> None:
    """SIGINT mid-run (real time): exit 130, every finished turn on disk, summary written."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        # The emulated pipeline: this is about Ctrl-C, and its turns take predictable time.
        [*VLT, "replay", "scenarios/quick-3-turn.yaml", "--pipeline", "emulated", "--out", str(out)],
        # A job started in the background (as CI may start us) inherits SIGINT
        # ignored, and then Ctrl-C rightly does nothing; give the child a terminal's default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    turns = out / "turns.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (turns.exists() and turns.read_text().count("\n") >= 1):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # as Ctrl-C
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "finished turns are on disk" in stderr
    records = [json.loads(line) for line in turns.read_text().splitlines()]
    assert 1 <= len(records) < 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] is False and summary["turns"] == len(records)
    assert (out / "recording.wav").exists()


def test_readme_commands_and_ci() -> None:
    """README gives the two fresh-machine commands and .ci/run runs the test one verbatim."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    main_cmd = next(b for b in blocks if "vlt replay" in b)
    test_cmd = next(b for b in blocks if "pytest" in b)
    assert "scenarios/" in main_cmd
    assert test_cmd in (ROOT / ".ci" / "run").read_text()
