"""The accelerator timing model: a profile, a prompt size and a load in, nanosecond offsets out.

Pure (no clock, no I/O). The in-process ``emulated`` LLM stage and the
OpenAI-compatible emulator server (:mod:`agent.server.llm_emulator`) both pace
tokens with it, so the emulator's behaviour is one piece of code used two ways.
The profiles it reads are :mod:`agent.config.accelerators`. The equations are
in ``docs/accelerators.md``::

    b          = min(n, max_batch)                              streams decoding together
    rate(n)    = min(tokens_per_s / (1 + batch_slowdown·(b-1)),
                     aggregate_tokens_per_s / b)                per-stream decode speed
    ttft(n, p) = queue_ms_per_stream·(b-1)                      contention with the batch
               + p / prefill_tokens_per_s                       prefill of p prompt tokens
               + max(0, ttft_ms + N(0, ttft_jitter_ms))         network and scheduling
    gap_i      = max(0, 1 + N(0, jitter)) / rate(n_i)           i-th inter-token gap
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from agent.config.accelerators import AcceleratorProfile

__all__ = [
    "TTFTParts",
    "TokenTimer",
    "aggregate_tokens_per_s",
    "decode_batch",
    "gap_ns",
    "stream_tokens_per_s",
    "token_schedule_ns",
    "ttft_ns",
    "ttft_parts",
]

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000


def decode_batch(profile: AcceleratorProfile, active_streams: int) -> int:
    """Streams decoding together when ``active_streams`` want to (at least 1)."""
    return max(1, min(active_streams, profile.max_batch))


def stream_tokens_per_s(profile: AcceleratorProfile, active_streams: int) -> float:
    """Decode speed of each stream while ``active_streams`` share the accelerator.

    Batching makes each decode step a little slower (``batch_slowdown``) and the
    total can never exceed the accelerator's throughput (``aggregate_tokens_per_s``).
    """
    batch = decode_batch(profile, active_streams)
    rate = profile.tokens_per_s / (1.0 + profile.batch_slowdown * (batch - 1))
    if profile.aggregate_tokens_per_s is not None:
        rate = min(rate, profile.aggregate_tokens_per_s / batch)
    return rate


def aggregate_tokens_per_s(profile: AcceleratorProfile, active_streams: int) -> float:
    """Total decode throughput of the accelerator under that load."""
    return decode_batch(profile, active_streams) * stream_tokens_per_s(profile, active_streams)


@dataclass(frozen=True, slots=True)
class TTFTParts:
    """One request's planned time to first token, in nanoseconds, by cause."""

    queue_ns: float
    """Contention with the other streams in the batch."""
    prefill_ns: float
    """Processing the prompt."""
    base_ns: float
    """Network and scheduling (jitter included)."""

    @property
    def total_ns(self) -> int:
        return round(self.queue_ns + self.prefill_ns + self.base_ns)


def ttft_parts(
    profile: AcceleratorProfile,
    prompt_tokens: int,
    active_streams: int,
    rng: random.Random | None = None,
) -> TTFTParts:
    """TTFT = queueing + prompt tokens ÷ prefill speed + base latency (± jitter).

    ``active_streams`` counts this request. Draws one number from ``rng`` when
    the profile has TTFT jitter (``None``: no jitter).
    """
    queue = profile.queue_ms_per_stream * NS_PER_MS * (decode_batch(profile, active_streams) - 1)
    prefill = 0.0
    if profile.prefill_tokens_per_s is not None and prompt_tokens > 0:
        prefill = prompt_tokens * NS_PER_S / profile.prefill_tokens_per_s
    base = profile.ttft_ms * NS_PER_MS
    if rng is not None and profile.ttft_jitter_ms:
        # Only the base latency varies: no jitter makes prefill faster than the hardware.
        base = max(0.0, base + rng.gauss(0.0, profile.ttft_jitter_ms * NS_PER_MS))
    return TTFTParts(queue_ns=queue, prefill_ns=prefill, base_ns=base)


def ttft_ns(
    profile: AcceleratorProfile,
    prompt_tokens: int,
    active_streams: int,
    rng: random.Random | None = None,
) -> int:
    """Planned time from request to first token (see :func:`ttft_parts`)."""
    return ttft_parts(profile, prompt_tokens, active_streams, rng).total_ns


def gap_ns(profile: AcceleratorProfile, active_streams: int, rng: random.Random | None = None) -> float:
    """One inter-token gap (float ns) at the current load; draws once from ``rng`` if jittered."""
    gap = NS_PER_S / stream_tokens_per_s(profile, active_streams)
    if rng is not None and profile.jitter:
        gap *= max(0.0, 1.0 + rng.gauss(0.0, profile.jitter))
    return gap


class TokenTimer:
    """Successive token offsets, with the load re-read at every token.

    Gaps are summed as floats and each offset rounded on its own, so a
    non-integer gap never accumulates rounding error. Under a constant load it
    gives exactly :func:`token_schedule_ns`; the emulator server feeds it the
    number of streams active at each token, so streams slow down as others join
    and speed up as they finish.
    """

    def __init__(self, profile: AcceleratorProfile, first_ns: int, rng: random.Random | None = None):
        self.profile = profile
        self._rng = rng
        self._t = float(first_ns)
        self._emitted = 0

    def next_ns(self, active_streams: int) -> int:
        """The offset of the next token, given the streams active now."""
        if self._emitted:
            self._t += gap_ns(self.profile, active_streams, self._rng)
        self._emitted += 1
        return round(self._t)


def token_schedule_ns(
    profile: AcceleratorProfile,
    n_tokens: int,
    *,
    prompt_tokens: int = 0,
    active_streams: int = 1,
    rng: random.Random | None = None,
) -> list[int]:
    """Offsets from the request at which each of ``n_tokens`` is emitted, at a constant load.

    Random draws, in order: the TTFT jitter, then one per gap after the first token.
    """
    timer = TokenTimer(profile, ttft_ns(profile, prompt_tokens, active_streams, rng), rng)
    return [timer.next_ns(active_streams) for _ in range(n_tokens)]
