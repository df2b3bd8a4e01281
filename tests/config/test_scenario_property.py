"""Property-based: whatever a scenario file holds, loading it either works or raises
ScenarioError naming the file — never another exception.

Hypothesis builds YAML documents from the scenario vocabulary (right keys with
wrong or hostile values: huge, negative, nan/inf, nested, null) and also feeds
arbitrary text and bytes. Examples are bounded so the module stays short in CI.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config.scenario import MAX_PAUSE_MS, MAX_REPLY_TIMEOUT_MS, Scenario, load_scenario, parse_scenario
from agent.errors import ScenarioError

PATH = Path("/nonexistent-folder/s.yaml")  # wav paths resolve against it: none exist

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from([1e15, 3_600_000, 120_000, 0, -1, "600", "a.wav", ""]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
turn_keys = st.sampled_from(["user", "wav", "text", "reply", "pause_ms", "barge_in_ms", "expect", "oops"])
expect = st.dictionaries(st.sampled_from(["contains", "max_v2v_ms", "nope"]), values, max_size=2)
turn = st.dictionaries(turn_keys, st.one_of(values, expect), max_size=4)
document = st.fixed_dictionaries(
    {},
    optional={
        "name": values,
        "description": values,
        "defaults": st.one_of(
            values,
            st.dictionaries(st.sampled_from(["pause_ms", "reply_timeout_ms", "x"]), values, max_size=2),
        ),
        "turns": st.one_of(values, st.lists(turn, max_size=4)),
    },
)


def _loads_or_scenario_error(text: str) -> None:
    try:
        scenario = parse_scenario(text, PATH)
    except ScenarioError as exc:
        assert str(exc).startswith(str(PATH)), exc
        return
    assert isinstance(scenario, Scenario) and scenario.turns
    assert 0 < scenario.reply_timeout_ms <= MAX_REPLY_TIMEOUT_MS
    for t in scenario.turns:
        assert math.isfinite(t.pause_ms) and 0 <= t.pause_ms <= MAX_PAUSE_MS
        assert t.barge_in_ms is None or 0 <= t.barge_in_ms <= MAX_PAUSE_MS


@settings(max_examples=200, deadline=None)
@given(document)
def test_any_document_of_scenario_keys_loads_or_is_a_scenario_error(doc: dict[str, Any]) -> None:
    _loads_or_scenario_error(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_loads_or_is_a_scenario_error(text: str) -> None:
    _loads_or_scenario_error(text)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_in_a_file_load_or_are_a_scenario_error(tmp_path_factory: Any, data: bytes) -> None:
    path = tmp_path_factory.mktemp("scen") / "s.yaml"
    path.write_bytes(data)
    try:
        load_scenario(path)
    except ScenarioError as exc:
        assert str(exc).startswith(str(path)), exc
