"""No lost words: a caller who pauses 0.6 s mid-sentence is split by the VAD, and
the continued turn must still send every word of the utterance to the LLM.

Real parts throughout: Silero VAD, faster-whisper tiny.en and Piper as in the
default pipeline, the caller's two half-sentences synthesised by Piper with
0.6 s of silence between them, and the LLM hop an ``openai`` stage talking
HTTP to the in-process accelerator emulator, which records each request body
it receives (what the LLM was asked is seen at the server, not in the agent).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from agent import clock as clocks
from agent.audio import write_wav
from agent.client.replay import ReplayResult
from agent.client.user_speech import render_user_audio
from agent.config.scenario import load_scenario
from agent.jobs.runner import run_scenario
from agent.server.llm_emulator import LLMEmulatorServer
from agent.stages.pipeline import parse_pipeline
from tests.conftest import PIPELINES

_MISSING = [m for m in ("piper", "faster_whisper", "onnxruntime") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"extra 'speech' not installed: {_MISSING}")

RATE = 16000
FIRST = "I would like to book a table"
SECOND = "for my family on Saturday evening."
PAUSE_S = 0.6


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def paused_utterance(path: Path) -> None:
    """The two halves, each trimmed to its speech by the renderer, 0.6 s apart."""
    first = render_user_audio(FIRST, None, RATE)
    second = render_user_audio(SECOND, None, RATE)
    gap = np.zeros(round(PAUSE_S * RATE), dtype=np.int16)
    pcm = np.concatenate(
        [
            first.pcm[first.speech_start : first.speech_end],
            gap,
            second.pcm[second.speech_start : second.speech_end],
        ]
    )
    write_wav(path, pcm, RATE)


@pytest.mark.timeout(300)
def test_a_turn_split_by_a_pause_sends_both_halves_to_the_llm(tmp_path: Path) -> None:
    paused_utterance(tmp_path / "paused.wav")
    (tmp_path / "paused.yaml").write_text(
        "name: paused\ndefaults:\n  pause_ms: 400\n  reply_timeout_ms: 20000\n"
        f'turns:\n  - wav: paused.wav\n    text: "{FIRST} {SECOND}"\n'
        '    reply: "Of course, for how many people?"\n'
    )
    scenario = load_scenario(tmp_path / "paused.yaml")
    bodies: list[dict[str, Any]] = []

    @web.middleware
    async def keep_body(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.endswith("/chat/completions"):
            bodies.append(json.loads(await request.read()))  # aiohttp caches the body
        return await handler(request)

    async def main(clock: clocks.Clock) -> ReplayResult:
        server = LLMEmulatorServer("groq-llama-3.3-70b", clock)
        server.app.middlewares.append(keep_body)  # before start(), which freezes the app
        async with server:
            default = (PIPELINES / "default.toml").read_text()
            head, _, tail = default.partition("[llm]")
            llm = f'[llm]\nkind = "openai"\nbase_url = "{server.base_url}"\nmodel = "emulated"\n'
            text = head + llm + tail[tail.index("[chunker]") :]
            # A slow final (no speculative decode, Whisper's full 30 s window), so the
            # caller resumes while the first half is still being finalized: the race
            # a busy machine runs into with any settings.
            asr = '[asr]\nkind = "faster-whisper"\nspeculative = false\nwindow = "full"\n'
            text = text.replace('[asr]\nkind = "faster-whisper"\n', asr)
            pipeline = parse_pipeline(text, tmp_path / "pipeline.toml")
            return await run_scenario(scenario, clock, pipeline=pipeline, run_dir=tmp_path / "run")

    result = clocks.run(main)
    (record,) = result.records
    assert record["status"] == "ok", record["reason"]
    # The pause did split the utterance (else this test would prove nothing).
    assert record["llm"].get("vad_splits", 0) >= 1, record["llm"]
    # The request that produced the answer: the last one, its last user message.
    asked = [m["content"] for m in bodies[-1]["messages"] if m["role"] == "user"][-1]
    heard = words(asked)
    for word in words(FIRST) + words(SECOND):
        assert word in heard, f"{word!r} missing from the LLM request {asked!r}"
    assert words(record["transcript"]) == heard
