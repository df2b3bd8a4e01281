"""The plain PCM websocket target: an agent that takes and gives raw audio.

Named by URL (docs/black-box.md)::

    pcm+ws://host:port/path#rate=16000&frame_ms=20&start={"event":"start"}&reply_end_ms=1500

The part before ``#`` (with ``pcm+`` removed) is the websocket vlt connects to;
the fragment, which never leaves vlt, holds its settings:

- ``rate`` (Hz, default 16000) and ``frame_ms`` (default 20): the audio both
  ways, 16-bit little-endian mono, one binary frame per ``frame_ms`` upstream;
- ``start``: a JSON text message sent once after connecting (``@FILE`` reads it
  from a file), for agents that wait for a start/config message;
- ``reply_end_ms`` (default 1500): silence after a reply's last sound that
  ends the reply (agent/client/targets/heard_replies.py).

``pipecat+ws://`` (``pipecat+wss://``) is the same target speaking Pipecat's
websocket transport with its ``ProtobufFrameSerializer``: each frame is a
protobuf ``Frame``, audio in ``AudioRawFrame`` (agent/client/targets/pipecat_frames.py);
the agent's audio at another rate is resampled to ``rate``.

The agent's text frames (and, for Pipecat, its non-audio frames) are ignored
(counted in the manifest). What the target
cannot tell — marks, transcripts, reply text, token counts — stays absent from
the turn records; voice-to-voice and barge-in stop come from the audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from agent.audio import PCM, bytes_to_pcm, resample, to_mono
from agent.client.connection import dial
from agent.client.targets.heard_replies import AudioOut, HeardReplies, Out, ReplyEnd
from agent.client.targets.pipecat_frames import FrameError, decode_audio, encode_audio
from agent.clock import Clock
from agent.errors import ConfigError, ProtocolError, UnreachableError
from agent.wire.protocol import Hello, ResponseDone, Script, decode

__all__ = ["PCM_SCHEMES", "PcmWsLink", "PcmWsTarget", "open_pcm_ws", "parse_pcm_ws_url"]

PCM_SCHEMES = ("pcm+ws", "pcm+wss", "pipecat+ws", "pipecat+wss")
_SETTINGS = ("rate", "frame_ms", "start", "reply_end_ms")


@dataclass(frozen=True, slots=True)
class PcmWsTarget:
    """A plain PCM websocket agent and how to talk to it."""

    url: str
    """The websocket itself (``ws://``/``wss://``)."""
    sample_rate: int = 16000
    frame_ms: int = 20
    start_message: str | None = None
    reply_end_ms: float = 1500.0
    #: ``pcm-ws``: bare PCM frames; ``pipecat-ws``: Pipecat's protobuf frames.
    kind: str = "pcm-ws"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "url": self.url,
            "sample_rate": self.sample_rate,
            "frame_ms": self.frame_ms,
            "start_message": self.start_message,
            "reply_end_ms": self.reply_end_ms,
        }


def parse_pcm_ws_url(url: str) -> PcmWsTarget:
    """A ``pcm+ws://…#settings`` URL → the target; :class:`ConfigError` names a bad setting."""
    parts = urlsplit(url)
    if parts.scheme not in PCM_SCHEMES:
        raise ConfigError(f"{url}: not a black-box target (expected pcm+ws:// or pipecat+ws://)")
    prefix, _, scheme = parts.scheme.partition("+")
    ws_url = urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
    settings = dict(parse_qsl(parts.fragment, keep_blank_values=True))
    unknown = sorted(set(settings) - set(_SETTINGS))
    if unknown:
        raise ConfigError(f"{url}: unknown setting {unknown[0]!r} after '#' (known: {', '.join(_SETTINGS)})")
    rate = _number(url, settings, "rate", 16000, int, 8000, 192000)
    frame_ms = _number(url, settings, "frame_ms", 20, int, 5, 200)
    if rate * frame_ms % 1000:
        raise ConfigError(f"{url}: frame_ms={frame_ms} is not a whole number of samples at {rate} Hz")
    reply_end = _number(url, settings, "reply_end_ms", 1500.0, float, 100.0, 60000.0)
    start = settings.get("start")
    if start is not None and start.startswith("@"):
        path = Path(start[1:])
        try:
            start = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{url}: start message file {path} cannot be read ({exc})") from None
    if start is not None:
        try:
            json.loads(start)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{url}: the start message is not JSON ({exc.msg}, column {exc.colno})"
            ) from None
    kind = "pipecat-ws" if prefix == "pipecat" else "pcm-ws"
    return PcmWsTarget(ws_url, rate, frame_ms, start, reply_end, kind)


def _number(
    url: str, settings: dict[str, str], name: str, default: Any, kind: type, low: float, high: float
) -> Any:
    text = settings.get(name)
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{url}: {name}={text!r} is not a number") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(f"{url}: {name}={text} is outside {low:g}..{high:g}")
    return value


