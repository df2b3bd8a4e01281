"""``vlt replay``: speak a scenario into an agent and measure every turn."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agent.cli.arguments import Subcommands, check_run_folders, finite_float
from agent.cli.exit_codes import EXIT_FAILED, EXIT_OK
from agent.cli.mqtt_options import add_mqtt_options, broker_from_args, telemetry_from_args
from agent.errors import ConfigError
from agent.stages.pipeline_names import DEFAULT_PIPELINE, VIRTUAL_DEFAULT_PIPELINE, resolve_pipeline

__all__ = ["add_replay_command"]


def add_replay_command(commands: Subcommands) -> None:
    rp = commands.add_parser(
        "replay",
        help="speak a scenario into an agent and measure every turn",
        description="Replay a scripted conversation into an agent over the websocket protocol "
        "and write a run folder (turns.jsonl, summary.json, manifest.json, recording.wav).",
    )
    rp.add_argument("scenario", type=Path, help="scenario YAML file")
    target = rp.add_mutually_exclusive_group()
    target.add_argument(
        "--pipeline",
        default=None,
        help=f"pipeline TOML (path or name in pipelines/) served in-process; default: {DEFAULT_PIPELINE} "
        f"({VIRTUAL_DEFAULT_PIPELINE} with --clock virtual)",
    )
    target.add_argument("--url", help="ws:// URL of a running agent instead of an in-process one")
    rp.add_argument(
        "--clock",
        choices=("real", "virtual"),
        default="real",
        help="virtual: deterministic, much faster than real time (all-emulated pipelines only)",
    )
    rp.add_argument(
        "--runs-dir", type=Path, default=Path("runs"), help="where run folders go (default: runs/)"
    )
    rp.add_argument("--out", type=Path, default=None, help="exact run folder to write (overrides --runs-dir)")
    rp.add_argument("--quiet", action="store_true", help="print only the run folder and the summary")
    rp.add_argument(
        "--late-ms",
        type=finite_float,
        default=5.0,
        help="flag a turn when an upstream frame went out later than this (default: 5 ms)",
    )
    rp.add_argument(
        "--agent-loop",
        choices=("thread", "process", "shared"),
        default="process",
        help="real time, in-process agent: in a child process (default), on its own thread, or sharing "
        "the caller's event loop (docs/speech.md, \"The caller's clock\")",
    )
    add_mqtt_options(rp)
    rp.add_argument(
        "--wait-start",
        action="store_true",
        help="with --mqtt: wait for the start signal of `vlt watch --start` before connecting, "
        "so load generators on several machines begin together",
    )
    rp.set_defaults(func=_cmd_replay)


def _cmd_replay(args: argparse.Namespace) -> int:
    from agent import clock as clocks
    from agent.client.replay import ReplayOptions
    from agent.config.scenario import load_scenario
    from agent.jobs.runner import run_scenario
    from agent.metrics.pacing import caller_warning
    from agent.metrics.records import TurnRecord
    from agent.metrics.redact import redact
    from agent.report.console import LEGEND, format_header, format_summary, format_turn
    from agent.stages.pipeline import load_pipeline

    scenario = load_scenario(args.scenario)
    check_run_folders(args.runs_dir, args.out)
    pipeline = None
    if args.url is None:
        default = VIRTUAL_DEFAULT_PIPELINE if args.clock == "virtual" else DEFAULT_PIPELINE
        pipeline = load_pipeline(resolve_pipeline(args.pipeline or default))
    target = args.url or f"pipeline {pipeline.name if pipeline else ''} (in-process)"
    if not args.quiet:
        print(f"replaying {scenario.name} ({len(scenario.turns)} turns) against {target}, {args.clock} time")
        print(format_header())

    def on_turn(record: TurnRecord) -> None:
        if not args.quiet:
            print(redact(format_turn(record)), flush=True)
        elif (caller := record.get("caller")) is not None and caller["flagged"]:
            print(caller_warning(record["turn"], caller), flush=True)

    broker = broker_from_args(args)
    if args.wait_start:
        if broker is None:
            raise ConfigError("--wait-start needs --mqtt (the broker the start signal comes through)")
        from agent.telemetry.subscriber import wait_for_start

        def ready() -> None:
            print(f"waiting for the start signal on {broker.display} (vlt watch --start)", flush=True)

        start = clocks.run(lambda _clock: wait_for_start(broker, ready))
        print(f"start signal from {start.get('by', '?')} at {start.get('utc', '?')}", flush=True)

    with telemetry_from_args(args) as telemetry:

        async def main(clock: clocks.Clock) -> Any:
            return await run_scenario(
                scenario,
                clock,
                pipeline=pipeline,
                url=args.url,
                runs_root=args.runs_dir,
                run_dir=args.out,
                on_turn=on_turn,
                telemetry=telemetry,
                options=ReplayOptions(late_ms=args.late_ms),
                agent_loop=args.agent_loop,
            )

        result = clocks.run(main, virtual=args.clock == "virtual")
    if not args.quiet:
        print(LEGEND)
        print()
    print(format_summary(result.summary))
    if result.offset is not None and not args.quiet:
        offset = result.offset
        print(f"clock offset {offset.offset_ns / 1e6:+.3f} ms ± {offset.uncertainty_ns / 1e6:.3f} ms")
    assertions = result.summary.get("assertions", [])
    for check in assertions:
        value = "not measured" if check["value"] is None else f"{check['value']:g}"
        print(f"assert {check['check']} <= {check['limit']:g}: {value} {'ok' if check['ok'] else 'FAILED'}")
    print(f"results: {result.run_dir}")
    failed = result.summary["expectations_failed"] or not all(c["ok"] for c in assertions)
    return EXIT_FAILED if failed else EXIT_OK
