"""Compare a candidate's latency samples with a baseline's. Pure: no I/O, no clock.

Each metric x statistic (p50, p95, mean …) gets a verdict — improved,
unchanged or regressed — with its evidence. Two modes:

``exact``
    Both sides are virtual-time runs: with emulated stages they are free of
    noise (the same pipeline gives identical samples), so any change larger
    than :data:`EXACT_EPSILON_MS` (1 µs, the precision samples are stored
    with) is real. A slowdown beyond the budget is a regression; no statistics.

``statistical``
    Real-time runs are noisy. A slowdown counts as a regression only when it
    is *both* beyond the budget *and* statistically significant:

    - a percentile-bootstrap confidence interval (level ``1 - alpha``,
      seeded, so the same inputs always give the same verdict) of the
      difference in the row's statistic lies entirely above the allowed
      slowdown, and
    - a one-sided Mann-Whitney U test (normal approximation with tie and
      continuity corrections) finds the candidate, less the allowed slowdown,
      stochastically slower than the baseline at level ``alpha``.

    The bootstrap tests the statistic the row is about (a p95 is not a
    median); the rank test guards against the bootstrap's optimism at small
    samples, where resampling a handful of values understates the spread.
    Cliff's delta (the rank-based effect size, -1..1) goes with every row.

Budgets are allowed slowdowns: ``max(ms, pct % of the baseline value)``.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from agent.metrics.baseline import Baseline
from agent.metrics.results import METRICS
from agent.metrics.two_sample import bootstrap_delta_ci, cliffs_delta, mann_whitney, min_p_value, stat_value

__all__ = [
    "DEFAULT_BUDGETS",
    "DEFAULT_STATS",
    "EXACT_EPSILON_MS",
    "METRIC_ALIASES",
    "Budget",
    "Comparison",
    "Mode",
    "Options",
    "Report",
    "TurnCheck",
    "Verdict",
    "compare",
    "parse_budgets",
    "parse_stat",
    "resolve_metric",
]

DEFAULT_STATS: tuple[str, ...] = ("p50", "p95")
#: Samples are stored to the microsecond; smaller differences are rounding.
EXACT_EPSILON_MS = 0.001
#: Short names accepted wherever a metric is named.
METRIC_ALIASES: dict[str, str] = {"v2v": "voice_to_voice"}

_STAT = re.compile(r"p(\d{1,2}(?:\.\d+)?|100)|mean")


class Verdict(StrEnum):
    IMPROVED = "improved"
    UNCHANGED = "unchanged"
    REGRESSED = "regressed"
    MISSING = "missing"
    """The baseline has samples of this metric, the candidate none (its turns failed?)."""


class Mode(StrEnum):
    EXACT = "exact"
    STATISTICAL = "statistical"


@dataclass(frozen=True, slots=True)
class Budget:
    """An allowed slowdown: the larger of an absolute and a relative one."""

    ms: float = 0.0
    pct: float = 0.0

    def allowance(self, baseline_value: float) -> float:
        return max(self.ms, self.pct / 100.0 * abs(baseline_value))


#: Budgets when the user sets none. Exact: any slowdown (> 1 µs) fails.
#: Statistical: slowdowns under 1 ms pass even when significant. Real-time hops
#: of a few hundred µs (transport, ASR finalize on a loaded 2-core runner) drift
#: by that much between runs: with no floor, 23.5 % of noise-only comparisons
#: of 5 vs 5 real-time runs failed on some sub-millisecond hop; with it, none
#: (benchmarks/regress_power.py). No caller hears 1 ms.
DEFAULT_BUDGETS: dict[Mode, Budget] = {
    Mode.EXACT: Budget(),
    Mode.STATISTICAL: Budget(ms=1.0),
}


@dataclass(frozen=True, slots=True)
class Options:
    metrics: tuple[str, ...] | None = None
    """Metrics to compare; ``None``: every metric the baseline has samples of."""
    stats: tuple[str, ...] = DEFAULT_STATS
    budget_ms: Mapping[str, float] = field(default_factory=dict)
    """Allowed slowdown in ms per metric; the key ``"*"`` applies to metrics not named."""
    budget_pct: Mapping[str, float] = field(default_factory=dict)
    """Allowed slowdown in % of the baseline value, keyed like ``budget_ms``."""
    alpha: float = 0.05
    mode: Mode | None = None
    """``None``: exact when both sides are virtual-time runs, else statistical."""
    resamples: int = 2000
    seed: int = 0

    def budget(self, metric: str, mode: Mode) -> Budget:
        """The metric's own budget, else the ``"*"`` one, else the mode's default."""
        default = DEFAULT_BUDGETS[mode]
        by_ms = {METRIC_ALIASES.get(k, k): v for k, v in self.budget_ms.items()}
        by_pct = {METRIC_ALIASES.get(k, k): v for k, v in self.budget_pct.items()}
        ms = by_ms.get(metric, by_ms.get("*", default.ms))
        pct = by_pct.get(metric, by_pct.get("*", default.pct))
        return Budget(ms, pct)


@dataclass(frozen=True, slots=True)
class Comparison:
    """One metric x statistic: the verdict and its evidence."""

    metric: str
    stat: str
    verdict: Verdict
    mode: Mode
    baseline: float
    candidate: float | None
    n_baseline: int
    n_candidate: int
    allowance_ms: float
    ci_ms: tuple[float, float] | None = None
    """Confidence interval of the difference (statistical mode)."""
    p_value: float | None = None
    """One-sided Mann-Whitney p-value in the direction of the observed change: for a
    slowdown, that the candidate is slower by more than the allowance."""
    effect: float | None = None
    """Cliff's delta: > 0 means candidate values tend to be larger (slower)."""
    note: str = ""

    @property
    def name(self) -> str:
        return f"{self.metric}.{self.stat}"

    @property
    def delta_ms(self) -> float | None:
        return None if self.candidate is None else self.candidate - self.baseline

    @property
    def delta_pct(self) -> float | None:
        delta = self.delta_ms
        if delta is None or self.baseline == 0:
            return None
        return 100.0 * delta / abs(self.baseline)

    @property
    def failed(self) -> bool:
        return self.verdict in (Verdict.REGRESSED, Verdict.MISSING)


