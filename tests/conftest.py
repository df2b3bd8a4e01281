"""Shared fixtures: paths to the shipped files and small scenario builders."""

from __future__ import annotations

import queue
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.telemetry.mosquitto import Broker, make_broker

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = ROOT / "pipelines"
SCENARIOS = ROOT / "scenarios"


#: End-of-turn silence of :func:`live_test_pipeline`'s energy VAD.
LIVE_TEST_ENDPOINT_MS = 300


def live_test_pipeline() -> str:
    """A pipeline for live-client tests: an energy VAD (it needs no scenario scripts,
    which live clients do not send) and emulated ASR, LLM and TTS with fixed timing."""
    return f"""
name = "live-test"
description = "energy VAD, emulated ASR/LLM/TTS"
[audio]
sample_rate = 16000
frame_ms = 20
[vad]
kind = "energy"
endpoint_ms = {LIVE_TEST_ENDPOINT_MS}
[asr]
kind = "emulated"
finalize_ms = 150
[llm]
kind = "emulated"
ttft_ms = 200
tokens_per_s = 100
jitter = 0.0
[output]
lead_ms = 60
[tts]
kind = "emulated"
first_audio_ms = 90
rtf = 0.2
"""


@pytest.fixture
def write_scenario(tmp_path: Path) -> Callable[[str], Path]:
    """Write a scenario YAML into tmp_path and return its path."""

    def write(text: str, name: str = "scenario.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class OutputLines:
    """A subprocess's stdout, line by line, readable with a timeout."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stdout is not None
        stream = proc.stdout
        threading.Thread(target=lambda: [self.lines.put(line) for line in stream], daemon=True).start()

    def wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no line starting {prefix!r} within {timeout} s; got: {self.seen}")


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A real Mosquitto broker on a free loopback port, anonymous (tests/telemetry/mosquitto.py)."""
    broker = make_broker(tmp_path / "broker")
    yield broker
    broker.kill()
