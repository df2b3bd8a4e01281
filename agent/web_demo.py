"""``vlt demo --web``: the live demo in a browser tab instead of the terminal.

A small aiohttp server on ``127.0.0.1`` serves one self-contained page
(``agent/data/web/demo.html``). The page does everything a live client does —
microphone capture, downsampling, its own voice-activity gate, the websocket
protocol to the agent, playout with a jitter buffer, the latency HUD — and
talks to the agent *directly* (the agent is in-process here, built from the
pipeline as ``vlt demo`` does, or a running one at ``--url``). This server only
hands the page its settings (``GET /config``) and keeps the run folder: the
page ``POST``s each finished turn to ``/turns``, which is validated and
appended (fsynced) with :class:`~agent.results.RunWriter`; ``summary.json`` and
``manifest.json`` (kind ``demo-web``) are written when the demo ends.

Why the browser measures and the server only records: the listener's clock is
the page's (``performance.now()``), and only the page knows when it captured a
sample and when it handed agent audio to its output. The server does check
that every posted latency agrees with the posted marks (it recomputes them
with :func:`agent.timeline.analyze`), so a page bug cannot put numbers in a
run folder that its own marks contradict.

Only ``127.0.0.1`` is served: browsers grant the microphone to ``http://``
pages on the loopback address alone (a "secure context"), and the endpoints
have no authentication.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import logging
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from agent import __version__
from agent import clock as clocks
from agent.client.hud import STATS_WINDOW, turn_line
from agent.client.live import ONSET_THRESHOLD_DBFS, PASSING_STATUSES, LiveOptions, LiveResult
from agent.client.turn_record import listener_latency, marks_since
from agent.clock import NS_PER_S, utc_now
from agent.demo import agent_url
from agent.errors import ConfigError
from agent.pipeline import Pipeline
from agent.protocol import PROTOCOL_VERSION
from agent.results import RunWriter, environment, metric_values, new_run_dir, summarize
from agent.server.http_site import start_site
from agent.stats import describe
from agent.timeline import LISTENER_HOPS, LISTENER_V2V_END, V2V_START

__all__ = [
    "DEFAULT_PORT",
    "PAGE_VAD",
    "TURN_STATUSES",
    "TurnRecordError",
    "WebDemoServer",
    "WebDemoSettings",
    "page_config",
    "read_page",
    "run_web_demo",
    "validate_turn",
]

log = logging.getLogger("vlt.web_demo")

DEFAULT_PORT = 8780
HOST = "127.0.0.1"

#: The page's voice-activity gate (JavaScript, in demo.html), the same numbers as
#: the energy VAD of ``vlt demo --client-vad energy``: a 20 ms window is speech when
#: its RMS is at least ``threshold_dbfs``; a run of speech counts once it lasts
#: ``min_speech_ms`` (a cough or click does not), gaps shorter than
#: ``min_silence_ms`` are bridged, and speech has ended once ``hangover_ms`` of
#: silence followed it. The speech end *time* is the end of the last speech
#: window; the hangover only delays when the page knows it.
PAGE_VAD: dict[str, float] = {
    "threshold_dbfs": -40.0,
    "window_ms": 20.0,
    "min_speech_ms": 60.0,
    "min_silence_ms": 100.0,
    "hangover_ms": 520.0,
}

#: Statuses a live turn can end with (agent.client.live): the agent's three, plus the
#: client's ``no_response`` (reply timeout) and ``unfinished`` (the session ended first).
TURN_STATUSES: tuple[str, ...] = ("ok", "interrupted", "failed", "no_response", "unfinished")

#: ``latency_ms`` keys a posted record must carry (value: milliseconds or null).
REQUIRED_LATENCY: tuple[str, ...] = (
    *(h.name for h in LISTENER_HOPS),
    "unaccounted",
    "voice_to_voice",
    "voice_to_voice_arrival",
)
#: A posted latency may differ this much from the one its marks give (float rounding only).
_TOLERANCE_MS = 0.01
#: Largest body accepted; a turn record is a few kB.
MAX_BODY_BYTES = 256 * 1024
#: How long the page has to receive "finished" before the server goes away.
_GOODBYE_S = 0.5


class TurnRecordError(ValueError):
    """A posted turn record is malformed; the message says where (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class WebDemoSettings:
    pipeline: Pipeline | None
    url: str | None
    options: LiveOptions
    port: int
    run_dir: Path | None
    runs_root: Path


def read_page() -> str:
    """The page, from the package (``agent/data/web/demo.html``)."""
    return (importlib.resources.files("agent") / "data" / "web" / "demo.html").read_text(encoding="utf-8")


def page_config(options: LiveOptions, agent_url: str) -> dict[str, Any]:
    """What the page needs to run a session: where the agent is, and the demo's options.

    The hop list comes from :mod:`agent.timeline`, so the page computes exactly the
    hops the summary and reports know, under the same names.
    """
    return {
        "agent_url": agent_url,
        "protocol": PROTOCOL_VERSION,
        "software": f"vlt-web-demo/{__version__}",
        # null: the agent's pipeline picks the format (its [audio] section), as `vlt demo` does.
        "sample_rate": None,
        "frame_ms": None,
        "barge_in": options.barge_in,
        # Echo cancellation is only asked for with barge-in: half-duplex mutes the mic
        # while the agent is audible anyway, and the canceller adds delay and colours speech.
        "echo_cancellation": options.barge_in,
        "prebuffer_ms": options.prebuffer_ms,
        "echo_tail_ms": options.echo_tail_ms,
        "reply_timeout_ms": options.reply_timeout_ms,
        "clock_sync_rounds": options.clock_sync_rounds,
        "onset_threshold_dbfs": ONSET_THRESHOLD_DBFS,
        "vad": dict(PAGE_VAD),
        "hops": [{"name": h.name, "start": h.start, "end": h.end} for h in LISTENER_HOPS],
        "v2v_start": V2V_START,
        "v2v_end": LISTENER_V2V_END,
        "stats_window": STATS_WINDOW,
        "turns": options.turns,
        "duration_s": options.duration_s,
    }


# --------------------------------------------------------------------------- validation


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) and math.isfinite(value)