@dataclass(frozen=True, slots=True)
class TurnCheck:
    """More unanswered turns (failed, no response) than the baseline is a regression too."""

    baseline_unanswered: int
    baseline_total: int
    candidate_unanswered: int
    candidate_total: int

    @property
    def failed(self) -> bool:
        if self.candidate_total == 0:
            return self.baseline_total > 0
        base_rate = self.baseline_unanswered / self.baseline_total if self.baseline_total else 0.0
        return self.candidate_unanswered / self.candidate_total > base_rate

    def describe(self) -> str:
        return (
            f"unanswered turns: baseline {self.baseline_unanswered}/{self.baseline_total}, "
            f"candidate {self.candidate_unanswered}/{self.candidate_total}"
        )


@dataclass(frozen=True, slots=True)
class Report:
    mode: Mode
    alpha: float
    rows: tuple[Comparison, ...]
    turns: TurnCheck
    warnings: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return self.turns.failed or any(row.failed for row in self.rows)

    def count(self, verdict: Verdict) -> int:
        return sum(1 for row in self.rows if row.verdict is verdict)


# -- names -------------------------------------------------------------------------


def resolve_metric(name: str) -> str:
    """A metric name or alias → the metric; ``ValueError`` naming the valid ones."""
    metric = METRIC_ALIASES.get(name, name)
    if metric not in METRICS:
        aliases = ", ".join(f"{a} = {m}" for a, m in METRIC_ALIASES.items())
        raise ValueError(f"unknown metric {name!r}; valid: {', '.join(METRICS)} ({aliases})")
    return metric


def parse_stat(name: str) -> str:
    """``p50``, ``p95``, ``p99.9``, ``mean`` … → the same, validated."""
    if not _STAT.fullmatch(name) or (name != "mean" and float(name[1:]) > 100):
        raise ValueError(f"unknown statistic {name!r}; use mean or pNN with 0 <= NN <= 100 (p50, p95 …)")
    return name


def parse_budgets(items: Sequence[str], *, what: str = "budget") -> dict[str, float]:
    """``["voice_to_voice=20", "v2v=30", "5"]`` → ``{"voice_to_voice": 30, "*": 5}``.

    A bare number applies to every metric not named.
    """
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        key = resolve_metric(name.strip()) if sep else "*"
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{what} {item!r}: expected METRIC=NUMBER or NUMBER") from None
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"{what} {item!r}: must be a number >= 0")
        out[key] = number
    return out


# -- the comparison ------------------------------------------------------------------


def _rng(seed: int, metric: str, stat: str) -> np.random.Generator:
    # Each row its own reproducible stream: adding a metric must not change another's CI.
    return np.random.default_rng([seed, zlib.crc32(f"{metric}:{stat}".encode())])


