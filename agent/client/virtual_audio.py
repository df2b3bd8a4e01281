"""A virtual microphone and speaker on PulseAudio, for tests, CI and machines without audio hardware.

Layout (all names fixed, so every tool finds them)::

    paplay / play_into_mic ──► sink  vlt_mic_sink  (null sink, 16 kHz mono)
                                      └─ .monitor ──► source vlt_mic  (module-remap-source; default source)
    the agent's output ──────► sink  vlt_speaker   (null sink; default sink)
                                      └─ .monitor ──► record_speaker (parec)

PortAudio reaches these through ALSA's ``pulse`` plugin: the ALSA devices
``pulse`` and ``default`` (Debian: libasound2-plugins provides the ``pulse``
device, pulseaudio's ``/etc/alsa/conf.d/99-pulse.conf`` makes ``default`` route
to it). That hook routes ``default`` only if a PulseAudio daemon was running
when the process first loaded the ALSA configuration; where ``default`` does
not reach PulseAudio, name the device explicitly: ``--input-device pulse``.

Two *silence feeders* (detached ``pacat`` processes playing ``/dev/zero``
with 20 ms latency) keep both null sinks rendering in small steps while the
virtual devices are up. A null sink with nothing playing into it renders in
chunks of up to its 2 s maximum latency, or not at all:

- without the ``vlt_mic_sink`` feeder a capture stream on ``vlt_mic`` gets no
  callbacks until something plays (and then starts about 0.85 s late); with
  it, capture runs at once and audio played with ``paplay`` reaches a
  PortAudio callback 21-26 ms after paplay starts;
- without the ``vlt_speaker`` feeder, ``parec`` of ``vlt_speaker.monitor``
  gets nothing until something plays and then loses the wall-clock timeline
  (a 1.1 s recording came back 0.1 s long); with it, the recording's sample
  positions follow the wall clock, so onsets in it can be timed.

Everything here drives the PulseAudio command-line tools (``pulseaudio``,
``pactl``, ``pacat``, ``paplay``, ``parec``) through plain, blocking
:mod:`subprocess` calls that each take milliseconds; async callers wrap
:func:`start` / :func:`stop` / :func:`status` in ``asyncio.to_thread``.
:func:`play_into_mic` and :func:`record_speaker` return at once, with the tool
running in the background. This module never imports ``sounddevice``.

State (which daemon and feeders we started, the defaults we replaced) lives in
``$XDG_RUNTIME_DIR/vlt-virtual-audio/`` (else ``/tmp/vlt-virtual-audio-<uid>/``)
with the daemon's and the feeders' logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from agent.errors import VltError

__all__ = [
    "APT_PACKAGES",
    "MIC_SINK",
    "MIC_SOURCE",
    "SPEAKER_SINK",
    "SpeakerRecording",
    "VirtualAudioError",
    "VirtualAudioStatus",
    "alsa_default_routes_to_pulse",
    "play_into_mic",
    "play_into_mic_and_wait",
    "record_speaker",
    "start",
    "state_dir",
    "status",
    "stop",
    "wait_played",
]

log = logging.getLogger(__name__)

MIC_SINK = "vlt_mic_sink"
MIC_SOURCE = "vlt_mic"
SPEAKER_SINK = "vlt_speaker"
#: What to install on Debian/Ubuntu for the virtual mic and for PortAudio to reach it.
APT_PACKAGES = "pulseaudio pulseaudio-utils libasound2-plugins libportaudio2"

#: The feeder's PulseAudio client name; also how its process is recognised in /proc.
FEEDER_NAME = "vlt-silence-feeder"
_FEEDER_MARK = f"--client-name={FEEDER_NAME}"
_FED_SINKS = (MIC_SINK, SPEAKER_SINK)
_PLAY_NAME = "vlt-play-into-mic"
_RECORD_NAME = "vlt-record-speaker"

_TOOL_PACKAGE = {
    "pulseaudio": "pulseaudio",
    "pactl": "pulseaudio-utils",
    "pacat": "pulseaudio-utils",
    "paplay": "pulseaudio-utils",
    "parec": "pulseaudio-utils",
}
_DAEMON_START_S = 10.0
_READY_S = 5.0


class VirtualAudioError(VltError):
    """The virtual microphone cannot be set up, or a PulseAudio tool failed."""


@dataclasses.dataclass(frozen=True)
class VirtualAudioStatus:
    """What :func:`status` found; :attr:`ready` when the virtual mic is fully usable."""

    daemon_running: bool
    #: e.g. ``"pulseaudio 16.1"``; None when no daemon answers.
    server: str | None = None
    #: The daemon's socket (``pactl info``'s "Server String").
    server_address: str | None = None
    #: True when :func:`start` started the daemon (so :func:`stop` ends it).
    started_daemon: bool = False
    mic_sink: bool = False
    mic_source: bool = False
    speaker_sink: bool = False
    #: The mic sink's sample spec, e.g. ``"s16le 1ch 16000Hz"``.
    mic_format: str | None = None
    #: The silence feeders playing into vlt_mic_sink and vlt_speaker.
    feeder_pid: int | None = None
    speaker_feeder_pid: int | None = None
    default_source: str | None = None
    default_sink: str | None = None
    #: False where ALSA's ``default`` device may not reach PulseAudio (use device ``pulse``).
    alsa_default_routes_to_pulse: bool = True

    @property
    def ready(self) -> bool:
        return (
            self.daemon_running
            and self.mic_sink
            and self.mic_source
            and self.speaker_sink
            and self.feeder_pid is not None
            and self.speaker_feeder_pid is not None
            and self.default_source == MIC_SOURCE
            and self.default_sink == SPEAKER_SINK
        )

    def missing(self) -> list[str]:
        """What keeps the virtual mic from being ready, in words."""
        if not self.daemon_running:
            return ["no PulseAudio daemon"]
        gaps = [
            name
            for name, ok in (
                (f"sink {MIC_SINK}", self.mic_sink),
                (f"source {MIC_SOURCE}", self.mic_source),
                (f"sink {SPEAKER_SINK}", self.speaker_sink),
                (f"silence feeder of {MIC_SINK}", self.feeder_pid is not None),
                (f"silence feeder of {SPEAKER_SINK}", self.speaker_feeder_pid is not None),
            )
            if not ok
        ]
        if self.default_source != MIC_SOURCE:
            gaps.append(f"default source is {self.default_source or 'unset'}")
        if self.default_sink != SPEAKER_SINK:
            gaps.append(f"default sink is {self.default_sink or 'unset'}")
        return gaps

    def describe(self) -> str:
        """One line for ``vlt virtual-mic status``."""
        if not self.ready:
            return "virtual mic not ready: " + ", ".join(self.missing())
        owner = "started by vlt" if self.started_daemon else "not started by vlt"
        alsa = (
            ""
            if self.alsa_default_routes_to_pulse
            else "; ALSA default may skip PulseAudio: use device pulse"
        )
        return (
            f"virtual mic ready: source {MIC_SOURCE} ({self.mic_format}), speaker {SPEAKER_SINK}, "
            f"silence feeders pid {self.feeder_pid}, {self.speaker_feeder_pid}; "
            f"{self.server} ({owner}){alsa}"
        )


# -- paths and state ----------------------------------------------------------------


def state_dir() -> Path:
    """Where the state file and the daemon's and feeders' logs go (created, mode 0700)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        path = Path(runtime) / "vlt-virtual-audio"
    else:
        path = Path(tempfile.gettempdir()) / f"vlt-virtual-audio-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _state_file() -> Path:
    return state_dir() / "state.json"


