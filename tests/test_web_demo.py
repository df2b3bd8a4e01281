"""``vlt demo --web``: the page's endpoints, turn-record validation, and the page in headless Chromium.

The end-to-end test runs ``vlt demo --web`` as a subprocess against a cheap
pipeline (energy VAD, emulated ASR/LLM/TTS) and points headless Chromium at the
page, with Chromium's fake microphone playing a WAV file (a speech-like
utterance between silences; Chromium loops it) and its fake audio output. The
page does all the measuring in the browser; the assertions read the run folder
the server wrote from what the page posted. It is skipped only where Debian's
``chromium`` is not installed.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from agent.audio import find_onset, speechlike, write_wav
from agent.cli import main as vlt
from agent.client.live import LiveOptions
from agent.clock import VirtualClock
from agent.results import read_turns
from agent.stages.interfaces import SessionContext
from agent.stages.vad_silero import EnergyVAD, EnergyVADConfig
from agent.timeline import LISTENER_HOPS, LISTENER_V2V_END, V2V_START, analyze
from agent.web_demo import (
    PAGE_VAD,
    REQUIRED_LATENCY,
    TurnRecordError,
    WebDemoServer,
    page_config,
    read_page,
    validate_turn,
)
from tests.conftest import LIVE_TEST_ENDPOINT_MS, OutputLines, live_test_pipeline

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
RATE = 16000
ENDPOINT_MS = LIVE_TEST_ENDPOINT_MS
# Fast speech keeps the reply (~2.7 s) inside the silence before the looped utterance returns.
PIPELINE = live_test_pipeline(words_per_minute=400)


# --------------------------------------------------------------------------- records


def _record(**changes: Any) -> dict[str, Any]:
    """A valid posted turn record whose latencies are what its marks give."""
    marks = {
        "user.speech_start": 1_000_000_000,
        "user.speech_end": 3_000_000_000,
        "vad.speech_start": 1_100_000_000,
        "vad.end_of_turn": 3_310_000_000,
        "asr.final": 3_460_000_000,
        "llm.request": 3_461_000_000,
        "llm.first_token": 3_661_000_000,
        "llm.first_phrase": 3_731_000_000,
        "tts.request": 3_731_500_000,
        "tts.first_audio": 3_821_500_000,
        "server.first_audio_sent": 3_822_000_000,
        "client.first_frame_received": 3_822_400_000,
        "client.first_audio_received": 3_824_700_000,
        LISTENER_V2V_END: 3_831_000_000,
        "server.response_done": 6_000_000_000,
    }
    timeline = analyze(marks, LISTENER_HOPS, LISTENER_V2V_END)
    latency: dict[str, Any] = timeline.as_ms()
    latency["voice_to_voice_arrival"] = (3_824_700_000 - 3_000_000_000) / 1e6
    latency["llm_tpot"] = None
    latency["barge_in_stop"] = None
    record: dict[str, Any] = {
        "turn": 0,
        "status": "ok",
        "reason": "",
        "transcript": "a table for two",
        "reply": "Sure.",
        "latency_ms": latency,
        "missing_marks": [],
        "marks_ns": marks,
        "asr": {"partials_received": 0},
        "session": "s1",
    }
    record.update(changes)
    return record


def test_a_valid_record_is_returned_in_the_live_clients_shape() -> None:
    record = validate_turn(_record())
    assert list(record)[:9] == [
        "turn",
        "status",
        "reason",
        "user_text",
        "transcript",
        "reply",
        "latency_ms",
        "missing_marks",
        "marks_ns",
    ]
    assert record["passed"] is True and record["user_text"] == "" and record["wer"] is None
    assert record["latency_ms"]["voice_to_voice"] == pytest.approx(831.0)
    assert list(record["marks_ns"].values()) == sorted(record["marks_ns"].values())


def _without(record: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != key}


def _latency(**changes: Any) -> dict[str, Any]:
    return {**_record()["latency_ms"], **changes}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "a turn record is a JSON object"),
        (_without(_record(), "marks_ns"), "missing field(s): marks_ns"),
        (_record(colour="blue"), "unknown field(s) colour"),
        (_record(turn=-1), "turn: expected an integer >= 0"),
        (_record(turn=True), "turn: expected an integer >= 0"),
        (_record(status="great"), "status: expected one of ok, interrupted"),
        (_record(transcript=3), "transcript: expected a string or null"),
        (_record(marks_ns={"asr.final": 1.5}), "marks_ns.asr.final: expected integer nanoseconds"),
        (_record(missing_marks="none"), "missing_marks: expected a list of mark names"),
        (_record(latency_ms=_without(_latency(), "playout")), "latency_ms.playout: missing"),
        (_record(latency_ms=_latency(llm_ttft="fast")), "latency_ms.llm_ttft: expected milliseconds or null"),
        (_record(latency_ms=_latency(voice_to_voice=700.0)), "latency_ms.voice_to_voice is 700.0 but"),
        (_record(latency_ms=_latency(voice_to_voice_arrival=None)), "latency_ms.voice_to_voice_arrival is"),
        (_record(missing_marks=["asr.final"]), "missing_marks ['asr.final'] but the hops lack []"),
        (_record(barge_in=[]), "barge_in: expected an object or null"),
    ],
)
def test_malformed_records_are_rejected_with_a_message(data: Any, message: str) -> None:
    with pytest.raises(TurnRecordError) as err:
        validate_turn(data)
    assert message in str(err.value)


def test_an_incomplete_turn_must_name_its_missing_marks() -> None:
    record = _record()
    for name in ("client.first_frame_received", "client.first_audio_received", LISTENER_V2V_END):
        del record["marks_ns"][name]
    record["latency_ms"] = {**analyze(record["marks_ns"], LISTENER_HOPS, LISTENER_V2V_END).as_ms()}
    record["latency_ms"]["voice_to_voice_arrival"] = None
    record.update(status="interrupted", reason="barge-in")
    with pytest.raises(TurnRecordError, match="missing_marks"):
        validate_turn(record)
    record["missing_marks"] = ["client.first_frame_received", "client.first_audio_received", LISTENER_V2V_END]
    assert validate_turn(record)["passed"] is True


# --------------------------------------------------------------------------- the server


def test_page_is_self_contained_and_config_names_the_timeline_hops() -> None:
    page = read_page()
    # No CDN, no network: nothing is fetched from anywhere but the serving origin.
    for needle in ("http://", "https://", "<link", "@import", "src="):
        assert needle not in page, needle
    config = page_config(LiveOptions(barge_in=True, turns=3), "ws://127.0.0.1:9")
    assert [h["name"] for h in config["hops"]] == [h.name for h in LISTENER_HOPS]
    assert config["v2v_end"] == LISTENER_V2V_END
    assert config["protocol"] == 1 and config["echo_cancellation"] is True
    assert set(REQUIRED_LATENCY) >= {h.name for h in LISTENER_HOPS}


async def test_server_records_turns_rejects_bad_ones_and_ends_at_turns(tmp_path: Path) -> None:
    manifest: dict[str, Any] = {"kind": "demo-web"}
    server = WebDemoServer(tmp_path / "run", LiveOptions(turns=2), manifest, port=0)
    async with server, aiohttp.ClientSession() as http:
        base = server.url
        async with http.get(base + "config") as r:
            assert r.status == 503  # the agent is not up yet
        server.agent_url = "ws://127.0.0.1:9"
        async with http.get(base) as r:
            assert r.status == 200 and "vlt-playout" in await r.text()
        async with http.get(base + "config") as r:
            assert (await r.json())["agent_url"] == "ws://127.0.0.1:9"
        async with http.post(base + "session", json={"clock": {}}) as r:
            assert r.status == 400 and "'session' string" in (await r.json())["error"]
        async with http.post(base + "session", json={"session": "s1", "clock": {"offset_ns": 5}}) as r:
            assert r.status == 200
        async with http.post(base + "turns", data="{nope", headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400 and "body is not JSON" in (await r.json())["error"]
        async with http.post(base + "turns", data=json.dumps(_record())) as r:
            assert r.status == 400 and "Content-Type application/json" in (await r.json())["error"]
        async with http.post(base + "turns", json=_record(status="great")) as r:
            assert r.status == 400 and "status" in (await r.json())["error"]
        async with http.post(base + "turns", json=_record()) as r:
            assert r.status == 200 and await r.json() == {
                "recorded": 1,
                "finished": False,
                "run_dir": str(tmp_path / "run"),
            }
        async with http.post(base + "turns", json=_record()) as r:
            assert r.status == 409 and "already recorded" in (await r.json())["error"]
        async with http.post(base + "turns", json=_record(turn=1)) as r:
            assert (await r.json())["finished"] is True
        async with http.get(base + "wait") as r:
            assert await r.json() == {"finished": True, "recorded": 2}
        summary = server.write_end()
    assert [r["turn"] for r in read_turns(tmp_path / "run")] == [0, 1]
    assert summary["turns"] == 2 and summary["completed"] is True
    written = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert written["sessions"][0]["clock"] == {"offset_ns": 5}


def test_a_busy_port_is_one_line_and_leaves_no_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        out = str(tmp_path / "r")
        code = vlt(["demo", "--web", "--url", "ws://127.0.0.1:9", "--port", str(port), "--out", out])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"vlt: error: cannot listen on 127.0.0.1:{port}: port is busy (choose another with --port)"
    assert not (tmp_path / "r").exists()
    assert vlt(["demo", "--web", "--url", "ws://127.0.0.1:9", "--port", "70000"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "vlt: error: --port must be 0-65535 (0 picks a free port), got 70000"
    )


# --------------------------------------------------------------------------- the page's measuring code

_HARNESS = """<!doctype html><meta charset="utf-8"><pre id="out">pending</pre>
<script>
window.onerror = (message) => {{ document.getElementById("out").textContent = "error: " + message; }};
// The worklet module outside an AudioWorkletGlobalScope: only its Resampler is used.
globalThis.AudioWorkletProcessor = class {{}};
globalThis.registerProcessor = () => {{}};
</script>
<script>{worklet}</script>
<script>{measure}</script>
<script>
"use strict";
const input = {data};
const pcm = Int16Array.from(input.pcm);
const out = {{ onsets: [], gate: {{}}, resampled: [] }};
for (const [start, length, rate] of input.onsets) {{
  out.onsets.push(findOnset(pcm.subarray(start, start + length), rate, -40));
}}
for (const chunk of [320, 441]) {{
  const gate = new EnergyGate(16000, input.vad);
  const events = [];
  for (let i = 0; i < pcm.length; i += chunk) {{
    for (const e of gate.process(pcm.subarray(i, i + chunk), i)) events.push([e.kind, e.sample]);
  }}
  out.gate[chunk] = events;
}}
// A sine through the resampler in 128-sample blocks, against the ideal sine at the
// positions the page assumes (output n is input position n * step): SNR and level.
for (const [inRate, outRate, freq] of input.sines) {{
  const rs = new Resampler(inRate, outRate);
  const x = new Float32Array(inRate);
  for (let i = 0; i < x.length; i++) x[i] = 0.5 * Math.sin((2 * Math.PI * freq * i) / inRate);
  const y = new Float32Array(outRate + 128);
  let n = 0;
  for (let i = 0; i < x.length; i += 128) {{
    rs.push(x.subarray(i, i + 128));
    const k = rs.available();
    rs.pull(y, n, k);
    n += k;
  }}
  let err = 0, ref = 0, power = 0;
  for (let k = 500; k < n - 500; k++) {{
    const ideal = 0.5 * Math.sin((2 * Math.PI * freq * k * rs.step) / inRate);
    err += (y[k] - ideal) ** 2;
    ref += ideal ** 2;
    power += y[k] ** 2;
  }}
  out.resampled.push({{ n, snr_db: 10 * Math.log10(ref / err), gain_db: 10 * Math.log10(power / ref) }});
}}
out.timeline = input.marks.map((m) => analyzeMarks(m, input.hops, input.v2v_start, input.v2v_end));
document.getElementById("out").textContent = JSON.stringify(out);
</script>
"""


def _script(page: str, script_id: str) -> str:
    match = re.search(rf'<script[^>]*id="{script_id}">(.*?)</script>', page, re.S)
    assert match is not None, script_id
    return match.group(1)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (CI installs it)")
def test_page_measures_like_the_python_client(tmp_path: Path) -> None:
    """The page's onset finder, voice gate, timeline and resampler, run in Chromium,
    agree with agent.audio.find_onset, the energy VAD, agent.timeline.analyze and
    an ideal resampler."""
    silence = np.zeros(RATE, dtype=np.int16)
    noise = np.random.default_rng(7).normal(0, 40, RATE // 3).astype(np.int16)  # about -58 dBFS
    pcm = np.concatenate(
        (
            noise,
            speechlike("Hello there, how are you today?", RATE),
            silence,
            speechlike("Fine.", RATE),
            silence,
        )
    )
    onsets = [
        (0, 4000, RATE),
        (4000, 4000, RATE),
        (5000, 4000, RATE),
        (5200, 300, 44100),
        (5300, 4000, 44100),
    ]
    marks = _record()["marks_ns"]
    partial = {k: v for k, v in marks.items() if not k.startswith("client.")}
    data = {
        "pcm": pcm.tolist(),
        "onsets": onsets,
        "vad": PAGE_VAD,
        "sines": [[44100, 16000, 1000], [48000, 16000, 3000], [16000, 44100, 1000], [16000, 48000, 3000]],
        "marks": [marks, partial],
        "hops": [{"name": h.name, "start": h.start, "end": h.end} for h in LISTENER_HOPS],
        "v2v_start": V2V_START,
        "v2v_end": LISTENER_V2V_END,
    }
    page = read_page()
    harness = tmp_path / "harness.html"
    harness.write_text(
        _HARNESS.format(
            worklet=_script(page, "worklet-source"),
            measure=_script(page, "vlt-measure"),
            data=json.dumps(data),
        ),
        encoding="utf-8",
    )
    assert CHROMIUM is not None
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
    ]
    dom = subprocess.run(
        [CHROMIUM, *flags, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", harness.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    match = re.search(r'<pre id="out">(.*?)</pre>', dom, re.S)
    assert match is not None, dom[-2000:]
    text = html.unescape(match.group(1))
    assert text.startswith("{"), text
    out = json.loads(text)

    want = [find_onset(pcm[a : a + n], rate, -40.0) for a, n, rate in onsets]
    assert out["onsets"] == [-1 if w is None else w for w in want]
    assert want[0] is None and want[2] is not None  # the noise is below the threshold, speech is not

    config = EnergyVADConfig(
        threshold_dbfs=PAGE_VAD["threshold_dbfs"],
        min_speech_ms=PAGE_VAD["min_speech_ms"],
        min_silence_ms=PAGE_VAD["min_silence_ms"],
        endpoint_ms=PAGE_VAD["hangover_ms"],
    )
    vad = EnergyVAD(config, SessionContext(VirtualClock(), RATE, 320))
    events: list[list[Any]] = []
    for i in range(0, len(pcm), 320):
        for event in vad.process(pcm[i : i + 320], i):
            start = event.kind == "speech_start"
            events.append(
                [event.kind, vad.endpointer.segments[-1][0] if start else vad.endpointer.speech_end]
            )
    assert [kind for kind, _ in events] == ["speech_start", "end_of_turn"] * 2
    expected = [["speech_start" if kind == "speech_start" else "speech_end", at] for kind, at in events]
    assert out["gate"]["320"] == expected
    assert out["gate"]["441"] == expected  # however the audio is chunked

    for sine in out["resampled"]:
        assert sine["snr_db"] > 60, out["resampled"]  # the right samples at the right times
        assert abs(sine["gain_db"]) < 0.1, out["resampled"]

    for js, m in zip(out["timeline"], data["marks"], strict=True):
        timeline = analyze(m, LISTENER_HOPS, LISTENER_V2V_END)
        assert js["hops"] == dict(timeline.hops_ns)
        assert (js["v2v"], js["unaccounted"]) == (timeline.voice_to_voice_ns, timeline.unaccounted_ns)
        assert js["missing"] == list(timeline.missing)


# --------------------------------------------------------------------------- the browser


def _caller_wav(path: Path) -> Path:
    """1 s of silence, ~2.9 s of speech-like audio, 4 s of silence; Chromium loops it."""
    speech = speechlike("I would like a table for two tonight", RATE)
    silence = np.zeros(RATE, dtype=np.int16)
    write_wav(path, np.concatenate((silence, speech, np.tile(silence, 4))), RATE)
    return path


def _chromium(url: str, wav: Path, profile: Path, log: Path) -> subprocess.Popen[bytes]:
    assert CHROMIUM is not None
    flags = [
        "--headless=new",
        "--no-sandbox",  # tests run as root in CI containers
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # Keep the page's timers and audio at full speed, as in a visible tab.
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        f"--user-data-dir={profile}",
        # Grant the microphone without a prompt; the "microphone" plays the WAV (looped).
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        # Let the AudioContext start without a click on the page.
        "--autoplay-policy=no-user-gesture-required",
        # The page's console.info lines, for the failure message.
        "--enable-logging=stderr",
        "--v=0",
        url,
    ]
    with log.open("wb") as err:
        return subprocess.Popen([CHROMIUM, *flags], stdout=subprocess.DEVNULL, stderr=err)


def _console(log: Path) -> str:
    if not log.exists():
        return ""
    lines = log.read_text(errors="replace").splitlines()
    return "\n".join(line for line in lines if "CONSOLE" in line)[-3000:]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (CI installs it)")
@pytest.mark.timeout(120)
def test_headless_chromium_talks_to_the_agent_and_the_turns_are_recorded(tmp_path: Path) -> None:
    pipeline = tmp_path / "pipeline.toml"
    pipeline.write_text(PIPELINE, encoding="utf-8")
    wav = _caller_wav(tmp_path / "caller.wav")
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "agent.cli", "demo", "--web", "--pipeline", str(pipeline)]
    command += ["--port", "0", "--turns", "2", "--out", str(run_dir)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    browser: subprocess.Popen[bytes] | None = None
    log = tmp_path / "chromium.log"
    try:
        line = OutputLines(proc).wait_for("open http://127.0.0.1:", timeout=30)
        url = line.split()[1]
        browser = _chromium(url, wav, tmp_path / "profile", log)
        # Two turns: the looped file speaks every ~8 s; Chromium needs a few seconds to start.
        proc.wait(timeout=60)
    except (AssertionError, subprocess.TimeoutExpired) as exc:
        raise AssertionError(f"{exc}\nchromium console:\n{_console(log)}") from None
    finally:
        if browser is not None:
            browser.terminate()
            try:
                browser.wait(timeout=10)
            except subprocess.TimeoutExpired:
                browser.kill()
                browser.wait()
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    assert proc.returncode == 0, err

    records = read_turns(run_dir)
    assert [r["status"] for r in records] == ["ok", "ok"], (records, _console(log))
    for record in records:
        assert record["missing_marks"] == [], record
        lat = record["latency_ms"]
        # Every hop measured, from the page's gate to the playout worklet, with the
        # server's marks moved onto the page's clock.
        assert all(lat[h.name] is not None for h in LISTENER_HOPS), lat
        # The agent's endpoint is in voice-to-voice; an emulated pipeline answers
        # within a second or so after it.
        assert ENDPOINT_MS < lat["voice_to_voice"] < 5000, lat
        # The page's gate and the agent's VAD find the same speech end (same level,
        # same 20 ms windows), so endpointing is the agent's endpoint plus transport.
        assert ENDPOINT_MS - 30 < lat["endpointing"] < ENDPOINT_MS + 150, lat
        # The agent's emulated hops come through the clock offset unchanged.
        assert lat["llm_ttft"] == pytest.approx(200, abs=25), lat
        # Playout: the jitter buffer (40 ms, filled at once by the agent's 60 ms
        # lead) plus one render burst; never before the audio arrived.
        assert -2 < lat["playout"] < 150, lat
        assert lat["voice_to_voice_arrival"] is not None
        assert record["reply"] and record["session"] == "s1"

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["turns"] == 2 and summary["completed"] is True
    assert summary["metrics_ms"]["voice_to_voice"]["n"] == 2
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["kind"] == "demo-web"
    (session,) = manifest["sessions"]
    assert session["audio"] == {"sample_rate": RATE, "frame_ms": 20}
    # One host, one monotonic clock under both (performance.now() counts from the
    # page's start, so the offset is large, but its uncertainty is a loopback round trip).
    assert 0 <= session["clock"]["uncertainty_ns"] < 20_000_000
