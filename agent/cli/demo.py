"""``vlt demo``: talk to the agent through the microphone, with a live latency HUD
(agent/jobs/demo.py, agent/client/live.py, docs/demo.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.cli.arguments import Subcommands, check_run_folders, finite_float, positive_int
from agent.cli.exit_codes import EXIT_OK
from agent.cli.mqtt_options import add_mqtt_options, telemetry_from_args
from agent.errors import ConfigError
from agent.stages.pipeline_names import DEFAULT_PIPELINE, resolve_pipeline

__all__ = ["add_demo_command"]


def add_demo_command(commands: Subcommands) -> None:
    dm = commands.add_parser(
        "demo",
        help="talk to the agent through the microphone, with a live latency HUD",
        description="Capture the microphone, stream it to the agent, play its answer, and show "
        "every turn's hops and voice-to-voice at the listener as it happens (docs/demo.md). "
        "Writes a run folder like a replay.",
    )
    target = dm.add_mutually_exclusive_group()
    target.add_argument(
        "--pipeline",
        default=None,
        help=f"pipeline TOML (path or name in pipelines/) served in-process; default: {DEFAULT_PIPELINE}",
    )
    target.add_argument("--url", help="ws:// URL of a running agent instead of an in-process one")
    dm.add_argument("--input-device", help="microphone: index or part of its name (vlt devices)")
    dm.add_argument("--output-device", help="speaker: index or part of its name (vlt devices)")
    dm.add_argument(
        "--barge-in",
        action="store_true",
        help="keep the mic open while the agent speaks, so talking over it interrupts it "
        "(use headphones; the default is half-duplex)",
    )
    dm.add_argument("--no-hud", action="store_true", help="one line per turn instead of the live HUD")
    dm.add_argument("--turns", type=positive_int, help="end after this many finished turns")
    dm.add_argument("--duration", type=finite_float, metavar="SECONDS", help="end after this long")
    dm.add_argument(
        "--prebuffer-ms",
        type=finite_float,
        default=40.0,
        help="jitter buffer before a reply plays (default 40)",
    )
    dm.add_argument(
        "--echo-tail-ms",
        type=finite_float,
        default=200.0,
        help="half-duplex: keep the mic muted this long after the agent's audio (default 200)",
    )
    dm.add_argument(
        "--client-vad",
        choices=("silero", "energy"),
        default="silero",
        help="how the demo finds where you stopped speaking (default silero)",
    )
    dm.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where run folders go")
    dm.add_argument("--out", type=Path, default=None, help="exact run folder to write")
    add_mqtt_options(dm)
    dm.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from agent.client.live import LiveOptions
    from agent.jobs.demo import DemoSettings, run_demo
    from agent.report.console import format_summary
    from agent.stages.pipeline import load_pipeline

    for name in ("prebuffer_ms", "echo_tail_ms", "duration"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0")
    check_run_folders(args.runs_dir, args.out)
    pipeline = None if args.url else load_pipeline(resolve_pipeline(args.pipeline or DEFAULT_PIPELINE))
    options = LiveOptions(
        barge_in=args.barge_in,
        turns=args.turns,
        duration_s=args.duration,
        prebuffer_ms=args.prebuffer_ms,
        echo_tail_ms=args.echo_tail_ms,
        vad=args.client_vad,
    )
    with telemetry_from_args(args) as telemetry:
        settings = DemoSettings(
            pipeline=pipeline,
            url=args.url,
            input_device=args.input_device,
            output_device=args.output_device,
            options=options,
            hud=not args.no_hud,
            run_dir=args.out,
            runs_root=args.runs_dir,
            telemetry=telemetry,
        )
        result = run_demo(settings)
    print(format_summary(result.summary))
    print(f"results: {result.run_dir}")
    return EXIT_OK
