"""PulseAudio's command-line tools, run from Python: the plumbing under the virtual mic.

Finding the tools (a missing one names the Debian package to install),
``pactl`` calls and their parsed output, and the processes the tools run as:
started detached, recognised by their argv in ``/proc``, ended with SIGTERM
then SIGKILL. Everything here is a plain, blocking :mod:`subprocess` call that
takes milliseconds; it knows nothing of the virtual devices' names or state
(:mod:`agent.client.devices.virtual_audio` does).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

from agent.clock import Deadline
from agent.errors import VltError

__all__ = [
    "APT_PACKAGES",
    "READY_S",
    "VirtualAudioError",
    "by_name",
    "cmdline",
    "daemon_pid",
    "has_stream",
    "log_tail",
    "pactl",
    "require_tool",
    "server_info",
    "short_list",
    "sink_spec",
    "spawn_detached",
    "terminate",
    "tool_env",
    "wait_sink_running",
]


class VirtualAudioError(VltError):
    """The virtual microphone cannot be set up, or a PulseAudio tool failed."""


#: What to install on Debian/Ubuntu for the virtual mic and for PortAudio to reach it.
APT_PACKAGES = "pulseaudio pulseaudio-utils libasound2-plugins libportaudio2"

_TOOL_PACKAGE = {
    "pulseaudio": "pulseaudio",
    "pactl": "pulseaudio-utils",
    "pacat": "pulseaudio-utils",
    "paplay": "pulseaudio-utils",
    "parec": "pulseaudio-utils",
}
#: How long a sink or a stream may take to start running.
READY_S = 5.0


def _missing_tool(tool: str) -> VirtualAudioError:
    package = _TOOL_PACKAGE.get(tool, "pulseaudio-utils")
    return VirtualAudioError(
        f"{tool} not found (package {package}); the virtual microphone needs PulseAudio: "
        f"apt-get install {APT_PACKAGES}"
    )


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise _missing_tool(name)
    return path


def tool_env() -> dict[str, str]:
    # pactl's output is parsed: keep it unlocalised.
    return {**os.environ, "LC_ALL": "C"}


def pactl(*args: str, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            [require_tool("pactl"), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=tool_env(),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise VirtualAudioError(f"pactl {' '.join(args)} did not answer in {timeout:g} s") from None
    if check and result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise VirtualAudioError(f"pactl {' '.join(args)} failed: {message[-1] if message else 'no output'}")
    return result


def server_info() -> dict[str, str] | None:
    """``pactl info`` as a dict, or None when no daemon answers."""
    result = pactl("info", check=False)
    if result.returncode != 0:
        return None
    info: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip() not in ("", "(null)"):
            info[key.strip()] = value.strip()
    return info


def short_list(kind: str) -> list[list[str]]:
    """``pactl list short KIND`` as rows of tab-separated fields."""
    text = pactl("list", "short", kind).stdout
    return [line.split("\t") for line in text.splitlines() if line.strip()]


def by_name(kind: str) -> dict[str, list[str]]:
    return {row[1]: row for row in short_list(kind) if len(row) > 1}


def sink_spec(row: list[str] | None) -> tuple[int | None, int | None]:
    """(rate, channels) of a ``pactl list short sinks`` row (``s16le 1ch 16000Hz``)."""
    if row is None or len(row) < 4:
        return None, None
    rate = re.search(r"(\d+)Hz", row[3])
    channels = re.search(r"(\d+)ch", row[3])
    return (int(rate.group(1)) if rate else None, int(channels.group(1)) if channels else None)


def wait_sink_running(name: str, timeout: float = READY_S) -> bool:
    deadline = Deadline(timeout)
    while True:
        row = by_name("sinks").get(name)
        if row is not None and row[-1] == "RUNNING":
            return True
        if deadline.expired():
            return False
        time.sleep(0.02)


def has_stream(kind: str, pid: int) -> bool:
    """Whether process ``pid`` has a stream of ``kind`` (sink-inputs / source-outputs)."""
    text = pactl("list", kind, check=False).stdout
    return f'application.process.id = "{pid}"' in text


def daemon_pid(info: dict[str, str]) -> int | None:
    """The daemon's pid, from the pid file beside its socket (unix sockets only)."""
    address = info.get("Server String", "").removeprefix("unix:")
    if not address.startswith("/"):
        return None
    with contextlib.suppress(OSError, ValueError):
        return int((Path(address).parent / "pid").read_text().strip())
    return None


def cmdline(pid: int) -> list[str] | None:
    """A live process's argv (None when gone or a zombie); Linux /proc, else a signal probe."""
    proc = Path(f"/proc/{pid}")
    if Path("/proc/self").exists():
        try:
            stat = (proc / "stat").read_text()
            if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
                return None
            raw = (proc / "cmdline").read_bytes()
        except OSError:
            return None
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return None
    return []  # alive; argv unknown on this system


def terminate(pid: int, *, timeout: float = 3.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = Deadline(timeout)
    while not deadline.expired():
        if cmdline(pid) is None:
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def spawn_detached(argv: list[str], *, stdin: str, log_path: Path) -> int:
    """Start ``argv`` in its own session, reparented away from us; return its pid.

    A shell starts it in the background and exits, so the tool outlives a CLI
    call and never becomes a zombie of a long-lived caller (a test session).
    """
    script = f"{shlex.join(argv)} <{shlex.quote(stdin)} >>{shlex.quote(str(log_path))} 2>&1 & echo $!"
    result = subprocess.run(
        ["/bin/sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=10,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    try:
        return int(result.stdout.strip())
    except ValueError:
        raise VirtualAudioError(f"could not start {argv[0]}: {result.stderr.strip()}") from None


def log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])
