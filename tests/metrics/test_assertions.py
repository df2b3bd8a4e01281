"""A scenario's assert block against a run's records and summary (pure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.config.scenario import parse_scenario
from agent.metrics.assertions import check_assertions
from agent.metrics.results import summarize

SCENARIO = """
assert:
  v2v_p50_ms: 800
  v2v_p95_ms: 900
  missed_responses: 0
  wer: 0.1
turns:
  - user: one two three four
  - noise: 300
    expect: {no_reply: true}
  - user: five six seven eight
"""


def record(turn: int, status: str, v2v: float | None, text: str = "", transcript: str | None = None) -> Any:
    return {
        "turn": turn,
        "status": status,
        "user_text": text,
        "transcript": transcript,
        "wer": None if transcript is None else 0.0,  # summarize pools the turns that have one
        "latency_ms": {"voice_to_voice": v2v},
        "passed": True,
    }


def check(records: list[Any]) -> dict[str, tuple[float | None, bool]]:
    scenario = parse_scenario(SCENARIO, Path("s.yaml"))
    results = check_assertions(scenario, records, summarize(records))
    return {r["check"]: (r["value"], r["ok"]) for r in results}


def test_every_check_against_its_limit() -> None:
    got = check(
        [
            record(0, "ok", 700, "one two three four", "one two three four"),
            record(1, "ok", None),  # a no-reply turn that got none: not a missed response
            record(2, "ok", 950, "five six seven eight", "five six seven ate"),
        ]
    )
    assert got["v2v_p50_ms"] == (825.0, False)
    assert got["v2v_p95_ms"][1] is False
    assert got["missed_responses"] == (0, True)
    assert got["wer"] == (0.125, False)


def test_missed_responses_count_unanswered_and_unreached_turns() -> None:
    got = check([record(0, "no_response", None), record(1, "ok", None)])  # turn 2 never reached
    assert got["missed_responses"] == (2, False)


def test_a_figure_that_could_not_be_measured_fails_its_check() -> None:
    got = check([record(0, "no_response", None), record(1, "ok", None), record(2, "failed", None)])
    assert got["v2v_p50_ms"] == (None, False)
    assert got["wer"] == (None, False)
