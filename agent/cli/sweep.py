"""``vlt sweep`` and ``vlt report``: LLM-timing sweeps and the reports of runs and sweeps (docs/sweeps.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.cli.arguments import Subcommands, check_run_folders, floats, split_list
from agent.cli.exit_codes import EXIT_OK
from agent.cli.mqtt_options import add_mqtt_options, telemetry_from_args
from agent.errors import ConfigError
from agent.stages.pipeline_names import resolve_pipeline

if TYPE_CHECKING:
    from agent.telemetry.publisher import Telemetry

__all__ = ["add_report_command", "add_sweep_command"]


def add_sweep_command(commands: Subcommands) -> None:
    from agent.jobs.sweep import DEFAULT_TPS, DEFAULT_TTFT_MS

    sw = commands.add_parser(
        "sweep",
        help="replay scenarios across LLM token speeds x TTFTs (or accelerator profiles)",
        description="Replay one or more scenarios at every point of a grid of LLM timings "
        "(tokens/s x TTFT) or of accelerator profiles, write sweep.csv, sweep.json and plots "
        "after every point, and print the latency model's prediction and the knee.",
    )
    sw.add_argument(
        "--scenario", type=Path, action="append", required=True, help="scenario YAML (repeatable)"
    )
    sw.add_argument("--pipeline", help="pipeline TOML (path or name in pipelines/) of vlt's agent")
    sw.add_argument(
        "--agent-cmd",
        help="instead of --pipeline: a shell command starting any agent, with {llm_url} (the emulated "
        "LLM's OpenAI base_url) and {port} filled in per point; needs --url (docs/black-box.md)",
    )
    sw.add_argument(
        "--url", help="with --agent-cmd: the agent's URL, {port} filled in (ws://, pcm+ws://, pipecat+ws://)"
    )
    sw.add_argument(
        "--tps", help=f"comma-separated tokens/s (default {','.join(f'{t:g}' for t in DEFAULT_TPS)})"
    )
    sw.add_argument(
        "--ttft-ms",
        help=f"comma-separated TTFTs in ms (default {','.join(f'{t:g}' for t in DEFAULT_TTFT_MS)})",
    )
    sw.add_argument("--profiles", help="comma-separated accelerator profiles, or 'all' (instead of the grid)")
    sw.add_argument("--repeat", type=int, default=1, help="replays of each scenario per point (default 1)")
    sw.add_argument(
        "--clock",
        choices=("real", "virtual"),
        default=None,
        help="default: virtual for an all-emulated pipeline, else real",
    )
    sw.add_argument(
        "--out", type=Path, default=None, help="sweep folder (default: runs/<time>-sweep-<pipeline>)"
    )
    add_mqtt_options(sw)
    sw.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from agent import clock as clocks
    from agent.config.accelerators import PROFILES
    from agent.config.scenario import load_scenario
    from agent.jobs.latency_model import knee_sentence
    from agent.jobs.sweep import (
        DEFAULT_TPS,
        DEFAULT_TTFT_MS,
        Progress,
        grid_points,
        knees,
        profile_points,
        read_sweep,
        run_sweep,
    )
    from agent.metrics.results import new_run_dir
    from agent.report.build import write_sweep_plots
    from agent.stages.pipeline import load_pipeline

    if args.repeat < 1:
        raise ConfigError(f"--repeat must be >= 1, got {args.repeat}")
    if (args.pipeline is None) == (args.agent_cmd is None):
        raise ConfigError("give either --pipeline (vlt's agent) or --agent-cmd with --url (any agent)")
    if (args.agent_cmd is None) != (args.url is None):
        raise ConfigError("--agent-cmd and --url go together: the command starts the agent the URL reaches")
    scenarios = [load_scenario(path) for path in args.scenario]
    if args.profiles is not None:
        if args.tps is not None or args.ttft_ms is not None:
            raise ConfigError("--profiles replaces the grid: drop --tps / --ttft-ms")
        names = sorted(PROFILES) if args.profiles == "all" else list(split_list(args.profiles) or ())
        if not names:
            raise ConfigError("--profiles: name at least one profile, or 'all'")
        points = profile_points(names)
    else:
        points = grid_points(
            floats(args.tps, DEFAULT_TPS, "--tps"), floats(args.ttft_ms, DEFAULT_TTFT_MS, "--ttft-ms")
        )
    pipeline = load_pipeline(resolve_pipeline(args.pipeline)) if args.pipeline is not None else None
    if pipeline is not None:
        clock = args.clock or ("virtual" if pipeline.virtual_time_ok else "real")
    else:
        clock = args.clock or "real"
    name = pipeline.name if pipeline is not None else "agent-cmd"
    check_run_folders(Path("runs"), args.out)
    out = args.out or new_run_dir(Path("runs"), f"sweep-{name}")
    print(
        f"sweep: {len(points)} points x {len(scenarios)} scenario(s) x {args.repeat} repeat(s), "
        f"{'pipeline ' + name if pipeline is not None else 'agent: ' + args.agent_cmd}, "
        f"{clock} time -> {out}",
        flush=True,
    )

    def on_progress(p: Progress) -> None:
        eta = "?" if p.eta_s is None else f"{p.eta_s:.0f}s"
        line = (
            f"\r[{p.points_done}/{p.points_total} points, {p.runs_done}/{p.runs_total} runs] "
            f"{p.point:<40.40} elapsed {p.elapsed_s:.0f}s  ETA {eta} "
        )
        sys.stderr.write(line)
        sys.stderr.flush()

    def on_point(row: dict[str, Any]) -> None:
        sys.stderr.write("\r" + " " * 100 + "\r")
        error = row["pred_error_ms"]
        model = "-" if row["pred_v2v_p50"] is None else f"{row['pred_v2v_p50']:8.1f}"
        print(
            f"{row['point']:<40} n={row['n']:<4} v2v p50 {row['v2v_p50'] or 0:8.1f} ms  "
            f"p95 {row['v2v_p95'] or 0:8.1f}  model {model:>8}  "
            f"error {'-' if error is None else f'{error:+.1f}'} ms",
            flush=True,
        )

    async def main(clock_: clocks.Clock, telemetry: Telemetry | None) -> Any:
        if pipeline is None:
            from agent.jobs.agent_sweep import run_agent_sweep

            return await run_agent_sweep(
                args.agent_cmd,
                args.url,
                scenarios,
                points,
                clock_,
                out,
                repeat=args.repeat,
                on_progress=on_progress,
                on_point=on_point,
            )
        return await run_sweep(
            pipeline,
            scenarios,
            points,
            clock_,
            out,
            repeat=args.repeat,
            on_progress=on_progress,
            on_point=on_point,
            telemetry=telemetry,
        )

    try:
        with telemetry_from_args(args) as telemetry:
            clocks.run(lambda clock_: main(clock_, telemetry), virtual=clock == "virtual")
    finally:
        sys.stderr.write("\n")
        # Plots even for a partial sweep: every finished point is worth a look.
        if (out / "sweep.json").exists():
            doc = read_sweep(out)
            if doc["points"]:
                write_sweep_plots(out)
            for knee in knees(doc):
                print(knee_sentence(knee))
            print(f"sweep ({doc['status']}): {out}  (vlt report {out})")
    return EXIT_OK


def add_report_command(commands: Subcommands) -> None:
    rp = commands.add_parser(
        "report",
        help="a self-contained HTML (or Markdown / JSON) report of a run or sweep folder",
        description="Build a report of a run folder (summary, per-turn table and waterfalls, "
        "link to the recording) or of a sweep folder (table, model, knee, plots); partial sweeps too.",
    )
    rp.add_argument("folder", type=Path, metavar="RUN_OR_SWEEP_DIR")
    rp.add_argument("--format", choices=("html", "md", "json"), default="html", help="default html")
    rp.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="file to write (default: FOLDER/report.html for html, stdout for md and json)",
    )
    rp.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from agent.report.build import build_report

    text = build_report(args.folder, args.format, args.output)
    output = args.output
    if output is None and args.format == "html":
        output = args.folder / "report.html"
    if output is None:
        print(text, end="" if text.endswith("\n") else "\n")
        return EXIT_OK
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    print(f"report: {output}")
    return EXIT_OK
