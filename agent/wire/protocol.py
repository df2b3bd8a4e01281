"""The websocket wire protocol, sans I/O: message types, encode/decode, version.

Binary frames carry raw 16-bit little-endian mono PCM at the sample rate agreed
in ``hello`` (20 ms per frame by default). Text frames carry one JSON object
each, with a ``type`` field naming one of the message classes below. The full
description, with examples, is ``docs/protocol.md``.

Nothing here touches a socket or a clock: timestamps are passed in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Union, get_type_hints

from agent.config.typecheck import accepts, describe
from agent.errors import ProtocolError
from agent.wire.json_guard import (
    DEFAULT_MAX_JSON_DEPTH,
    JSONDepthError,
    clip,
    find_lone_surrogate,
    loads_limited,
    may_hold_surrogate,
)

__all__ = [
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_NORMAL",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_TRY_AGAIN_LATER",
    "CLOSE_UNSUPPORTED_DATA",
    "CLOSE_UNSUPPORTED_VERSION",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "SUPPORTED_SAMPLE_RATES",
    "AgentText",
    "Bye",
    "Error",
    "Hello",
    "Interrupt",
    "MarkList",
    "Message",
    "Ping",
    "Pong",
    "ResponseDone",
    "Script",
    "Transcript",
    "check_pcm_frame",
    "decode",
    "encode",
    "load_frame",
]

#: Bumped on any incompatible change; peers must send the same number in hello.
PROTOCOL_VERSION = 1
SUPPORTED_SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)

CLOSE_NORMAL = 1000
#: Malformed JSON, an unknown message type, a missing field, audio before hello.
CLOSE_PROTOCOL_ERROR = 1002
#: A well-formed request the server cannot honour (e.g. an unsupported sample rate).
CLOSE_UNSUPPORTED_DATA = 1003
#: A server limit was exceeded (docs/protocol.md, "Limits"): idle, too many or too large scripts, audio ahead.
CLOSE_POLICY_VIOLATION = 1008
CLOSE_INTERNAL_ERROR = 1011
#: The server already serves its maximum number of sessions (``server_busy``).
CLOSE_TRY_AGAIN_LATER = 1013
#: Application range (4000-4999): the peer speaks another protocol version.
CLOSE_UNSUPPORTED_VERSION = 4001


@dataclass(frozen=True, slots=True)
class Hello:
    """First message in each direction. The server's reply fixes the session's format.

    A client may leave ``sample_rate``/``frame_ms`` out (null) to take the
    agent's pipeline defaults; the server's hello always states them.
    """

    TYPE: ClassVar[str] = "hello"
    protocol: int
    sample_rate: int | None = None
    frame_ms: int | None = None
    role: str = "client"
    software: str = ""
    session: str | None = None
    pipeline: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    """Clock probe: ``t0_ns`` is the sender's clock when sent."""

    TYPE: ClassVar[str] = "ping"
    t0_ns: int


@dataclass(frozen=True, slots=True)
class Pong:
    """Reply to :class:`Ping`: server clock at receipt (``t1_ns``) and at send (``t2_ns``)."""

    TYPE: ClassVar[str] = "pong"
    t0_ns: int
    t1_ns: int
    t2_ns: int


@dataclass(frozen=True, slots=True)
class Script:
    """Client → server: what the scenario says about the next user utterance.

    Sent before the utterance's first audio frame. Sample positions count from
    the first sample of the session's upstream audio. Oracle and emulated
    stages use it (true speech end, the words spoken, the scripted reply);
    real stages ignore it. The session numbers the turn it covers ``turn``.
    """

    TYPE: ClassVar[str] = "script"
    turn: int
    speech_start_sample: int
    speech_end_sample: int
    text: str = ""
    reply: str | None = None


@dataclass(frozen=True, slots=True)
class MarkList:
    """Server → client: timing marks for one turn, on the server's clock."""

    TYPE: ClassVar[str] = "marks"
    turn: int
    marks: dict[str, int]


@dataclass(frozen=True, slots=True)
class Transcript:
    """Server → client: what the ASR heard (``final`` once per turn)."""

    TYPE: ClassVar[str] = "transcript"
    turn: int
    text: str
    final: bool = True


@dataclass(frozen=True, slots=True)
class AgentText:
    """Server → client: a phrase of the agent's reply, as released to TTS."""

    TYPE: ClassVar[str] = "agent_text"
    turn: int
    text: str


