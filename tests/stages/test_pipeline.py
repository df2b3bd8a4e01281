"""Pipeline files: loading, validation with file:line: field errors, overrides (agent.stages.pipeline)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from agent.errors import ConfigError, VltError
from agent.stages.chunker import ChunkerConfig
from agent.stages.llm import EmulatedLLMConfig
from agent.stages.pipeline import (
    AudioConfig,
    ConversationConfig,
    OutputConfig,
    Pipeline,
    load_pipeline,
    parse_pipeline,
)
from agent.stages.registry import REGISTRY, ROLES

ROOT = Path(__file__).resolve().parents[2]
EMULATED = ROOT / "pipelines" / "emulated.toml"
BASE = EMULATED.read_text(encoding="utf-8")


def line_of(text: str, needle: str) -> int:
    """1-based number of the only line of ``text`` containing ``needle``."""
    found = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(found) == 1, (needle, found)
    return found[0]


def edited(old: str, new: str) -> str:
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


def load_error(tmp_path: Path, text: str) -> tuple[ConfigError, Path]:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    return info.value, path


# --------------------------------------------------------------------------- the shipped pipeline


def test_emulated_pipeline_loads() -> None:
    p = load_pipeline(EMULATED)
    assert isinstance(p, Pipeline)
    assert p.name == "emulated"
    assert p.path == EMULATED
    assert p.description
    assert set(p.stages) == set(ROLES)
    assert {role: spec.kind for role, spec in p.stages.items()} == {
        "vad": "oracle",
        "asr": "emulated",
        "llm": "emulated",
        "tts": "emulated",
    }
    assert p.audio == AudioConfig(sample_rate=16000, frame_ms=20)
    assert p.chunker == ChunkerConfig(first_min_words=3, min_words=6)
    assert p.output == OutputConfig(lead_ms=60)
    assert p.conversation == ConversationConfig()
    llm = p.stages["llm"].config
    assert isinstance(llm, EmulatedLLMConfig)
    assert (llm.ttft_ms, llm.tokens_per_s, llm.jitter) == (200, 275, 0.0)
    assert p.stages["vad"].config.endpoint_ms == 300
    assert p.stages["vad"].config.start_ms == 60
    assert p.stages["asr"].config.finalize_ms == 150
    assert p.stages["tts"].config.first_audio_ms == 90
    assert p.stages["llm"].entry is REGISTRY["llm"]["emulated"]


def test_emulated_pipeline_runs_in_virtual_time() -> None:
    p = load_pipeline(EMULATED)
    assert p.virtual_time_ok is True
    assert p.real_time_stages() == []


def test_real_time_stage_is_reported() -> None:
    p = load_pipeline(EMULATED)
    slow = dataclasses.replace(REGISTRY["llm"]["emulated"], virtual_time=False)
    stages = {**p.stages, "llm": dataclasses.replace(p.stages["llm"], entry=slow)}
    q = dataclasses.replace(p, stages=stages)
    assert q.virtual_time_ok is False
    assert q.real_time_stages() == ["llm=emulated"]


def test_name_defaults_to_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "my-pipe.toml"
    path.write_text(edited('name = "emulated"\n', ""), encoding="utf-8")
    assert load_pipeline(path).name == "my-pipe"
    assert parse_pipeline(edited('name = "emulated"\n', "")).name == "pipeline"


def test_minimal_pipeline_fills_defaults() -> None:
    text = '[vad]\nkind = "oracle"\n[asr]\nkind = "emulated"\n'
    text += '[llm]\nkind = "emulated"\n[tts]\nkind = "emulated"\n'
    p = parse_pipeline(text)
    assert p.path is None
    assert p.audio == AudioConfig()
    assert p.stages["llm"].config == EmulatedLLMConfig()
    assert p.description == ""


# --------------------------------------------------------------------------- errors


def test_unknown_stage_kind_lists_valid_kinds(tmp_path: Path) -> None:
    text = edited('kind = "emulated"\nttft_ms', 'kind = "groq"\nttft_ms')
    error, path = load_error(tmp_path, text)
    assert error.path == str(path)
    assert error.line == line_of(text, '"groq"')
    assert error.field == "llm.kind"
    assert "'groq'" in str(error) and "valid: emulated" in str(error)
    assert str(error).startswith(f"{path}:{error.line}: llm.kind: ")


def test_missing_kind(tmp_path: Path) -> None:
    text = edited('kind = "oracle"\n', "")
    error, _ = load_error(tmp_path, text)
    assert error.field == "vad.kind"
    assert error.line == line_of(text, "[vad]")  # the table header, as the key is absent
    assert "missing kind" in str(error) and "oracle" in str(error)


def test_missing_llm_table(tmp_path: Path) -> None:
    text = re.sub(r"\[llm\]\n(?:.+\n)+\n", "", BASE)
    assert "[llm]" not in text
    error, path = load_error(tmp_path, text)
    assert error.path == str(path)
    assert error.field == "llm"
    assert "missing [llm] table" in str(error)
    assert "emulated" in str(error)  # names the kinds to choose from


def test_unknown_setting_lists_valid_settings(tmp_path: Path) -> None:
    text = edited("ttft_ms = 200", "ttft_ms = 200\nttft = 3")
    error, path = load_error(tmp_path, text)
    assert error.line == line_of(text, "ttft = 3")
    assert error.field == "llm.ttft"
    assert "unknown setting" in str(error)
    for name in ("jitter", "seed", "tokens_per_s", "ttft_jitter_ms", "ttft_ms"):
        assert name in str(error)
    assert str(error).startswith(f"{path}:{error.line}: llm.ttft: ")


def test_unknown_top_level_key(tmp_path: Path) -> None:
    text = "foo = 1\n" + BASE
    error, _ = load_error(tmp_path, text)
    assert (error.line, error.field) == (1, "foo")
    assert "valid:" in str(error) and "llm" in str(error)


@pytest.mark.parametrize(
    ("old", "new", "field", "expected"),
    [
        ("ttft_ms = 200", 'ttft_ms = "200"', "llm.ttft_ms", "expected a number, got '200'"),
        ("ttft_ms = 200", "ttft_ms = true", "llm.ttft_ms", "expected a number, got True"),
        ("frame_ms = 20", "frame_ms = 20.0", "audio.frame_ms", "expected an integer, got 20.0"),
        ("min_words = 6", "min_words = false", "chunker.min_words", "expected an integer"),
        ('name = "emulated"', "name = 3", "name", "expected a string"),
    ],
)
def test_wrong_type(tmp_path: Path, old: str, new: str, field: str, expected: str) -> None:
    text = edited(old, new)
    error, path = load_error(tmp_path, text)
    assert error.field == field
    assert error.line == line_of(text, new)
    assert expected in str(error)
    assert str(error).startswith(f"{path}:{error.line}: {field}: ")


@pytest.mark.parametrize(
    ("old", "new", "field", "expected"),
    [
        ("endpoint_ms = 300", "endpoint_ms = -1", "vad.endpoint_ms", "must be >= 0, got -1"),
        ("tokens_per_s = 275", "tokens_per_s = 0", "llm.tokens_per_s", "must be > 0, got 0"),
        ("tokens_per_s = 275", "tokens_per_s = -5.5", "llm.tokens_per_s", "must be > 0"),
        ("first_min_words = 3", "first_min_words = 0", "chunker.first_min_words", "must be >= 1"),
        ("lead_ms = 60", "lead_ms = -0.5", "output.lead_ms", "must be >= 0"),
    ],
)
def test_out_of_range(tmp_path: Path, old: str, new: str, field: str, expected: str) -> None:
    text = edited(old, new)
    error, _ = load_error(tmp_path, text)
    assert (error.field, error.line) == (field, line_of(text, new))
    assert expected in str(error)


def test_zero_is_allowed_where_min_is_zero() -> None:
    p = parse_pipeline(edited("endpoint_ms = 300", "endpoint_ms = 0"))
    assert p.stages["vad"].config.endpoint_ms == 0


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("sample_rate = 16000", "sample_rate = 12345", "audio.sample_rate"),
        ("frame_ms = 20", "frame_ms = 25", "audio.frame_ms"),
    ],
)
def test_bad_choice(tmp_path: Path, old: str, new: str, field: str) -> None:
    text = edited(old, new)
    error, _ = load_error(tmp_path, text)
    assert (error.field, error.line) == (field, line_of(text, new))
    assert "must be one of" in str(error)
    assert "16000" in str(error) or "20" in str(error)


def test_toml_syntax_error_has_line(tmp_path: Path) -> None:
    text = edited("rtf = 0.2", "rtf = 0.2 x")
    error, path = load_error(tmp_path, text)
    assert error.line == line_of(text, "rtf = 0.2 x")
    assert "invalid TOML" in str(error)
    assert str(error).startswith(f"{path}:{error.line}: invalid TOML")
    assert "(at line" not in str(error)  # the location is in the prefix, not repeated


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    assert info.value.path == str(path)
    assert "not found" in str(info.value)
    assert str(info.value).startswith(str(path))


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_pipeline(tmp_path)


def test_config_error_is_a_vlt_error() -> None:
    with pytest.raises(VltError):
        parse_pipeline("[vad]\nkind = 3\n")


def test_table_expected(tmp_path: Path) -> None:
    text = "output = 3\n" + edited("[output]\nlead_ms = 60", "")
    error, _ = load_error(tmp_path, text)
    assert (error.field, error.line) == ("output", 1)
    assert "expected a table" in str(error)


# --------------------------------------------------------------------------- overrides, as_dict


def test_with_overrides_changes_only_that_setting() -> None:
    p = load_pipeline(EMULATED)
    q = p.with_overrides({"llm.tokens_per_s": 800})
    assert q.stages["llm"].config.tokens_per_s == 800
    assert p.stages["llm"].config.tokens_per_s == 275  # the original is untouched
    before, after = p.as_dict(), q.as_dict()
    assert after["llm"]["tokens_per_s"] == 800
    after["llm"]["tokens_per_s"] = 275
    assert after == before


def test_with_overrides_of_an_absent_table_and_several_keys() -> None:
    p = load_pipeline(EMULATED)
    q = p.with_overrides({"conversation.max_history_turns": 3, "llm.jitter": 0.1})
    assert q.conversation.max_history_turns == 3
    assert q.stages["llm"].config.jitter == 0.1
    assert "conversation" not in p.raw


@pytest.mark.parametrize(
    ("overrides", "field", "expected"),
    [
        ({"llm.tokens_per_s": 0}, "llm.tokens_per_s", "must be > 0"),
        ({"llm.bogus": 1}, "llm.bogus", "unknown setting"),
        ({"vad.kind": "webrtc"}, "vad.kind", "unknown vad kind 'webrtc'"),
        ({"nodot": 1}, None, "must look like table.key"),
    ],
)
def test_bad_overrides(overrides: dict[str, object], field: str | None, expected: str) -> None:
    p = load_pipeline(EMULATED)
    with pytest.raises(ConfigError) as info:
        p.with_overrides(overrides)
    assert info.value.field == field
    assert expected in str(info.value)
    assert info.value.path == str(EMULATED)


def test_as_dict_has_kinds_and_defaults() -> None:
    d = load_pipeline(EMULATED).as_dict()
    assert d["name"] == "emulated"
    assert d["path"] == str(EMULATED)
    assert {role: d[role]["kind"] for role in ROLES} == {
        "vad": "oracle",
        "asr": "emulated",
        "llm": "emulated",
        "tts": "emulated",
    }
    assert d["llm"]["seed"] == 0  # defaults filled in
    assert d["llm"]["ttft_jitter_ms"] == 0.0
    assert d["tts"]["chunk_ms"] == 100.0
    assert d["chunker"]["max_words"] == 30
    assert d["conversation"]["max_history_turns"] == 20


def test_as_dict_round_trips() -> None:
    p = load_pipeline(EMULATED)
    d = p.as_dict()

    def toml_value(value: object) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return json.dumps(value)  # strings and numbers are valid TOML this way

    lines = [f"name = {toml_value(d['name'])}", f"description = {toml_value(d['description'])}"]
    for table in ("audio", "conversation", "chunker", "output", *ROLES):
        lines.append(f"[{table}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in d[table].items()]
    again = parse_pipeline("\n".join(lines), EMULATED).as_dict()
    assert again == d


# --------------------------------------------------------------------------- hostile numbers and bytes


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("ttft_ms = 200", "ttft_ms = nan", "llm.ttft_ms"),
        ("tokens_per_s = 275", "tokens_per_s = nan", "llm.tokens_per_s"),
        ("tokens_per_s = 275", "tokens_per_s = -nan", "llm.tokens_per_s"),
        ("rtf = 0.2", "rtf = inf", "tts.rtf"),
        ("endpoint_ms = 300", "endpoint_ms = nan", "vad.endpoint_ms"),
        ("lead_ms = 60", "lead_ms = nan", "output.lead_ms"),
        ("lead_ms = 60", "lead_ms = +inf", "output.lead_ms"),
    ],
)
def test_nan_and_inf_are_refused_with_file_line_and_field(
    tmp_path: Path, old: str, new: str, field: str
) -> None:
    """TOML can spell nan and inf, and a NaN passes every `>= min` check; both used to fail at run time."""
    text = edited(old, new)
    error, path = load_error(tmp_path, text)
    assert (error.path, error.line, error.field) == (str(path), line_of(text, new), field)
    assert "must be a finite number" in str(error)


def test_a_pipeline_that_is_not_utf8_names_file_line_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(BASE.encode().replace(b"Oracle VAD", b"Oracle VAD \xe9"))  # Latin-1 é
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    offset = path.read_bytes().index(b"\xe9")
    assert info.value.line == line_of(BASE, "Oracle VAD")
    assert f"not UTF-8 text (byte {offset}" in str(info.value)
    assert str(info.value).startswith(f"{path}:{info.value.line}: ")
