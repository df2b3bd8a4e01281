"""Topics and payloads of the telemetry stream (docs/telemetry.md).

Every payload is a JSON object with ``v`` (:data:`SCHEMA_VERSION`), ``type``,
``host`` and ``session``, so a line of ``vlt watch --json`` stands on its own;
``telemetry.schema.json`` beside this module is the JSON Schema of each type.
A reader accepts any payload whose ``v`` it knows and ignores keys it does not
(new optional keys keep the version; a changed or removed key bumps it).

Pure: builds and reads payloads, touches no network.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from agent.metrics.records import TurnRecord
from agent.metrics.redact import redact_value
from agent.metrics.stats import describe

__all__ = [
    "ANSWERED",
    "CHANNELS",
    "QOS",
    "RETAINED",
    "SCHEMA_VERSION",
    "START_TOPIC",
    "Channel",
    "Incoming",
    "decode",
    "encode",
    "load_json_schema",
    "manifest_payload",
    "mark_payload",
    "safe_level",
    "start_payload",
    "status_payload",
    "summary_payload",
    "topic",
    "turn_payload",
]

SCHEMA_VERSION = 1

Channel = Literal["marks", "turns", "manifest", "status", "summary"]
CHANNELS: tuple[Channel, ...] = ("marks", "turns", "manifest", "status", "summary")
#: Turns are the result (a recorder must get every one); a lost mark costs only the live view.
QOS: dict[Channel, int] = {"marks": 0, "turns": 1, "manifest": 1, "status": 1, "summary": 1}
#: The broker keeps the last of these per session, for a watcher that joins late.
RETAINED: frozenset[Channel] = frozenset({"manifest", "status", "summary"})
#: Turn statuses that count as answered (the rest are failures).
ANSWERED = frozenset({"ok", "interrupted"})
#: ``<prefix>/control/start``: the start signal of ``vlt watch --start``.
START_TOPIC = "control/start"


def safe_level(text: str) -> str:
    """``text`` as one topic level: no ``/``, ``+``, ``#``, blanks or control characters."""
    return re.sub(r"[/+#\s\x00-\x1f]+", "-", text).strip("-") or "unknown"


def topic(prefix: str, host: str, session: str, channel: Channel) -> str:
    return f"{prefix}/{safe_level(host)}/{safe_level(session)}/{channel}"


def encode(payload: Mapping[str, Any]) -> bytes:
    """The payload on the wire; keys a backend echoed are masked here, where every message passes."""
    return json.dumps(redact_value(payload), separators=(",", ":"), default=str).encode()


def _head(kind: str, host: str, session: str) -> dict[str, Any]:
    return {"v": SCHEMA_VERSION, "type": kind, "host": host, "session": session}


def mark_payload(host: str, session: str, turn: int, name: str, t_ns: int, seq: int) -> dict[str, Any]:
    """A mark as it is stamped: ``t_ns`` on the stamping process's own monotonic clock
    (only differences within one session mean anything); ``seq`` counts the session's marks."""
    return {**_head("mark", host, session), "turn": turn, "name": name, "t_ns": t_ns, "seq": seq}


def turn_payload(host: str, session: str, record: TurnRecord, utc: str) -> dict[str, Any]:
    """A finished turn: the record exactly as turns.jsonl holds it."""
    return {**_head("turn", host, session), "utc": utc, "record": record}


def manifest_payload(
    host: str, session: str, kind: str, manifest: Mapping[str, Any], utc: str
) -> dict[str, Any]:
    """The session's manifest (a client's manifest.json as it stands; an agent's pipeline)."""
    return {**_head("manifest", host, session), "kind": kind, "utc": utc, "manifest": dict(manifest)}


def status_payload(
    host: str, session: str, state: Literal["online", "offline"], utc: str | None, reason: str = ""
) -> dict[str, Any]:
    """``utc`` is None in the last will (written when the connection opens, sent when it is lost)."""
    out = {**_head("status", host, session), "state": state, "reason": reason}
    if utc is not None:
        out["utc"] = utc
    return out


def summary_payload(
    host: str, session: str, kind: str, records: Iterable[TurnRecord], state: str, utc: str
) -> dict[str, Any]:
    """Flat numbers a dashboard reads without parsing (Home Assistant, Grafana):
    turns, failures, last/p50/p95 voice-to-voice (ms; null until measured)."""
    records = list(records)
    v2v = [r["latency_ms"]["voice_to_voice"] for r in records]
    stats = describe(v2v)
    last = next((v for v in reversed(v2v) if v is not None), None)
    return {
        **_head("summary", host, session),
        "kind": kind,
        "state": state,
        "utc": utc,
        "turns": len(records),
        "failures": sum(1 for r in records if r["status"] not in ANSWERED),
        "last_voice_to_voice_ms": last,
        "p50_voice_to_voice_ms": stats["p50"],
        "p95_voice_to_voice_ms": stats["p95"],
    }


def start_payload(utc: str, by: str, run: str = "") -> dict[str, Any]:
    return {"v": SCHEMA_VERSION, "type": "start", "utc": utc, "by": by, "run": run}


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message read back: which session (empty for control) and its payload."""

    topic: str
    host: str
    session: str
    type: str
    data: dict[str, Any]
    #: The broker's stored copy of a retained topic, sent on subscribing (not live).
    retained: bool = False


def decode(prefix: str, topic_name: str, payload: bytes, retained: bool = False) -> Incoming | None:
    """Read a message under ``prefix``; None for anything that is not ours, empty
    (a cleared retained topic), of an unknown version, or malformed."""
    if not topic_name.startswith(prefix + "/") or not payload:
        return None
    levels = topic_name[len(prefix) + 1 :].split("/")
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("v") != SCHEMA_VERSION or not isinstance(data.get("type"), str):
        return None
    if "/".join(levels) == START_TOPIC and data["type"] == "start":
        return Incoming(topic_name, "", "", "start", data, retained)
    if len(levels) != 3 or levels[2] not in CHANNELS:
        return None
    return Incoming(topic_name, levels[0], levels[1], data["type"], data, retained)


def load_json_schema() -> dict[str, Any]:
    """``telemetry.schema.json``: the JSON Schema every payload validates against."""
    text = resources.files("agent.telemetry").joinpath("telemetry.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
