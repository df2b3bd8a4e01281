"""Publishing to a real Mosquitto broker (tests/telemetry/mosquitto.py), in-process.

Replays run in virtual time (fast, deterministic) except the one about a broker
killed mid-run, which must be real time to show the pipeline is not held up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent import clock as clocks
from agent.client.replay import ReplayResult
from agent.config.scenario import load_scenario
from agent.errors import ConnectError
from agent.jobs.runner import run_scenario
from agent.metrics.records import TelemetryCounts, TurnRecord
from agent.metrics.results import read_turns
from agent.stages.pipeline import load_pipeline
from agent.telemetry.broker import TlsOptions, parse_broker_url
from agent.telemetry.publisher import Telemetry
from agent.telemetry.schema import load_json_schema
from agent.telemetry.subscriber import subscription
from tests.conftest import PIPELINES, ROOT, SCENARIOS
from tests.metrics.test_records import problems
from tests.telemetry.mosquitto import Broker, Listener, make_broker

SCHEMA = load_json_schema()
EMULATED = load_pipeline(PIPELINES / "emulated.toml")


def replay(
    telemetry: Telemetry | None, out: Path, scenario: Path = SCENARIOS / "quick-3-turn.yaml", **kw: Any
) -> ReplayResult:
    loaded = load_scenario(scenario)

    async def main(clock: clocks.Clock) -> ReplayResult:
        return await run_scenario(loaded, clock, pipeline=EMULATED, run_dir=out, telemetry=telemetry, **kw)

    return clocks.run(main, virtual=kw.pop("virtual", True))


def counts(run_dir: Path) -> TelemetryCounts:
    counts: TelemetryCounts = json.loads((run_dir / "manifest.json").read_text())["telemetry"]
    assert problems(counts, TelemetryCounts) == []
    return counts


def validate_all(listener: Listener) -> None:
    for _, payload, _ in listener.messages:
        jsonschema.validate(json.loads(payload), SCHEMA, format_checker=jsonschema.FormatChecker())


def test_marks_and_turns_arrive_and_validate(mosquitto: Broker, tmp_path: Path) -> None:
    with Listener(mosquitto) as heard, Telemetry(parse_broker_url(mosquitto.url())) as telemetry:
        result = replay(telemetry, tmp_path / "run")
    validate_all(heard)
    # The in-process agent's marks, each as it was stamped, in order, per turn.
    marks = heard.json("/marks")
    (agent,) = {m["session"] for m in marks}
    assert str(agent).startswith(f"agent-{telemetry.process_id}-")
    (announced,) = [m for m in heard.json("/manifest") if m["session"] == agent]
    assert announced["manifest"] == {
        "agent_session": "s1",
        "pipeline": "emulated",
        "description": EMULATED.description,
    }
    assert [m["seq"] for m in marks] == list(range(1, len(marks) + 1))
    assert {m["turn"] for m in marks} == {0, 1, 2}
    turn0 = [m["name"] for m in marks if m["turn"] == 0]
    for name in (
        "vad.end_of_turn",
        "asr.final",
        "llm.first_token",
        "tts.first_audio",
        "server.first_audio_sent",
    ):
        assert name in turn0
    # Each turn's record, exactly as turns.jsonl holds it.
    turns = heard.json("/turns")
    assert [t["record"] for t in turns] == read_turns(result.run_dir)
    assert counts(result.run_dir) == {
        "broker": mosquitto.url(),
        "topic": turns[0]["host"] and f"vlt/{turns[0]['host']}/{turns[0]['session']}",
        "sent": counts(result.run_dir)["sent"],
        "dropped": 0,
        "pending": 0,
    }
    assert counts(result.run_dir)["sent"] >= 3 + 2  # the turns, manifest, summary (and status)
    summaries = heard.json("/summary")
    assert summaries[-1]["state"] == "offline" and summaries[-1]["turns"] == 3


def test_two_concurrent_sessions_are_told_apart(mosquitto: Broker, tmp_path: Path) -> None:
    scenario = load_scenario(SCENARIOS / "quick-3-turn.yaml")
    with Listener(mosquitto) as heard, Telemetry(parse_broker_url(mosquitto.url())) as telemetry:

        async def main(clock: clocks.Clock) -> list[ReplayResult]:
            runs = [
                run_scenario(scenario, clock, pipeline=EMULATED, run_dir=tmp_path / n, telemetry=telemetry)
                for n in ("a", "b")
            ]
            return list(await asyncio.gather(*runs))

        results = clocks.run(main, virtual=True)
    by_session: dict[str, list[TurnRecord]] = {}
    for t in heard.json("/turns"):
        by_session.setdefault(str(t["session"]), []).append(t["record"])  # type: ignore[arg-type]
    assert len(by_session) == 2
    for result in results:
        session = counts(result.run_dir)["topic"].rsplit("/", 1)[1]
        assert by_session[session] == read_turns(result.run_dir)
    agents = {m["session"] for m in heard.json("/marks")}
    assert len(agents) == 2


def test_retained_manifest_and_status_for_a_late_subscriber(mosquitto: Broker, tmp_path: Path) -> None:
    with Telemetry(parse_broker_url(mosquitto.url())):
        pass  # nothing published: no retained topics
    with Telemetry(parse_broker_url(mosquitto.url())) as telemetry:
        result = replay(telemetry, tmp_path / "run")
    base = counts(result.run_dir)["topic"]
    with Listener(mosquitto) as late:
        late.wait_quiet()
    retained = {t: json.loads(p) for t, p, r in late.messages if r}
    assert retained[f"{base}/manifest"]["manifest"]["completed"] is True
    assert retained[f"{base}/status"]["state"] == "offline"
    assert retained[f"{base}/status"]["reason"] == "session ended"
    assert retained[f"{base}/summary"]["turns"] == 3
    assert not any(t.endswith(("/marks", "/turns")) for t in retained)


CHILD = """
import sys, time
from agent.telemetry.broker import parse_broker_url
from agent.telemetry.publisher import Telemetry
t = Telemetry(parse_broker_url(sys.argv[1]))
s = t.session("replay", "doomed")
s.manifest({"kind": "replay"})
print("ready", flush=True)
time.sleep(120)
"""


def test_last_will_says_offline_when_a_process_dies(mosquitto: Broker) -> None:
    with Listener(mosquitto, "vlt/+/doomed/status") as heard:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, mosquitto.url()], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not heard.json("/status"):
                time.sleep(0.05)
            assert heard.json("/status")[0]["state"] == "online"
            child.send_signal(signal.SIGKILL)  # no goodbye: only the broker can say it
            child.wait(10)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and len(heard.json("/status")) < 2:
                time.sleep(0.05)
        finally:
            child.kill()
            child.communicate(timeout=10)
    last = heard.json("/status")[-1]
    assert (last["state"], last["reason"], "utc" in last) == ("offline", "connection lost", False)
    jsonschema.validate(last, SCHEMA)


@pytest.mark.timeout(60)
def test_broker_killed_mid_run_does_not_stall_a_real_time_replay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, write_scenario: Any
) -> None:
    scenario = write_scenario(
        "turns:\n" + '  - user: "Yes."\n    reply: "Okay, done."\n    pause_ms: 100\n' * 4
    )
    reference = replay(None, tmp_path / "reference", scenario)  # virtual time: no noise at all
    broker = make_broker(tmp_path / "broker")

    def kill_after_first(record: TurnRecord) -> None:
        if record["turn"] == 0:
            broker.kill()

    caplog.set_level(logging.WARNING, "vlt.telemetry")
    started = time.monotonic()
    with Telemetry(parse_broker_url(broker.url())) as telemetry:
        result = replay(telemetry, tmp_path / "run", scenario, on_turn=kill_after_first, virtual=False)
    wall = time.monotonic() - started
    assert [r["status"] for r in result.records] == ["ok"] * 4
    for got, want in zip(result.records, reference.records, strict=True):
        # Real time on a shared machine: a few ms of scheduling noise, never a stall.
        assert got["latency_ms"]["voice_to_voice"] == pytest.approx(
            want["latency_ms"]["voice_to_voice"], abs=60
        )
    c = counts(result.run_dir)
    assert c["sent"] >= 1 and c["dropped"] >= 3 and c["pending"] == 0  # turns 1-3 had nowhere to go
    warnings = [r for r in caplog.records if r.name == "vlt.telemetry" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "lost the connection" in warnings[0].getMessage()
    assert wall < 30


def test_credentials_required_by_the_broker(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broker = make_broker(tmp_path / "broker", passwords={"ann": "s3cret"})
    try:
        url = parse_broker_url(broker.url(user="ann:s3cret"))
        with Listener(broker, username="ann", password="s3cret") as heard, Telemetry(url) as telemetry:
            good = replay(telemetry, tmp_path / "good")
        assert len(heard.json("/turns")) == 3
        assert counts(good.run_dir)["dropped"] == 0
        caplog.set_level(logging.WARNING, "vlt.telemetry")
        with Telemetry(parse_broker_url(broker.url())) as telemetry:
            refused = replay(telemetry, tmp_path / "refused")
        assert [r["status"] for r in refused.records] == ["ok"] * 3  # the run never noticed
        c = counts(refused.run_dir)
        assert (c["sent"], c["dropped"] >= 3) == (0, True)
        (warning,) = [r.getMessage() for r in caplog.records if r.name == "vlt.telemetry"]
        assert "refused the credentials" in warning and "user:password@" in warning

        async def subscribe_without_credentials(clock: clocks.Clock) -> None:
            async with subscription(parse_broker_url(broker.url())):
                pass

        with pytest.raises(ConnectError, match="refused the credentials"):
            clocks.run(subscribe_without_credentials)
    finally:
        broker.kill()


# paho-mqtt (under aiomqtt) leaves the socket of a failed TLS handshake for the garbage
# collector (the untrusted case below); that ResourceWarning is the library's, not ours.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_tls_with_a_self_signed_certificate(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broker = make_broker(tmp_path / "broker", tls=True)
    ca = broker.folder / "ca.crt"
    try:
        with Telemetry(parse_broker_url(broker.url(), TlsOptions(ca_file=ca))) as telemetry:
            trusted = replay(telemetry, tmp_path / "trusted")
        assert counts(trusted.run_dir)["sent"] >= 5 and counts(trusted.run_dir)["dropped"] == 0
        assert counts(trusted.run_dir)["broker"].startswith("mqtts://")

        async def read_retained(clock: clocks.Clock) -> dict[str, Any]:
            async with subscription(parse_broker_url(broker.url(), TlsOptions(ca_file=ca))) as messages:
                async for m in messages:
                    if m.type == "summary" and m.data["kind"] == "replay":
                        return m.data
            raise AssertionError("no summary")

        assert clocks.run(read_retained)["turns"] == 3
        # Not trusting the test's CA: the certificate is refused, and the run goes on.
        caplog.set_level(logging.WARNING, "vlt.telemetry")
        with Telemetry(parse_broker_url(broker.url(), TlsOptions())) as telemetry:
            untrusted = replay(telemetry, tmp_path / "untrusted")
        assert counts(untrusted.run_dir)["sent"] == 0 and len(untrusted.records) == 3
        assert "certificate verify failed" in caplog.records[0].getMessage()
        # --mqtt-insecure: encrypted, without checking whose certificate it is.
        with Telemetry(parse_broker_url(broker.url(), TlsOptions(insecure=True))) as telemetry:
            insecure = replay(telemetry, tmp_path / "insecure")
        assert counts(insecure.run_dir)["dropped"] == 0
    finally:
        broker.kill()
