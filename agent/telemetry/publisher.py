"""Publishing telemetry without ever getting in the pipeline's way.

The pipeline's side of a publish is a dictionary built, JSON-encoded and
appended to a bounded in-memory queue — no I/O, no awaiting, never an
exception. The MQTT client runs on its own thread with its own real-time event
loop, for two reasons: a slow or dead broker then costs the audio loop nothing
(no socket writes, no reconnect attempts on it), and a virtual-time replay's
loop, which jumps its clock whenever it is idle, never drives the MQTT
client's keepalives, timeouts and backoff.

Each session (a client run, an agent connection) has its own MQTT connection,
because its ``status`` topic's ``offline`` is that connection's last will. A
broker that is down, slow or refusing the credentials yields one warning per
process, then reconnect attempts with backoff (0.5 s doubling to 30 s); while
it is away, marks and turns wait in the queue (up to ``queue_size``) and the
rest are dropped and counted. Retained topics (manifest, status, summary) are
kept as their latest value and sent again on every (re)connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import os
import platform
import threading
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from agent.clock import Deadline, utc_now
from agent.metrics.records import TelemetryCounts, TurnRecord
from agent.telemetry.broker import BrokerUrl
from agent.telemetry.schema import (
    QOS,
    Channel,
    encode,
    manifest_payload,
    mark_payload,
    status_payload,
    summary_payload,
    topic,
    turn_payload,
)

if TYPE_CHECKING:
    import aiomqtt

__all__ = ["DEFAULT_QUEUE_SIZE", "SessionTelemetry", "Telemetry", "TelemetryCounts"]

log = logging.getLogger("vlt.telemetry")

#: Messages a session holds while the broker is slow or away (~10 s of a busy session's marks).
DEFAULT_QUEUE_SIZE = 2000
#: Woken by a first message, the sender waits this long to take the rest of its burst
#: (a turn's marks come in bursts) at once: fewer wake-ups competing with the audio path.
COALESCE_S = 0.01
#: How long closing a session waits for queued messages to reach a connected broker.
FLUSH_TIMEOUT_S = 2.0
_BACKOFF_S = (0.5, 30.0)
#: MQTT CONNACK codes that mean "your credentials" (v3.1.1: 4, 5; v5: 134, 135).
_AUTH_CODES = frozenset({4, 5, 134, 135})
_process_sessions = itertools.count(1)


class Telemetry:
    """Telemetry of one process: the MQTT thread and its sessions.

    ``with Telemetry(broker) as t: ... t.session("replay")``; closing ends every
    session still open (status ``offline``) and stops the thread.
    """

    def __init__(self, broker: BrokerUrl, *, host: str | None = None, queue_size: int = DEFAULT_QUEUE_SIZE):
        self.broker = broker
        self.host = host or platform.node() or "localhost"
        self.queue_size = queue_size
        #: Part of every session name, so two processes on one host never share a topic.
        self.process_id = os.getpid()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vlt-telemetry", daemon=True)
        self._thread.start()
        self._sessions: list[SessionTelemetry] = []
        self._warned = False
        self._lock = threading.Lock()

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def session(self, kind: Literal["replay", "demo", "agent"], name: str | None = None) -> SessionTelemetry:
        """A new session's publisher; ``name`` defaults to ``<kind>-<pid>-<n>``, unique on this host."""
        name = name or f"{kind}-{self.process_id}-{next(_process_sessions)}"
        session = SessionTelemetry(self, kind, name)
        with self._lock:
            self._sessions.append(session)
        return session

    def totals(self) -> tuple[int, int]:
        """(sent, dropped) over every session of the process."""
        with self._lock:
            return sum(s.sent for s in self._sessions), sum(s.dropped for s in self._sessions)

    def close(self, timeout_s: float = FLUSH_TIMEOUT_S + 1.0) -> None:
        """End the sessions still open and stop the thread (waits at most about ``timeout_s``)."""
        with self._lock:
            open_sessions = [s for s in self._sessions if not s.closed]
        futures = [s.close_soon("process exit") for s in open_sessions]
        concurrent.futures.wait(futures, timeout=timeout_s)
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self.run(self._shutdown()).result(timeout=1.0)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=1.0)
        if not self._thread.is_alive():
            self._loop.close()

    async def _shutdown(self) -> None:
        """Cancel what is still running (a session that outlived the flush deadline)."""
        here = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not here]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- used by the sessions --------------------------------------------------------

    def run(self, coro: Any) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def call_soon(self, callback: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the process is ending
            self._loop.call_soon_threadsafe(callback)

    def warn_once(self, message: str) -> None:
        """The process's one warning about the broker; later ones go to the debug log."""
        with self._lock:
            first, self._warned = not self._warned, True
        if first:
            log.warning("%s", message)
        else:
            log.debug("%s", message)


class SessionTelemetry:
    """One session's messages: publish from the pipeline (non-blocking), counts for the manifest."""

    def __init__(self, telemetry: Telemetry, kind: Literal["replay", "demo", "agent"], name: str) -> None:
        self._t = telemetry
        self.kind = kind
        self.name = name
        self.host = telemetry.host
        self.base = topic(telemetry.broker.prefix, self.host, name, "marks").rpartition("/")[0]
        self.sent = 0
        # Dropped on the pipeline's side (queue full) and on the thread's (lost, flushed too
        # late): two counters, so neither thread's += can lose the other's.
        self._dropped_here = 0
        self._dropped_there = 0
        self.closed = False
        self._queue: deque[tuple[str, bytes, int]] = deque()
        #: Retained topics: the latest payload of each, and whether it is yet to be sent.
        self._retained: dict[str, bytes] = {}
        self._dirty: set[str] = set()
        self._records: list[TurnRecord] = []
        self._seq = 0
        self._idle = False
        self._wake: asyncio.Event | None = None
        self._closing: asyncio.Event | None = None
        self._close_reason = ""
        self._done = telemetry.run(self._run())

    # -- the pipeline's side: cheap, synchronous, never raises --------------------------

    def mark(self, turn: int, name: str, t_ns: int) -> None:
        """A mark as it is stamped (QoS 0)."""
        self._seq += 1
        self._publish("marks", mark_payload(self.host, self.name, turn, name, t_ns, self._seq))

    def turn(self, record: TurnRecord) -> None:
        """A finished turn (QoS 1), and the session's summary after it (retained)."""
        utc = utc_now().isoformat()
        self._records.append(record)
        self._publish("turns", turn_payload(self.host, self.name, record, utc))
        self._publish(
            "summary", summary_payload(self.host, self.name, self.kind, self._records, "online", utc)
        )

    def manifest(self, manifest: Mapping[str, Any]) -> None:
        """The session's manifest as it stands (retained)."""
        self._publish("manifest", manifest_payload(self.host, self.name, self.kind, manifest, _utc()))

    @property
    def dropped(self) -> int:
        return self._dropped_here + self._dropped_there

    def counts(self) -> TelemetryCounts:
        return {
            "broker": self._t.broker.display,
            "topic": self.base,
            "sent": self.sent,
            "dropped": self.dropped,
            "pending": len(self._queue),
        }

    def _publish(self, channel: Channel, payload: Mapping[str, Any]) -> None:
        try:
            data = encode(payload)
        except Exception:  # a value JSON cannot hold: a bug, but never the pipeline's problem
            log.debug("telemetry: cannot encode a %s payload", channel, exc_info=True)
            self._dropped_here += 1
            return
        name = f"{self.base}/{channel}"
        if self.closed:
            self._dropped_here += 1
            return
        if channel in ("manifest", "status", "summary"):
            self._retained[name] = data
            self._dirty.add(name)
        elif len(self._queue) >= self._t.queue_size:
            self._dropped_here += 1
            return
        else:
            self._queue.append((name, data, QOS[channel]))
        if self._idle and self._wake is not None:
            self._idle = False
            self._t.call_soon(self._wake.set)

    # -- ending ----------------------------------------------------------------------

    def close_soon(self, reason: str = "session ended") -> concurrent.futures.Future[None]:
        """Publish ``offline``, send what is queued (up to FLUSH_TIMEOUT_S while
        connected; nothing more while the broker is away) and disconnect."""
        if not self.closed:
            self._publish(
                "summary", summary_payload(self.host, self.name, self.kind, self._records, "offline", _utc())
            )
            self.closed = True
            self._close_reason = reason
            self._t.call_soon(self._begin_close)
        return self._done

    async def aclose(self, reason: str = "session ended") -> TelemetryCounts:
        """:meth:`close_soon`, awaited from any event loop (virtual time included:
        the flush deadline is kept on the telemetry thread's real clock)."""
        with contextlib.suppress(Exception):
            await asyncio.wrap_future(self.close_soon(reason))
        return self.counts()

    def _begin_close(self) -> None:
        if self._closing is not None:
            self._closing.set()
        if self._wake is not None:
            self._wake.set()

    # -- the telemetry thread's side ---------------------------------------------------

    async def _run(self) -> None:
        import aiomqtt

        self._wake, self._closing = asyncio.Event(), asyncio.Event()
        if self.closed:
            self._closing.set()
        broker = self._t.broker
        status = f"{self.base}/status"
        will = aiomqtt.Will(
            status, encode(status_payload(self.host, self.name, "offline", None, "connection lost")), 1, True
        )
        backoff = _BACKOFF_S[0]
        failed = False
        while True:
            if failed and self._closing.is_set():  # no broker and nothing more to wait for
                self._drop_all()
                return
            connected = False
            try:
                async with aiomqtt.Client(
                    broker.host,
                    broker.port,
                    username=broker.username,
                    password=broker.password,
                    identifier=f"vlt-{self.host}-{self.name}"[:64],
                    will=will,
                    timeout=5.0,
                    keepalive=30,
                    tls_context=broker.tls.context() if broker.tls else None,
                    tls_insecure=broker.tls.insecure if broker.tls else None,
                ) as client:
                    if failed:
                        log.info("telemetry: reconnected to %s", broker.display)
                    failed, backoff, connected = False, _BACKOFF_S[0], True
                    await self._send_all(client, status)
                    return
            except aiomqtt.MqttError as exc:
                failed = True
                self._t.warn_once(_broker_problem(broker, exc, self._t.queue_size, connected))
            except Exception as exc:  # TLS files, DNS: still never the pipeline's problem
                failed = True
                self._t.warn_once(f"telemetry: {broker.display}: {exc}; telemetry is off for this run")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await self._closing.wait()
            backoff = min(backoff * 2, _BACKOFF_S[1])

    async def _send_all(self, client: aiomqtt.Client, status: str) -> None:
        import aiomqtt

        assert self._wake is not None and self._closing is not None
        online = encode(status_payload(self.host, self.name, "online", _utc()))
        self._retained[status] = online
        self._dirty.update(self._retained.keys())  # a new connection: the broker may have lost them
        deadline: Deadline | None = None
        while True:
            if self._closing.is_set() and deadline is None:
                deadline = Deadline(FLUSH_TIMEOUT_S)
                offline = status_payload(self.host, self.name, "offline", _utc(), self._close_reason)
                self._retained[status] = encode(offline)
                self._dirty.add(status)
            while self._dirty or self._queue:
                if deadline is not None and deadline.expired():
                    self._drop_all()
                    return
                # Order: manifest and summary, then marks and turns, then the status, so
                # a reader that sees "offline" has had everything before it.
                first = next((n for n in list(self._dirty) if n != status), None)
                if first is None and not self._queue:
                    first = status
                if first is not None:
                    self._dirty.discard(first)
                    name, data, qos, retain = first, self._retained[first], 1, True
                else:
                    name, data, qos = self._queue[0]
                    retain = False
                try:
                    await client.publish(name, data, qos=qos, retain=retain, timeout=5.0)
                except aiomqtt.MqttError:
                    if retain:
                        self._dirty.add(name)
                    elif qos == 0:  # a mark in flight is lost; a turn waits for the next connection
                        self._queue.popleft()
                        self._dropped_there += 1
                    raise
                if not retain:
                    self._queue.popleft()
                self.sent += 1
            if deadline is not None:
                return
            self._idle = True
            if self._dirty or self._queue or self._closing.is_set():
                self._idle = False
                continue
            await self._wake.wait()
            self._wake.clear()
            self._idle = False
            if not self._closing.is_set():
                await asyncio.sleep(COALESCE_S)

    def _drop_all(self) -> None:
        self._dropped_there += len(self._queue) + len(self._dirty)
        self._queue.clear()
        self._dirty.clear()


def _utc() -> str:
    return utc_now().isoformat()


def _broker_problem(broker: BrokerUrl, exc: Exception, queue_size: int, was_connected: bool) -> str:
    if was_connected:
        what = f"lost the connection to MQTT broker {broker.display} ({exc})"
    else:
        # Connecting: the code is the broker's CONNACK reason (a publish error's is paho's own).
        rc = getattr(exc, "rc", None)
        code = getattr(rc, "value", rc)
        hint = ""
        if code in _AUTH_CODES:
            hint = " (the broker refused the credentials: give user:password@ in the --mqtt URL)"
        what = f"cannot connect to MQTT broker {broker.display}: {exc}{hint}"
    return (
        f"telemetry: {what}; the run goes on, "
        f"retrying with backoff; up to {queue_size} messages per session wait, the rest are dropped "
        "and counted in the manifest"
    )
