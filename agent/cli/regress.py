"""``vlt baseline save`` and ``vlt regress``: latency regression gating (docs/regression.md)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from agent.cli.arguments import Subcommands, check_run_folders, split_list
from agent.cli.exit_codes import EXIT_FAILED, EXIT_OK
from agent.errors import ConfigError

if TYPE_CHECKING:
    from agent.jobs.candidate import CandidateRun

__all__ = ["add_baseline_command", "add_regress_command"]


def add_baseline_command(commands: Subcommands) -> None:
    bp = commands.add_parser(
        "baseline", help="save latency baselines", description="Manage latency baselines."
    )
    actions = bp.add_subparsers(dest="action", metavar="ACTION", required=True)
    save = actions.add_parser(
        "save",
        help="save run folders' samples as a baseline file",
        description="Store every sample of every metric of one or more run folders (of the same "
        "scenario and pipeline), with their identity and environment, as a baseline JSON file.",
    )
    save.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run folder(s) to pool")
    save.add_argument("-o", "--output", type=Path, required=True, help="baseline file to write")
    save.set_defaults(func=_cmd_baseline_save)


def _cmd_baseline_save(args: argparse.Namespace) -> int:
    from agent.metrics.baseline import from_runs, save_baseline

    baseline = from_runs(args.run_dirs)
    path = save_baseline(baseline, args.output)
    runs = f"{baseline.runs} run{'s' if baseline.runs != 1 else ''}"
    print(
        f"baseline: {path} ({baseline.scenario_name} x {baseline.pipeline_name}, {baseline.clock} time, "
        f"{baseline.turns} turns from {runs})"
    )
    return EXIT_OK


def add_regress_command(commands: Subcommands) -> None:
    rg = commands.add_parser(
        "regress",
        help="compare a candidate run with a baseline; exit 1 on a latency regression",
        description="Run (or read) a candidate and compare each metric x statistic with a baseline: "
        "exactly when both are virtual-time runs, else with a bootstrap CI and a Mann-Whitney U test. "
        "Exit 0 pass, 1 regression, 2 usage or run error.",
    )
    rg.add_argument("--baseline", type=Path, required=True, help="baseline JSON (vlt baseline save)")
    source = rg.add_mutually_exclusive_group(required=True)
    source.add_argument("--scenario", type=Path, help="scenario YAML to run as the candidate")
    source.add_argument(
        "--run", type=Path, nargs="+", metavar="RUN_DIR", help="existing run folder(s) as the candidate"
    )
    target = rg.add_mutually_exclusive_group()
    target.add_argument("--pipeline", help="pipeline TOML (path or name); default: the baseline's pipeline")
    target.add_argument("--url", help="ws:// URL of a running agent instead of an in-process one")
    rg.add_argument(
        "--clock", choices=("real", "virtual"), default=None, help="default: the baseline's clock mode"
    )
    rg.add_argument(
        "--repeat", type=int, default=None, help="replay the scenario N times (default: the baseline's runs)"
    )
    rg.add_argument(
        "--runs-dir", type=Path, default=Path("runs"), help="where candidate runs go (default: runs/)"
    )
    rg.add_argument("--metrics", help="comma-separated metrics (default: all the baseline has samples of)")
    rg.add_argument("--stats", default="p50,p95", help="comma-separated statistics (default: p50,p95)")
    rg.add_argument(
        "--budget-ms",
        action="append",
        default=[],
        metavar="[METRIC=]MS",
        help="allowed slowdown in ms (repeatable; a bare number applies to every metric)",
    )
    rg.add_argument(
        "--budget-pct",
        action="append",
        default=[],
        metavar="[METRIC=]PCT",
        help="allowed slowdown in %% of the baseline value (repeatable)",
    )
    rg.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    rg.add_argument(
        "--mode",
        choices=("auto", "exact", "statistical"),
        default="auto",
        help="auto: exact when both sides are virtual-time runs, else statistical",
    )
    rg.add_argument(
        "--allow-mismatch", action="store_true", help="compare even if scenario or pipeline name differ"
    )
    rg.add_argument("--junit", type=Path, help="write JUnit XML here")
    rg.add_argument("--summary", type=Path, help="write a Markdown summary here (e.g. $GITHUB_STEP_SUMMARY)")
    rg.add_argument("--quiet", action="store_true", help="print only the table")
    rg.set_defaults(func=_cmd_regress)


def _cmd_regress(args: argparse.Namespace) -> int:
    from agent.jobs.candidate import run_candidate
    from agent.metrics import baseline as baselines
    from agent.metrics import regress
    from agent.report.regress_output import format_table, junit_xml, markdown_summary

    base = baselines.load_baseline(args.baseline)
    if args.run is None:
        check_run_folders(args.runs_dir, None)
    try:
        budget_ms = regress.parse_budgets(args.budget_ms, what="--budget-ms")
        budget_pct = regress.parse_budgets(args.budget_pct, what="--budget-pct")
        stats = tuple(regress.parse_stat(s) for s in split_list(args.stats) or ())
        metrics = split_list(args.metrics)
        if metrics is not None:
            metrics = tuple(regress.resolve_metric(m) for m in metrics)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not stats:
        raise ConfigError("--stats: name at least one statistic (p50, p95, mean …)")
    if not 0 < args.alpha < 1:
        raise ConfigError(f"--alpha must be between 0 and 1, got {args.alpha:g}")
    if args.run is not None:
        if args.pipeline or args.url or args.clock or args.repeat:
            raise ConfigError(
                "--run reads existing runs: --pipeline, --url, --clock and --repeat do not apply"
            )
        candidate = baselines.from_runs(args.run)
    else:
        candidate = run_candidate(
            args.scenario,
            base,
            baseline_path=args.baseline,
            pipeline=args.pipeline,
            url=args.url,
            clock=args.clock,
            repeat=args.repeat,
            runs_root=args.runs_dir,
            allow_mismatch=args.allow_mismatch,
            on_run=None if args.quiet else _print_candidate_run,
        )
    warnings = baselines.check_compatible(
        base, candidate, path=args.baseline, allow_mismatch=args.allow_mismatch
    )
    options = regress.Options(
        metrics=metrics,
        stats=stats,
        budget_ms=budget_ms,
        budget_pct=budget_pct,
        alpha=args.alpha,
        mode=None if args.mode == "auto" else regress.Mode(args.mode),
    )
    try:
        report = regress.compare(base, candidate, options)
    except ValueError as exc:
        raise ConfigError(str(exc), path=args.baseline) from None
    if warnings:
        report = dataclasses.replace(report, warnings=(*warnings, *report.warnings))
    subject = (
        f"{candidate.scenario_name} x {candidate.pipeline_name}, {candidate.clock} time, "
        f"baseline {args.baseline} ({base.runs} run{'s' if base.runs != 1 else ''}), "
        f"candidate {candidate.runs} run{'s' if candidate.runs != 1 else ''}"
    )
    print(format_table(report, subject))
    if args.junit is not None:
        args.junit.parent.mkdir(parents=True, exist_ok=True)
        args.junit.write_text(junit_xml(report, f"vlt.regress.{candidate.scenario_name}", subject), "utf-8")
    if args.summary is not None:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        with args.summary.open("a", encoding="utf-8") as fh:  # appends, as $GITHUB_STEP_SUMMARY expects
            fh.write(markdown_summary(report, subject))
    return EXIT_FAILED if report.failed else EXIT_OK


def _print_candidate_run(run: CandidateRun) -> None:
    print(
        f"candidate run {run.number}/{run.total}: {run.scenario_name} against {run.target}, "
        f"{run.clock} time -> {run.run_dir}"
    )
