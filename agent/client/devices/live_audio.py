"""Microphones and speakers for a live session: real devices, or clock-driven ones.

A live session (``agent.client.live``) needs two things from the audio side:

- a :class:`Microphone`: 20 ms frames at the session's rate, each with the time
  its last sample was received from the device;
- a :class:`Speaker`: a device that pulls blocks from the session's
  :class:`~agent.client.devices.playout_buffer.PlayoutBuffer` and reports, with the
  time of each pull, what it handed over.

:class:`DeviceMicrophone` / :class:`DeviceSpeaker` are PortAudio devices
(through ``agent.client.devices.sound_devices``, the only module that imports
sounddevice); the device callbacks run on PortAudio's thread and only copy and
timestamp — everything else happens on the event loop. A device that rejects
the session's rate is opened at its own rate and resampled here.

:class:`ClockMicrophone` / :class:`ClockSpeaker` are the same interfaces driven
by the session's clock instead of a sound card: they run in virtual time,
which is what the live session's own tests use to check its timing logic
deterministically.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import numpy as np

from agent.audio import PCM
from agent.client.devices.playout_buffer import PlayoutBuffer, Pulled
from agent.client.devices.stream_times import captured_end_ns, heard_start_ns
from agent.clock import NS_PER_S, Clock

__all__ = [
    "ClockMicrophone",
    "ClockSpeaker",
    "DeviceMicrophone",
    "DeviceSpeaker",
    "Framer",
    "Microphone",
    "OnPlayed",
    "Speaker",
]

log = logging.getLogger("vlt.live")

#: ``on_played(t_ns, pulled)``: the device took ``pulled`` at ``t_ns`` (called on the loop).
OnPlayed = Callable[[int, Pulled], None]


class Microphone(Protocol):
    #: The device path's latency as last observed (ADC → callback, ms); None: not reported.
    observed_latency_ms: float | None

    def frames(self) -> AsyncIterator[tuple[PCM, int]]:
        """Frames at the session rate, with the receive time of each frame's last sample."""
        ...

    def describe(self) -> dict[str, Any]: ...


