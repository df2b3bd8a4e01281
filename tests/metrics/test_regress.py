"""Latency regression gating: statistics, baselines, the comparison, outputs and `vlt regress`.

Replays run in virtual time (exact, ~0.5 s each); noise is simulated with the
emulated LLM's jitter and different seeds, or with synthetic samples.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent import clock as clocks
from agent.config.scenario import load_scenario
from agent.jobs.runner import run_scenario
from agent.metrics.baseline import (
    Baseline,
    BaselineError,
    check_compatible,
    from_run,
    load_baseline,
    pool,
    save_baseline,
    scenario_hash,
    to_json,
)
from agent.metrics.regress import (
    Budget,
    Mode,
    Options,
    Verdict,
    compare,
    parse_budgets,
    parse_stat,
    resolve_metric,
)
from agent.metrics.stats import percentile
from agent.metrics.two_sample import bootstrap_delta_ci, cliffs_delta, mann_whitney, min_p_value, stat_value
from agent.report.regress_output import format_table, junit_xml, markdown_summary
from agent.stages.pipeline import Pipeline, load_pipeline
from tests.conftest import PIPELINES, ROOT, SCENARIOS

EMULATED = PIPELINES / "emulated.toml"
QUICK = SCENARIOS / "quick-3-turn.yaml"
COMMITTED = ROOT / "baselines" / "quick-3-turn.virtual.json"
TOKEN_MS = 1000 / 275  # one token of the emulated pipeline's LLM (275 tokens/s)

# A reply with no punctuation until late: with chunker.max_words = w the first
# phrase is cut when word w + 1 arrives, so w + 1 delays it by exactly one token.
PLAIN_SCENARIO = """\
name: plain-replies
turns:
  - user: "Hello there, can you help me?"
    reply: "we can help you with that and we will call you back soon."
  - user: "When do you open?"
    reply: "we open at nine and close at six every day of the week."
