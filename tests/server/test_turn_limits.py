"""Each hop's deadline (the pipeline's ``[limits]``) in virtual time: a hop that hangs
fails the turn with a reason naming it, the marks stamped so far are kept, and
the next turn is served. (Deadlines against a real HTTP backend — keep-alive
comments, a backend ignoring max_tokens — are in tests/stages/test_llm_openai.py.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent import clock as clocks
from agent.config.scenario import load_scenario
from agent.errors import ConfigError
from agent.jobs.runner import run_scenario
from agent.stages.pipeline import load_pipeline, parse_pipeline
from tests.conftest import PIPELINES

TWO_TURNS = """
name: two-turns
defaults: {pause_ms: 300, reply_timeout_ms: 15000}
turns:
  - user: "Is the shop open today?"
    reply: "Yes, until six. Anything else?"
  - user: "No, thanks."
    reply: "Bye then."
"""


def _replay(overrides: dict[str, Any], scenario: Path, run_dir: Path) -> list[Any]:
    pipeline = load_pipeline(PIPELINES / "emulated.toml").with_overrides(overrides)

    async def main(clock: clocks.Clock) -> Any:
        return await run_scenario(load_scenario(scenario), clock, pipeline=pipeline, run_dir=run_dir)

    return list(clocks.run(main, virtual=True).records)


@pytest.mark.parametrize(
    ("overrides", "reason", "kept", "missing"),
    [
        ({"asr.finalize_ms": 20_000, "limits.asr_final_ms": 1000}, "asr: no final transcript within 1000 ms",
         ["vad.end_of_turn"], ["asr.final", "llm.request"]),
        ({"llm.ttft_ms": 60_000}, "llm: no content within 10000 ms (no response yet)",
         ["asr.final", "llm.request"], ["llm.first_token"]),
        ({"llm.tokens_per_s": 0.1, "limits.llm_content_ms": 3000},
         "llm: no content for 3000 ms after 1 content chunks",
         ["llm.first_token"], ["llm.done"]),
        ({"tts.first_audio_ms": 30_000, "limits.tts_audio_ms": 2000},
         "tts: no audio for phrase 1 within 2000 ms",
         ["llm.first_phrase", "tts.request"], ["tts.first_audio"]),
    ],
)  # fmt: skip
def test_a_hung_hop_fails_the_turn_by_name_and_keeps_its_marks(
    overrides: dict[str, Any],
    reason: str,
    kept: list[str],
    missing: list[str],
    write_scenario: Callable[[str], Path],
    tmp_path: Path,
) -> None:
    # Only turn 0 hangs: the override applies to both, so turn 1 fails the same way,
    # which shows the session carries on after a failed turn.
    first, second = _replay(overrides, write_scenario(TWO_TURNS), tmp_path / "run")
    for record in (first, second):
        assert (record["status"], record["reason"]) == ("failed", reason)
        marks = record["marks_ns"]
        assert set(kept) <= set(marks), marks
        assert not set(missing) & set(marks)
        assert "server.response_done" in marks


def test_the_reply_is_cut_at_max_reply_chars(write_scenario: Callable[[str], Path], tmp_path: Path) -> None:
    first, second = _replay({"limits.max_reply_chars": 12}, write_scenario(TWO_TURNS), tmp_path / "run")
    assert (first["status"], first["reply"], first["llm"]["truncated"]) == (
        "ok",
        "Yes, until s",
        "max_reply_chars",
    )
    assert (second["status"], second["reply"]) == ("ok", "Bye then.")
    assert "truncated" not in second["llm"]


def test_defaults_are_in_the_manifest_and_bad_limits_name_the_field() -> None:
    pipeline = load_pipeline(PIPELINES / "emulated.toml")
    assert pipeline.as_dict()["limits"] == {
        "asr_final_ms": 10000.0,
        "llm_content_ms": 10000.0,
        "llm_reply_ms": 60000.0,
        "tts_audio_ms": 10000.0,
        "max_reply_chars": 2000,
    }
    text = (PIPELINES / "emulated.toml").read_text() + "\n[limits]\nllm_reply_ms = 0\n"
    with pytest.raises(ConfigError, match=r"x.toml:\d+: limits.llm_reply_ms"):
        parse_pipeline(text, "x.toml")
