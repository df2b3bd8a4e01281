"""A real Pipecat pipeline on loopback, measured through the ``pipecat+ws`` target.

``examples/pipecat_tone_bot.py`` (websocket server transport, protobuf
serializer, Silero VAD, a responder) runs in its own virtualenv: pipecat-ai
pins protobuf<7 and soxr~=1.0, which conflict with this project's. Set
``VLT_PIPECAT_PYTHON`` to that environment's interpreter to run this test
(it is skipped otherwise, saying so). Real time, about 20 s.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent import clock as clocks
from agent.client.replay import replay
from agent.config.scenario import load_scenario
from tests.conftest import ROOT, OutputLines

PYTHON = os.environ.get("VLT_PIPECAT_PYTHON", "")
STOP_SECS = 0.5
PHRASE_MS = 600

pytestmark = pytest.mark.skipif(
    not PYTHON or not Path(PYTHON).is_file(),
    reason="set VLT_PIPECAT_PYTHON to a Python with pipecat-ai 1.14 installed (its own venv)",
)


@pytest.mark.timeout(120)
def test_a_pipecat_pipeline_answers_through_the_protobuf_target(
    tmp_path: Path, free_port: int, write_scenario: Any
) -> None:
    bot = subprocess.Popen(
        [
            PYTHON,
            str(ROOT / "examples" / "pipecat_tone_bot.py"),
            "--port",
            str(free_port),
            "--stop-secs",
            str(STOP_SECS),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        OutputLines(bot).wait_for("pipecat bot on", timeout=60)
        scenario = load_scenario(
            write_scenario(
                "name: pipecat\nturns:\n  - user: What time do you open tomorrow?\n"
                "  - user: Do you sell cordless drills?\n    pause_ms: 800\n"
            )
        )
        url = f"pipecat+ws://127.0.0.1:{free_port}#rate=16000&reply_end_ms=800"

        async def main(clock: clocks.Clock) -> Any:
            return await replay(scenario, url, clock, tmp_path / "run")

        result = clocks.run(main, virtual=False)
    finally:
        bot.terminate()
        bot.communicate(timeout=20)  # also closes the pipe
    assert [r["status"] for r in result.records] == ["ok", "ok"]
    for record in result.records:
        v2v = record["latency_ms"]["voice_to_voice"]
        # Silero's stop_secs of silence, plus its windows and Pipecat's output pacing.
        assert STOP_SECS * 1000 <= v2v <= STOP_SECS * 1000 + 400, v2v
        assert record["agent_audio_ms"] == pytest.approx(PHRASE_MS, abs=40)
        assert record["latency_ms"]["llm_ttft"] is None  # nothing the target cannot report
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["target"]["kind"] == "pipecat-ws"
    assert manifest["agent"]["software"] == "pipecat-ws (black box)"


@pytest.mark.timeout(240)
def test_a_pipecat_bot_swept_over_the_emulators_ttft(tmp_path: Path) -> None:
    """examples/pipecat_bot.py: Pipecat's OpenAILLMService on the sweep's emulator."""
    from tests.cli.test_cli import vlt

    out = tmp_path / "sweep"
    result = vlt(
        "sweep",
        "--scenario",
        "scenarios/quick-3-turn.yaml",
        "--agent-cmd",
        f"exec {PYTHON} examples/pipecat_bot.py --llm-url {{llm_url}} --port {{port}} 2>/dev/null",
        "--url",
        "pipecat+ws://127.0.0.1:{port}#rate=16000&reply_end_ms=1000",
        "--tps",
        "100",
        "--ttft-ms",
        "100,500",
        "--out",
        str(out),
        timeout=230,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    fast, slow = json.loads((out / "sweep.json").read_text())["points"]
    assert fast["n"] == slow["n"] == 3
    # 400 ms more TTFT at the emulator reaches the caller through Pipecat's LLM service.
    assert slow["v2v_p50"] - fast["v2v_p50"] == pytest.approx(400, abs=100)
