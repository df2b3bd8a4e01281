"""Silence feeders: detached ``pacat`` processes that keep a PulseAudio null sink rendering.

A feeder plays ``/dev/zero`` into its sink with 20 ms latency for as long as
the virtual devices are up. A null sink with nothing playing into it renders
in chunks of up to its 2 s maximum latency, or not at all:

- without the ``vlt_mic_sink`` feeder a capture stream on ``vlt_mic`` gets no
  callbacks until something plays (and then starts about 0.85 s late); with
  it, capture runs at once and audio played with ``paplay`` reaches a
  PortAudio callback 21-26 ms after paplay starts;
- without the ``vlt_speaker`` feeder, ``parec`` of ``vlt_speaker.monitor``
  gets nothing until something plays and then loses the wall-clock timeline
  (a 1.1 s recording came back 0.1 s long); with it, the recording's sample
  positions follow the wall clock, so onsets in it can be timed.

A feeder is recognised by its arguments (client name, daemon, sink), so one
started by another process, or left after the state file was lost, is found
in ``/proc`` and reused rather than doubled.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from agent.client.devices.pulse_tools import (
    VirtualAudioError,
    by_name,
    cmdline,
    log_tail,
    require_tool,
    sink_spec,
    spawn_detached,
    wait_sink_running,
)

__all__ = ["FEEDER_NAME", "ensure_feeder", "find_feeder", "is_feeder", "recorded_feeders", "stray_feeders"]

#: The feeder's PulseAudio client name; also how its process is recognised in /proc.
FEEDER_NAME = "vlt-silence-feeder"
_FEEDER_MARK = f"--client-name={FEEDER_NAME}"


def _feeder_marks(server: str | None, sink: str | None = None) -> list[str]:
    """Arguments that identify our feeder (of this daemon: another daemon's feeder is not ours)."""
    return (
        [_FEEDER_MARK] + ([f"--server={server}"] if server else []) + ([f"--device={sink}"] if sink else [])
    )


def is_feeder(pid: int | None, server: str | None, sink: str | None = None) -> bool:
    if not pid:
        return False
    argv = cmdline(pid)
    return argv is not None and (not argv or all(mark in argv for mark in _feeder_marks(server, sink)))


def stray_feeders(server: str | None, sink: str | None = None) -> list[int]:
    """This daemon's feeders found in /proc (e.g. after the state file was lost)."""
    marks = [mark.encode() for mark in _feeder_marks(server, sink)]
    found = []
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if all(mark in argv for mark in marks) and cmdline(int(entry.name)) is not None:
                found.append(int(entry.name))
    return sorted(found)


def recorded_feeders(state: dict[str, Any]) -> dict[str, int]:
    """The feeder pids by sink that a state file's ``feeders`` entry names."""
    feeders = state.get("feeders")
    return {k: v for k, v in feeders.items() if isinstance(v, int)} if isinstance(feeders, dict) else {}


def find_feeder(state: dict[str, Any], server: str | None, sink: str) -> int | None:
    """The running feeder of ``sink``: the recorded one if it still is ours, else one found in /proc."""
    pid = recorded_feeders(state).get(sink)
    if pid is not None and is_feeder(pid, server, sink):
        return pid
    strays = stray_feeders(server, sink)
    return strays[0] if strays else None


def ensure_feeder(
    state: dict[str, Any], server: str | None, sink: str, fallback_rate: int, log_dir: Path
) -> int:
    """Start a silence feeder into ``sink`` unless one runs; return its pid (its log goes in ``log_dir``)."""
    feeder = find_feeder(state, server, sink)
    if feeder is None:
        rate, channels = sink_spec(by_name("sinks").get(sink))
        log_path = log_dir / f"feeder-{sink}.log"
        feeder = spawn_detached(
            [
                require_tool("pacat"),
                *_feeder_marks(server, sink),
                "--playback",
                f"--rate={rate or fallback_rate}",
                f"--channels={channels or 1}",
                "--format=s16le",
                "--latency-msec=20",
                "--stream-name=silence",
            ],
            stdin="/dev/zero",
            log_path=log_path,
        )
        if not wait_sink_running(sink):
            detail = log_tail(log_path)
            raise VirtualAudioError(
                f"the silence feeder (pacat, pid {feeder}) is not playing into {sink}"
                + (f": {detail}" if detail else "")
            )
    return feeder
