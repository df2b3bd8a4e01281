"""Warming a session's stages before its hello, timed (issue: the first turn was ~250 ms slower).

Each stage that is a :class:`~agent.stages.interfaces.WarmUp` is warmed in turn
(they share the CPU: warming them at once would only make each slower); how long
each took, and the total, go into the hello's ``pipeline`` object as ``warm_up``,
which the client writes into manifest.json (``agent.pipeline.warm_up``). Process-
wide work (a model's first inference) is done once per process, so a second
session's warm-up takes ~0 ms.

Warm-up is bounded (:data:`WARM_UP_LIMIT_S`): the client waits for the hello for
10 s. What did not finish in time is said (``timed_out``); the first turn then pays
for the rest, as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.clock import Clock
from agent.stages.interfaces import WarmUp

__all__ = ["WARM_UP_LIMIT_S", "WarmUpTimes", "warm_up_stages"]

log = logging.getLogger("vlt.server")

WARM_UP_LIMIT_S = 6.0


@dataclass
class WarmUpTimes:
    """Milliseconds per warmed stage role (only stages that warm up), and the total."""

    stages_ms: dict[str, float] = field(default_factory=dict)
    total_ms: float = 0.0
    timed_out: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "total_ms": round(self.total_ms, 3),
            "stages_ms": dict(self.stages_ms),
            "timed_out": self.timed_out,
        }


async def warm_up_stages(
    stages: Mapping[str, Any], clock: Clock, limit_s: float = WARM_UP_LIMIT_S
) -> WarmUpTimes:
    """Warm every stage that can be, in role order; raises what a stage's warm-up raises."""
    times = WarmUpTimes()
    start = clock.now_ns()

    async def warm_all() -> None:
        for role, stage in stages.items():
            if not isinstance(stage, WarmUp):
                continue
            t0 = clock.now_ns()
            await stage.warm_up()
            times.stages_ms[role] = round((clock.now_ns() - t0) / 1e6, 3)

    try:
        async with asyncio.timeout(limit_s):
            await warm_all()
    except TimeoutError:
        times.timed_out = True
        log.warning("warming the stages took over %g s; the first turn pays for the rest", limit_s)
    times.total_ms = round((clock.now_ns() - start) / 1e6, 3)
    return times
