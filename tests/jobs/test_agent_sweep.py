"""``vlt sweep --agent-cmd``: the emulator's speed swept under an agent vlt only starts.

The agent is vlt's own, started as a separate process by a shell command whose
pipeline's ``openai`` LLM stage is pointed at ``{llm_url}``: the same path a
Pipecat or LiveKit agent takes (docs/black-box.md). Real time, about 20 s.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from tests.cli.test_cli import vlt
from tests.conftest import ROOT

PIPELINE = """
name = "openai-at-emulator"
description = "oracle VAD, emulated ASR and TTS, the openai stage at the sweep's emulator"
[audio]
sample_rate = 16000
frame_ms = 20
[vad]
kind = "oracle"
endpoint_ms = 200
[asr]
kind = "emulated"
finalize_ms = 100
[llm]
kind = "openai"
base_url = "LLM_URL"
model = "emulated"
[tts]
kind = "emulated"
first_audio_ms = 50
rtf = 0.1
"""


@pytest.mark.timeout(180)
def test_agent_cmd_sweep_follows_the_emulators_ttft(tmp_path: Path) -> None:
    (tmp_path / "template.toml").write_text(PIPELINE)
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        'name: s\nturns:\n  - user: "Hello there."\n    reply: "Hi! How can I help you today?"\n'
    )
    python = shlex.quote(sys.executable)
    command = (
        f"sed 's#LLM_URL#{{llm_url}}#' {tmp_path}/template.toml > {tmp_path}/p-{{port}}.toml && "
        f"cd {shlex.quote(str(ROOT))} && exec {python} -m agent.cli serve agent "
        f"--pipeline {tmp_path}/p-{{port}}.toml --port {{port}}"
    )
    out = tmp_path / "sweep"
    result = vlt(
        "sweep",
        "--scenario",
        str(scenario),
        "--agent-cmd",
        command,
        "--url",
        "ws://127.0.0.1:{port}",
        "--tps",
        "500",
        "--ttft-ms",
        "100,600",
        "--out",
        str(out),
        timeout=170,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["status"] == "complete" and doc["pipeline"]["agent_cmd"] == command
    fast, slow = doc["points"]
    assert (fast["ttft_ms"], slow["ttft_ms"]) == (100, 600)
    # The agent measured the emulator's TTFT (plus the HTTP round trip) at each point ...
    assert 100 <= fast["llm_ttft_mean"] < 200 and 600 <= slow["llm_ttft_mean"] < 700
    # ... and the caller heard the difference.
    assert slow["v2v_mean"] - fast["v2v_mean"] == pytest.approx(500, abs=60)
    assert vlt("report", str(out), "--format", "md", "-o", str(tmp_path / "r.md")).returncode == 0


def test_agent_cmd_needs_llm_url_and_a_url(tmp_path: Path) -> None:
    scenario = "scenarios/quick-3-turn.yaml"
    no_url = vlt("sweep", "--scenario", scenario, "--agent-cmd", "true {llm_url}")
    assert no_url.returncode == 2 and "--agent-cmd and --url go together" in no_url.stderr
    no_llm = vlt("sweep", "--scenario", scenario, "--agent-cmd", "true", "--url", "ws://127.0.0.1:{port}")
    assert no_llm.returncode == 2 and "must contain {llm_url}" in no_llm.stderr
    both = vlt("sweep", "--scenario", scenario, "--pipeline", "emulated", "--agent-cmd", "x {llm_url}")
    assert both.returncode == 2 and "either --pipeline" in both.stderr
    dead = vlt(
        "sweep",
        "--scenario",
        scenario,
        "--agent-cmd",
        "exit 4 # {llm_url}",
        "--url",
        "ws://127.0.0.1:{port}",
        "--tps",
        "100",
        "--ttft-ms",
        "100",
        "--out",
        str(tmp_path / "s"),
    )
    assert dead.returncode == 3 and "exited with status 4 before listening" in dead.stderr
