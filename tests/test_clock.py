"""Real and virtual clocks, the pacer, and the virtual-time event loop (agent.clock)."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from agent import clock as clock_mod
from agent.clock import Clock, MonotonicClock, Pacer, VirtualClock

S = 1_000_000_000
MS = 1_000_000

#: Generous bound on real seconds for work that must not wait in real time.
INSTANT_S = 1.0


def test_virtual_sleep_of_an_hour_is_instant() -> None:
    async def main(clock: Clock) -> tuple[int, int, bool]:
        start = clock.now_ns()
        await asyncio.sleep(3600)
        return start, clock.now_ns(), clock.virtual

    wall = time.perf_counter()
    start, end, virtual = clock_mod.run(main, virtual=True)
    assert time.perf_counter() - wall < INSTANT_S
    assert virtual is True
    assert start == 0
    assert end - start == 3600 * S


def test_virtual_loop_time_is_the_virtual_clock() -> None:
    async def main(clock: Clock) -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        before = loop.time()
        await asyncio.sleep(2.5)
        return before, loop.time()

    assert clock_mod.run(main, virtual=True) == (0.0, 2.5)


def test_concurrent_sleepers_wake_in_order_at_exact_virtual_times() -> None:
    async def main(clock: Clock) -> list[tuple[str, int]]:
        woke: list[tuple[str, int]] = []

        async def sleeper(name: str, seconds: float) -> None:
            await asyncio.sleep(seconds)
            woke.append((name, clock.now_ns()))

        async with asyncio.TaskGroup() as tg:
            for name, seconds in (("c", 0.3), ("a", 0.1), ("d", 1.75), ("b", 0.2), ("e", 60)):
                tg.create_task(sleeper(name, seconds))
        return woke

    wall = time.perf_counter()
    woke = clock_mod.run(main, virtual=True)
    assert time.perf_counter() - wall < INSTANT_S
    assert woke == [
        ("a", 100 * MS),
        ("b", 200 * MS),
        ("c", 300 * MS),
        ("d", 1750 * MS),
        ("e", 60 * S),
    ]


def test_pacer_hits_exact_offsets() -> None:
    async def main(clock: Clock) -> tuple[int, list[int], int, int]:
        await asyncio.sleep(1.5)
        pacer = Pacer(clock)
        seen = []
        for offset in (10 * MS, 25 * MS, 25 * MS + 1, 3 * S + 7):
            await pacer.until(offset)
            seen.append(clock.now_ns())
        before = clock.now_ns()
        await pacer.until(0)  # in the past: no time passes
        return pacer.start_ns, seen, clock.now_ns() - before, pacer.elapsed_ns()

    start, seen, waited, elapsed = clock_mod.run(main, virtual=True)
    assert start == 1500 * MS
    assert seen == [start + 10 * MS, start + 25 * MS, start + 25 * MS + 1, start + 3 * S + 7]
    assert waited == 0
    assert elapsed == 3 * S + 7


def test_pacer_with_explicit_start() -> None:
    async def main(clock: Clock) -> int:
        pacer = Pacer(clock, start_ns=4 * S)
        await pacer.until(1 * S)
        return clock.now_ns()

    assert clock_mod.run(main, virtual=True) == 5 * S


def test_pacer_does_not_drift_when_work_takes_time() -> None:
    async def main(clock: Clock) -> list[int]:
        pacer = Pacer(clock)
        out = []
        for k in range(1, 6):
            await asyncio.sleep(0.003)  # "work" between deadlines
            await pacer.until(k * 20 * MS)
            out.append(clock.now_ns())
        return out

    assert clock_mod.run(main, virtual=True) == [k * 20 * MS for k in range(1, 6)]


def test_asyncio_timeout_follows_virtual_time() -> None:
    async def main(clock: Clock) -> int:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(5):
                await asyncio.sleep(10)
        return clock.now_ns()

    assert clock_mod.run(main, virtual=True) == 5 * S


def test_wait_for_completes_before_timeout_in_virtual_time() -> None:
    async def main(clock: Clock) -> tuple[str, int]:
        async def work() -> str:
            await asyncio.sleep(2)
            return "done"

        result = await asyncio.wait_for(work(), timeout=3)
        return result, clock.now_ns()

    assert clock_mod.run(main, virtual=True) == ("done", 2 * S)


def test_loopback_tcp_echo_in_virtual_time() -> None:
    async def main(clock: Clock) -> list[tuple[int, int]]:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while line := await reader.readline():
                if line.startswith(b"slow"):
                    await asyncio.sleep(0.5)
                writer.write(line)
                await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        times = []
        for message in (b"hello\n", b"later\n", b"slow\n"):
            await asyncio.sleep(2)  # virtual time moves while sockets are open
            sent = clock.now_ns()
            writer.write(message)
            await writer.drain()
            assert await reader.readline() == message
            times.append((sent, clock.now_ns()))
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return times

    wall = time.perf_counter()
    times = clock_mod.run(main, virtual=True)
    assert time.perf_counter() - wall < INSTANT_S
    assert times == [(2 * S, 2 * S), (4 * S, 4 * S), (6 * S, 6 * S + 500 * MS)]


def test_to_thread_works_in_virtual_loop() -> None:
    async def main(clock: Clock) -> tuple[int, int]:
        value = await asyncio.to_thread(lambda: 41 + 1)
        return value, clock.now_ns()

    assert clock_mod.run(main, virtual=True) == (42, 0)


def test_run_real_time_uses_monotonic_clock() -> None:
    async def main(clock: Clock) -> tuple[bool, bool]:
        return isinstance(clock, MonotonicClock), clock.virtual

    assert clock_mod.run(main) == (True, False)


def test_monotonic_clock_is_monotonic() -> None:
    clock = MonotonicClock()
    readings = [clock.now_ns() for _ in range(1000)]
    assert all(b >= a for a, b in itertools.pairwise(readings))
    assert isinstance(readings[0], int)
    assert clock.virtual is False


def test_monotonic_sleep_until_in_the_past_returns_promptly() -> None:
    async def main(clock: Clock) -> float:
        wall = time.perf_counter()
        await clock.sleep_until(clock.now_ns() - 10 * S)
        await clock.sleep_until(0)
        return time.perf_counter() - wall

    assert clock_mod.run(main) < 0.1


def test_monotonic_sleep_until_near_future_reaches_it() -> None:
    async def main(clock: Clock) -> tuple[int, int]:
        target = clock.now_ns() + 2 * MS
        await clock.sleep_until(target)
        return target, clock.now_ns()

    target, now = clock_mod.run(main)
    assert now >= target


def test_virtual_clock_advance() -> None:
    clock = VirtualClock(start_ns=7)
    assert clock.now_ns() == 7
    assert clock.virtual is True
    clock.advance_ns(0)
    clock.advance_ns(13)
    assert clock.now_ns() == 20
    with pytest.raises(ValueError, match="backwards"):
        clock.advance_ns(-1)
    assert clock.now_ns() == 20


def test_virtual_sleep_until_in_the_past_does_not_advance() -> None:
    async def main(clock: Clock) -> tuple[int, int]:
        await asyncio.sleep(1)
        await clock.sleep_until(0)
        before_target = clock.now_ns()
        await clock.sleep_until(3 * S)
        return before_target, clock.now_ns()

    assert clock_mod.run(main, virtual=True) == (1 * S, 3 * S)


def test_utc_now_is_aware() -> None:
    now = clock_mod.utc_now()
    assert now.tzinfo is not None
    assert now.utcoffset() is not None and now.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
