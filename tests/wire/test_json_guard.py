"""Peer JSON with limits (agent/wire/json_guard.py) and the protocol decoders built on it.

Property-based (hypothesis, bounded examples so the suite stays fast): whatever
text a peer sends, the decoders answer a message or a :class:`ProtocolError` —
never a ``RecursionError``, ``UnicodeEncodeError`` or anything else.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import ProtocolError
from agent.wire import service_protocol
from agent.wire.json_guard import (
    JSONDepthError,
    clip,
    find_lone_surrogate,
    json_depth,
    loads_limited,
    may_hold_surrogate,
)
from agent.wire.protocol import Bye, Error, Interrupt, Ping, Script, Transcript, decode, encode

FAST = settings(max_examples=150, deadline=None)

# Text a JSON string may hold, brackets, quotes and backslashes included (they
# must not count as nesting), but no lone surrogates (those are refused).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20) | st.sampled_from(
    ["[", "]", '{"', '\\"[', "]]]", "\\", '"', "[[{", "}"]
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=40,
)


def reference_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    return 0


# -- depth ------------------------------------------------------------------------


@FAST
@given(JSON_VALUES, st.booleans())
def test_depth_scan_matches_the_nesting(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert json_depth(text) == reference_depth(value)
    assert json_depth(text.encode()) == reference_depth(value)


@FAST
@given(JSON_VALUES, st.integers(min_value=0, max_value=8))
def test_loads_limited_refuses_exactly_what_is_too_deep(value: Any, limit: int) -> None:
    text = json.dumps(value)
    if reference_depth(value) > limit:
        with pytest.raises(JSONDepthError):
            loads_limited(text, limit)
    else:
        assert loads_limited(text, limit) == value


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,
        "[" * 500_000,  # unbalanced too: never reaches json.loads
        '{"a":' * 50_000 + "1" + "}" * 50_000,
        '{"type": "hello", "pipeline": ' + "[" * 20_000 + "]" * 20_000 + "}",
    ],
)
def test_deep_nesting_is_a_protocol_error_not_a_recursion_error(text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(text)
    assert info.value.code == "json_too_deep"
    with pytest.raises(ProtocolError) as info:
        service_protocol.decode(text)
    assert info.value.code == "json_too_deep"


def test_the_depth_limit_is_a_parameter() -> None:
    message = '{"type": "hello", "protocol": 1, "pipeline": {"a": {"b": {"c": 1}}}}'
    assert decode(message, max_depth=4).TYPE == "hello"
    with pytest.raises(ProtocolError, match="nested 4 levels deep; at most 3"):
        decode(message, max_depth=3)


def test_brackets_inside_strings_are_not_nesting() -> None:
    reply = "[" * 1000 + '\\"{' * 100
    message = decode(encode(Script(turn=0, speech_start_sample=0, speech_end_sample=1, reply=reply)))
    assert isinstance(message, Script) and message.reply == reply


# -- lone surrogates ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "where"),
    [
        (Script(turn=0, speech_start_sample=0, speech_end_sample=1, text="ok", reply="a\ud800"), "reply"),
        (Script(turn=0, speech_start_sample=0, speech_end_sample=1, text="\udfffb"), "text"),
        (Error(code="x", message="\udc80"), "message"),
        (Interrupt(reason="\ud83d"), "reason"),
    ],
)
def test_a_lone_surrogate_is_refused_naming_the_field(message: Any, where: str) -> None:
    text = encode(message)  # json.dumps escapes it: "\ud800" as six ASCII characters
    assert text.isascii()
    with pytest.raises(ProtocolError) as info:
        decode(text)
    assert info.value.code == "malformed_text"
    assert info.value.reason.startswith(f"{where}: lone UTF-16 surrogate")
    str(info.value).encode("utf-8")  # the error itself can be logged and sent


def test_a_surrogate_pair_is_ordinary_text() -> None:
    message = decode(encode(Transcript(turn=0, text="smile \U0001f600")))
    assert isinstance(message, Transcript) and message.text == "smile \U0001f600"


@FAST
@given(JSON_VALUES)
def test_surrogate_search_finds_nothing_in_clean_values(value: Any) -> None:
    assert find_lone_surrogate(value) is None


@FAST
@given(st.text(max_size=30))
def test_a_string_with_a_lone_surrogate_is_always_found(text: str) -> None:
    raw = json.dumps({"k": [text]})
    found = find_lone_surrogate(json.loads(raw))
    lone = any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    assert (found is not None) == lone
    if lone:
        assert may_hold_surrogate(raw)
        assert found is not None and found[0] == "k[0]"


# -- the decoders never fail any other way -------------------------------------------

FRAGMENTS = st.lists(
    st.sampled_from(
        ['{', '}', '[', ']', '"', ':', ',', '"type"', '"hello"', '"script"', '"error"', '"turn"', "1", "-1",
         "1e999", "null", "true", '"\\ud800"', '"\\u0000"', "\\", " ", "9" * 5000]
    ),
    max_size=40,
).map("".join)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(FRAGMENTS | st.text(max_size=200) | st.binary(max_size=200))
def test_decode_raises_only_protocol_errors(text: str | bytes) -> None:
    for decoder in (decode, service_protocol.decode):
        try:
            decoder(text)
        except ProtocolError as exc:
            assert exc.code in {"malformed_json", "malformed_message", "malformed_text", "unknown_type",
                                "json_too_deep"}  # fmt: skip
            assert len(str(exc)) < 1000  # bounded, even for a huge input


@FAST
@given(
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=0, max_value=10**9),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=50),
    st.none() | st.text(st.characters(blacklist_categories=("Cs",)), max_size=50),
)
def test_script_round_trips(turn: int, start: int, text: str, reply: str | None) -> None:
    script = Script(turn=turn, speech_start_sample=start, speech_end_sample=start + 1, text=text, reply=reply)
    assert decode(encode(script)) == script


def test_huge_values_echoed_in_errors_are_clipped() -> None:
    with pytest.raises(ProtocolError) as info:
        decode(json.dumps({"type": "x" * 1_000_000}))
    assert len(str(info.value)) < 300
    assert "1,000,002 characters" in str(info.value)


def test_clip_bounds_and_escapes() -> None:
    assert clip("short", 10) == "short"
    assert clip("y" * 50, 10) == "y" * 10 + "… (50 characters)"
    assert clip("a\ud800b", 10) == "a\\ud800b"
    clip("\udfff" * 5, 3).encode("utf-8")


def test_round_trips_still_hold_for_plain_messages() -> None:
    for message in (Ping(t0_ns=5), Bye(reason="done"), Error(code="c", message="m")):
        assert decode(encode(message)) == message