"""


def replay(pipeline: Pipeline, run_dir: Path, scenario: Path = QUICK) -> Baseline:
    scen = load_scenario(scenario)

    async def main(clock: clocks.Clock) -> Any:
        return await run_scenario(scen, clock, pipeline=pipeline, run_dir=run_dir)

    clocks.run(main, virtual=True)
    return from_run(run_dir)


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("baseline") / "run"
    replay(load_pipeline(EMULATED), run_dir)
    return run_dir


def synthetic(values: Any, clock: str = "real", **changes: Any) -> Baseline:
    base = Baseline(
        scenario_name="s",
        scenario_hash="sha256:s",
        pipeline_name="p",
        pipeline_hash="sha256:p",
        clock=clock,
        samples={"voice_to_voice": tuple(float(v) for v in values)},
        turns=len(values),
    )
    return dataclasses.replace(base, **changes)


def regressed(report: Any) -> set[str]:
    return {row.name for row in report.rows if row.verdict is Verdict.REGRESSED}


# -- statistics -------------------------------------------------------------------


def test_mann_whitney_u_counts_pairs_and_its_variance_matches_the_permutation_null() -> None:
    x, y = [1.0, 2.0, 2.0, 3.0, 5.0], [2.0, 3.0, 3.0, 4.0]
    mw = mann_whitney(x, y)
    assert mw.u == sum((b > a) + 0.5 * (b == a) for a in x for b in y)
    # Under the null every split of the pooled values is equally likely; the
    # tie-corrected formula must give exactly the variance of U over all splits.
    pooled = x + y
    us = []
    for picked in itertools.combinations(range(len(pooled)), len(y)):
        cand = [pooled[i] for i in picked]
        base = [pooled[i] for i in range(len(pooled)) if i not in picked]
        us.append(sum((b > a) + 0.5 * (b == a) for a in base for b in cand))
    assert mw.sigma**2 == pytest.approx(np.var(us), rel=1e-12)


def test_mann_whitney_p_values_follow_the_normal_approximation() -> None:
    mw = mann_whitney([1, 2, 3], [4, 5, 6])
    sigma = (3 * 3 * 7 / 12) ** 0.5
    assert mw.p_slower == pytest.approx(0.5 * __import__("math").erfc((9 - 4.5 - 0.5) / sigma / 2**0.5))
    assert mw.p_slower == pytest.approx(0.0404, abs=1e-4)
    assert mw.p_faster > 0.95
    assert mann_whitney([5, 5], [5, 5]).p_slower == 1.0  # all tied: no evidence
    assert min_p_value(2, 2) > 0.05 and min_p_value(3, 3) < 0.05


def test_cliffs_delta() -> None:
    assert cliffs_delta([1, 2, 3], [4, 5, 6]) == 1.0
    assert cliffs_delta([4, 5, 6], [1, 2, 3]) == -1.0
    assert cliffs_delta([1, 2, 3], [1, 2, 3]) == 0.0
    x, y = [1.0, 2.0, 2.0, 7.0], [2.0, 3.0, 0.5]
    assert cliffs_delta(x, y) == pytest.approx(2 * mann_whitney(x, y).u / (len(x) * len(y)) - 1)


def test_stat_value_matches_the_run_summaries() -> None:
    values = [771.2, 780.3, 771.6, 790.0, 700.5]
    for q in (50, 90, 95, 99):
        assert stat_value(values, f"p{q}") == pytest.approx(percentile(sorted(values), q))
    assert stat_value(values, "mean") == pytest.approx(np.mean(values))
    assert stat_value(values, "p100") == 790.0


def test_bootstrap_ci_is_seeded_and_covers_a_known_shift() -> None:
    rng = np.random.default_rng(7)
    x, y = rng.normal(100, 5, 60), rng.normal(120, 5, 60)
    ci = bootstrap_delta_ci(x, y, "p50", rng=np.random.default_rng(1))
    assert ci == bootstrap_delta_ci(x, y, "p50", rng=np.random.default_rng(1))
    assert ci[0] < 20 < ci[1] and ci[0] > 10
    assert bootstrap_delta_ci([3.0] * 5, [3.0] * 5, "p95") == (0.0, 0.0)


def test_names_and_budgets_parse_with_clear_errors() -> None:
    assert resolve_metric("v2v") == "voice_to_voice"
    with pytest.raises(ValueError, match="unknown metric 'ttfb'; valid: voice_to_voice, endpointing"):
        resolve_metric("ttfb")
    assert parse_stat("p99.9") == "p99.9" and parse_stat("mean") == "mean"
    for bad in ("median", "p101", "95"):
        with pytest.raises(ValueError, match="unknown statistic"):
            parse_stat(bad)
    assert parse_budgets(["v2v=20", "5", "llm_ttft=2.5"]) == {"voice_to_voice": 20, "*": 5, "llm_ttft": 2.5}
    with pytest.raises(ValueError, match="METRIC=NUMBER"):
        parse_budgets(["v2v=fast"])
    with pytest.raises(ValueError, match=">= 0"):
        parse_budgets(["-3"])
    assert Budget(ms=5, pct=2).allowance(1000) == 20
    assert Budget(ms=5, pct=2).allowance(100) == 5
    opts = Options(budget_ms={"voice_to_voice": 7, "*": 3}, budget_pct={"*": 1})
    assert opts.budget("voice_to_voice", Mode.EXACT) == Budget(7, 1)
    assert opts.budget("llm_ttft", Mode.EXACT) == Budget(3, 1)
    assert Options().budget("llm_ttft", Mode.STATISTICAL) == Budget(1.0, 0.0)  # the documented default
    assert Options().budget("llm_ttft", Mode.EXACT) == Budget(0.0, 0.0)


# -- the comparison on synthetic samples ------------------------------------------------


def test_noise_only_comparisons_are_not_flagged() -> None:
    rng = np.random.default_rng(2024)
    failed = 0
    for _ in range(20):
        base = synthetic(rng.normal(775, 4, 15))
        cand = synthetic(rng.normal(775, 4, 15))
        report = compare(base, cand)
        assert report.mode is Mode.STATISTICAL
        failed += report.failed
    assert failed <= 1  # alpha = 0.05, and budgets and the rank test make it stricter


def test_statistical_slowdown_and_improvement_with_evidence() -> None:
    rng = np.random.default_rng(5)
    base = synthetic(rng.normal(775, 4, 20))
    slow = compare(base, synthetic(rng.normal(790, 4, 20)))
    assert slow.failed and regressed(slow) == {"voice_to_voice.p50", "voice_to_voice.p95"}
    row = slow.rows[0]
    assert row.ci_ms is not None and 1.0 < row.ci_ms[0] <= row.delta_ms <= row.ci_ms[1]  # type: ignore[operator]
    assert row.p_value is not None and row.p_value < 0.001
    assert row.effect is not None and row.effect > 0.8
    fast = compare(base, synthetic(rng.normal(760, 4, 20)))
    assert not fast.failed
    assert {r.verdict for r in fast.rows} == {Verdict.IMPROVED}
    # A significant slowdown within a budget passes.
    lenient = compare(base, synthetic(rng.normal(790, 4, 20)), Options(budget_ms={"*": 30}))
    assert not lenient.failed


def test_too_few_samples_warn_that_nothing_can_be_flagged() -> None:
    report = compare(synthetic([770, 771]), synthetic([900, 901]))
    assert not report.failed
    assert any("no test can reach alpha" in w for w in report.warnings)


def test_exact_mode_flags_any_change_beyond_a_microsecond() -> None:
    base = synthetic([771.216, 771.653, 778.71], clock="virtual")
    same = compare(base, base)
    assert same.mode is Mode.EXACT and not same.failed
    assert {r.verdict for r in same.rows} == {Verdict.UNCHANGED}
    tiny = synthetic([771.216, 771.653, 778.712], clock="virtual")
    assert regressed(compare(base, tiny)) == {"voice_to_voice.p95"}
    within = compare(base, tiny, Options(budget_ms={"v2v": 0.01}))
    assert not within.failed and "within budget" in within.rows[1].note
    faster = synthetic([761.216, 761.653, 768.71], clock="virtual")
    assert {r.verdict for r in compare(base, faster).rows} == {Verdict.IMPROVED}
    # Forced statistics on virtual runs, and forced exactness on real ones, both work.
    assert compare(base, tiny, Options(mode=Mode.STATISTICAL)).mode is Mode.STATISTICAL
    forced = compare(synthetic([1, 2, 3]), synthetic([1, 2, 3]), Options(mode=Mode.EXACT))
    assert forced.mode is Mode.EXACT and any("real-time" in w for w in forced.warnings)


def test_missing_samples_and_unanswered_turns_fail() -> None:
    base = synthetic([770, 771, 772], clock="virtual")
    empty = synthetic([], clock="virtual", turns=3, unanswered=3)
    report = compare(base, empty)
    assert report.failed and {r.verdict for r in report.rows} == {Verdict.MISSING}
    assert report.turns.failed and "candidate 3/3" in report.turns.describe()
    with pytest.raises(ValueError, match="no samples of llm_ttft"):
        compare(base, base, Options(metrics=("llm_ttft",)))


# -- baselines: files, validation, identity --------------------------------------------


def test_baseline_file_round_trips_and_is_diff_friendly(baseline_run: Path, tmp_path: Path) -> None:
    base = from_run(baseline_run)
    path = save_baseline(base, tmp_path / "b.json")
    text = path.read_text()
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert data["format"] == "vlt-baseline" and data["version"] == 1 and data["clock"] == "virtual"
    assert data["identity"]["scenario"]["name"] == "quick-3-turn"
    assert data["identity"]["pipeline"] == {"name": "emulated", "hash": base.pipeline_hash}
    assert data["metrics"]["voice_to_voice"]["n"] == 3
    assert data["environment"]["packages"]["numpy"]
    # One sample per line, rounded to the microsecond.
    v2v = data["metrics"]["voice_to_voice"]["samples_ms"]
    for value in v2v:
        assert re.search(rf"^\s+{re.escape(json.dumps(value))},?$", text, re.M)
        assert round(value, 3) == value
    loaded = load_baseline(path)
    assert loaded == base
    assert to_json(loaded) == text


def test_scenario_hash_ignores_location_but_not_content(tmp_path: Path) -> None:
    text = QUICK.read_text()
    moved = tmp_path / "elsewhere.yaml"
    moved.write_text("# a comment shifts every line\n" + text)
    assert scenario_hash(load_scenario(moved).as_dict()) == scenario_hash(load_scenario(QUICK).as_dict())
    # The manifest's JSON copy hashes like the loaded scenario.
    as_json = json.loads(json.dumps(load_scenario(QUICK).as_dict()))
    assert scenario_hash(as_json) == scenario_hash(load_scenario(QUICK).as_dict())
    moved.write_text(text.replace("nine tomorrow", "ten tomorrow"))
    assert scenario_hash(load_scenario(moved).as_dict()) != scenario_hash(load_scenario(QUICK).as_dict())


@pytest.mark.parametrize(
    ("mutate", "fragments"),
    [
        (lambda t: t[:-30], ["not valid JSON", "b.json:"]),
        (lambda t: "[1, 2]", ["expected a JSON object"]),
        (lambda t: t.replace('"vlt-baseline"', '"other"'), ["format", "not a vlt baseline"]),
        (
            lambda t: t.replace('"version": 1', '"version": 9'),
            ["version", "format version 9 is not supported"],
        ),
        (
            lambda t: t.replace('"clock": "virtual"', '"clock": "fast"'),
            ["clock", "expected one of real, virtual"],
        ),
        (lambda t: t.replace('"identity"', '"identities"'), ["identity", "missing field"]),
        (lambda t: t.replace('"runs": 1', '"runs": "one"'), ["runs", 'expected an integer, got "one"']),
        (
            lambda t: re.sub(r'"hash": "sha256:\w+"', '"hash": 5', t, count=1),
            ["identity.pipeline.hash", "expected a string or null"],
        ),
        (lambda t: re.sub(r"(\"samples_ms\": \[\s+)[\d.]+", r'\1"fast"', t, count=1), ["samples_ms[0]"]),
        (lambda t: t.replace('"n": 3', '"n": 4', 1), ["says 4 but samples_ms has 3 values"]),
        (lambda t: t.replace('"llm_ttft"', '"llm_ttfb"'), ["metrics.llm_ttfb", "unknown metric"]),
    ],
)
def test_malformed_baselines_give_one_clear_error(
    baseline_run: Path, tmp_path: Path, mutate: Any, fragments: list[str]
) -> None:
    path = tmp_path / "b.json"
    path.write_text(mutate(to_json(from_run(baseline_run))))
    with pytest.raises(BaselineError) as info:
        load_baseline(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_missing_baseline_and_bad_run_folders(tmp_path: Path) -> None:
    with pytest.raises(BaselineError, match=r"nope\.json: baseline file not found"):
        load_baseline(tmp_path / "nope.json")
    with pytest.raises(BaselineError, match="run folder not found"):
        from_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BaselineError, match=r"not a run folder \(no manifest.json\)"):
        from_run(tmp_path / "empty")


def test_mismatched_baselines_are_errors_unless_allowed(baseline_run: Path) -> None:
    base = from_run(baseline_run)
    real = dataclasses.replace(base, clock="real")
    with pytest.raises(
        BaselineError, match=r"b\.json: clock mode differs: baseline is virtual time, candidate is real"
    ):
        check_compatible(base, real, path="b.json")
    with pytest.raises(BaselineError, match="clock mode differs"):
        check_compatible(base, real, allow_mismatch=True)  # never comparable
    other = dataclasses.replace(base, scenario_name="barge-in")
    with pytest.raises(
        BaselineError, match="scenario differs: baseline 'quick-3-turn', candidate 'barge-in'"
    ):
        check_compatible(base, other, path="b.json")
    edited = dataclasses.replace(base, scenario_hash="sha256:0")
    with pytest.raises(BaselineError, match="scenario 'quick-3-turn' content differs"):
        check_compatible(base, edited)
    renamed = dataclasses.replace(base, pipeline_name="piper")
    with pytest.raises(BaselineError, match=r"pipeline differs: .*--allow-mismatch"):
        check_compatible(base, renamed)
    warnings = check_compatible(base, renamed, allow_mismatch=True)
    assert len(warnings) == 1 and "compared anyway" in warnings[0]
    assert check_compatible(base, base) == []


def test_pipeline_setting_changes_only_warn_and_name_the_settings(baseline_run: Path, tmp_path: Path) -> None:
    base = from_run(baseline_run)
    slower = load_pipeline(EMULATED).with_overrides({"tts.first_audio_ms": 130})
    cand = replay(slower, tmp_path / "run")
    (warning,) = check_compatible(base, cand)
    assert warning == "pipeline settings differ from the baseline: tts.first_audio_ms 90 → 130"
    with pytest.raises(BaselineError, match="cannot pool runs of different scenarios or pipeline settings"):
        pool([base, cand])
    assert pool([base, cand], strict=False).runs == 2


# -- injected regressions, end to end in virtual time ------------------------------------


def test_slower_tts_is_flagged_naming_the_metric(baseline_run: Path, tmp_path: Path) -> None:
    base = from_run(baseline_run)
    cand = replay(load_pipeline(EMULATED).with_overrides({"tts.first_audio_ms": 130}), tmp_path / "run")
    report = compare(base, cand)
    assert report.mode is Mode.EXACT and report.failed
    assert regressed(report) == {
        "tts_first_audio.p50",
        "tts_first_audio.p95",
        "voice_to_voice.p50",
        "voice_to_voice.p95",
    }
    for row in report.rows:
        if row.verdict is Verdict.REGRESSED:
            assert row.delta_ms == pytest.approx(40.0, abs=1e-3)
    table = format_table(report)
    assert re.search(r"^tts_first_audio\s+p50\s+90\.0\s+130\.0\s+\+40\.0\s+\+44\.4%.*REGRESSED", table, re.M)
    assert table.splitlines()[-1].startswith("FAIL: 4 regressed")


def test_one_more_token_in_the_first_phrase_is_flagged(tmp_path: Path) -> None:
    scenario = tmp_path / "plain.yaml"
    scenario.write_text(PLAIN_SCENARIO)
    pipeline = load_pipeline(EMULATED)
    base = replay(pipeline.with_overrides({"chunker.max_words": 3}), tmp_path / "a", scenario)
    cand = replay(pipeline.with_overrides({"chunker.max_words": 4}), tmp_path / "b", scenario)
    assert cand.values("first_phrase") == tuple(round(v + TOKEN_MS, 3) for v in base.values("first_phrase"))
    report = compare(base, cand)
    assert {"first_phrase.p50", "first_phrase.p95", "voice_to_voice.p50"} <= regressed(report)
    assert {r.metric for r in report.rows if r.failed} == {"first_phrase", "voice_to_voice"}
    for row in report.rows:
        if row.metric == "first_phrase":
            assert row.delta_ms == pytest.approx(TOKEN_MS, abs=1e-3)


def test_faster_tts_is_reported_as_an_improvement(baseline_run: Path, tmp_path: Path) -> None:
    base = from_run(baseline_run)
    cand = replay(load_pipeline(EMULATED).with_overrides({"tts.first_audio_ms": 50}), tmp_path / "run")
    report = compare(base, cand)
    assert not report.failed
    improved = {r.name for r in report.rows if r.verdict is Verdict.IMPROVED}
    assert improved == {
        "tts_first_audio.p50",
        "tts_first_audio.p95",
        "voice_to_voice.p50",
        "voice_to_voice.p95",
    }


def test_jittered_runs_with_different_seeds_are_not_flagged(tmp_path: Path) -> None:
    """Noise only: the same jittery LLM with different seeds, compared statistically.

    Ten runs (seeds 1-10), twenty comparisons of 4 runs against 4 others. alpha
    is per row, so about 1 in 20 noise-only comparisons may fail (measured over
    200 splits of 40 seeds: 4.5 % at alpha 0.05, 1.5 % at 0.01); the splits
    share runs, so failures come in pairs (P(>= 2 of 20) is 26 % at 5 %):
    allow two.
    """
    noisy = load_pipeline(EMULATED).with_overrides({"llm.jitter": 0.3, "llm.ttft_jitter_ms": 15.0})
    runs = [replay(noisy.with_overrides({"llm.seed": s}), tmp_path / f"seed-{s}") for s in range(1, 11)]
    assert runs[0].values("llm_ttft") != runs[1].values("llm_ttft")  # the noise is real
    rng = np.random.default_rng(11)
    failed = []
    for _ in range(20):
        picked = rng.permutation(len(runs))
        base = pool([runs[i] for i in picked[:4]], strict=False)
        cand = pool([runs[i] for i in picked[4:8]], strict=False)
        report = compare(base, cand, Options(mode=Mode.STATISTICAL))
        if report.failed:
            failed.append(format_table(report))
    assert len(failed) <= 2, "\n\n".join(failed)
    # Exact mode would call this noise a change: that is what the statistical mode is for.
    assert compare(pool(runs[:4], strict=False), pool(runs[4:8], strict=False)).failed


# -- outputs ----------------------------------------------------------------------------


def _sample_report() -> Any:
    base = synthetic([771.216, 771.653, 778.71], clock="virtual")
    cand = synthetic([771.216, 771.653, 818.71], clock="virtual")
    return compare(base, cand, Options(stats=("p50", "p95", "mean")))


def test_junit_xml_has_the_usual_schema_shape() -> None:
    report = _sample_report()
    root = ET.fromstring(junit_xml(report, "vlt.regress.s", "s x p"))
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    failures = [c for c in cases if c.find("failure") is not None]
    for node in (root, suite):
        for attr in ("tests", "failures", "errors", "skipped", "time"):
            assert attr in node.attrib, (node.tag, attr)
            float(node.attrib[attr])
        assert node.attrib["tests"] == str(len(cases)) == "4"  # 3 stats + unanswered turns
        assert node.attrib["failures"] == str(len(failures)) == "2"
        assert node.attrib["errors"] == node.attrib["skipped"] == "0"
    assert suite.attrib["name"] == "vlt.regress.s"
    for case in cases:
        assert set(case.attrib) == {"classname", "name", "time"}
        assert set(c.tag for c in case) <= {"failure", "system-out"}
    failure = next(c for c in cases if c.attrib["name"] == "p95").find("failure")
    assert failure is not None and failure.attrib["type"] == "LatencyRegressed"
    assert failure.attrib["message"].startswith("voice_to_voice p95 regressed: 778.0 → 814.0 ms (+36.0 ms")
    assert [c.attrib["classname"] for c in cases][-1] == "vlt.regress.s.turns"
    props = {p.attrib["name"]: p.attrib["value"] for p in suite.iter("property")}
    assert props["mode"] == "exact"


def test_markdown_summary_is_a_table() -> None:
    text = markdown_summary(_sample_report(), "s x p")
    lines = text.splitlines()
    assert lines[0] == "### vlt regress: ❌ latency regression"
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + 3 and all(line.count(" | ") == 8 for line in table)
    assert "🔴 **regressed**" in text and "**FAIL: 2 regressed" in text


# -- the command line ------------------------------------------------------------------


def vlt(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_ci_gate_committed_baseline_passes(tmp_path: Path) -> None:
    """The project's own regression gate (.ci/run runs the same command)."""
    base = load_baseline(COMMITTED)
    assert base.clock == "virtual" and base.scenario_name == "quick-3-turn" and base.runs == 1
    result = vlt(
        "regress",
        "--baseline", "baselines/quick-3-turn.virtual.json",
        "--scenario", "scenarios/quick-3-turn.yaml",
        "--pipeline", "pipelines/emulated.toml",
        "--clock", "virtual",
        "--runs-dir", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "exact comparison" in result.stdout and "PASS: 0 regressed" in result.stdout


def test_cli_save_then_regress_exit_codes_and_reports(baseline_run: Path, tmp_path: Path) -> None:
    saved = vlt("baseline", "save", str(baseline_run), "-o", str(tmp_path / "b.json"))
    assert saved.returncode == 0, saved.stderr
    assert "quick-3-turn x emulated, virtual time, 3 turns from 1 run" in saved.stdout
    same = vlt("regress", "--baseline", str(tmp_path / "b.json"), "--run", str(baseline_run))
    assert same.returncode == 0, same.stderr

    slow = tmp_path / "slow.toml"
    slow.write_text(EMULATED.read_text().replace("first_audio_ms = 90", "first_audio_ms = 130"))
    junit, summary = tmp_path / "out" / "junit.xml", tmp_path / "out" / "summary.md"
    result = vlt(
        "regress", "--baseline", str(tmp_path / "b.json"),
        "--scenario", "scenarios/quick-3-turn.yaml", "--pipeline", str(slow),
        "--runs-dir", str(tmp_path / "runs"), "--junit", str(junit), "--summary", str(summary),
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"^tts_first_audio\s+p95\s.*REGRESSED", result.stdout, re.M)
    assert "warning: pipeline settings differ from the baseline: tts.first_audio_ms 90 → 130" in result.stdout
    assert ET.parse(junit).getroot().attrib["failures"] == "4"
    assert "tts_first_audio" in summary.read_text()
    # A budget that allows the slowdown passes.
    allowed = vlt(
        "regress", "--baseline", str(tmp_path / "b.json"), "--metrics", "tts_first_audio,v2v",
        "--scenario", "scenarios/quick-3-turn.yaml", "--pipeline", str(slow),
        "--runs-dir", str(tmp_path / "runs"), "--budget-ms", "45", "--quiet",
    )  # fmt: skip
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "candidate run" not in allowed.stdout


def _one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    for fragment in fragments:
        assert fragment in line


def test_cli_usage_and_baseline_errors_exit_2(baseline_run: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _one_line_error(
        vlt("regress", "--baseline", str(bad), "--run", str(baseline_run)), "bad.json:1", "not valid JSON"
    )
    good = tmp_path / "b.json"
    save_baseline(from_run(baseline_run), good)
    _one_line_error(
        vlt("regress", "--baseline", str(good), "--run", str(baseline_run), "--metrics", "ttfb"),
        "unknown metric 'ttfb'; valid: voice_to_voice",
    )
    _one_line_error(
        vlt("regress", "--baseline", str(good), "--run", str(baseline_run), "--budget-pct", "v2v=lots"),
        "--budget-pct 'v2v=lots'",
    )
    # A mismatch is caught before any run starts (this one would take 30 s in real time).
    _one_line_error(
        vlt(
            "regress", "--baseline", str(good), "--scenario", "scenarios/quick-3-turn.yaml", "--clock", "real"
        ),
        "b.json: clock mode differs",
    )
    _one_line_error(
        vlt("regress", "--baseline", str(good), "--scenario", "scenarios/barge-in.yaml"),
        "scenario differs: baseline 'quick-3-turn', candidate 'barge-in'",
    )
    _one_line_error(vlt("baseline", "save", str(tmp_path), "-o", str(good)), "not a run folder")
    usage = vlt("regress", "--baseline", str(good))
    assert usage.returncode == 2 and "one of the arguments --scenario --run is required" in usage.stderr