def _read_state() -> dict[str, Any]:
    try:
        state = json.loads(_state_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_state(state: dict[str, Any]) -> None:
    tmp = _state_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1), encoding="utf-8")
    tmp.replace(_state_file())


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One start/stop at a time across processes (two test workers, CI and a user)."""
    with (state_dir() / "lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- running the tools ----------------------------------------------------------------


def _missing_tool(tool: str) -> VirtualAudioError:
    package = _TOOL_PACKAGE.get(tool, "pulseaudio-utils")
    return VirtualAudioError(
        f"{tool} not found (package {package}); the virtual microphone needs PulseAudio: "
        f"apt-get install {APT_PACKAGES}"
    )


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise _missing_tool(name)
    return path


def _env() -> dict[str, str]:
    # pactl's output is parsed: keep it unlocalised.
    return {**os.environ, "LC_ALL": "C"}


def _pactl(*args: str, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            [_tool("pactl"), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_env(),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise VirtualAudioError(f"pactl {' '.join(args)} did not answer in {timeout:g} s") from None
    if check and result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise VirtualAudioError(f"pactl {' '.join(args)} failed: {message[-1] if message else 'no output'}")
    return result


def _server_info() -> dict[str, str] | None:
    """``pactl info`` as a dict, or None when no daemon answers."""
    result = _pactl("info", check=False)
    if result.returncode != 0:
        return None
    info: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip() not in ("", "(null)"):
            info[key.strip()] = value.strip()
    return info


def _short_list(kind: str) -> list[list[str]]:
    """``pactl list short KIND`` as rows of tab-separated fields."""
    text = _pactl("list", "short", kind).stdout
    return [line.split("\t") for line in text.splitlines() if line.strip()]


def _names(kind: str) -> dict[str, list[str]]:
    return {row[1]: row for row in _short_list(kind) if len(row) > 1}


def _our_modules() -> list[tuple[int, str]]:
    """(index, name) of the modules that made our sinks and source, the remap source first."""
    ours = []
    pattern = re.compile(
        rf"(?:^|\s)(?:sink_name|source_name)=({MIC_SINK}|{MIC_SOURCE}|{SPEAKER_SINK})(?:\s|$)"
    )
    for row in _short_list("modules"):
        if len(row) >= 3 and pattern.search(row[2]) and row[0].isdigit():
            ours.append((int(row[0]), row[1]))
    return sorted(ours, key=lambda m: m[1] != "module-remap-source")


# -- processes ------------------------------------------------------------------------


def _cmdline(pid: int) -> list[str] | None:
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


def _feeder_marks(server: str | None, sink: str | None = None) -> list[str]:
    """Arguments that identify our feeder (of this daemon: another daemon's feeder is not ours)."""
    return (
        [_FEEDER_MARK] + ([f"--server={server}"] if server else []) + ([f"--device={sink}"] if sink else [])
    )


def _is_feeder(pid: int | None, server: str | None, sink: str | None = None) -> bool:
    if not pid:
        return False
    argv = _cmdline(pid)
    return argv is not None and (not argv or all(mark in argv for mark in _feeder_marks(server, sink)))


def _stray_feeders(server: str | None, sink: str | None = None) -> list[int]:
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
            if all(mark in argv for mark in marks) and _cmdline(int(entry.name)) is not None:
                found.append(int(entry.name))
    return sorted(found)


def _state_feeders(state: dict[str, Any]) -> dict[str, int]:
    feeders = state.get("feeders")
    return {k: v for k, v in feeders.items() if isinstance(v, int)} if isinstance(feeders, dict) else {}


def _find_feeder(state: dict[str, Any], server: str | None, sink: str) -> int | None:
    pid = _state_feeders(state).get(sink)
    if pid is not None and _is_feeder(pid, server, sink):
        return pid
    strays = _stray_feeders(server, sink)
    return strays[0] if strays else None


def _ensure_feeder(state: dict[str, Any], server: str | None, sink: str, fallback_rate: int) -> int:
    """Start a silence feeder into ``sink`` unless one runs; return its pid."""
    feeder = _find_feeder(state, server, sink)
    if feeder is None:
        rate, channels = _sink_spec(_names("sinks").get(sink))
        log_path = state_dir() / f"feeder-{sink}.log"
        feeder = _spawn_detached(
            [
                _tool("pacat"),
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
        if not _wait_sink_running(sink):
            detail = _log_tail(log_path)
            raise VirtualAudioError(
                f"the silence feeder (pacat, pid {feeder}) is not playing into {sink}"
                + (f": {detail}" if detail else "")
            )
    return feeder


def _terminate(pid: int, *, timeout: float = 3.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _cmdline(pid) is None:
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _spawn_detached(argv: list[str], *, stdin: str, log_path: Path) -> int:
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


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


# -- start, stop, status --------------------------------------------------------------


def _start_daemon() -> int | None:
    """Start a PulseAudio daemon for this user with no hardware modules; return its pid."""
    pulseaudio = _tool("pulseaudio")
    log_path = state_dir() / "pulseaudio.log"
    argv = [
        pulseaudio,
        "--daemonize=yes",
        "--exit-idle-time=-1",  # stay up with no clients (between test runs)
        "--disallow-exit=yes",
        "--system=no",  # a per-user daemon, also as root (it warns, and works)
        "--realtime=no",
        "--high-priority=no",
        "-n",  # no default.pa: no hardware probing, only what we load
        "--load=module-native-protocol-unix",
        f"--log-target=file:{log_path}",
    ]
    with open(os.devnull, "rb") as devnull, (state_dir() / "pulseaudio.out").open("ab") as out:
        # Output to a file, never a pipe: the daemonised child would keep a pipe open.
        try:
            result = subprocess.run(
                argv, stdin=devnull, stdout=out, stderr=out, timeout=_DAEMON_START_S, check=False
            )
        except subprocess.TimeoutExpired:
            raise VirtualAudioError(f"pulseaudio did not start in {_DAEMON_START_S:g} s") from None
    deadline = time.monotonic() + _DAEMON_START_S
    info = _server_info()
    while info is None and time.monotonic() < deadline:
        time.sleep(0.05)
        info = _server_info()
    if info is None:
        detail = _log_tail(log_path) or _log_tail(state_dir() / "pulseaudio.out")
        raise VirtualAudioError(
            f"pulseaudio did not start (exit status {result.returncode}): {detail or 'no log'}; "
            f"log: {log_path}"
        )
    return _daemon_pid(info)


def _daemon_pid(info: dict[str, str]) -> int | None:
    """The daemon's pid, from the pid file beside its socket (unix sockets only)."""
    address = info.get("Server String", "").removeprefix("unix:")
    if not address.startswith("/"):
        return None
    with contextlib.suppress(OSError, ValueError):
        return int((Path(address).parent / "pid").read_text().strip())
    return None


def _wait_sink_running(name: str, timeout: float = _READY_S) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        row = _names("sinks").get(name)
        if row is not None and row[-1] == "RUNNING":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def start(rate: int = 16000) -> VirtualAudioStatus:
    """Bring the virtual mic up (idempotent: only what is missing is started or loaded).

    Starts a PulseAudio daemon if none answers, loads the null sinks
    ``vlt_mic_sink`` (``rate`` Hz, mono) and ``vlt_speaker`` and the source
    ``vlt_mic``, makes them the defaults, and starts the silence feeders.
    A mic sink that is already loaded keeps its rate (``mic_format`` says it;
    ``stop()`` first to change it).
    """
    if rate <= 0:
        raise VirtualAudioError(f"rate must be positive, got {rate}")
    _tool("pactl")
    _tool("pacat")
    with _locked():
        state = _read_state()
        info = _server_info()
        if info is None:
            pid = _start_daemon()
            info = _server_info() or {}
            state = {"started_daemon": True, "daemon_pid": pid}
            log.info("started pulseaudio (pid %s)", pid)
        elif state.get("server_address") != info.get("Server String"):
            state = {}  # state of another daemon (since gone): start afresh
        state["server_address"] = info.get("Server String")

        sinks = _names("sinks")
        if MIC_SINK not in sinks:
            _pactl(
                "load-module",
                "module-null-sink",
                f"sink_name={MIC_SINK}",
                f"rate={rate}",
                "channels=1",
                "format=s16le",
                "sink_properties=device.description=vlt_virtual_microphone_input",
            )
        if SPEAKER_SINK not in sinks:
            _pactl(
                "load-module",
                "module-null-sink",
                f"sink_name={SPEAKER_SINK}",
                "sink_properties=device.description=vlt_virtual_speaker",
            )
        if MIC_SOURCE not in _names("sources"):
            _pactl(
                "load-module",
                "module-remap-source",
                f"master={MIC_SINK}.monitor",
                f"source_name={MIC_SOURCE}",
                "source_properties=device.description=vlt_virtual_microphone",
            )

        if info.get("Default Source") != MIC_SOURCE:
            state.setdefault("previous_default_source", info.get("Default Source"))
            _pactl("set-default-source", MIC_SOURCE)
        if info.get("Default Sink") != SPEAKER_SINK:
            state.setdefault("previous_default_sink", info.get("Default Sink"))
            _pactl("set-default-sink", SPEAKER_SINK)

        server = info.get("Server String")
        state["feeders"] = {sink: _ensure_feeder(state, server, sink, rate) for sink in _FED_SINKS}
        _write_state(state)
    return status()


def _sink_spec(row: list[str] | None) -> tuple[int | None, int | None]:
    """(rate, channels) of a ``pactl list short sinks`` row (``s16le 1ch 16000Hz``)."""
    if row is None or len(row) < 4:
        return None, None
    rate = re.search(r"(\d+)Hz", row[3])
    channels = re.search(r"(\d+)ch", row[3])
    return (int(rate.group(1)) if rate else None, int(channels.group(1)) if channels else None)


def status() -> VirtualAudioStatus:
    """What is up now (never starts anything)."""
    _tool("pactl")
    alsa = alsa_default_routes_to_pulse()
    info = _server_info()
    if info is None:
        return VirtualAudioStatus(daemon_running=False, alsa_default_routes_to_pulse=alsa)
    state = _read_state()
    if state.get("server_address") != info.get("Server String"):
        state = {}
    sinks = _names("sinks")
    mic = sinks.get(MIC_SINK)
    name = info.get("Server Name", "PulseAudio")
    version = info.get("Server Version", "")
    return VirtualAudioStatus(
        daemon_running=True,
        server=f"{name} {version}".strip(),
        server_address=info.get("Server String"),
        started_daemon=bool(state.get("started_daemon")),
        mic_sink=mic is not None,
        mic_source=MIC_SOURCE in _names("sources"),
        speaker_sink=SPEAKER_SINK in sinks,
        mic_format=mic[3] if mic is not None and len(mic) > 3 else None,
        feeder_pid=_find_feeder(state, info.get("Server String"), MIC_SINK),
        speaker_feeder_pid=_find_feeder(state, info.get("Server String"), SPEAKER_SINK),
        default_source=info.get("Default Source"),
        default_sink=info.get("Default Sink"),
        alsa_default_routes_to_pulse=alsa,
    )


def stop() -> VirtualAudioStatus:
    """Undo :func:`start`: end the feeders, unload our modules, restore the previous
    defaults, and end the daemon if :func:`start` started it."""
    _tool("pactl")
    with _locked():
        state = _read_state()
        info = _server_info()
        # The feeders of this daemon (or, with none answering, of the one we recorded).
        server = state.get("server_address") if info is None else info.get("Server String")
        feeders = set(_stray_feeders(server)) if server else set()
        feeders.update(pid for pid in _state_feeders(state).values() if _is_feeder(pid, server))
        for feeder in sorted(feeders):
            _terminate(feeder)
        if info is not None:
            for index, _name in _our_modules():
                _pactl("unload-module", str(index), check=False)
            same_daemon = state.get("server_address") == info.get("Server String")
            if same_daemon:
                # Only defaults that still exist (not ours: those are unloaded now).
                if state.get("previous_default_source"):
                    _pactl("set-default-source", state["previous_default_source"], check=False)
                if state.get("previous_default_sink"):
                    _pactl("set-default-sink", state["previous_default_sink"], check=False)
            daemon = state.get("daemon_pid")
            if same_daemon and state.get("started_daemon") and isinstance(daemon, int):
                argv = _cmdline(daemon)
                if argv is not None and (not argv or "pulseaudio" in Path(argv[0]).name):
                    _terminate(daemon)
        with contextlib.suppress(FileNotFoundError):
            _state_file().unlink()
    return status()


# -- ALSA -----------------------------------------------------------------------------


def alsa_default_routes_to_pulse() -> bool:
    """Whether the ALSA configuration sends the ``default`` device to PulseAudio.

    True when pulseaudio's hook (``99-pulse.conf``) or an asoundrc names the
    ``pulse`` plugin as default. The ``pulse`` device itself needs
    libasound2-plugins (``50-pulseaudio.conf``).
    """
    confd = [Path("/etc/alsa/conf.d"), Path("/usr/share/alsa/alsa.conf.d")]
    if any((folder / name).exists() for folder in confd for name in ("99-pulse.conf", "99-pulseaudio.conf")):
        return True
    for rc in (Path("/etc/asound.conf"), Path.home() / ".asoundrc"):
        with contextlib.suppress(OSError):
            if re.search(r"pcm\.!?default[\s\S]{0,80}pulse", rc.read_text(errors="replace")):
                return True
    return False


# -- playing into the mic, recording the speaker ---------------------------------------


def play_into_mic(wav_path: str | Path) -> subprocess.Popen[bytes]:
    """Start playing a WAV file into the virtual mic (``paplay -d vlt_mic_sink``); returns at once.

    Audio appears on the ``vlt_mic`` source about 20 ms after this returns. End
    with :func:`wait_played` (or ``communicate()``): that closes the stderr pipe
    and raises if paplay failed.
    """
    path = Path(wav_path)
    if not path.is_file():
        raise VirtualAudioError(f"{path}: no such audio file")
    return subprocess.Popen(
        [_tool("paplay"), f"--device={MIC_SINK}", f"--client-name={_PLAY_NAME}", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_env(),
    )


def wait_played(proc: subprocess.Popen[bytes], timeout: float | None = None) -> None:
    """Wait for a :func:`play_into_mic` to finish; raise with paplay's message if it failed."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise VirtualAudioError(f"paplay did not finish in {timeout:g} s") from None
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        raise VirtualAudioError(
            f"paplay into {MIC_SINK} failed: {message} (is the virtual mic up? vlt virtual-mic start)"
        )


def play_into_mic_and_wait(wav_path: str | Path, timeout: float | None = None) -> None:
    """Play a WAV file into the virtual mic and return when it has played."""
    wait_played(play_into_mic(wav_path), timeout)


class SpeakerRecording:
    """A running ``parec`` of ``vlt_speaker.monitor`` into a 16-bit mono WAV file.

    Use as a context manager or call :meth:`stop`, which returns the file's path.
    """

    def __init__(self, path: Path, rate: int, proc: subprocess.Popen[bytes]) -> None:
        self.path = path
        self.rate = rate
        self.proc = proc

    def stop(self, timeout: float = 5.0) -> Path:
        """End the recording and return the file.

        SIGTERM, not SIGINT: parec finishes the WAV header on either, but a
        process started from a background job inherits SIGINT ignored.
        """
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.path.exists():
            message = err.decode(errors="replace").strip()
            raise VirtualAudioError(f"parec wrote no {self.path}: {message or 'no message'}")
        return self.path

    def __enter__(self) -> SpeakerRecording:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _client_connected(kind: str, pid: int) -> bool:
    """Whether process ``pid`` has a stream of ``kind`` (sink-inputs / source-outputs)."""
    text = _pactl("list", kind, check=False).stdout
    return f'application.process.id = "{pid}"' in text


def record_speaker(path: str | Path, rate: int = 16000) -> SpeakerRecording:
    """Record what plays into ``vlt_speaker`` (16-bit mono WAV at ``rate``) until ``stop()``.

    Returns once parec's stream is connected, so nothing played after this is missed.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            _tool("parec"),
            f"--device={SPEAKER_SINK}.monitor",
            f"--rate={rate}",
            "--channels=1",
            "--format=s16le",
            "--file-format=wav",
            "--latency-msec=20",
            f"--client-name={_RECORD_NAME}",
            str(out),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    recording = SpeakerRecording(out, rate, proc)
    deadline = time.monotonic() + _READY_S
    while not _client_connected("source-outputs", proc.pid):
        if proc.poll() is not None or time.monotonic() >= deadline:
            _, err = proc.communicate() if proc.poll() is not None else (None, b"")
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            message = (err or b"").decode(errors="replace").strip()
            raise VirtualAudioError(
                f"cannot record {SPEAKER_SINK}.monitor: {message or 'parec did not connect'} "
                "(is the virtual mic up? vlt virtual-mic start)"
            )
        time.sleep(0.02)
    return recording
