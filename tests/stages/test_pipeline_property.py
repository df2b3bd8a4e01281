"""Property-based: whatever text a pipeline file holds, loading it either works or
raises ConfigError (file, line, field) — never another exception.

Hypothesis edits the shipped emulated pipeline (any value of any key replaced by
a random TOML value, keys and tables added) and also feeds arbitrary text.
Examples are bounded so the module stays a few seconds long in CI.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import ConfigError
from agent.stages.pipeline import Pipeline, parse_pipeline

ROOT = Path(__file__).resolve().parents[2]
BASE = (ROOT / "pipelines" / "emulated.toml").read_text(encoding="utf-8")
ASSIGNMENTS = [m for m in re.finditer(r"^(\w+) = (.*?)(\s+#.*)?$", BASE, re.M)]

# TOML spellings of values of every type, hostile numbers included.
toml_values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda f: (
            "nan" if math.isnan(f) else ("inf" if f == math.inf else "-inf" if f == -math.inf else repr(f))
        )
    ),
    st.sampled_from(["nan", "+nan", "-inf", "inf", "true", "false", "1e400", "[]", "{}", '""', "[1, nan]"]),
    st.text(max_size=20).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    st.sampled_from(["{ a = 1 }", '[ "x", 2 ]', "1979-05-27", '"emulated"', '"openai"', '"oracle"']),
)


def _loads_or_config_error(text: str) -> None:
    try:
        pipeline = parse_pipeline(text, "p.toml")
    except ConfigError as exc:
        assert str(exc).startswith("p.toml"), exc  # every error names the file
        assert "\n" not in str(exc)
        return
    assert isinstance(pipeline, Pipeline)
    configs = [spec.config for spec in pipeline.stages.values()]
    configs += [pipeline.audio, pipeline.chunker, pipeline.output, pipeline.conversation]
    for config in configs:  # a pipeline that loads holds finite numbers only
        for f in dataclasses.fields(config):
            value = getattr(config, f.name)
            assert not (isinstance(value, float) and not math.isfinite(value)), f.name


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(ASSIGNMENTS), toml_values), min_size=1, max_size=4))
def test_any_value_in_any_setting_loads_or_is_a_config_error(edits: list[tuple[re.Match[str], str]]) -> None:
    text = BASE
    for match, value in edits:
        text = re.sub(rf"^{match.group(1)} = .*$", f"{match.group(1)} = {value}", text, count=1, flags=re.M)
    _loads_or_config_error(text)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["audio", "vad", "asr", "llm", "tts", "chunker", "output", "conversation", "extra"]),
    st.text(alphabet=st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=12),
    toml_values,
)
def test_added_keys_load_or_are_config_errors(table: str, key: str, value: str) -> None:
    _loads_or_config_error(f"{BASE}\n[{table}]\n{key} = {value}\n")


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_loads_or_is_a_config_error(text: str) -> None:
    _loads_or_config_error(text)
