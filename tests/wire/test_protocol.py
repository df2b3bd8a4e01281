"""The wire protocol, sans I/O: encode/decode round trips and decode errors."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

import pytest

from agent.errors import ProtocolError
from agent.wire.protocol import (
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    AgentText,
    Bye,
    Error,
    Hello,
    Interrupt,
    MarkList,
    Message,
    Ping,
    Pong,
    ResponseDone,
    Script,
    Transcript,
    check_pcm_frame,
    decode,
    encode,
)

EXAMPLES: list[Message] = [
    Hello(protocol=PROTOCOL_VERSION),
    Hello(
        protocol=PROTOCOL_VERSION,
        sample_rate=24000,
        frame_ms=40,
        role="agent",
        software="vlt/0.1.0",
        session="s7",
        pipeline={"name": "emulated", "description": "all emulated"},
    ),
    Ping(t0_ns=123),
    Pong(t0_ns=1, t1_ns=2, t2_ns=3),
    Script(turn=0, speech_start_sample=320, speech_end_sample=16000),
    Script(turn=2, speech_start_sample=0, speech_end_sample=1, text="hi there", reply="Hello!"),
    MarkList(turn=1, marks={"vad.end_of_turn": 10, "asr.final": 20}),
    MarkList(turn=0, marks={}),
    Transcript(turn=0, text="what time do you open"),
    Transcript(turn=3, text="partial", final=False),
    AgentText(turn=0, text="We open at nine."),
    ResponseDone(turn=0, status="ok"),
    ResponseDone(turn=1, status="interrupted", reason="barge-in", stats={"output_tokens": 4, "phrases": 1}),
    ResponseDone(turn=2, status="failed", reason="llm http://x HTTP 500: boom", stats={}),
    Interrupt(),
    Interrupt(reason="user pressed stop"),
    Error(code="malformed_json", message="text frame is not valid JSON"),
    Bye(),
    Bye(reason="scenario complete"),
]


def _body(**fields: Any) -> str:
    return json.dumps(fields)


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: Message) -> None:
    text = encode(message)
    assert decode(text) == message
    assert decode(text.encode()) == message  # a text frame's bytes decode the same


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_encoding_is_one_json_object_with_type_and_every_field(message: Message) -> None:
    body = json.loads(encode(message))
    assert body.pop("type") == message.TYPE
    assert set(body) == {f.name for f in fields(message)}


def test_every_message_type_has_an_example() -> None:
    assert {m.TYPE for m in EXAMPLES} == set(MESSAGE_TYPES)


def test_encoding_is_compact() -> None:
    assert encode(Ping(t0_ns=5)) == '{"type":"ping","t0_ns":5}'


def test_defaults_fill_omitted_optional_fields() -> None:
    assert decode(_body(type="hello", protocol=1)) == Hello(
        protocol=1, sample_rate=None, frame_ms=None, role="client", software="", session=None, pipeline=None
    )
    assert decode(_body(type="response_done", turn=0, status="ok")) == ResponseDone(turn=0, status="ok")
    assert decode(_body(type="bye")) == Bye(reason="")


def _code(text: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(text)
    return info.value


@pytest.mark.parametrize("text", ["", "{", "not json", '{"type": "ping",}', b"\xff\xfe"])
def test_invalid_json(text: str | bytes) -> None:
    assert _code(text).code == "malformed_json"


@pytest.mark.parametrize("text", ["[]", "1", '"hello"', "null", '[{"type": "ping", "t0_ns": 1}]'])
def test_non_object_json(text: str) -> None:
    err = _code(text)
    assert err.code == "malformed_message"
    assert "object" in err.reason


@pytest.mark.parametrize("body", [{"type": "launch"}, {"t0_ns": 1}, {"type": 3}, {"type": None}])
def test_unknown_or_missing_type_lists_the_valid_types(body: dict[str, Any]) -> None:
    err = _code(json.dumps(body))
    assert err.code == "unknown_type"
    for name in MESSAGE_TYPES:
        assert name in err.reason


@pytest.mark.parametrize(
    ("body", "missing"),
    [
        ({"type": "hello"}, "protocol"),
        ({"type": "ping"}, "t0_ns"),
        ({"type": "pong", "t0_ns": 1, "t1_ns": 2}, "t2_ns"),
        ({"type": "script", "turn": 0, "speech_start_sample": 0}, "speech_end_sample"),
        ({"type": "marks", "turn": 0}, "marks"),
        ({"type": "transcript", "turn": 0}, "text"),
        ({"type": "agent_text", "text": "x"}, "turn"),
        ({"type": "response_done", "turn": 0}, "status"),
        ({"type": "error", "code": "x"}, "message"),
    ],
)
def test_missing_required_field(body: dict[str, Any], missing: str) -> None:
    err = _code(json.dumps(body))
    assert err.code == "malformed_message"
    assert missing in err.reason


@pytest.mark.parametrize(
    "body",
    [
        {"type": "hello", "protocol": True},  # bool is not an int
        {"type": "hello", "protocol": "1"},
        {"type": "hello", "protocol": 1.0},
        {"type": "hello", "protocol": 1, "sample_rate": "16000"},
        {"type": "hello", "protocol": 1, "session": 5},
        {"type": "hello", "protocol": 1, "pipeline": ["emulated"]},  # list is not a dict
        {"type": "ping", "t0_ns": False},
        {"type": "ping", "t0_ns": None},
        {"type": "marks", "turn": 0, "marks": [["asr.final", 1]]},
        {"type": "transcript", "turn": 0, "text": "x", "final": 1},
        {"type": "response_done", "turn": 0, "status": "ok", "stats": []},
        {"type": "script", "turn": 0, "speech_start_sample": 0, "speech_end_sample": 1, "reply": 3},
        {"type": "error", "code": 404, "message": "x"},
    ],
)
def test_wrong_field_type(body: dict[str, Any]) -> None:
    err = _code(json.dumps(body))
    assert err.code == "malformed_message"
    assert "expected" in err.reason


def test_wrong_field_type_names_the_field() -> None:
    err = _code(_body(type="ping", t0_ns="now"))
    assert "ping.t0_ns" in err.reason
    assert "str" in err.reason


def test_optional_fields_accept_null() -> None:
    hello = decode(_body(type="hello", protocol=1, session=None, pipeline=None))
    assert hello == Hello(protocol=1)
    script = decode(_body(type="script", turn=0, speech_start_sample=0, speech_end_sample=1, reply=None))
    assert isinstance(script, Script)
    assert script.reply is None


def test_unknown_fields_are_ignored() -> None:
    text = _body(type="ping", t0_ns=7, future_field={"a": 1}, TYPE="pong")
    assert decode(text) == Ping(t0_ns=7)
    text = _body(type="hello", protocol=1, codec="opus", sample_rate=8000)
    assert decode(text) == Hello(protocol=1, sample_rate=8000)


def test_protocol_error_message_carries_the_code() -> None:
    err = _code("nope")
    assert str(err).startswith("malformed_json: ")


# -- binary frames -------------------------------------------------------------


def test_pcm_frame_ok() -> None:
    check_pcm_frame(b"\x00\x00" * 320, max_bytes=640)  # exactly the limit is fine
    check_pcm_frame(b"\x01\x00", max_bytes=640)


def test_pcm_frame_empty() -> None:
    with pytest.raises(ProtocolError) as info:
        check_pcm_frame(b"", max_bytes=640)
    assert info.value.code == "malformed_audio"
    assert "empty" in info.value.reason


def test_pcm_frame_odd_length() -> None:
    with pytest.raises(ProtocolError) as info:
        check_pcm_frame(b"\x00" * 641, max_bytes=10_000)
    assert info.value.code == "malformed_audio"
    assert "odd" in info.value.reason


def test_pcm_frame_oversized() -> None:
    with pytest.raises(ProtocolError) as info:
        check_pcm_frame(b"\x00\x00" * 321, max_bytes=640)
    assert info.value.code == "malformed_audio"
    assert "642" in info.value.reason and "640" in info.value.reason
