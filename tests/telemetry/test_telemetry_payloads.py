"""The pure parts: the --mqtt URL, topics and payloads, the JSON Schema, the watch's figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent.errors import ConfigError
from agent.telemetry.broker import BrokerUrl, TlsOptions, parse_broker_url
from agent.telemetry.fleet import FleetView
from agent.telemetry.schema import (
    Incoming,
    decode,
    encode,
    load_json_schema,
    manifest_payload,
    mark_payload,
    start_payload,
    status_payload,
    summary_payload,
    topic,
    turn_payload,
)

SCHEMA = load_json_schema()


def validate(payload: Any) -> None:
    jsonschema.validate(payload, SCHEMA, format_checker=jsonschema.FormatChecker())


# -- the URL ------------------------------------------------------------------------


def test_broker_url_defaults_and_parts() -> None:
    assert parse_broker_url("mqtt://broker.lan") == BrokerUrl("broker.lan", 1883, "vlt")
    full = parse_broker_url("mqtt://ann:p%40ss@10.0.0.2:1999/lab/booth1/")
    assert (full.host, full.port, full.prefix, full.username, full.password) == (
        "10.0.0.2", 1999, "lab/booth1", "ann", "p@ss",
    )  # fmt: skip
    assert "p@ss" not in full.display and "p@ss" not in repr(full)
    assert full.display == "mqtt://ann@10.0.0.2:1999/lab/booth1"
    tls = parse_broker_url("mqtts://h", TlsOptions(insecure=True))
    assert tls.port == 8883 and tls.tls == TlsOptions(insecure=True)


@pytest.mark.parametrize(
    ("url", "tls", "fragment"),
    [
        ("http://h", None, "expected mqtt://"),
        ("mqtt://", None, "no broker host"),
        ("mqtt://h:notaport", None, "bad port"),
        ("mqtt://h/a/+/b", None, "may not contain"),
        ("mqtt://h", TlsOptions(insecure=True), "need an mqtts:// URL"),
    ],
)
def test_broker_url_errors_are_one_clear_line(url: str, tls: TlsOptions | None, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_broker_url(url, tls)


def test_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MQTT TLS files"):
        TlsOptions(ca_file=tmp_path / "missing.pem").context()


# -- payloads and the schema --------------------------------------------------------


def _record(turn: int, v2v: float | None, status: str = "ok", **hops: float) -> dict[str, Any]:
    latency = {"voice_to_voice": v2v, **hops}
    return {
        "turn": turn, "status": status, "reason": "", "latency_ms": latency, "marks_ns": {},
        "missing_marks": [], "passed": status == "ok", "transcript": None, "reply": "",
    }  # fmt: skip


def test_every_payload_type_validates_and_reads_back() -> None:
    utc = "2026-01-02T03:04:05+00:00"
    payloads = [
        mark_payload("h", "s", 0, "llm.first_token", 123, 1),
        turn_payload("h", "s", _record(0, 512.5), utc),  # type: ignore[arg-type]
        manifest_payload("h", "s", "replay", {"kind": "replay"}, utc),
        status_payload("h", "s", "online", utc),
        status_payload("h", "s", "offline", None, "connection lost"),
        summary_payload("h", "s", "replay", [_record(0, 500.0), _record(1, None, "failed")], "online", utc),  # type: ignore[list-item]
        start_payload(utc, "watch-host", "run-1"),
    ]
    for payload in payloads:
        validate(json.loads(encode(payload)))
    summary = payloads[5]
    assert (summary["turns"], summary["failures"], summary["last_voice_to_voice_ms"]) == (2, 1, 500.0)
    read = decode("vlt", topic("vlt", "h", "s", "marks"), encode(payloads[0]))
    assert read == Incoming("vlt/h/s/marks", "h", "s", "mark", payloads[0])
    start = decode("vlt", "vlt/control/start", encode(payloads[-1]))
    assert start is not None and start.type == "start"


@pytest.mark.parametrize(
    "payload",
    [
        {"v": 2, "type": "mark", "host": "h", "session": "s", "turn": 0, "name": "a.b", "t_ns": 1, "seq": 1},
        {
            "v": 1,
            "type": "mark",
            "host": "h",
            "session": "s",
            "turn": 0,
            "name": "a.b",
            "t_ns": 1.5,
            "seq": 1,
        },
        {"v": 1, "type": "status", "host": "h", "session": "s", "state": "busy", "reason": ""},
        {"v": 1, "type": "turn", "host": "h", "session": "s", "utc": "x", "record": {"turn": 0}},
    ],
)
def test_the_schema_rejects_what_readers_cannot_use(payload: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate(payload)


def test_decode_ignores_what_is_not_ours() -> None:
    good = encode(mark_payload("h", "s", 0, "a.b", 1, 1))
    assert decode("vlt", "other/h/s/marks", good) is None
    assert decode("vlt", "vlt/h/s/unknown", good) is None
    assert decode("vlt", "vlt/h/s/marks", b"") is None  # a cleared retained topic
    assert decode("vlt", "vlt/h/s/marks", b"{not json") is None
    assert decode("vlt", "vlt/h/s/marks", good.replace(b'"v":1', b'"v":9')) is None


def test_topic_levels_are_made_safe() -> None:
    assert topic("vlt", "my host/1", "s+#", "turns") == "vlt/my-host-1/s/turns"


# -- the watch's figures ------------------------------------------------------------


def _turn(host: str, session: str, record: dict[str, Any]) -> Incoming:
    return Incoming(f"vlt/{host}/{session}/turns", host, session, "turn", {"record": record})


def test_fleet_view_per_session_and_fleet() -> None:
    view = FleetView()
    for i, (v2v, ttft, tts) in enumerate([(700, 200, 90), (710, 205, 90), (900, 390, 95)]):
        view.update(_turn("a", "s1", _record(i, v2v, llm_ttft=ttft, tts_first_audio=tts)), now_s=i)
    view.update(_turn("b", "s1", _record(0, None, "no_response")), now_s=3)
    mark = Incoming("vlt/a/s1/marks", "a", "s1", "mark", {"name": "llm.done"})
    for t in (3.0, 3.5, 4.0):
        view.update(mark, now_s=t)
    a, b = view.rows()
    assert (a.turns, a.failures, a.last_v2v_ms, a.p("p50")) == (3, 0, 900.0, 710.0)
    # llm_ttft grew by 390 - median(200, 205) = 187.5 ms; tts_first_audio by 5 ms.
    assert a.grew == ("llm_ttft", 187.5)
    assert (b.turns, b.failures, b.last_v2v_ms, b.grew) == (1, 1, None, None)
    fleet = view.summary(now_s=4.0, rate_window_s=2.0)
    assert (fleet.hosts, fleet.sessions, fleet.turns, fleet.failures) == (2, 2, 4, 1)
    assert fleet.p50_ms == 710.0 and fleet.marks_per_s == 1.5


def test_a_session_seen_only_through_its_retained_summary_shows_the_summary() -> None:
    view = FleetView()
    summary = {"kind": "replay", "turns": 12, "failures": 2, "last_voice_to_voice_ms": 640.0,
               "p50_voice_to_voice_ms": 600.0, "p95_voice_to_voice_ms": 800.0}  # fmt: skip
    view.update(Incoming("vlt/a/s/summary", "a", "s", "summary", summary, retained=True), now_s=0)
    (row,) = view.rows()
    assert row.figures() == (12, 2, 640.0) and row.p("p95") == 800.0 and row.kind == "replay"


def test_encode_masks_keys_a_backend_echoed() -> None:
    # A key echoed into a turn's server timings must not leave the process over MQTT
    # either: encode() is the one door every payload goes through.
    key = "sk-telemetry-test-0123456789abcdef"
    payload = {"turn": {"llm": {"server_timing": {"echo": key, f"x-{key}": 1}}, "reason": f"401 {key}"}}
    wire = encode(payload).decode()
    assert key not in wire and key[:12] not in wire
    assert json.loads(wire)["turn"]["reason"].startswith("401 ")
