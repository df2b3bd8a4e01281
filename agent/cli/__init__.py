"""``vlt``: the command-line entry point.

Every :class:`~agent.errors.VltError` becomes one clear line on stderr and exit
status 2 (no traceback unless ``--debug``); expectation failures in a replay
exit with 1. That handling lives here, in :func:`main`, and nowhere else: the
command modules beside this one each add their parser(s) and raise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence

from agent import __version__
from agent.cli.analyze import add_analyze_command
from agent.cli.audio_devices import add_devices_command, add_virtual_mic_command
from agent.cli.demo import add_demo_command
from agent.cli.exit_codes import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_UNREACHABLE
from agent.cli.fleet import add_record_command, add_watch_command
from agent.cli.profiles import add_profiles_command
from agent.cli.regress import add_baseline_command, add_regress_command
from agent.cli.replay import add_replay_command
from agent.cli.serve import add_serve_commands
from agent.cli.signals import sigterm_as_interrupt, terminated
from agent.cli.sweep import add_report_command, add_sweep_command
from agent.errors import UnreachableError, VltError
from agent.metrics.redact import redact

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlt",
        description="Voice Latency Testbed: measure where a voice agent's silence comes from.",
    )
    parser.add_argument("--version", action="version", version=f"vlt {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # In the order `vlt --help` lists them.
    add_replay_command(commands)
    add_serve_commands(commands)
    add_profiles_command(commands)
    add_baseline_command(commands)
    add_regress_command(commands)
    add_sweep_command(commands)
    add_report_command(commands)
    add_analyze_command(commands)
    add_devices_command(commands)
    add_virtual_mic_command(commands)
    add_demo_command(commands)
    add_watch_command(commands)
    add_record_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.debug:
        logging.getLogger("websockets").setLevel(logging.CRITICAL)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_RedactingFilter())
    # Runs (replay, sweep, demo, regress) end on SIGTERM as on Ctrl-C; servers keep
    # the default (they hold no run folder).
    handle_term = args.command != "serve"
    try:
        with sigterm_as_interrupt() if handle_term else contextlib.nullcontext():
            code: int = args.func(args)
        return code
    except VltError as exc:
        if args.debug:
            raise
        print(f"vlt: error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_UNREACHABLE if isinstance(exc, UnreachableError) else EXIT_ERROR
    except (KeyboardInterrupt, asyncio.CancelledError) as exc:
        if handle_term and terminated():
            print("vlt: terminated (SIGTERM); finished turns are on disk", file=sys.stderr)
            return EXIT_TERMINATED
        if isinstance(exc, asyncio.CancelledError):
            print("vlt: cancelled", file=sys.stderr)
        else:
            print("vlt: interrupted; finished turns are on disk", file=sys.stderr)
        return EXIT_INTERRUPTED


class _RedactingFilter(logging.Filter):
    """Masks API keys in every log line (agent.metrics.redact), whatever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True
