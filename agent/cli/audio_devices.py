"""``vlt devices`` and ``vlt virtual-mic``: the audio devices PortAudio sees, and a virtual
microphone and speaker on PulseAudio (agent/client/devices/: sound_devices.py, virtual_audio.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.cli.arguments import Subcommands
from agent.cli.exit_codes import EXIT_FAILED, EXIT_OK

__all__ = ["add_devices_command", "add_virtual_mic_command"]


def add_devices_command(commands: Subcommands) -> None:
    dp = commands.add_parser(
        "devices",
        help="list the audio devices PortAudio sees",
        description="List audio input and output devices (index, channels, default rate, "
        "PortAudio's low latencies, host API, name) with the defaults marked.",
    )
    dp.set_defaults(func=_cmd_devices)


def _cmd_devices(args: argparse.Namespace) -> int:
    from agent.client.devices.sound_devices import format_devices, list_devices

    print(format_devices(list_devices()))
    return EXIT_OK


def add_virtual_mic_command(commands: Subcommands) -> None:
    vp = commands.add_parser(
        "virtual-mic",
        help="a virtual microphone and speaker on PulseAudio (no hardware needed)",
        description="Manage a virtual microphone (PulseAudio source vlt_mic, fed by sink vlt_mic_sink) "
        "and speaker (sink vlt_speaker), made the default devices; for tests, CI and machines "
        "without audio hardware (agent/client/devices/virtual_audio.py).",
    )
    actions = vp.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = actions.add_parser(
        "start",
        help="start it (idempotent; starts PulseAudio if none runs)",
        description="Start "
        "PulseAudio if none answers, load the virtual mic and speaker, make them the defaults, and "
        "keep silence playing into the mic so capture streams start at once. Idempotent.",
    )
    start.add_argument("--rate", type=int, default=16000, help="mic sample rate (default 16000)")
    start.set_defaults(func=_cmd_virtual_mic_start)
    stop = actions.add_parser(
        "stop",
        help="undo start",
        description="End the silence feeder, unload the virtual devices, "
        "restore the previous defaults, and stop PulseAudio if start started it.",
    )
    stop.set_defaults(func=_cmd_virtual_mic_stop)
    status = actions.add_parser(
        "status",
        help="say whether it is ready (exit 0) or not (exit 1)",
        description="One line: ready, or what is missing. Exit 0 when ready, 1 when not.",
    )
    status.set_defaults(func=_cmd_virtual_mic_status)
    play = actions.add_parser(
        "play",
        help="play a WAV file into the virtual mic",
        description="Play a WAV file into the "
        "virtual mic (paplay into vlt_mic_sink) and return when it has played.",
    )
    play.add_argument("wav", type=Path, metavar="WAV", help="audio file (WAV, any rate)")
    play.set_defaults(func=_cmd_virtual_mic_play)


def _cmd_virtual_mic_start(args: argparse.Namespace) -> int:
    from agent.client.devices import virtual_audio

    print(virtual_audio.start(args.rate).describe())
    return EXIT_OK


def _cmd_virtual_mic_stop(args: argparse.Namespace) -> int:
    from agent.client.devices import virtual_audio

    after = virtual_audio.stop()
    if after.daemon_running:
        print(f"virtual mic stopped ({after.server} keeps running: vlt did not start it)")
    else:
        print("virtual mic stopped (and the PulseAudio daemon vlt had started)")
    return EXIT_OK


def _cmd_virtual_mic_status(args: argparse.Namespace) -> int:
    from agent.client.devices import virtual_audio

    now = virtual_audio.status()
    print(now.describe())
    return EXIT_OK if now.ready else EXIT_FAILED


def _cmd_virtual_mic_play(args: argparse.Namespace) -> int:
    from agent.client.devices import virtual_audio

    virtual_audio.play_into_mic_and_wait(args.wav)
    print(f"played {args.wav} into {virtual_audio.MIC_SOURCE}")
    return EXIT_OK
