"""``vlt watch`` and ``vlt record``: a fleet's live telemetry, on screen and in one run folder
(agent/telemetry, docs/telemetry.md)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.cli.arguments import Subcommands, positive_int
from agent.cli.exit_codes import EXIT_OK
from agent.cli.mqtt_options import add_mqtt_options, broker_from_args
from agent.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import RenderableType

    from agent.telemetry.fleet import FleetView

__all__ = ["add_record_command", "add_watch_command"]


def add_watch_command(commands: Subcommands) -> None:
    wp = commands.add_parser(
        "watch",
        help="a live table of every session and host publishing to an MQTT broker",
        description="Subscribe to the telemetry of agents, replays, sweeps and demos run with --mqtt "
        "and show, per session, turns, last voice-to-voice, rolling p50/p95, failures and the hop "
        "that grew most, with a fleet summary (docs/telemetry.md).",
    )
    add_mqtt_options(wp, required=True)
    wp.add_argument("--json", action="store_true", help="print every message as one JSON line instead")
    wp.add_argument(
        "--start",
        action="store_true",
        help="first publish the start signal that `vlt replay --wait-start` waits for",
    )
    wp.add_argument("--run", default="", help="with --start: a name for the run, carried in the signal")
    wp.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    wp.set_defaults(func=_cmd_watch)


def add_record_command(commands: Subcommands) -> None:
    rp = commands.add_parser(
        "record",
        help="collect a fleet's turn records from an MQTT broker into one run folder",
        description="Write every turn published while it runs into one run folder that vlt report, "
        "vlt baseline save and vlt regress --run accept; each record says its host and session. "
        "Ends after --sessions client sessions have finished, after --duration, or on Ctrl-C.",
    )
    add_mqtt_options(rp, required=True)
    rp.add_argument("-o", "--out", type=Path, required=True, help="run folder to write")
    rp.add_argument("--sessions", type=positive_int, help="end once this many client sessions have finished")
    rp.add_argument("--duration", type=float, metavar="SECONDS", help="end after this long")
    rp.add_argument("--quiet", action="store_true", help="print only the summary and the folder")
    rp.set_defaults(func=_cmd_record)


def _check_duration(value: float | None) -> None:
    if value is not None and value <= 0:
        raise ConfigError(f"--duration must be > 0, got {value:g}")


def _cmd_watch(args: argparse.Namespace) -> int:
    from agent import clock as clocks
    from agent.telemetry.fleet import FleetView
    from agent.telemetry.subscriber import publish_start, subscription

    _check_duration(args.duration)
    broker = broker_from_args(args)
    assert broker is not None  # --mqtt is required
    view = FleetView()

    async def main(clock: clocks.Clock) -> None:
        async with subscription(broker) as messages:
            if args.start:
                await publish_start(broker, args.run)
                if not args.json:
                    print(f"start signal published on {broker.display}", flush=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.duration):
                    if args.json:
                        async for m in messages:
                            line = {"topic": m.topic, "retained": m.retained, "payload": m.data}
                            print(json.dumps(line, separators=(",", ":")), flush=True)
                    else:
                        await _live_table(messages, view, clock, broker.display)

    with contextlib.suppress(KeyboardInterrupt):
        clocks.run(main)
    return EXIT_OK


async def _live_table(messages: Any, view: FleetView, clock: Any, where: str) -> None:
    from rich.live import Live

    with Live(_render(view, clock.now_ns() / 1e9, where), refresh_per_second=4, transient=False) as live:
        last = 0.0
        try:
            async for message in messages:
                now = clock.now_ns() / 1e9
                view.update(message, now)
                if now - last >= 0.25:  # drawing is the expensive part: at most 4 times a second
                    live.update(_render(view, now, where))
                    last = now
        finally:  # --duration or Ctrl-C: the last frame shows everything received
            live.update(_render(view, clock.now_ns() / 1e9, where))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _render(view: FleetView, now_s: float, where: str) -> RenderableType:
    from rich.console import Group
    from rich.table import Table

    table = Table(title=f"vlt watch {where}", expand=False)
    for name, justify in (
        ("host", "left"),
        ("session", "left"),
        ("kind", "left"),
        ("state", "left"),
        ("turns", "right"),
        ("last v2v ms", "right"),
        ("p50", "right"),
        ("p95", "right"),
        ("failures", "right"),
        ("grew most", "left"),
        ("marks", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for s in view.rows():
        turns, failures, last = s.figures()
        grew = "-" if s.grew is None else f"{s.grew[0]} +{s.grew[1]:,.0f} ms"
        state = "[green]online[/]" if s.state == "online" else s.state
        table.add_row(
            s.host,
            s.session,
            s.kind,
            state,
            str(turns),
            _ms(last),
            _ms(s.p("p50")),
            _ms(s.p("p95")),
            f"[red]{failures}[/]" if failures else "0",
            grew,
            str(s.marks),
        )
    f = view.summary(now_s)
    fleet = (
        f"fleet: {f.hosts} host(s), {f.sessions} session(s), {f.online} online · {f.turns} turns, "
        f"{f.failures} failed · voice-to-voice p50 {_ms(f.p50_ms)} ms, p95 {_ms(f.p95_ms)} ms "
        f"(rolling, turns seen by this watch) · {f.marks_per_s:,.0f} marks/s · {f.messages} messages"
    )
    return Group(table, fleet)


def _cmd_record(args: argparse.Namespace) -> int:
    from agent import clock as clocks
    from agent.metrics.records import TurnRecord
    from agent.report.console import format_header, format_summary, format_turn
    from agent.telemetry.collect import FleetRecorder
    from agent.telemetry.subscriber import subscription

    _check_duration(args.duration)
    broker = broker_from_args(args)
    assert broker is not None  # --mqtt is required

    async def main(clock: clocks.Clock) -> FleetRecorder:
        async with subscription(broker) as messages:
            recorder = FleetRecorder(args.out, broker.display)
            if not args.quiet:
                until = f"{args.sessions} session(s) finish" if args.sessions else "Ctrl-C"
                print(f"recording {broker.display} into {recorder.dir} until {until}", flush=True)
                print(format_header())
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(args.duration):
                        async for message in messages:
                            record: TurnRecord | None = recorder.update(message)
                            if record is not None and not args.quiet:
                                where = record.get("source", {"host": "?", "session": "?"})
                                print(f"{format_turn(record)}  {where['host']}/{where['session']}")
                            if args.sessions and recorder.finished() >= args.sessions:
                                break
            finally:
                recorder_holder.append(recorder)
        return recorder

    recorder_holder: list[FleetRecorder] = []
    try:
        clocks.run(main)
    except KeyboardInterrupt:
        pass
    finally:
        # Whatever ended the recording, the folder is complete: summary and manifest.
        for recorder in recorder_holder:
            summary = recorder.close()
            print(format_summary(summary))
            print(f"{len(recorder.sessions())} session(s); results: {recorder.dir}", file=sys.stdout)
    return EXIT_OK
