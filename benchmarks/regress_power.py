"""How often `vlt regress` cries wolf on real-time runs, and what it can catch.

On real-time runs of a pipeline (default: the shipped ``emulated`` one, all
stages emulated but paced by the real clock, so the noise is the machine's:
scheduling, the event loop, the loopback websocket):

1. **False alarms.** Collect a pool of real-time runs once. Each noise-only
   comparison draws two disjoint groups of ``--per-side`` runs from the pool,
   saves one as the baseline and one as the candidate, and runs the default
   statistical comparison (every metric the baseline has, p50 and p95, default
   budgets). A false alarm is a comparison that would fail the build (any row
   regressed, or a turn unanswered); the voice-to-voice rows alone are counted
   too. The issue asks for 20 comparisons; ``--splits`` more give a tighter
   estimate (splits share runs, so they are not independent).
2. **Power.** For a grid of slowdowns d, random splits as above, with every
   candidate voice-to-voice sample shifted by +d ms (a known, injected
   slowdown); power = the fraction of comparisons whose voice-to-voice p50 or
   p95 row is flagged as regressed. The smallest d with power >= 95 % is the
   detectable slowdown at this sample size.

Real-time runs are slow (the 3-turn scenario takes ~30 s), so runs are kept in
``--pool-dir`` and reused by later invocations; only missing ones are run.

Run:  .venv/bin/python benchmarks/regress_power.py [--pool 12] [--per-side 5]
          [--pipeline pipelines/emulated.toml] [--scenario scenarios/quick-3-turn.yaml]
          [--pool-dir runs/regress-power]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent import clock as clocks  # noqa: E402
from agent.config.scenario import load_scenario  # noqa: E402
from agent.jobs.runner import run_scenario  # noqa: E402
from agent.metrics.baseline import Baseline, BaselineError, from_run, pool  # noqa: E402
from agent.metrics.regress import DEFAULT_BUDGETS, Mode, Options, Verdict, compare  # noqa: E402
from agent.stages.pipeline import load_pipeline  # noqa: E402
from agent.stages.pipeline_names import resolve_pipeline  # noqa: E402

SLOWDOWNS_MS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 40.0)


def collect_pool(args: argparse.Namespace) -> list[Baseline]:
    """Complete real-time runs of the scenario x pipeline in the pool folder, topped up to ``--pool``."""
    scenario = load_scenario(args.scenario)
    pipeline = load_pipeline(resolve_pipeline(args.pipeline))
    args.pool_dir.mkdir(parents=True, exist_ok=True)
    runs: list[Baseline] = []
    for run_dir in sorted(p for p in args.pool_dir.iterdir() if p.is_dir()):
        try:
            run = from_run(run_dir)
        except BaselineError:
            continue  # an interrupted or foreign folder
        # Pool runs of the same scenario and pipeline name; settings may drift as the code
        # evolves between invocations, which is the kind of noise a gate must survive anyway.
        if (run.scenario_name, run.pipeline_name, run.clock) == (scenario.name, pipeline.name, "real"):
            runs.append(run)
    reused = len(runs)
    while len(runs) < args.pool:
        run_dir = args.pool_dir / f"run-{time.strftime('%Y%m%dT%H%M%S')}-{len(runs):03d}"
        started = time.monotonic()

        async def main(clock: clocks.Clock, run_dir: Path = run_dir) -> object:
            return await run_scenario(scenario, clock, pipeline=pipeline, run_dir=run_dir)

        clocks.run(main, virtual=False)
        runs.append(from_run(run_dir))
        print(f"  real-time run {len(runs)}/{args.pool}: {time.monotonic() - started:.1f} s", flush=True)
    print(
        f"pool: {len(runs)} real-time runs of {scenario.name} x {pipeline.name} ({reused} reused) "
        f"in {args.pool_dir}"
    )
    return runs[: args.pool] if args.pool else runs


def split(runs: Sequence[Baseline], per_side: int, rng: random.Random) -> tuple[Baseline, Baseline]:
    picked = rng.sample(range(len(runs)), 2 * per_side)
    base = pool([runs[i] for i in picked[:per_side]], strict=False)
    cand = pool([runs[i] for i in picked[per_side:]], strict=False)
    return base, cand


def shifted(candidate: Baseline, metric: str, delta_ms: float) -> Baseline:
    samples = dict(candidate.samples)
    samples[metric] = tuple(v + delta_ms for v in samples[metric])
    return replace(candidate, samples=samples)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pipeline", default="pipelines/emulated.toml", help="pipeline (path or name)")
    parser.add_argument("--scenario", type=Path, default=ROOT / "scenarios" / "quick-3-turn.yaml")
    parser.add_argument("--pool", type=int, default=12, help="real-time runs in the pool (default 12)")
    parser.add_argument(
        "--per-side", type=int, default=5, help="runs per baseline and per candidate (default 5)"
    )
    parser.add_argument("--pool-dir", type=Path, default=ROOT / "runs" / "regress-power")
    parser.add_argument("--comparisons", type=int, default=20, help="noise-only comparisons (default 20)")
    parser.add_argument("--splits", type=int, default=200, help="extra noise-only splits for a tighter rate")
    parser.add_argument("--trials", type=int, default=100, help="comparisons per injected slowdown")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.pool < 2 * args.per_side:
        parser.error(f"--pool must be at least 2 x --per-side ({2 * args.per_side})")

    started = time.monotonic()
    runs = collect_pool(args)
    turns = runs[0].turns
    n = turns * args.per_side
    options = Options(alpha=args.alpha)
    default = DEFAULT_BUDGETS[Mode.STATISTICAL]
    print(
        f"sample size: {args.per_side} runs per side = {n} turns per side; alpha {args.alpha:g}; "
        f"default statistical budget {default.ms:g} ms / {default.pct:g} %; p50 and p95 of every metric"
    )

    def false_alarms(
        count: int, rng: random.Random, opts: Options = options
    ) -> tuple[int, int, dict[str, int]]:
        build = v2v = 0
        rows: dict[str, int] = {}
        for _ in range(count):
            base, cand = split(runs, args.per_side, rng)
            report = compare(base, cand, opts)
            build += report.failed
            flagged = [r for r in report.rows if r.verdict is Verdict.REGRESSED]
            v2v += any(r.metric == "voice_to_voice" for r in flagged)
            for row in flagged:
                rows[row.name] = rows.get(row.name, 0) + 1
        return build, v2v, rows

    rng = random.Random(args.seed)
    build20, v2v20, rows20 = false_alarms(args.comparisons, rng)
    build_more, v2v_more, rows_more = false_alarms(args.splits, rng)
    # The same splits again with no budget at all, to show what the default floor buys.
    no_floor = Options(alpha=args.alpha, budget_ms={"*": 0.0}, budget_pct={"*": 0.0})
    build_zero, v2v_zero, rows_zero = false_alarms(args.splits, random.Random(args.seed + 1), no_floor)
    print()
    print("false alarms (noise-only comparisons)")
    print(f"{'comparisons':>12}  {'budget':>9}  {'build failed':>12}  {'v2v flagged':>11}  rows flagged")
    for count, budget, build, v2v, rows in (
        (args.comparisons, "default", build20, v2v20, rows20),
        (args.splits, "default", build_more, v2v_more, rows_more),
        (args.splits, "0 ms", build_zero, v2v_zero, rows_zero),
    ):
        detail = ", ".join(f"{k} x{v}" for k, v in sorted(rows.items())) or "none"
        print(
            f"{count:>12}  {budget:>9}  {100 * build / count:>11.1f}%  {100 * v2v / count:>10.1f}%  {detail}"
        )

    v2v_options = Options(metrics=("voice_to_voice",), alpha=args.alpha)
    print()
    print(f"power: voice_to_voice slowdown injected into the candidate, {args.trials} comparisons each")
    print(f"{'slowdown ms':>12}  {'p50 flagged':>11}  {'p95 flagged':>11}  {'either':>7}")
    power: list[dict[str, float]] = []
    detectable = None
    for delta in SLOWDOWNS_MS:
        p50 = p95 = either = 0
        for _ in range(args.trials):
            base, cand = split(runs, args.per_side, rng)
            report = compare(base, shifted(cand, "voice_to_voice", delta), v2v_options)
            flagged = {r.stat for r in report.rows if r.verdict is Verdict.REGRESSED}
            p50 += "p50" in flagged
            p95 += "p95" in flagged
            either += bool(flagged)
        rate = either / args.trials
        power.append(
            {"slowdown_ms": delta, "p50": p50 / args.trials, "p95": p95 / args.trials, "either": rate}
        )
        print(
            f"{delta:>12g}  {100 * p50 / args.trials:>10.0f}%  {100 * p95 / args.trials:>10.0f}%  "
            f"{100 * rate:>6.0f}%"
        )
        if detectable is None and rate >= 0.95:
            detectable = delta
    print()
    found = f"{detectable:g} ms" if detectable is not None else f"> {SLOWDOWNS_MS[-1]:g} ms"
    print(
        f"false-alarm rate over {args.comparisons} noise-only comparisons: "
        f"{100 * build20 / args.comparisons:.0f}% of builds "
        f"({100 * v2v20 / args.comparisons:.0f}% on voice_to_voice); over {args.splits}: "
        f"{100 * build_more / args.splits:.1f}% ({100 * v2v_more / args.splits:.1f}%)"
    )
    print(f"smallest voice_to_voice slowdown detected with >= 95% power at {n} vs {n} turns: {found}")
    print(f"wall time {time.monotonic() - started:.0f} s")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "pool": len(runs),
                    "per_side": args.per_side,
                    "turns_per_side": n,
                    "false_alarms": {
                        "comparisons": args.comparisons,
                        "build": build20 / args.comparisons,
                        "voice_to_voice": v2v20 / args.comparisons,
                        "splits": args.splits,
                        "build_splits": build_more / args.splits,
                        "voice_to_voice_splits": v2v_more / args.splits,
                        "build_splits_zero_budget": build_zero / args.splits,
                    },
                    "power": power,
                    "detectable_slowdown_ms": detectable,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