def _exact_row(metric: str, stat: str, x: Sequence[float], y: Sequence[float], budget: Budget) -> Comparison:
    base, cand = stat_value(x, stat), stat_value(y, stat)
    allowance = budget.allowance(base)
    delta = cand - base
    note = ""
    if delta > max(allowance, EXACT_EPSILON_MS):
        verdict = Verdict.REGRESSED
    elif delta < -EXACT_EPSILON_MS:
        verdict = Verdict.IMPROVED
    else:
        verdict = Verdict.UNCHANGED
        if delta > EXACT_EPSILON_MS:
            note = "slower, within budget"
    return Comparison(metric, stat, verdict, Mode.EXACT, base, cand, len(x), len(y), allowance, note=note)


def _statistical_row(
    metric: str, stat: str, x: Sequence[float], y: Sequence[float], budget: Budget, options: Options
) -> Comparison:
    base, cand = stat_value(x, stat), stat_value(y, stat)
    allowance = budget.allowance(base)
    lo, hi = bootstrap_delta_ci(
        x, y, stat, alpha=options.alpha, resamples=options.resamples, rng=_rng(options.seed, metric, stat)
    )
    y_arr = np.asarray(y, dtype=np.float64)
    # Test "slower by more than the allowance" by removing the allowance first.
    slower = mann_whitney(x, y_arr - allowance).p_slower
    faster = mann_whitney(x, y_arr).p_faster
    delta = cand - base
    note = ""
    if lo > allowance and slower < options.alpha:
        verdict = Verdict.REGRESSED
    elif hi < 0 and faster < options.alpha:
        verdict = Verdict.IMPROVED
    else:
        verdict = Verdict.UNCHANGED
        if min_p_value(len(x), len(y)) >= options.alpha:
            note = f"too few samples for a test at alpha={options.alpha:g}"
        elif lo > allowance:
            note = "CI above budget, rank test not significant"
        elif lo > 0:
            note = "slower, within budget"
    return Comparison(
        metric,
        stat,
        verdict,
        Mode.STATISTICAL,
        base,
        cand,
        len(x),
        len(y),
        allowance,
        ci_ms=(lo, hi),
        p_value=slower if delta >= 0 else faster,
        effect=cliffs_delta(x, y),
        note=note,
    )


def compare(baseline: Baseline, candidate: Baseline, options: Options | None = None) -> Report:
    """Every metric x statistic of ``candidate`` against ``baseline``."""
    options = options or Options()
    if not 0 < options.alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {options.alpha:g}")
    stats = tuple(parse_stat(s) for s in options.stats)
    warnings: list[str] = []
    if options.mode is not None:
        mode = options.mode
    else:
        mode = Mode.EXACT if baseline.virtual and candidate.virtual else Mode.STATISTICAL
    if mode is Mode.EXACT and not (baseline.virtual and candidate.virtual):
        warnings.append("exact comparison of real-time runs: their noise counts as change")
    if options.metrics is None:
        metrics = tuple(m for m in METRICS if baseline.values(m))
    else:
        metrics = tuple(resolve_metric(m) for m in options.metrics)
        empty = [m for m in metrics if not baseline.values(m)]
        if empty:
            raise ValueError(f"the baseline has no samples of {', '.join(empty)}")
    rows: list[Comparison] = []
    for metric in metrics:
        x, y = baseline.values(metric), candidate.values(metric)
        budget = options.budget(metric, mode)
        if mode is Mode.EXACT and y and len(x) != len(y):
            warnings.append(
                f"{metric}: baseline has {len(x)} samples, candidate {len(y)}; an exact comparison "
                f"expects the same runs (--repeat {baseline.runs})"
            )
        for stat in stats:
            if not y:
                base = stat_value(x, stat)
                rows.append(
                    Comparison(
                        metric,
                        stat,
                        Verdict.MISSING,
                        mode,
                        base,
                        None,
                        len(x),
                        0,
                        budget.allowance(base),
                        note="no samples in the candidate",
                    )
                )
            elif mode is Mode.EXACT:
                rows.append(_exact_row(metric, stat, x, y, budget))
            else:
                rows.append(_statistical_row(metric, stat, x, y, budget, options))
    if mode is Mode.STATISTICAL and rows:
        n1 = min(r.n_baseline for r in rows)
        n2 = min((r.n_candidate for r in rows if r.n_candidate), default=0)
        if min_p_value(n1, n2) >= options.alpha:
            warnings.append(
                f"with {n1} baseline and {n2} candidate samples no test can reach alpha={options.alpha:g}: "
                "nothing can be flagged; use more runs (--repeat) or a longer scenario"
            )
    turns = TurnCheck(baseline.unanswered, baseline.turns, candidate.unanswered, candidate.turns)
    return Report(mode, options.alpha, tuple(rows), turns, tuple(warnings))