@dataclass(frozen=True, slots=True)
class ResponseDone:
    """Server → client: the turn's response ended (all its audio has been sent).

    ``status`` is ``ok``, ``interrupted`` (barge-in or client interrupt) or
    ``failed`` (``reason`` says why, naming the backend). ``stats`` carries
    per-turn numbers such as token counts.
    """

    TYPE: ClassVar[str] = "response_done"
    turn: int
    status: str
    reason: str = ""
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Interrupt:
    """Client → server: stop the current response now (e.g. the listener barged in)."""

    TYPE: ClassVar[str] = "interrupt"
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Error:
    """Either direction: something went wrong. ``code`` is a stable identifier."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Bye:
    """Either direction: the sender is about to close the connection."""

    TYPE: ClassVar[str] = "bye"
    reason: str = ""


Message = Union[  # noqa: UP007  (a runtime alias, used in isinstance-free dispatch)
    Hello, Ping, Pong, Script, MarkList, Transcript, AgentText, ResponseDone, Interrupt, Error, Bye
]

MESSAGE_TYPES: dict[str, type[Any]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Ping,
        Pong,
        Script,
        MarkList,
        Transcript,
        AgentText,
        ResponseDone,
        Interrupt,
        Error,
        Bye,
    )
}

_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in MESSAGE_TYPES.values()
}
_HINTS: dict[type[Any], dict[str, Any]] = {cls: get_type_hints(cls) for cls in MESSAGE_TYPES.values()}
_REQUIRED: dict[type[Any], frozenset[str]] = {
    cls: frozenset(
        f.name
        for f in fields(cls)
        if f.default is f.default_factory  # both MISSING: no default of either kind
    )
    for cls in MESSAGE_TYPES.values()
}


def encode(message: Message) -> str:
    """One message → the text of one websocket frame."""
    body: dict[str, Any] = {"type": message.TYPE}
    for name in _FIELDS[type(message)]:
        body[name] = getattr(message, name)
    return json.dumps(body, separators=(",", ":"))


def load_frame(text: str | bytes, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> dict[str, Any]:
    """The JSON object of one text frame, checked before anything uses it.

    Raises :class:`ProtocolError`: ``json_too_deep`` when arrays/objects nest
    deeper than ``max_depth`` (checked before parsing, which would otherwise
    recurse into a ``RecursionError``), ``malformed_json``, ``malformed_text``
    for a string holding a lone UTF-16 surrogate (``"\\ud800"``: no UTF-8
    encoder downstream could take it), ``malformed_message`` if not an object.
    Shared by the agent and the service protocol.
    """
    try:
        body = loads_limited(text, max_depth)
    except JSONDepthError as exc:
        raise ProtocolError("json_too_deep", f"text frame rejected: {exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(
            "malformed_json", f"text frame is not valid JSON ({clip(str(exc), 200)})"
        ) from None
    if not isinstance(body, dict):
        raise ProtocolError("malformed_message", "a text frame must hold a JSON object")
    if may_hold_surrogate(text) and (found := find_lone_surrogate(body)) is not None:
        where, what = found
        raise ProtocolError(
            "malformed_text", f"{where or 'text'}: lone UTF-16 surrogate {what}; text must be valid Unicode"
        )
    return body


def decode(text: str | bytes, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> Message:
    """The text of one frame → a message. Raises :class:`ProtocolError` if malformed."""
    body = load_frame(text, max_depth)
    kind = body.pop("type", None)
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        valid = ", ".join(sorted(MESSAGE_TYPES))
        shown = clip(repr(kind), 60)  # the peer's value, echoed back and logged: bounded
        raise ProtocolError("unknown_type", f"unknown message type {shown}; valid: {valid}")
    missing = _REQUIRED[cls] - body.keys()
    if missing:
        raise ProtocolError("malformed_message", f"{kind}: missing field(s) {', '.join(sorted(missing))}")
    hints = _HINTS[cls]
    kwargs: dict[str, Any] = {}
    for name, value in body.items():
        if name not in hints or name == "TYPE":
            continue  # unknown fields are ignored, so minor additions stay compatible
        if not accepts(hints[name], value):
            raise ProtocolError(
                "malformed_message",
                f"{kind}.{name}: expected {describe(hints[name])}, got {type(value).__name__}",
            )
        kwargs[name] = value
    return cls(**kwargs)  # type: ignore[no-any-return]


def check_pcm_frame(data: bytes, max_bytes: int) -> None:
    """Validate one binary frame of 16-bit PCM; raise :class:`ProtocolError` if not."""
    if len(data) == 0:
        raise ProtocolError("malformed_audio", "empty binary frame")
    if len(data) % 2:
        raise ProtocolError(
            "malformed_audio", f"binary frame of {len(data)} bytes is not 16-bit PCM (odd length)"
        )
    if len(data) > max_bytes:
        raise ProtocolError("malformed_audio", f"binary frame of {len(data)} bytes exceeds {max_bytes} bytes")
