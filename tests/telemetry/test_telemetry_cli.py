"""`vlt watch`, `vlt record`, `--wait-start` and `--mqtt` errors, as subprocesses, with a real Mosquitto."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from agent.metrics.records import Manifest, Summary, TurnRecord
from tests.cli.test_cli import VLT, _assert_one_line_error, vlt
from tests.conftest import ROOT, OutputLines
from tests.metrics.test_records import problems
from tests.telemetry.mosquitto import Broker, make_broker


def popen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*VLT, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def all_output(lines: OutputLines, proc: subprocess.Popen[str], timeout: float) -> str:
    """Everything ``proc`` printed, once it has exited (``lines`` has been reading its stdout)."""
    proc.wait(timeout)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            lines.seen.append(lines.lines.get(timeout=0.2))
        except queue.Empty:
            break
    return "".join(lines.seen)


def replay_virtual(url: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return vlt("replay", "scenarios/quick-3-turn.yaml", "--clock", "virtual", "--mqtt", url,
               "--out", str(out), "--quiet", *extra)  # fmt: skip


@pytest.mark.timeout(120)
def test_watch_json_and_record_a_fleet_into_one_run_folder(mosquitto: Broker, tmp_path: Path) -> None:
    url = mosquitto.url("fleet")
    folder = tmp_path / "recorded"
    recorder = popen("record", "--mqtt", url, "-o", str(folder), "--sessions", "2")
    watcher = popen("watch", "--mqtt", url, "--json", "--duration", "60")
    try:
        recorded = OutputLines(recorder)
        recorded.wait_for("recording", timeout=30)
        time.sleep(0.5)  # the watcher subscribes too (it prints nothing until a message)
        # Two load generators: separate processes, hence separate sessions.
        runs = [replay_virtual(url, tmp_path / name) for name in ("a", "b")]
        assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
        out = all_output(recorded, recorder, timeout=30)
        assert recorder.returncode == 0, out
    finally:
        recorder.kill()
        recorder.communicate(timeout=10)
        time.sleep(0.5)
        watcher.send_signal(signal.SIGINT)
        watched, _ = watcher.communicate(timeout=30)
    assert f"results: {folder}" in out
    # watch --json: one JSON object a line, every session's turns among them.
    lines = [json.loads(line) for line in watched.splitlines()]
    turns = [m["payload"] for m in lines if m["topic"].endswith("/turns")]
    assert len(turns) == 6 and len({t["session"] for t in turns}) == 2
    assert all(m["topic"].startswith("fleet/") for m in lines)
    # record: the six turns, each with its source, in an ordinary run folder.
    records: list[TurnRecord] = [json.loads(x) for x in (folder / "turns.jsonl").read_text().splitlines()]
    assert len(records) == 6
    assert {(r["source"]["session"], r["turn"]) for r in records} == {
        (t["session"], t["record"]["turn"]) for t in turns
    }
    for record in records:
        assert problems(record, TurnRecord) == []
    manifest: Manifest = json.loads((folder / "manifest.json").read_text())
    assert problems(manifest, Manifest) == []
    assert manifest["kind"] == "record" and manifest["completed"] is True
    assert manifest["scenario"]["name"] == "quick-3-turn" and len(manifest["sources"]) == 2
    summary: Summary = json.loads((folder / "summary.json").read_text())
    assert problems(summary, Summary) == [] and summary["turns"] == 6
    # ... that report, baseline save and regress --run accept.
    report = vlt("report", str(folder), "--format", "md")
    assert report.returncode == 0 and "voice_to_voice" in report.stdout, report.stderr
    baseline = tmp_path / "baseline.json"
    saved = vlt("baseline", "save", str(folder), "-o", str(baseline))
    assert saved.returncode == 0, saved.stderr
    regress = vlt("regress", "--baseline", str(baseline), "--run", str(folder))
    assert regress.returncode == 0, regress.stdout + regress.stderr


@pytest.mark.timeout(90)
def test_wait_start_begins_when_watch_says_start(mosquitto: Broker, tmp_path: Path) -> None:
    url = mosquitto.url()
    out = tmp_path / "run"
    waiting = popen("replay", "scenarios/quick-3-turn.yaml", "--clock", "virtual", "--mqtt", url,
                    "--wait-start", "--out", str(out), "--quiet")  # fmt: skip
    try:
        said = OutputLines(waiting)
        said.wait_for("waiting for the start signal", timeout=30)
        time.sleep(0.5)
        assert waiting.poll() is None and not out.exists()  # still waiting
        started = vlt("watch", "--mqtt", url, "--start", "--run", "r1", "--json", "--duration", "0.5")
        assert started.returncode == 0, started.stderr
        stdout = all_output(said, waiting, timeout=60)
    finally:
        waiting.kill()
        waiting.communicate(timeout=10)
    assert waiting.returncode == 0, stdout
    assert "start signal from" in stdout
    assert len((out / "turns.jsonl").read_text().splitlines()) == 3


def test_mqtt_errors_are_one_line(tmp_path: Path) -> None:
    broker = make_broker(tmp_path / "broker", passwords={"ann": "s3cret"})
    try:
        _assert_one_line_error(
            vlt("watch", "--mqtt", broker.url(), "--json", "--duration", "1"),
            broker.url(), "refused the credentials", "user:password@",
        )  # fmt: skip
    finally:
        broker.kill()
    _assert_one_line_error(
        vlt("replay", "scenarios/quick-3-turn.yaml", "--clock", "virtual", "--mqtt", "http://x"),
        "--mqtt", "expected mqtt://",
    )  # fmt: skip
    _assert_one_line_error(
        vlt("replay", "scenarios/quick-3-turn.yaml", "--clock", "virtual", "--wait-start"),
        "--wait-start needs --mqtt",
    )
    _assert_one_line_error(
        vlt("record", "--mqtt", "mqtts://127.0.0.1:1", "--mqtt-ca", str(tmp_path / "nope.pem"), "-o", "x"),
        "MQTT TLS files",
    )


def test_serve_agent_publishes_marks(mosquitto: Broker, tmp_path: Path, free_port: int) -> None:
    server = popen(
        "serve", "agent", "--pipeline", "emulated", "--port", str(free_port), "--mqtt", mosquitto.url()
    )
    recorder = popen("watch", "--mqtt", mosquitto.url(), "--json", "--duration", "60")
    try:
        OutputLines(server).wait_for("agent (emulated) listening", timeout=30)
        scenario = tmp_path / "s.yaml"
        scenario.write_text(
            'turns:\n  - user: "Hello?"\n    reply: "Hi, how can I help?"\n    pause_ms: 100\n'
        )
        result = vlt(
            "replay", str(scenario), "--url", f"ws://127.0.0.1:{free_port}", "--out", str(tmp_path / "r")
        )
        assert result.returncode == 0, result.stderr
        time.sleep(1.0)
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)
        recorder.send_signal(signal.SIGINT)
        watched, _ = recorder.communicate(timeout=30)
    messages: list[dict[str, Any]] = [json.loads(line) for line in watched.splitlines()]
    names = [m["payload"]["name"] for m in messages if m["payload"]["type"] == "mark"]
    assert "llm.first_token" in names and "server.first_audio_sent" in names
    statuses = [m["payload"]["state"] for m in messages if m["payload"]["type"] == "status"]
    assert statuses[-1] == "offline"  # the session ended when the replay said bye
