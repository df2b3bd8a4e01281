"""An LLM backend that echoes the API key into every field it can send: the key
never reaches turns.jsonl, summary.json, manifest.json, stdout or the logs.

The backend is a real HTTP server (aiohttp, in a thread of this test process):
the project's own LLM emulator never echoes keys. The agent is ``vlt replay``
in a subprocess, with the key in the environment variable its pipeline names
and ``--debug`` on, so every log line a turn produces is on stderr.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.cli.test_cli import VLT
from tests.conftest import ROOT

#: Not shaped like any provider's key, so only the registered secret can mask it.
KEY = "vlt-fake-Key-0123456789-abcdefXYZ"
ENV = "VLT_TEST_ECHO_KEY"


def _sse(*events: str) -> bytes:
    return "".join(f"{e}\n\n" for e in events).encode()


def _chunk(**fields: object) -> str:
    return "data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", **fields})


async def _chat(request: web.Request) -> web.StreamResponse:
    """Each request gets the next way of echoing the key back (see MODES)."""
    key = request.headers.get("Authorization", "").removeprefix("Bearer ")
    mode = MODES[len(SEEN) % len(MODES)]
    SEEN.append(mode)
    await request.read()
    if mode == "stream":
        usage = {"prompt_tokens": 5, "completion_tokens": 4, "queue_time": key, "echo": f"Bearer {key}"}
        body = _sse(
            _chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}}]),
            _chunk(choices=[{"index": 0, "delta": {"content": f"Your key is {key}. "}}]),
            _chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]),
            _chunk(
                choices=[],
                usage=usage,
                x_groq={"id": key, "usage": {"completion_tokens": 4, "queue_time": key}},
                time_info={"queue_time": key, key: 1.0},
                timings={"prompt_ms": 1.0, "note": key},
                x_vlt={"profile": key},
            ),
            "data: [DONE]",
        )
        return web.Response(body=body, content_type="text/event-stream")
    if mode == "json-error":
        error = {
            "message": f"Incorrect API key provided: {key}",
            "type": "invalid_request_error",
            "code": key,
        }
        return web.json_response({"error": error}, status=401)
    if mode == "long-text-error":
        # The key starts 290 characters in: a 300-character snippet cut first would keep its prefix.
        return web.Response(text="oops " * 58 + key + " and more", status=500)
    if mode == "mid-stream-error":
        body = _sse(
            _chunk(choices=[{"index": 0, "delta": {"content": "Starting "}}]),
            'event: error\ndata: {"error": {"message": "bad key ' + key + '"}}',
        )
        return web.Response(body=body, content_type="text/event-stream")
    if mode == "malformed":
        body = _sse(_chunk(choices=[{"index": 0, "delta": {"content": "Hi "}}]), "data: {not json " + key)
        return web.Response(body=body, content_type="text/event-stream")
    assert mode == "redirect"
    raise web.HTTPFound(f"http://127.0.0.1:1/v1?key={key}")


SEEN: list[str] = []
MODES = ("stream", "json-error", "long-text-error", "mid-stream-error", "malformed", "redirect")


@pytest.fixture
def echo_backend() -> Iterator[str]:
    """The base URL of an echoing backend running in a thread."""
    loop = asyncio.new_event_loop()
    app = web.Application()
    SEEN.clear()
    app.router.add_post("/v1/chat/completions", _chat)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


@pytest.mark.timeout(120)
def test_a_key_echoed_in_every_field_never_reaches_disk_or_stdout(tmp_path: Path, echo_backend: str) -> None:
    pipeline = tmp_path / "echo.toml"
    pipeline.write_text(
        (ROOT / "pipelines" / "emulated.toml")
        .read_text()
        .replace(
            'kind = "emulated"\nttft_ms = 200\ntokens_per_s = 275\njitter = 0.0',
            f'kind = "openai"\nbase_url = "{echo_backend}"\nmodel = "echo"\napi_key_env = "{ENV}"',
        )
    )
    scenario = tmp_path / "echo.yaml"
    turns = "".join(f"  - user: turn {i} please\n    pause_ms: 100\n" for i in range(len(MODES)))
    scenario.write_text(f"defaults:\n  reply_timeout_ms: 8000\nturns:\n{turns}")
    out = tmp_path / "run"
    result = subprocess.run(
        [*VLT, "--debug", "replay", str(scenario), "--pipeline", str(pipeline), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=ROOT,
        env={**os.environ, ENV: KEY},
        check=False,
    )
    records = [json.loads(line) for line in (out / "turns.jsonl").read_text().splitlines()]
    assert len(records) == len(MODES), result.stderr
    # The backend did echo it: the first turn's reply and timings carried it, the rest failed with it.
    assert records[0]["status"] == "ok" and "***" in records[0]["reply"], records[0]
    assert records[0]["llm"]["server_timing"]["source"] == "groq"
    assert all(r["status"] != "ok" for r in records[1:]), [r["reason"] for r in records]
    assert "Incorrect API key provided: ***" in records[1]["reason"]
    written = {name: (out / name).read_text() for name in ("turns.jsonl", "summary.json", "manifest.json")}
    for where, text in {**written, "stdout": result.stdout, "stderr (logs)": result.stderr}.items():
        assert KEY not in text, where
        assert KEY[:10] not in text, where  # no prefix of it either (redacted before truncating)
