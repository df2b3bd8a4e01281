"""The one place that reads time.

Everything else in the testbed receives timestamps (``int`` nanoseconds) from a
:class:`Clock` it was handed, and does arithmetic on them. That is what lets the
same pipeline run in real time for a demo and in *virtual* time for regression
tests: deterministic and far faster than real time.

Virtual time is implemented at the event-loop level, so real sockets keep
working: :class:`VirtualTimeLoop` reports virtual seconds from ``loop.time()``
and its selector, instead of blocking until the next timer is due, first polls
the real sockets and — when nothing is ready — jumps the virtual clock straight
to that timer. ``asyncio.sleep``, ``asyncio.timeout`` and the websockets
library's own timers all follow the virtual clock without knowing it.
"""

from __future__ import annotations

import asyncio
import select
import selectors
import time
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

__all__ = [
    "Clock",
    "Deadline",
    "MonotonicClock",
    "Pacer",
    "VirtualClock",
    "VirtualTimeLoop",
    "new_real_time_loop",
    "run",
    "utc_now",
]

T = TypeVar("T")

NS_PER_S = 1_000_000_000


class Clock(Protocol):
    """A source of monotonic nanoseconds that can also be slept on."""

    #: True when time is simulated (the virtual clock).
    virtual: bool

    def now_ns(self) -> int:
        """Nanoseconds on this clock's monotonic timeline."""
        ...

    async def sleep_until(self, t_ns: int) -> None:
        """Return once ``now_ns() >= t_ns`` (immediately if already past)."""
        ...


async def _sleep_until(clock: Clock, t_ns: int) -> None:
    delay_ns = t_ns - clock.now_ns()
    if delay_ns > 0:
        await asyncio.sleep(delay_ns / NS_PER_S)
    else:
        # Still yield, so a tight pacing loop cannot starve the event loop.
        await asyncio.sleep(0)


class MonotonicClock:
    """Real time: ``time.monotonic_ns``, the same base asyncio's loop uses."""

    virtual = False

    def now_ns(self) -> int:
        return time.monotonic_ns()

    async def sleep_until(self, t_ns: int) -> None:
        await _sleep_until(self, t_ns)


class Deadline:
    """A real-time limit for a blocking wait on another process (PulseAudio, a child).

    Such waits are about the outside world, so they are never virtual; they read
    the clock here, like everything else that reads time.
    """

    def __init__(self, seconds: float) -> None:
        self._end_ns = time.monotonic_ns() + round(seconds * NS_PER_S)

    def expired(self) -> bool:
        return time.monotonic_ns() >= self._end_ns


class VirtualClock:
    """Simulated time, advanced only by :class:`VirtualTimeLoop` when it is idle."""

    virtual = True

    def __init__(self, start_ns: int = 0) -> None:
        self._now_ns = start_ns

    def now_ns(self) -> int:
        return self._now_ns

    def advance_ns(self, delta_ns: int) -> None:
        if delta_ns < 0:
            raise ValueError("virtual time cannot go backwards")
        self._now_ns += delta_ns

    async def sleep_until(self, t_ns: int) -> None:
        await _sleep_until(self, t_ns)


class Pacer:
    """Sleeps to offsets from a fixed start, so pacing never drifts.

    Stages that must emit at a rate (an emulated LLM's tokens, audio frames)
    schedule against absolute deadlines rather than chaining relative sleeps,
    whose lateness would accumulate.
    """

    def __init__(self, clock: Clock, start_ns: int | None = None) -> None:
        self._clock = clock
        self.start_ns = clock.now_ns() if start_ns is None else start_ns

    async def until(self, offset_ns: int) -> None:
        await self._clock.sleep_until(self.start_ns + offset_ns)

    def elapsed_ns(self) -> int:
        return self._clock.now_ns() - self.start_ns


class _VirtualTimeSelector(selectors.BaseSelector):
    """Wraps the real selector: poll real I/O, and when idle, jump virtual time.

    On loopback a ``send`` is readable at the peer as soon as it returns, so a
    zero-timeout poll that finds nothing means no message is in flight and
    skipping ahead to the next timer cannot reorder anything.
    """

    def __init__(self, clock: VirtualClock) -> None:
        self._clock = clock
        self._inner = selectors.DefaultSelector()

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._inner.select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        if timeout is None:
            # No timer pending: only real I/O (e.g. a worker thread finishing)
            # can wake the loop, so wait for it in real time.
            return self._inner.select(None)
        self._clock.advance_ns(round(timeout * NS_PER_S))
        return []

    def close(self) -> None:
        self._inner.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()


class _PreciseSelector(selectors.EpollSelector):
    """epoll, but timers fire to the microsecond rather than the millisecond.

    ``epoll_wait`` takes whole milliseconds and Python rounds a timeout up, so
    every asyncio timer can fire up to 1 ms late — as large as the effects an
    emulated accelerator must reproduce (a token every 0.5 ms at 2,000 tok/s).
    Here the whole milliseconds are waited in epoll and the remainder in
    ``select()`` on the epoll descriptor itself, whose timeout is in
    microseconds: still no busy-waiting, and I/O still wakes the loop at once.
    """

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout <= 0:
            return super().select(timeout)
        deadline = time.monotonic() + timeout
        whole_ms = int(timeout * 1000)
        if whole_ms:
            # (ms - 0.5) so that Python's ceil() yields exactly ms, never ms + 1.
            ready = super().select((whole_ms - 0.5) / 1000)
            if ready:
                return ready
        remaining = deadline - time.monotonic()
        if remaining > 0:
            select.select([self.fileno()], [], [], remaining)
        return super().select(0)


def new_real_time_loop() -> asyncio.AbstractEventLoop:
    """An event loop on the monotonic clock with microsecond timer precision."""
    return asyncio.SelectorEventLoop(_PreciseSelector())


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose ``time()`` is a :class:`VirtualClock`."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(_VirtualTimeSelector(clock))
        self._virtual_clock = clock

    def time(self) -> float:
        return self._virtual_clock.now_ns() / NS_PER_S


def run(main: Callable[[Clock], Coroutine[Any, Any, T]], *, virtual: bool = False) -> T:
    """Run ``main(clock)`` to completion on a real or a virtual-time event loop."""
    if not virtual:
        with asyncio.Runner(loop_factory=new_real_time_loop) as runner:
            return runner.run(main(MonotonicClock()))
    clock = VirtualClock()
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(clock)) as runner:
        return runner.run(main(clock))


def utc_now() -> datetime:
    """Wall-clock time, for naming run folders and stamping manifests only."""
    return datetime.now(UTC)
