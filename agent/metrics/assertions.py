"""A scenario's ``assert`` block checked against a finished run (pure).

Each check compares one run-level figure with its limit: voice-to-voice p50
and p95 (over the turns that measured it), missed responses (turns that
expected a reply and got none: ``no_response`` or ``failed``), and the pooled
word error rate. A figure the run could not measure (no turn had a
voice-to-voice, no transcript for WER) fails its check: a limit that cannot be
verified has not been met.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from agent.config.scenario import Scenario
from agent.metrics.records import AssertionResult, Summary, TurnRecord

__all__ = ["MISSED", "check_assertions"]

Check = Literal["v2v_p50_ms", "v2v_p95_ms", "missed_responses", "wer"]

#: The statuses that mean a turn expecting a reply did not get one.
MISSED = ("no_response", "failed")


def check_assertions(
    scenario: Scenario, records: Sequence[TurnRecord], summary: Summary
) -> list[AssertionResult]:
    limits = scenario.assertions
    if limits is None:
        return []
    out: list[AssertionResult] = []
    v2v = summary["metrics_ms"].get("voice_to_voice")
    if limits.v2v_p50_ms is not None:
        out.append(_result("v2v_p50_ms", limits.v2v_p50_ms, None if v2v is None else v2v["p50"]))
    if limits.v2v_p95_ms is not None:
        out.append(_result("v2v_p95_ms", limits.v2v_p95_ms, None if v2v is None else v2v["p95"]))
    if limits.missed_responses is not None:
        no_reply = {t.index for t in scenario.turns if t.expect.no_reply}
        missed = sum(1 for r in records if r["turn"] not in no_reply and r["status"] in MISSED)
        # A run cut short has not answered the turns it never reached either.
        missed += max(
            0, len(scenario.turns) - len(no_reply) - sum(1 for r in records if r["turn"] not in no_reply)
        )
        out.append(_result("missed_responses", limits.missed_responses, missed))
    if limits.wer is not None:
        out.append(_result("wer", limits.wer, summary["wer"]["wer"]))
    return out


def _result(check: Check, limit: float, value: float | None) -> AssertionResult:
    return {"check": check, "limit": limit, "value": value, "ok": value is not None and value <= limit}
