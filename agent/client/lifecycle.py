"""One client run's lifecycle, shared by the replay and live clients.

``async with client_run(...) as run`` connects (hellos exchanged) and opens
the run folder; the client then builds its session on ``run`` and hands it to
:meth:`ClientRun.begin`, which writes the manifest's header and starts
receiving. The client syncs the clock, fixes the origin and spawns its tasks
through ``run``. However the block ends — done, the agent gone, an error,
Ctrl-C — the run's tasks are cancelled, the connection closed, and
summary.json, manifest.json and recording.wav written; every finished turn is
already in turns.jsonl (the client appends each as it ends).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from agent.audio import PCM
from agent.client.connection import sync_clock
from agent.client.dispatcher import MessageDispatcher
from agent.client.recorder import StereoRecorder
from agent.client.targets import AgentLink, open_target
from agent.clock import Clock, utc_now
from agent.errors import ConnectError
from agent.metrics.clocksync import OffsetEstimate
from agent.metrics.records import Manifest, ManifestDetails, ManifestExtra, Summary, TurnRecord
from agent.metrics.results import RunWriter, environment, summarize
from agent.wire.protocol import Bye, Hello, Message, Ping, Pong, encode

if TYPE_CHECKING:
    from agent.telemetry.publisher import SessionTelemetry, Telemetry

__all__ = ["ClientRun", "RunClient", "client_run"]

T = TypeVar("T")


class RunClient(Protocol):
    """What a run needs from its client (the replay or the live session)."""

    #: Left: what the client sent; right: the agent's audio.
    recorder: StereoRecorder

    def on_audio(self, pcm: PCM, now: int) -> None:
        """A frame of agent audio arrived at ``now``."""
        ...

    def stop(self) -> None:
        """The run's tasks are cancelled: stop whatever else still feeds the
        session (a sound device), before the connection closes."""
        ...

    def final_records(self) -> list[TurnRecord]:
        """The connection is closed: record what is still open; every turn record."""
        ...

    def conclude(self, summary: Summary, manifest: Manifest, finished_utc: str) -> None:
        """Add the client's closing figures to the summary and manifest; the client
        places ``finished_utc`` (its manifest's field order is its own)."""
        ...


class ClientRun:
    """A connected session and its run folder, from the hellos to the last file."""

    def __init__(
        self,
        url: str,
        ws: AgentLink,
        hello: Hello,
        clock: Clock,
        writer: RunWriter,
        started_ns: int,
        telemetry: Telemetry | None = None,
    ) -> None:
        assert hello.sample_rate is not None and hello.frame_ms is not None  # checked by open_session
        self.url = url
        self.ws = ws
        self.hello = hello
        self.clock = clock
        self.writer = writer
        self.sample_rate: int = hello.sample_rate
        self.frame_ms: int = hello.frame_ms
        self.started_ns = started_ns
        self._manifest: Manifest | None = None
        #: The server clock's offset, measured when the session started.
        self.offset: OffsetEstimate | None = None
        #: The run's time zero on the client clock (turns.jsonl marks count from it).
        self.origin_ns = 0
        self._summary: Summary | None = None
        self.dispatcher = MessageDispatcher()
        self.dispatcher.on(Pong, self._on_pong)
        self.dispatcher.on(Bye, self._on_bye)
        self._client: RunClient | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._pongs: asyncio.Queue[tuple[Pong, int]] = asyncio.Queue()
        self._closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._telemetry = telemetry
        #: With --mqtt: the run's publisher (manifest, each turn as it is on disk).
        self.telemetry: SessionTelemetry | None = None

    # -- starting ----------------------------------------------------------------

    def begin(
        self,
        client: RunClient,
        kind: Literal["replay", "demo"],
        details: ManifestDetails,
        manifest_extra: ManifestExtra | None = None,
    ) -> None:
        """Write the manifest's header and start receiving into ``client``;
        ``details`` (the scenario, the options) follow the audio format."""
        self._client = client
        manifest: Manifest = {
            "kind": kind,
            "state": "running",
            "started_utc": utc_now().isoformat(),
            "url": self.url,
            "agent": {
                "software": self.hello.software,
                "session": self.hello.session,
                "pipeline": self.hello.pipeline,
            },
            "audio": {"sample_rate": self.sample_rate, "frame_ms": self.frame_ms},
            **details,
            "clock": {"virtual": self.clock.virtual},
            "environment": environment(),
            # mypy's extra checks want the keys added at the end (finished_utc, ...) in
            # some ** item; they come later, from conclude(), so none has them yet.
            **(manifest_extra or ManifestExtra()),  # type: ignore[typeddict-item]
        }
        self._manifest = manifest
        if self._telemetry is not None:
            self.telemetry = self._telemetry.session(kind)
            self.writer.on_turn = self.telemetry.turn
        self._describe_target()
        # On disk from the start, so a folder whose process was killed outright says "running".
        self.write_manifest()
        self.spawn(self._receive(client))

    @property
    def manifest(self) -> Manifest:
        """manifest.json as it stands; the client adds to it (from :meth:`begin` on)."""
        if self._manifest is None:
            raise RuntimeError("the manifest starts when the client begins")
        return self._manifest

    @property
    def summary(self) -> Summary:
        """summary.json, once the run has ended."""
        if self._summary is None:
            raise RuntimeError("the summary is written when the run ends")
        return self._summary

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` until the run ends (it is cancelled then)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.append(task)
        return task

    async def sync_clock(self, rounds: int, *, at: Literal["start", "end"]) -> OffsetEstimate | None:
        """Estimate the server clock's offset (recorded in the manifest as
        ``offset_<at>``); the one at the start places the server's marks. None: a
        black-box agent has no clock to ask (and no marks to place)."""
        if not self.ws.answers_pings:
            return None
        offset = await self.unless_closed(sync_clock(self.ping, self.clock, rounds))
        if at == "start":
            self.manifest["clock"]["offset_start"] = offset.as_dict()
            self.offset = offset
        else:
            self.manifest["clock"]["offset_end"] = offset.as_dict()
        return offset

    def fix_origin(self) -> None:
        """Time zero of the run is now."""
        self.origin_ns = self.clock.now_ns()
        self.manifest["clock"]["origin_ns"] = self.origin_ns - self.started_ns

    def _describe_target(self) -> None:
        if (target := self.ws.describe()) is not None:  # a black-box agent's settings
            self.manifest["target"] = target

    def write_manifest(self) -> None:
        self.writer.write_json("manifest.json", self.manifest)
        if self.telemetry is not None:
            self.telemetry.manifest(self.manifest)

    # -- the connection ----------------------------------------------------------

    async def _receive(self, client: RunClient) -> None:
        self._close(await self.ws.receive(self.clock, client.on_audio, self.dispatcher.dispatch))

    def _close(self, reason: str) -> None:
        if not self._closed.done():
            self._closed.set_result(reason)

    def _on_pong(self, message: Pong, now: int) -> None:
        self._pongs.put_nowait((message, now))

    def _on_bye(self, message: Bye, now: int) -> None:
        self._close(f"agent said bye: {message.reason}")

    async def send(self, message: Message) -> None:
        await self.ws.send(encode(message))

    async def ping(self, message: Ping) -> tuple[Pong, int]:
        await self.send(message)
        return await self._pongs.get()

    @property
    def closed_reason(self) -> str | None:
        """Why the agent ended the session; None while it has not."""
        return self._closed.result() if self._closed.done() else None

    async def wait_closed(self) -> str:
        return await asyncio.shield(self._closed)

    async def unless_closed(self, aw: Awaitable[T]) -> T:
        """Await ``aw`` unless the agent closes the connection first (:class:`ConnectError`)."""
        work: asyncio.Future[T] = asyncio.ensure_future(aw)
        closed: asyncio.Future[str] = asyncio.ensure_future(asyncio.shield(self._closed))
        either: list[asyncio.Future[Any]] = [work, closed]
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if work.done():
            return work.result()
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        raise ConnectError(self._closed.result())

    # -- the end, however it comes -------------------------------------------------

    async def end(self, *, cut_off: bool = False) -> None:
        """Cancel the tasks, close, summarize, and write summary, manifest and recording;
        ``cut_off``: an exception (Ctrl-C, SIGTERM, an error) ended the run."""
        for task in self._tasks:
            task.cancel()
        client = self._client
        if client is not None:
            client.stop()
        with contextlib.suppress(Exception):
            await self.ws.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if client is None:  # the client never began: nothing measured, nothing to write
            self.writer.close()
            return
        summary = self._summary = summarize(client.final_records())
        client.conclude(summary, self.manifest, utc_now().isoformat())
        # Both clients say in the summary whether the run reached its end.
        complete = not cut_off and summary.get("completed", True)
        self.manifest["state"] = "complete" if complete else "interrupted"
        self._describe_target()
        self.writer.write_json("summary.json", summary)
        if self.telemetry is not None:
            self.telemetry.manifest(self.manifest)
            # What became of the telemetry: the local manifest is the one that says.
            self.manifest["telemetry"] = await self.telemetry.aclose()
            self.writer.write_json("manifest.json", self.manifest)
        else:
            self.write_manifest()
        client.recorder.write(self.writer.dir / "recording.wav")
        self.writer.close()


@contextlib.asynccontextmanager
async def client_run(
    url: str,
    clock: Clock,
    run_dir: Path,
    *,
    sample_rate: int | None = None,
    frame_ms: int | None = None,
    telemetry: Telemetry | None = None,
) -> AsyncIterator[ClientRun]:
    """Connect to the agent at ``url`` (None: the agent's audio format) and
    write the run into ``run_dir``, however the block ends; with ``telemetry``,
    publish the run as it goes (docs/telemetry.md)."""
    started = clock.now_ns()
    ws, hello = await open_target(url, clock, sample_rate, frame_ms)
    try:
        writer = RunWriter(run_dir)
    except BaseException:
        await ws.close()
        raise
    run = ClientRun(url, ws, hello, clock, writer, started, telemetry)
    try:
        yield run
    except BaseException:
        await run.end(cut_off=True)
        raise
    await run.end()