class PcmWsLink:
    """A session with a plain PCM agent, translated into the protocol's terms for the client."""

    answers_pings = False

    def __init__(self, target: PcmWsTarget, ws: ClientConnection) -> None:
        self.target = target
        self.ws = ws
        self.replies = HeardReplies(target.sample_rate, target.reply_end_ms)
        self.text_frames = 0
        self.other_frames = 0  # a Pipecat agent's frames that carry no audio
        self._pipecat = target.kind == "pipecat-ws"
        self._outs: list[Out] = []
        self._wake = asyncio.Event()

    async def send(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            await self.ws.send(encode_audio(data, self.target.sample_rate) if self._pipecat else data)
            self._post(self.replies.sent(len(data) // 2))
            return
        # The client's protocol messages stay here; a script says where the turn's speech ends.
        message = decode(data)
        if isinstance(message, Script):
            self.replies.script(message.turn, message.speech_start_sample, message.speech_end_sample)

    def _post(self, outs: list[Out]) -> None:
        if outs:
            self._outs += outs
            self._wake.set()

    async def receive(
        self, clock: Clock, on_audio: Callable[[PCM, int], None], on_message: Callable[[Any, int], None]
    ) -> str:
        frames: asyncio.Queue[tuple[bytes | str, int] | None] = asyncio.Queue()
        reader = asyncio.get_running_loop().create_task(self._read(clock, frames))
        try:
            while True:
                deadline = self.replies.deadline_ns()
                timeout = None if deadline is None else max(0, deadline - clock.now_ns()) / 1e9
                got = await _next(frames, self._wake, timeout)
                if got is _CLOSED:
                    break
                if isinstance(got, tuple):
                    data, arrived = got
                    pcm = self._audio(data)
                    if pcm is not None:
                        self._outs += self.replies.frame(pcm, arrived)
                self._outs += self.replies.tick(clock.now_ns())
                outs, self._outs = self._outs, []
                for out in outs:
                    if isinstance(out, AudioOut):
                        on_audio(out.pcm, out.arrived_ns)
                    else:
                        on_message(_done(out), clock.now_ns())
        except ProtocolError as exc:
            return f"agent broke the protocol: {exc}"
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        code = self.ws.close_code
        reason = f"code {code} {self.ws.close_reason or ''}".strip() if code else "connection lost"
        return f"agent closed the connection ({reason})"

    def _audio(self, data: bytes | str) -> PCM | None:
        """The agent's audio in a frame, at the target's rate; None (counted) for anything else."""
        if isinstance(data, str):
            self.text_frames += 1
            return None
        if not self._pipecat:
            return bytes_to_pcm(data)
        try:
            audio = decode_audio(data)
        except FrameError as exc:
            raise ProtocolError(
                "bad_frame", f"agent at {self.target.url} sent a non-protobuf frame: {exc}"
            ) from None
        if audio is None:
            self.other_frames += 1
            return None
        raw, rate, channels = audio
        pcm = bytes_to_pcm(raw)
        if channels == 2:
            pcm = to_mono(pcm.reshape(-1, 2))
        return (
            resample(pcm, rate, self.target.sample_rate) if rate and rate != self.target.sample_rate else pcm
        )

    async def _read(self, clock: Clock, frames: asyncio.Queue[tuple[bytes | str, int] | None]) -> None:
        try:
            async for data in self.ws:
                frames.put_nowait((data, clock.now_ns()))
        except ConnectionClosed:
            pass
        frames.put_nowait(None)

    async def close(self) -> None:
        await self.ws.close()

    def describe(self) -> dict[str, Any]:
        ignored = {"text_frames_ignored": self.text_frames}
        if self._pipecat:
            ignored["other_frames_ignored"] = self.other_frames
        return {**self.target.describe(), **ignored}


_CLOSED = object()


async def _next(
    frames: asyncio.Queue[tuple[bytes | str, int] | None], wake: asyncio.Event, wait_s: float | None
) -> object:
    """The next frame; None when woken by the caller's side or after ``wait_s``; _CLOSED at the end."""
    if not frames.empty():
        got = frames.get_nowait()
        return _CLOSED if got is None else got
    wake.clear()
    get = asyncio.ensure_future(frames.get())
    woken = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait((get, woken), timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        woken.cancel()
        if not get.done():
            get.cancel()
    if get.done() and not get.cancelled():
        got = get.result()
        return _CLOSED if got is None else got
    return None


def _done(end: ReplyEnd) -> ResponseDone:
    return ResponseDone(turn=end.turn, status=end.status, reason=end.reason)


async def open_pcm_ws(url: str, clock: Clock) -> tuple[PcmWsLink, Hello]:
    """Connect to the plain PCM agent ``url`` names and send its start message; the
    link and a hello standing for the one such an agent does not send."""
    target = parse_pcm_ws_url(url)
    ws = await dial(target.url, url, "pcm+ws://host:port")
    if target.start_message is not None:
        try:
            await ws.send(target.start_message)
        except ConnectionClosed as exc:
            raise UnreachableError(f"agent at {target.url} closed the connection: {exc}") from None
    hello = Hello(
        protocol=0,
        sample_rate=target.sample_rate,
        frame_ms=target.frame_ms,
        role="agent",
        software=f"{target.kind} (black box)",
    )
    return PcmWsLink(target, ws), hello
