"""``vlt analyze``: measure turn-taking in a recording of any conversation (docs/black-box.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.cli.arguments import Subcommands, check_run_folders, finite_float
from agent.cli.exit_codes import EXIT_FAILED, EXIT_OK

__all__ = ["add_analyze_command"]


def add_analyze_command(commands: Subcommands) -> None:
    an = commands.add_parser(
        "analyze",
        help="measure turn-taking in a recording (stereo, or caller and agent files)",
        description="Find the caller's turns in a recording (from a scenario, or by energy) and measure "
        "each as heard: response gap (voice-to-voice), barge-in stop, overlap, agent talk-over and "
        "silences inside replies. Writes a run folder that vlt report, baseline save and regress --run read.",
    )
    an.add_argument(
        "files",
        nargs="+",
        type=Path,
        metavar="WAV",
        help="a stereo WAV, or two mono WAVs: caller, then agent",
    )
    an.add_argument(
        "--caller", choices=("left", "right"), default="left", help="the caller's channel of a stereo WAV"
    )
    an.add_argument("--scenario", type=Path, help="take the caller's turns from this scenario's utterances")
    an.add_argument(
        "--threshold-dbfs", type=finite_float, default=-40.0, help="audible above this level (default -40)"
    )
    an.add_argument(
        "--turn-gap-ms",
        type=finite_float,
        default=600.0,
        help="caller pauses shorter than this stay inside a turn (default 600; without --scenario)",
    )
    an.add_argument(
        "--bridge-ms",
        type=finite_float,
        default=300.0,
        help="agent pauses shorter than this are inside one sound (default 300)",
    )
    an.add_argument(
        "--gap-ms",
        type=finite_float,
        default=300.0,
        help="list silences inside a reply this long (default 300)",
    )
    an.add_argument("--label", default="recording", help="the agent's name in the run folder (and baseline)")
    an.add_argument(
        "--runs-dir", type=Path, default=Path("runs"), help="where run folders go (default: runs/)"
    )
    an.add_argument("--out", type=Path, default=None, help="exact run folder to write (overrides --runs-dir)")
    an.set_defaults(func=_cmd_analyze)


def _cmd_analyze(args: argparse.Namespace) -> int:
    from agent.config.scenario import load_scenario
    from agent.errors import ConfigError
    from agent.jobs.analyze import AnalyzeOptions, analyze_recording
    from agent.metrics.results import new_run_dir
    from agent.report.console import format_summary

    if len(args.files) > 2:
        raise ConfigError(f"give one stereo recording or two mono files, not {len(args.files)} files")
    for name in ("turn_gap_ms", "bridge_ms", "gap_ms"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 0, got {getattr(args, name):g}")
    check_run_folders(args.runs_dir, args.out)
    scenario = load_scenario(args.scenario) if args.scenario is not None else None
    name = scenario.name if scenario is not None else args.label
    out = args.out if args.out is not None else new_run_dir(args.runs_dir, f"analyze-{name}")
    options = AnalyzeOptions(
        caller=args.caller,
        threshold_dbfs=args.threshold_dbfs,
        turn_gap_ms=args.turn_gap_ms,
        bridge_ms=args.bridge_ms,
        gap_ms=args.gap_ms,
        label=args.label,
    )
    result = analyze_recording(list(args.files), out, scenario=scenario, options=options)
    print(
        f"{'turn':>4}  {'status':<12} {'speech end':>10} {'v2v':>8} {'barge stop':>10} {'overlap':>8} "
        f"{'talk-over':>9} {'longest gap':>11}"
    )
    for record in result.records:
        heard = record["heard"]
        lat = record["latency_ms"]

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}"

        print(
            f"{record['turn']:>4}  {record['status']:<12} {ms(heard['speech_end_ms']):>10} "
            f"{ms(lat['voice_to_voice']):>8} {ms(lat['barge_in_stop']):>10} {ms(heard['overlap_ms']):>8} "
            f"{ms(heard['talk_over_ms']):>9} {ms(heard['longest_reply_silence_ms']):>11}"
        )
    if result.turns_expected is not None and len(result.records) < result.turns_expected:
        print(f"only {len(result.records)} of the scenario's {result.turns_expected} caller turns were found")
    print(format_summary(result.summary))
    print(f"results: {result.run_dir}")
    return EXIT_FAILED if any(not r["passed"] for r in result.records) else EXIT_OK
