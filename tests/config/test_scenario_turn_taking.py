"""Scenario files: noise turns, no-reply expectations and the assert block."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.config.scenario import Assertions, load_scenario, parse_scenario
from agent.errors import ScenarioError
from agent.metrics.baseline import scenario_hash
from tests.conftest import ROOT, SCENARIOS


def test_noise_turns_no_reply_and_assertions_load() -> None:
    s = parse_scenario(
        "defaults:\n  no_reply_window_ms: 1500\n"
        "assert:\n  v2v_p95_ms: 900\n  missed_responses: 0\n  wer: 0.2\n"
        "turns:\n  - user: Hi\n  - noise: 250\n    barge_in_ms: 500\n    expect: {no_reply: true}\n"
        '  - user: "mm-hm"\n    expect:\n      no_reply: true\n',
        Path("s.yaml"),
    )
    assert s.no_reply_window_ms == 1500
    assert s.assertions == Assertions(v2v_p95_ms=900, missed_responses=0, wer=0.2)
    assert s.turns[1].noise_ms == 250 and s.turns[1].text == "" and s.turns[1].expect.no_reply
    assert s.turns[2].text == "mm-hm" and s.turns[2].expect.no_reply
    dump = s.as_dict()
    assert dump["turns"][1]["noise_ms"] == 250 and dump["assertions"]["wer"] == 0.2


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ("turns:\n  - noise: 0\n", 2, "turns[0].noise: expected a number > 0"),
        ("turns:\n  - noise: 20000\n", 2, "turns[0].noise: must be <= 10000 ms"),
        ("turns:\n  - noise: 100\n    user: hi\n", 2, "has both 'user' and 'noise'"),
        ("turns:\n  - noise: 100\n    text: cough\n", 3, "turns[0].text: only allowed with 'wav'"),
        ("turns:\n  - user: hi\n    expect: {no_reply: yes please}\n", 3, "no_reply: expected true or false"),
        ("turns:\n  - user: hi\n    expect: {no_reply: true, contains: [x]}\n", 3, "cannot be combined"),
        ("assert: {}\nturns:\n  - user: hi\n", 1, "assert: is empty"),
        ("assert:\n  missed_responses: 1.5\nturns:\n  - user: hi\n", 2, "expected a whole number >= 0"),
        ("assert:\n  wer: 3\nturns:\n  - user: hi\n", 2, "assert.wer: is a fraction of words"),
        ("assert:\n  v2v_p99_ms: 3\nturns:\n  - user: hi\n", 2, "did you mean 'v2v_p95_ms'"),
        (
            "defaults:\n  no_reply_window_ms: -1\nturns:\n  - user: hi\n",
            2,
            "no_reply_window_ms: expected a number > 0",
        ),
    ],
)
def test_bad_turn_taking_settings_name_line_and_field(text: str, line: int, says: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, Path("bad.yaml"))
    assert f"bad.yaml:{line}:" in str(caught.value) and says in str(caught.value)


def test_scenarios_without_the_new_features_hash_as_before() -> None:
    """A baseline saved before noise turns and assert blocks existed still matches."""
    baseline = json.loads((ROOT / "baselines" / "quick-3-turn.virtual.json").read_text())
    assert (
        scenario_hash(load_scenario(SCENARIOS / "quick-3-turn.yaml").as_dict())
        == baseline["identity"]["scenario"]["hash"]
    )
