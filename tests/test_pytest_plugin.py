"""The pytest plugin: the vlt_replay fixture and the latency_budget marker (via pytester).

The plugin is loaded through its ``pytest11`` entry point, as in a user's
project. The inner sessions run in a subprocess: in-process, pytest would warn
that the already-imported ``agent`` package cannot be assertion-rewritten, and
this project turns warnings into errors. Replays run in virtual time except
where real time is the point.
"""

from __future__ import annotations

from typing import Any

import pytest

from agent.pytest_plugin import parse_budget_key
from tests.conftest import PIPELINES, SCENARIOS

pytest_plugins = ["pytester"]

QUICK = SCENARIOS / "quick-3-turn.yaml"
EMULATED = PIPELINES / "emulated.toml"
# Virtual-time voice-to-voice of quick-3-turn on the emulated pipeline (see the
# committed baseline): p50 771.7 ms, p95 778.0 ms; llm_ttft is 200 ms exactly.
HEADER = f"""
import pytest

QUICK = {str(QUICK)!r}
EMULATED = {str(EMULATED)!r}
"""


@pytest.fixture
def run(pytester: pytest.Pytester) -> Any:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")

    def run(*args: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)

    return run


def test_budget_keys_parse() -> None:
    assert parse_budget_key("v2v_p95_ms") == ("voice_to_voice", "p95")
    assert parse_budget_key("llm_ttft_p50_ms") == ("llm_ttft", "p50")
    assert parse_budget_key("tts_first_audio_mean_ms") == ("tts_first_audio", "mean")
    assert parse_budget_key("voice_to_voice_p99_9_ms") == ("voice_to_voice", "p99.9")
    with pytest.raises(ValueError, match="unknown metric 'ttfb'; valid: voice_to_voice, endpointing"):
        parse_budget_key("ttfb_p50_ms")
    with pytest.raises(ValueError, match="must look like <metric>_<stat>_ms"):
        parse_budget_key("v2v_p95")


def test_marker_passes_and_fails_with_a_per_metric_message(pytester: pytest.Pytester, run: Any) -> None:
    pytester.makepyfile(
        HEADER
        + """
@pytest.mark.latency_budget(v2v_p95_ms=800, llm_ttft_p50_ms=300)
def test_within_budget(vlt_replay):
    run = vlt_replay(QUICK, EMULATED)
    assert len(run.records) == 3 and run.clock == "virtual"
    assert run.summary["metrics_ms"]["llm_ttft"]["p50"] == pytest.approx(200)

@pytest.mark.latency_budget(v2v_p95_ms=700, llm_ttft_p50_ms=300, first_phrase_p50_ms=10)
def test_over_budget(vlt_replay):
    vlt_replay(QUICK)  # the default pipeline: emulated

@pytest.mark.latency_budget(v2v_p50_ms=5000)
def test_body_failure_wins(vlt_replay):
    vlt_replay(QUICK)
    assert False, "the test's own failure"

@pytest.mark.latency_budget(v2v_p50_ms=5000)
def test_without_a_replay():
    pass
"""
    )
    result = run("--strict-markers")
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines(
        [
            "*test_over_budget*",
            "*latency budget exceeded:",
            "*voice_to_voice p95 = 778.0 ms > budget 700 ms (n=3)",
            "*first_phrase p50 = 29.1 ms > budget 10 ms (n=3)",
        ]
    )
    assert "llm_ttft p50" not in result.stdout.str()  # within its budget
    result.stdout.fnmatch_lines(["*the test's own failure*"])
    result.stdout.fnmatch_lines(["*@latency_budget: the test made no vlt_replay run to check*"])


def test_budgets_pool_every_run_of_the_test_and_accept_overrides(pytester: pytest.Pytester, run: Any) -> None:
    pytester.makepyfile(
        HEADER
        + """
@pytest.mark.latency_budget(tts_first_audio_p95_ms=100)
def test_two_runs(vlt_replay):
    vlt_replay(QUICK, EMULATED)
    slow = vlt_replay(QUICK, EMULATED, overrides={"tts.first_audio_ms": 140})
    assert slow.values("tts_first_audio") == pytest.approx([140.0] * 3)
    assert len(vlt_replay.runs) == 2
"""
    )
    result = run("--strict-markers")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*tts_first_audio p95 = 140.0 ms > budget 100 ms (n=6)"])


def test_unknown_budget_key_is_a_usage_error_naming_valid_metrics(
    pytester: pytest.Pytester, run: Any
) -> None:
    pytester.makepyfile(
        """
import pytest

@pytest.mark.latency_budget(ttfb_p50_ms=300)
def test_typo(vlt_replay):
    pass
"""
    )
    result = run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*test_typo*latency_budget key 'ttfb_p50_ms': unknown metric 'ttfb'; valid: voice_to_voice*v2v*"]
    )


def test_marker_is_registered_for_strict_markers(run: Any) -> None:
    result = run("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.latency_budget(**budgets):*"])


def test_works_with_pytest_asyncio(pytester: pytest.Pytester, run: Any) -> None:
    pytester.makepyfile(
        HEADER
        + """
@pytest.mark.asyncio
@pytest.mark.latency_budget(v2v_p95_ms=800)
async def test_awaited(vlt_replay):
    run = await vlt_replay.run_async(QUICK, EMULATED)
    assert run.clock == "virtual" and len(run.records) == 3

@pytest.mark.asyncio
@pytest.mark.latency_budget(v2v_p95_ms=700)
async def test_called_from_a_coroutine(vlt_replay):
    run = vlt_replay(QUICK)  # blocks this loop while the replay runs on its own
    assert len(run.records) == 3
"""
    )
    result = run("--strict-markers")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*voice_to_voice p95 = 778.0 ms > budget 700 ms (n=3)"])


def test_replays_a_running_agent_by_url_in_real_time(pytester: pytest.Pytester, run: Any) -> None:
    """A real-time replay on the test's own loop, against an agent served by that loop."""
    scenario = pytester.path / "one.yaml"
    scenario.write_text(
        "name: one-turn\nturns:\n  - user: Hi.\n    reply: Hello.\n    pause_ms: 0\n", encoding="utf-8"
    )
    pytester.makepyfile(
        HEADER
        + f"""
from agent import clock as clocks
from agent.stages.pipeline import load_pipeline
from agent.server.app import AgentServer

@pytest.mark.asyncio
@pytest.mark.latency_budget(v2v_p50_ms=2000)
async def test_url(vlt_replay):
    pipeline = load_pipeline(EMULATED)
    async with AgentServer(pipeline, clocks.MonotonicClock(), "127.0.0.1", 0) as server:
        run = await vlt_replay.run_async({str(scenario)!r}, url=server.url)
    assert run.clock == "real" and run.records[0]["status"] == "ok"
    assert 700 < run.values("v2v")[0] < 1500
"""
    )
    result = run("--strict-markers")
    result.assert_outcomes(passed=1)
