"""PortAudio's stream times → the session clock: when a block was really captured or will be heard.

A callback's own time is when PortAudio handed the block over, not when the ADC
captured it or the DAC will play it: the device path (ALSA, PulseAudio, the
driver's buffers) sits in between, ~20-60 ms each way on PulseAudio. PortAudio's
``time_info`` gives, on its stream clock, ``currentTime`` (now),
``inputBufferAdcTime`` (the input block's first sample at the ADC) and
``outputBufferDacTime`` (the output block's first sample at the DAC). Their
differences from ``currentTime`` are durations, so they move onto the session
clock by subtraction from the callback's session time — no clock is mapped, only
an age. Host APIs that do not fill them in (0, or nonsense) leave the callback
time, and the observed latency None: the record then says it is unknown.
"""

from __future__ import annotations

from typing import Any

from agent.clock import NS_PER_S

__all__ = ["MAX_DEVICE_LATENCY_S", "captured_end_ns", "heard_start_ns"]

#: A device path longer than this is not believed (a host API reporting garbage).
MAX_DEVICE_LATENCY_S = 1.0


def _age(now: float, then: float) -> float | None:
    if now <= 0 or then <= 0:
        return None
    age = now - then
    return age if 0 <= age <= MAX_DEVICE_LATENCY_S else None


def captured_end_ns(callback_ns: int, time_info: Any, frames: int, rate: int) -> tuple[int, float | None]:
    """When the input block's last sample was captured (session clock), and how long
    before the callback that was (ms; None when PortAudio does not say)."""
    age = _age(
        float(getattr(time_info, "currentTime", 0.0)), float(getattr(time_info, "inputBufferAdcTime", 0.0))
    )
    if age is None:
        return callback_ns, None
    end = callback_ns - round(age * NS_PER_S) + frames * NS_PER_S // rate
    end = min(end, callback_ns)  # the last sample cannot be captured after it is handed over
    return end, (callback_ns - end) / 1e6


def heard_start_ns(callback_ns: int, time_info: Any) -> tuple[int, float | None]:
    """When the output block's first sample reaches the DAC (session clock), and how
    long after the callback that is (ms; None when PortAudio does not say)."""
    ahead = _age(
        float(getattr(time_info, "outputBufferDacTime", 0.0)), float(getattr(time_info, "currentTime", 0.0))
    )
    if ahead is None:
        return callback_ns, None
    return callback_ns + round(ahead * NS_PER_S), ahead * 1e3