class Speaker(Protocol):
    #: The rate of the samples the buffer holds (the device's rate).
    rate: int
    #: The device path's latency as last observed (callback → DAC, ms); None: not reported.
    observed_latency_ms: float | None

    def start(self, buffer: PlayoutBuffer, on_played: OnPlayed) -> None: ...

    def close(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...


class Framer:
    """Cuts device blocks (any size, maybe another rate) into session frames.

    Each frame is stamped with the time its last sample was received: the
    block's receive time, less the samples of the block that came after it.
    """

    def __init__(self, device_rate: int, session_rate: int, frame: int) -> None:
        self.device_rate = device_rate
        self.session_rate = session_rate
        self.frame = frame
        self._pending = np.zeros(0, dtype=np.int16)
        self._resampler: Any = None
        self._in = self._out = 0  # samples into / out of the resampler
        if device_rate != session_rate:
            import soxr

            self._resampler = soxr.ResampleStream(device_rate, session_rate, 1, dtype="int16")

    def push(self, block: PCM, t_ns: int) -> list[tuple[PCM, int]]:
        held = 0  # session samples still inside the resampler's filter: older than they look
        if self._resampler is not None:
            self._in += len(block)
            block = np.asarray(self._resampler.resample_chunk(block), dtype=np.int16)
            self._out += len(block)
            held = max(0, self._in * self.session_rate // self.device_rate - self._out)
        self._pending = np.concatenate((self._pending, block))
        out = []
        while len(self._pending) >= self.frame:
            frame, self._pending = self._pending[: self.frame], self._pending[self.frame :]
            after = len(self._pending) + held  # samples received after this frame's last one
            out.append((frame, t_ns - after * NS_PER_S // self.session_rate))
        return out


# --------------------------------------------------------------------------- devices


class DeviceMicrophone:
    """Captures a PortAudio input device (mono, 16-bit)."""

    def __init__(self, plan: Any, clock: Clock, session_rate: int, frame: int, frame_ms: int) -> None:
        self.plan = plan  # a sound_devices.StreamPlan
        self.clock = clock
        self.session_rate = session_rate
        self.frame = frame
        self.block = plan.rate * frame_ms // 1000
        self.latency_ms: float | None = None
        self.observed_latency_ms: float | None = None
        #: Blocks PortAudio reported as overflowed (audio lost before we saw it).
        self.overflows = 0

    async def frames(self) -> AsyncIterator[tuple[PCM, int]]:
        from agent.client.devices.sound_devices import open_stream, stream_latency_ms

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[PCM, int, bool]] = asyncio.Queue()
        clock = self.clock

        def callback(indata: Any, frames: int, time_info: Any, status: Any) -> None:
            # Stamped with the ADC time of its last sample when PortAudio says it.
            t, self.observed_latency_ms = captured_end_ns(clock.now_ns(), time_info, frames, rate)
            block = np.array(indata[:, 0], dtype=np.int16)
            with contextlib.suppress(RuntimeError):  # the loop closed while the stream stopped
                loop.call_soon_threadsafe(queue.put_nowait, (block, t, bool(status)))

        rate = self.plan.rate
        framer = Framer(self.plan.rate, self.session_rate, self.frame)
        stream = open_stream(self.plan, blocksize=self.block, callback=callback)
        try:
            stream.start()
            self.latency_ms = stream_latency_ms(stream)
            while True:
                block, t, overflowed = await queue.get()
                self.overflows += overflowed
                for item in framer.push(block, t):
                    yield item
        finally:
            with contextlib.suppress(Exception):
                stream.stop()
            with contextlib.suppress(Exception):
                stream.close()

    def describe(self) -> dict[str, Any]:
        return _describe(self.plan, self.block, self.latency_ms) | {"overflows": self.overflows}


class DeviceSpeaker:
    """Plays the playout buffer on a PortAudio output device (mono, 16-bit)."""

    def __init__(self, plan: Any, clock: Clock, frame_ms: int) -> None:
        self.plan = plan
        self.clock = clock
        self.rate: int = plan.rate
        self.block = plan.rate * frame_ms // 1000
        self.latency_ms: float | None = None
        self.observed_latency_ms: float | None = None
        self.underflows = 0
        self._stream: Any = None

    def start(self, buffer: PlayoutBuffer, on_played: OnPlayed) -> None:
        from agent.client.devices.sound_devices import open_stream, stream_latency_ms

        loop = asyncio.get_running_loop()
        clock = self.clock

        def callback(outdata: Any, frames: int, time_info: Any, status: Any) -> None:
            # What the block holds is heard at its DAC time when PortAudio says it.
            t, self.observed_latency_ms = heard_start_ns(clock.now_ns(), time_info)
            pulled = buffer.pull(frames)
            outdata[:, 0] = pulled.pcm
            if status:
                self.underflows += 1
            if pulled.events:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(on_played, t, pulled)

        self._stream = open_stream(self.plan, blocksize=self.block, callback=callback)
        self._stream.start()
        self.latency_ms = stream_latency_ms(self._stream)

    def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.stop()
            with contextlib.suppress(Exception):
                self._stream.close()
            self._stream = None

    def describe(self) -> dict[str, Any]:
        return _describe(self.plan, self.block, self.latency_ms) | {"underflows": self.underflows}


def _describe(plan: Any, block: int, latency_ms: float | None) -> dict[str, Any]:
    return {
        "device": plan.device.name,
        "index": plan.device.index,
        "hostapi": plan.device.hostapi,
        "rate": plan.rate,
        "resampled_from": plan.wanted_rate if plan.rate != plan.wanted_rate else None,
        "block_ms": block * 1000 / plan.rate,
        "latency_ms": latency_ms,
    }


# --------------------------------------------------------------------------- clock-driven


class ClockMicrophone:
    """A microphone that plays queued utterances, paced by the clock (virtual time).

    ``say(pcm)`` queues speech; it starts at the next frame. In between, silence.
    """

    def __init__(self, clock: Clock, session_rate: int, frame: int) -> None:
        self.clock = clock
        self.rate = session_rate
        self.frame = frame
        self.frame_ns = frame * NS_PER_S // session_rate
        self.observed_latency_ms: float | None = None  # no device path
        self._queue: deque[PCM] = deque()
        self._current: PCM | None = None
        #: (start, end) receive times of each utterance's first and last frame.
        self.spoken: list[tuple[int, int]] = []

    def say(self, pcm: PCM) -> None:
        self._queue.append(pcm)

    @property
    def idle(self) -> bool:
        return self._current is None and not self._queue

    async def frames(self) -> AsyncIterator[tuple[PCM, int]]:
        origin = self.clock.now_ns()
        silence = np.zeros(self.frame, dtype=np.int16)
        k = 0
        while True:
            k += 1
            await self.clock.sleep_until(origin + k * self.frame_ns)
            now = self.clock.now_ns()
            if self._current is None and self._queue:
                self._current = self._queue.popleft()
                self.spoken.append((now, now))
            if self._current is None:
                yield silence, now
                continue
            frame, self._current = self._current[: self.frame], self._current[self.frame :]
            if len(frame) < self.frame:
                frame = np.concatenate((frame, silence[: self.frame - len(frame)]))
            self.spoken[-1] = (self.spoken[-1][0], now)
            if not len(self._current):
                self._current = None
            yield frame, now

    def describe(self) -> dict[str, Any]:
        return {"device": "clock", "rate": self.rate, "block_ms": self.frame_ns / 1e6}


class ClockSpeaker:
    """A speaker that pulls a block every ``block_ms`` on the clock and keeps what it played."""

    def __init__(self, clock: Clock, rate: int, block_ms: int = 20) -> None:
        self.clock = clock
        self.rate = rate
        self.block = rate * block_ms // 1000
        self.played: list[PCM] = []
        self.observed_latency_ms: float | None = None  # no device path
        #: When the first block was pulled (block k was pulled k blocks later).
        self.started_ns: int | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, buffer: PlayoutBuffer, on_played: OnPlayed) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(buffer, on_played))

    async def _run(self, buffer: PlayoutBuffer, on_played: OnPlayed) -> None:
        origin = self.started_ns = self.clock.now_ns()
        block_ns = self.block * NS_PER_S // self.rate
        k = 0
        while True:
            await self.clock.sleep_until(origin + k * block_ns)
            k += 1
            pulled = buffer.pull(self.block)
            self.played.append(pulled.pcm)
            if pulled.events:
                on_played(self.clock.now_ns(), pulled)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def describe(self) -> dict[str, Any]:
        return {"device": "clock", "rate": self.rate, "block_ms": self.block * 1000 / self.rate}