def _expect(ok: bool, field: str, what: str, value: Any) -> None:
    if not ok:
        shown = json.dumps(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise TurnRecordError(f"{field}: expected {what}, got {shown}")


#: Optional fields of a record and their check; missing ones get the live client's default.
_OPTIONAL: dict[str, tuple[Callable[[Any], bool], str, Any]] = {
    "user_text": (lambda v: isinstance(v, str), "a string", ""),
    "llm": (lambda v: isinstance(v, dict), "an object", {}),
    "asr": (lambda v: isinstance(v, dict), "an object", {}),
    "wer": (lambda v: v is None or _is_number(v), "a number or null", None),
    "agent_audio_ms": (lambda v: v is None or _is_number(v), "a number or null", None),
    "barge_in": (lambda v: v is None or isinstance(v, dict), "an object or null", None),
    "playout": (lambda v: isinstance(v, dict), "an object", {}),
    "expectations": (lambda v: isinstance(v, list), "a list", []),
    "passed": (lambda v: isinstance(v, bool), "true or false", None),
    "session": (lambda v: v is None or isinstance(v, str), "a string or null", None),
}
_REQUIRED = ("turn", "status", "reason", "transcript", "reply", "latency_ms", "missing_marks", "marks_ns")
_KEY_ORDER = (
    "turn",
    "status",
    "reason",
    "user_text",
    "transcript",
    "reply",
    "latency_ms",
    "missing_marks",
    "marks_ns",
    "llm",
    "asr",
    "wer",
    "agent_audio_ms",
    "barge_in",
    "playout",
    "expectations",
    "passed",
    "session",
)


def validate_turn(data: Any) -> dict[str, Any]:
    """A posted turn record, checked and in the live client's shape; raises :class:`TurnRecordError`.

    Beyond types, the hops, ``unaccounted``, ``voice_to_voice`` and
    ``voice_to_voice_arrival`` must be what the record's own ``marks_ns`` give, and
    ``missing_marks`` must name the marks the hops lack; ``passed`` is decided
    here from the status, as the live client does.
    """
    if not isinstance(data, dict):
        raise TurnRecordError(f"a turn record is a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise TurnRecordError(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(_KEY_ORDER)}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise TurnRecordError(f"missing field(s): {', '.join(missing)}")
    _expect(_is_int(data["turn"]) and data["turn"] >= 0, "turn", "an integer >= 0", data["turn"])
    _expect(data["status"] in TURN_STATUSES, "status", f"one of {', '.join(TURN_STATUSES)}", data["status"])
    _expect(isinstance(data["reason"], str), "reason", "a string", data["reason"])
    transcript = data["transcript"]
    _expect(transcript is None or isinstance(transcript, str), "transcript", "a string or null", transcript)
    _expect(isinstance(data["reply"], str), "reply", "a string", data["reply"])

    marks = data["marks_ns"]
    _expect(isinstance(marks, dict), "marks_ns", "an object of integer nanoseconds", marks)
    for name, t in marks.items():
        _expect(_is_int(t), f"marks_ns.{name}", "integer nanoseconds", t)
    names = data["missing_marks"]
    _expect(
        isinstance(names, list) and all(isinstance(n, str) for n in names),
        "missing_marks",
        "a list of mark names",
        names,
    )
    latency = data["latency_ms"]
    _expect(isinstance(latency, dict), "latency_ms", "an object of milliseconds", latency)
    for key in REQUIRED_LATENCY:
        if key not in latency:
            raise TurnRecordError(f"latency_ms.{key}: missing (null if it was not measured)")
    for key, value in latency.items():
        _expect(value is None or _is_number(value), f"latency_ms.{key}", "milliseconds or null", value)

    record: dict[str, Any] = {}
    for key, (check, what, default) in _OPTIONAL.items():
        value = data.get(key, default)
        if key in data:
            _expect(check(value), key, what, value)
        record[key] = value
    record.update({k: data[k] for k in _REQUIRED})

    _check_against_marks(marks, latency, names)
    record["passed"] = data["status"] in PASSING_STATUSES
    record["latency_ms"] = dict(latency)
    record["marks_ns"] = marks_since(marks, 0)
    return {k: record[k] for k in _KEY_ORDER}


def _check_against_marks(marks: Mapping[str, int], latency: Mapping[str, Any], names: list[str]) -> None:
    timeline, expected = listener_latency(marks)
    for key, want in expected.items():
        got = latency[key]
        if (want is None) != (got is None) or (
            want is not None and got is not None and abs(want - got) > _TOLERANCE_MS
        ):
            shown = "null" if want is None else f"{want:.3f}"
            raise TurnRecordError(f"latency_ms.{key} is {got} but marks_ns give {shown}")
    if sorted(names) != sorted(timeline.missing):
        raise TurnRecordError(f"missing_marks {names} but the hops lack {list(timeline.missing)} in marks_ns")


# --------------------------------------------------------------------------- the server


class WebDemoServer:
    """``async with WebDemoServer(...) as server: ... server.url``; serves the page and keeps the run.

    ``agent_url`` may be set after the server has started (the port is bound
    first, so a busy port is reported before any model loads); until then
    ``/config`` answers 503.
    """

    def __init__(
        self,
        run_dir: Path,
        options: LiveOptions,
        manifest: dict[str, Any],
        port: int = DEFAULT_PORT,
        *,
        on_turn: Callable[[dict[str, Any]], None] = lambda record: None,
    ) -> None:
        self.run_dir = run_dir
        #: Created once the port is bound, so a busy port leaves no empty run folder.
        self.writer: RunWriter | None = None
        self.options = options
        self.manifest = manifest
        self.host = HOST
        self.port = port
        self.on_turn = on_turn
        self.agent_url: str | None = None
        self.records: list[dict[str, Any]] = []
        #: Set when ``--turns`` is reached (or by :meth:`finish`): the demo ends.
        self.finished = asyncio.Event()
        self._seen: set[tuple[str | None, int]] = set()
        self._page = read_page()
        self._runner: web.AppRunner | None = None
        self.app = web.Application(client_max_size=MAX_BODY_BYTES)
        self.app.router.add_get("/", self._index)
        self.app.router.add_get("/config", self._config)
        self.app.router.add_post("/session", self._session)
        self.app.router.add_post("/turns", self._turns)
        self.app.router.add_get("/wait", self._wait)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    async def start(self) -> None:
        self._runner, self.port = await start_site(
            self.app,
            self.host,
            self.port,
            # Requests in flight at close (the page's /wait) are cut short, not waited for.
            shutdown_timeout=0.2,
            busy_hint="choose another with --port",
        )
        self.writer = RunWriter(self.run_dir)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def write_end(self) -> dict[str, Any]:
        """summary.json and the final manifest.json; returns the summary."""
        summary = summarize(self.records)
        # The replay client's figure for the same turns (agent audio played on arrival).
        summary["metrics_ms"]["voice_to_voice_arrival"] = describe(
            metric_values(self.records, "voice_to_voice_arrival")
        )
        summary["completed"] = self.finished.is_set()
        if self.writer is not None:
            self.manifest["finished_utc"] = utc_now().isoformat()
            self.writer.write_json("summary.json", summary)
            self.writer.write_json("manifest.json", self.manifest)
            self.writer.close()
        return summary

    async def __aenter__(self) -> WebDemoServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def finish(self) -> None:
        self.finished.set()

    # ---- handlers

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(
            text=self._page,
            content_type="text/html",
            headers={
                "Cache-Control": "no-store",
                # Cross-origin isolation gives performance.now() its fine (5 µs)
                # resolution instead of 100 µs; the page loads nothing from elsewhere.
                "Cross-Origin-Opener-Policy": "same-origin",
                "Cross-Origin-Embedder-Policy": "require-corp",
            },
        )

    async def _config(self, request: web.Request) -> web.Response:
        if self.agent_url is None:
            return _error(503, "the agent is still starting; reload in a moment")
        return web.json_response(
            page_config(self.options, self.agent_url), headers={"Cache-Control": "no-store"}
        )

    async def _session(self, request: web.Request) -> web.Response:
        """The page connected to the agent: what it learned goes into the manifest."""
        try:
            data = await _json_body(request)
        except TurnRecordError as exc:
            return _error(400, str(exc))
        if not isinstance(data, dict) or not isinstance(data.get("session", 0), str | None):
            return _error(400, "a session is a JSON object with a 'session' string (the agent's id)")
        assert self.writer is not None  # set by start(), before any request
        data["registered_utc"] = utc_now().isoformat()
        self.manifest.setdefault("sessions", []).append(data)
        self.writer.write_json("manifest.json", self.manifest)
        return web.json_response({"ok": True, "run_dir": str(self.run_dir)})

    async def _turns(self, request: web.Request) -> web.Response:
        try:
            record = validate_turn(await _json_body(request))
        except TurnRecordError as exc:
            log.warning("rejected a turn record: %s", exc)
            return _error(400, str(exc))
        key = (record["session"], record["turn"])
        if key in self._seen:
            return _error(409, f"turn {record['turn']} of session {record['session']} is already recorded")
        if self.finished.is_set():
            return _error(409, "the demo has ended; this turn was not recorded")
        assert self.writer is not None  # set by start(), before any request
        self._seen.add(key)
        self.records.append(record)
        self.writer.append_turn(record)
        self.on_turn(record)
        if self.options.turns is not None and len(self.records) >= self.options.turns:
            self.finish()
        return web.json_response(
            {"recorded": len(self.records), "finished": self.finished.is_set(), "run_dir": str(self.run_dir)}
        )

    async def _wait(self, request: web.Request) -> web.Response:
        """Answers when the demo ends, so the page can say bye to the agent and stop."""
        await self.finished.wait()
        return web.json_response({"finished": True, "recorded": len(self.records)})


async def _json_body(request: web.Request) -> Any:
    # Requiring the JSON content type makes a cross-site form post impossible
    # (it would need a CORS preflight, which this server never answers).
    if request.content_type != "application/json":
        raise TurnRecordError(f"expected Content-Type application/json, got {request.content_type}")
    try:
        return json.loads(await request.text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise TurnRecordError(f"body is not JSON: {exc}") from None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


# --------------------------------------------------------------------------- the command


def run_web_demo(settings: WebDemoSettings, out: TextIO = sys.stdout) -> LiveResult:
    """Serve the page until ``--turns``/``--duration`` are reached or Ctrl-C."""
    if not 0 <= settings.port <= 65535:
        raise ConfigError(f"--port must be 0-65535 (0 picks a free port), got {settings.port}")
    opts = settings.options
    target = settings.url or f"pipeline {settings.pipeline.name if settings.pipeline else ''} (in-process)"
    mode = "barge-in (use headphones)" if opts.barge_in else "half-duplex"
    manifest: dict[str, Any] = {
        "kind": "demo-web",
        "started_utc": utc_now().isoformat(),
        "url": settings.url,
        "options": {
            "barge_in": opts.barge_in,
            "prebuffer_ms": opts.prebuffer_ms,
            "echo_tail_ms": opts.echo_tail_ms,
            "client_vad": "energy (page)",
            "page_vad": dict(PAGE_VAD),
            "turns": opts.turns,
            "duration_s": opts.duration_s,
        },
        # Marks are on the page's clock: performance.now(), in integer nanoseconds.
        "clock": {"virtual": False, "client": "browser performance.now()"},
        "environment": environment(),
        **({"pipeline": settings.pipeline.as_dict()} if settings.pipeline is not None else {}),
    }
    run_dir = settings.run_dir or new_run_dir(settings.runs_root, "demo-web")
    server = WebDemoServer(
        run_dir, opts, manifest, settings.port, on_turn=lambda r: print(turn_line(r), file=out, flush=True)
    )

    async def main(clock: clocks.Clock) -> None:
        # The port first: a busy one is reported before the pipeline's models load.
        async with server, agent_url(settings.pipeline, settings.url, clock) as url:
            server.agent_url = manifest["url"] = url
            manifest["web"] = {"url": server.url, "port": server.port}
            assert server.writer is not None
            server.writer.write_json("manifest.json", manifest)
            until = f"; ends after {opts.turns} turn(s)" if opts.turns else ""
            print(
                f"open {server.url} in a browser (agent: {target}; {mode}{until}; Ctrl-C ends)",
                file=out,
                flush=True,
            )
            stop = asyncio.ensure_future(server.finished.wait())
            waits: list[asyncio.Future[Any]] = [stop]
            if opts.duration_s is not None:
                deadline = clock.now_ns() + round(opts.duration_s * NS_PER_S)
                waits.append(asyncio.ensure_future(clock.sleep_until(deadline)))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            server.finish()
            # Let the page's /wait answer go out, so it says bye to the agent itself.
            await clock.sleep_until(clock.now_ns() + round(_GOODBYE_S * NS_PER_S))

    try:
        clocks.run(main)
    finally:
        # However it ends (Ctrl-C included): the turns are on disk already, these sum them up.
        summary = server.write_end()
    return LiveResult(run_dir, server.records, summary, None, 0)
