"""Scenario loader: shipped files load, good files parse exactly, bad files fail clearly.

Every malformed case checks the whole location prefix (file, line, field) as
well as the reason, because "which line do I fix" is the point of the loader.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from agent.config.scenario import (
    DEFAULT_PAUSE_MS,
    DEFAULT_REPLY_TIMEOUT_MS,
    MAX_PAUSE_MS,
    MAX_REPLY_TIMEOUT_MS,
    Expectation,
    Scenario,
    Turn,
    load_scenario,
    parse_scenario,
)
from agent.errors import ScenarioError

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def write(folder: Path, text: str, name: str = "bad.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "turns"),
    [("quick-3-turn", 3), ("restaurant-booking", 10), ("barge-in", 5)],
)
def test_shipped_scenarios_load(name: str, turns: int) -> None:
    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    assert scenario.name == name
    assert scenario.description
    assert len(scenario.turns) == turns
    assert [t.index for t in scenario.turns] == list(range(turns))
    assert all(t.text and t.reply for t in scenario.turns)
    json.dumps(scenario.as_dict())  # serialisable for the run manifest


def test_barge_in_scenario_interrupts_a_long_reply() -> None:
    scenario = load_scenario(SCENARIOS / "barge-in.yaml")
    barge_ins = [t for t in scenario.turns if t.barge_in_ms is not None]
    assert barge_ins
    for turn in barge_ins:
        interrupted = scenario.turns[turn.index - 1].reply
        assert interrupted is not None
        assert interrupted.count(".") >= 3


def test_good_scenario_parses_into_the_right_values(tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "hello.wav").write_bytes(b"RIFF")
    path = write(
        tmp_path,
        """
        name: sample
        description: "A sample."
        defaults:
          pause_ms: 250
          reply_timeout_ms: 8000
        turns:
          - user: "What time do you open tomorrow?"
            reply: "We open at nine in the morning, and close at ten at night."
            expect:
              contains: ["nine", "ten at night"]
              max_v2v_ms: 2000
          - wav: audio/hello.wav
            text: "hello there"
            pause_ms: 0
          - user: "Sorry, one more thing"
            barge_in_ms: 700
            expect:
              contains: "thing"
          - wav: audio/hello.wav
        """,
        name="sample.yaml",
    )
    scenario = load_scenario(path)
    wav = tmp_path.resolve() / "audio" / "hello.wav"
    assert scenario == Scenario(
        name="sample",
        description="A sample.",
        path=path.resolve(),
        reply_timeout_ms=8000.0,
        turns=(
            Turn(
                index=0,
                line=7,
                text="What time do you open tomorrow?",
                wav=None,
                reply="We open at nine in the morning, and close at ten at night.",
                pause_ms=250.0,
                barge_in_ms=None,
                expect=Expectation(contains=("nine", "ten at night"), max_v2v_ms=2000.0),
            ),
            Turn(index=1, line=12, text="hello there", wav=wav, reply=None, pause_ms=0.0,
                 barge_in_ms=None, expect=Expectation()),
            Turn(index=2, line=15, text="Sorry, one more thing", wav=None, reply=None,
                 pause_ms=250.0, barge_in_ms=700.0, expect=Expectation(contains=("thing",))),
            Turn(index=3, line=19, text="", wav=wav, reply=None, pause_ms=250.0,
                 barge_in_ms=None, expect=Expectation()),
        ),
    )  # fmt: skip
    dumped = json.loads(json.dumps(scenario.as_dict()))
    assert dumped["path"] == str(path.resolve())
    assert dumped["turns"][1]["wav"] == str(wav)
    assert dumped["turns"][0]["expect"] == {
        "contains": ["nine", "ten at night"],
        "max_v2v_ms": 2000.0,
    }


def test_defaults_apply_when_nothing_is_given(tmp_path: Path) -> None:
    scenario = parse_scenario("turns:\n  - user: hello\n", tmp_path / "tiny.yaml")
    assert scenario.name == "tiny"
    assert scenario.description == ""
    assert scenario.reply_timeout_ms == DEFAULT_REPLY_TIMEOUT_MS
    (turn,) = scenario.turns
    assert (turn.text, turn.pause_ms, turn.reply, turn.expect) == (
        "hello", DEFAULT_PAUSE_MS, None, Expectation()
    )  # fmt: skip


def test_wav_paths_are_relative_to_the_scenario_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.wav").write_bytes(b"RIFF")
    scenario = parse_scenario("turns:\n  - wav: a.wav\n", tmp_path / "sub" / "s.yaml")
    assert scenario.turns[0].wav == (tmp_path / "sub" / "a.wav").resolve()


def test_expectation_missing_ignores_case_and_spacing() -> None:
    expect = Expectation(contains=("Nine", "ten  at night", "Tuesday"))
    assert expect.missing("We open at nine, and close at TEN at\nnight.") == ("Tuesday",)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ScenarioError, match="not found") as info:
        load_scenario(path)
    assert str(path) in str(info.value)


def test_non_utf8_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("turns:\n  - user: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ScenarioError, match="not UTF-8") as info:
        load_scenario(path)
    assert str(info.value).startswith(f"{path}:2: not UTF-8 text (byte 20")


def test_the_largest_allowed_times_load(tmp_path: Path) -> None:
    text = (
        "defaults: {pause_ms: 120000, reply_timeout_ms: 300000}\n"
        "turns:\n  - user: a\n  - user: b\n    barge_in_ms: 120000\n    expect: {max_v2v_ms: 300000}\n"
    )
    scenario = parse_scenario(text, tmp_path / "s.yaml")
    assert scenario.turns[0].pause_ms == MAX_PAUSE_MS and scenario.reply_timeout_ms == MAX_REPLY_TIMEOUT_MS
    assert scenario.turns[1].barge_in_ms == MAX_PAUSE_MS


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="empty"):
        load_scenario(write(tmp_path, "# nothing here\n"))


ONE_TURN = "turns:\n  - user: hi\n"

# (YAML, line, field or None, fragments the reason must contain)
MALFORMED: list[tuple[str, int, str | None, tuple[str, ...]]] = [
    ('turns:\n  - user: "unclosed\n', 3, None,
     ("invalid YAML", "end of stream", "started on line 2")),
    ("turns: [\n  {user: hi}\n", 3, None, ("invalid YAML",)),
    ("a: 1\n---\nb: 2\n", 2, None, ("invalid YAML", "single document")),
    ("- user: hi\n", 1, None, ("expected a mapping", "got a list")),
    ("name: x\n", 1, "turns", ("missing",)),
    ("turns: []\n", 1, "turns", ("empty",)),
    ("turns:\n", 1, "turns", ("expected a list of turns", "null")),
    ("title: x\n" + ONE_TURN, 1, None,
     ("unknown key 'title'", "valid keys: name, description, defaults, turns")),
    ("turns:\n  - user: hi\n    pasue_ms: 5\n", 3, "turns[0]",
     ("unknown key 'pasue_ms'", "did you mean 'pause_ms'", "valid keys: user, wav, text, reply")),
    ("turns:\n  - user: hi\n    reply: a\n    reply: b\n", 4, "turns[0].reply",
     ("duplicate key", "line 3")),
    ("turns:\n  - user: hi\n  - user: x\n    pause_ms: soon\n", 4, "turns[1].pause_ms",
     ("expected a number >= 0, got 'soon'",)),
    ("turns:\n  - user: hi\n    pause_ms: -5\n", 3, "turns[0].pause_ms",
     ("expected a number >= 0, got -5",)),
    ("turns:\n  - user: hi\n    expect:\n      max_v2v_ms: true\n", 4, "turns[0].expect.max_v2v_ms",
     ("expected a number > 0", "true (a boolean)")),
    ("turns:\n  - user: hi\n    expect: {max_v2v_ms: 0}\n", 3, "turns[0].expect.max_v2v_ms",
     ("expected a number > 0, got 0",)),
    ("turns:\n  - user: hi\n    pause_ms: .nan\n", 3, "turns[0].pause_ms",
     ("expected a number >= 0",)),
    ("defaults:\n  reply_timeout_ms: 0\n" + ONE_TURN, 2, "defaults.reply_timeout_ms",
     ("expected a number > 0",)),
    # Upper bounds: a pause of 1e15 ms used to spin a virtual-time replay; an hour, 635 MB.
    ("turns:\n  - user: hi\n    pause_ms: 1.0e+15\n", 3, "turns[0].pause_ms",
     ("must be <= 120000 ms, got 1.0e+15",)),
    ("turns:\n  - user: hi\n    pause_ms: 3600000\n", 3, "turns[0].pause_ms",
     ("must be <= 120000 ms, got 3600000",)),
    ("turns:\n  - user: hi\n    pause_ms: " + "9" * 400 + "\n", 3, "turns[0].pause_ms",
     ("expected a number >= 0",)),
    ("defaults:\n  pause_ms: 120001\n" + ONE_TURN, 2, "defaults.pause_ms", ("must be <= 120000 ms",)),
    ("turns:\n  - user: a\n  - user: b\n    barge_in_ms: 1.0e+9\n", 4, "turns[1].barge_in_ms",
     ("must be <= 120000 ms",)),
    ("defaults:\n  reply_timeout_ms: 300001\n" + ONE_TURN, 2, "defaults.reply_timeout_ms",
     ("must be <= 300000 ms",)),
    ("turns:\n  - user: hi\n    expect: {max_v2v_ms: .inf}\n", 3, "turns[0].expect.max_v2v_ms",
     ("expected a number > 0",)),
    ("defaults: 600\n" + ONE_TURN, 1, "defaults", ("expected a mapping", "got 600")),
    ("name: ''\n" + ONE_TURN, 1, "name", ("must not be empty",)),
    ("turns:\n  - user: '   '\n", 2, "turns[0].user", ("must not be empty",)),
    ("turns:\n  - user: no\n", 2, "turns[0].user",
     ("expected a non-empty string", "no (a boolean)", "quotes")),
    ("turns:\n  - user: hi\n    reply:\n", 3, "turns[0].reply",
     ("expected a non-empty string, got nothing (null)",)),
    ("turns:\n  - hello\n", 2, "turns[0]", ("expected a mapping", "got 'hello'")),
    ("turns:\n  - reply: hi\n", 2, "turns[0]", ("neither 'user' and 'wav'",)),
    ("turns:\n  - user: hi\n    wav: a.wav\n", 2, "turns[0]", ("both 'user' and 'wav'",)),
    ("turns:\n  - user: hi\n    text: hi\n", 3, "turns[0].text", ("only allowed with 'wav'",)),
    ("turns:\n  - user: hi\n  - wav: audio/missing.wav\n", 3, "turns[1].wav",
     ("file not found", "missing.wav")),
    ("turns:\n  - user: hi\n    barge_in_ms: 500\n", 3, "turns[0].barge_in_ms",
     ("not allowed on the first turn",)),
    ("turns:\n  - user: a\n  - user: b\n    barge_in_ms: 500\n    pause_ms: 100\n", 5,
     "turns[1].pause_ms", ("cannot be combined with barge_in_ms",)),
    ("turns:\n  - user: hi\n    expect:\n      contains: [nine, '']\n", 4,
     "turns[0].expect.contains[1]", ("must not be empty",)),
    ("turns:\n  - user: hi\n    expect:\n      contains: 9\n", 4, "turns[0].expect.contains",
     ("expected a list of strings, got 9",)),
    ("turns:\n  - user: hi\n    expect:\n      contains: [nine, 10]\n", 4,
     "turns[0].expect.contains[1]", ("expected a non-empty string, got 10",)),
    ("turns:\n  - user: hi\n    expect:\n      contain: [nine]\n", 4, "turns[0].expect",
     ("unknown key 'contain'", "valid keys: contains, max_v2v_ms")),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "field", "fragments"), MALFORMED)
def test_malformed_scenarios_name_file_line_and_field(
    tmp_path: Path, text: str, line: int, field: str | None, fragments: tuple[str, ...]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    error = info.value
    message = str(error)
    prefix = f"{path}:{line}: " + (f"{field}: " if field else "")
    assert message.startswith(prefix), message
    assert (error.path, error.line, error.field) == (str(path), line, field)
    for fragment in fragments:
        assert fragment in error.reason, message
