"""The wire protocol of the standalone ASR and TTS services, sans I/O.

Spoken between a remote stage (``agent.stages.remote``, the client) and
``vlt serve asr|tts`` (``agent.server.services``). Like the agent protocol,
binary frames are raw 16-bit little-endian mono PCM and text frames are one
JSON object each with a ``type``; unlike it, there is no clock sync or marks:
the hop is timed by the agent's orchestrator around the remote stage, network
included. ``docs/speech.md`` ("Remote services") describes the exchanges.

Messages (→ client to service, ← service to client)::

    → hello      {protocol, service: "asr"|"tts", sample_rate}
    ← hello      {protocol, service, sample_rate, stage, software}
    ASR
    → (binary)   upstream audio at sample_rate, contiguous from sample 0
    → finalize   {id, end_sample, hint: script|null}
    ← partial    {text}                      (only from stages that offer them)
    ← final      {id, text}
    TTS
    → synthesize {id, text}
    ← (binary)   audio of the request in progress, at sample_rate
    ← done       {id, cancelled}
    → cancel     {id}
    either
    ← error      {code, message, id?}
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from agent.errors import ProtocolError
from agent.wire.json_guard import DEFAULT_MAX_JSON_DEPTH, clip
from agent.wire.protocol import Script, load_frame
from agent.wire.protocol import decode as decode_agent_message

__all__ = [
    "SERVICES",
    "SERVICE_PROTOCOL_VERSION",
    "decode",
    "encode",
    "script_from_dict",
    "script_to_dict",
]

#: Bumped on any incompatible change; both hellos carry it.
SERVICE_PROTOCOL_VERSION = 1
SERVICES = ("asr", "tts")

# Required fields and their JSON types, per message type. Unknown fields are
# ignored (minor additions stay compatible), missing or mistyped ones are errors.
_SCHEMA: dict[str, dict[str, type[Any] | tuple[type[Any], ...]]] = {
    "hello": {"protocol": int, "service": str, "sample_rate": int},
    "finalize": {"id": int, "end_sample": int},
    "partial": {"text": str},
    "final": {"id": int, "text": str},
    "synthesize": {"id": int, "text": str},
    "cancel": {"id": int},
    "done": {"id": int},
    "error": {"code": str, "message": str},
}


def encode(kind: str, **fields: Any) -> str:
    """One message → the text of one frame (fields are checked like :func:`decode`)."""
    body = {"type": kind, **fields}
    _check(body)
    return json.dumps(body, separators=(",", ":"))


def decode(text: str | bytes, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> dict[str, Any]:
    """The text of one frame → its JSON object; :class:`ProtocolError` if malformed."""
    body = load_frame(text, max_depth)  # the same depth and text checks as the agent protocol
    _check(body)
    return body


def _check(body: dict[str, Any]) -> None:
    kind = body.get("type")
    schema = _SCHEMA.get(kind) if isinstance(kind, str) else None
    if schema is None:
        shown = clip(repr(kind), 60)
        raise ProtocolError("unknown_type", f"unknown message type {shown}; valid: {', '.join(_SCHEMA)}")
    for name, expected in schema.items():
        value = body.get(name)
        # bool is an int to Python but not to a peer: {"id": true} is malformed.
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ProtocolError("malformed_message", f"{kind}.{name}: missing or not {_name(expected)}")


def _name(expected: type[Any] | tuple[type[Any], ...]) -> str:
    names = {int: "an integer", str: "a string"}
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(names.get(t, t.__name__) for t in types)


def script_to_dict(script: Script | None) -> dict[str, Any] | None:
    """A finalize's ``hint``: the scenario's script for the utterance, as JSON."""
    return None if script is None else dataclasses.asdict(script)


def script_from_dict(hint: Any) -> Script | None:
    """The inverse of :func:`script_to_dict`, validated like an agent-protocol ``script``."""
    if hint is None:
        return None
    if not isinstance(hint, dict):
        raise ProtocolError("malformed_message", "finalize.hint: expected an object or null")
    # The same field checks as the agent protocol's own script message.
    message = decode_agent_message(json.dumps({**hint, "type": Script.TYPE}))
    assert isinstance(message, Script)
    return message
