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

Two *silence feeders* (:mod:`agent.client.devices.silence_feeders`) keep both null
sinks rendering in small steps while the virtual devices are up; without them
capture on ``vlt_mic`` starts late and a recording of ``vlt_speaker`` loses the
wall-clock timeline.

Everything here drives the PulseAudio command-line tools through plain,
blocking subprocess calls (:mod:`agent.client.devices.pulse_tools`) that each take
milliseconds; async callers wrap :func:`start` / :func:`stop` / :func:`status`
in ``asyncio.to_thread``. :func:`play_into_mic` (and ``record_speaker``, in
:mod:`agent.client.devices.speaker_recording`) return at once, with the tool running
in the background. This module never imports ``sounddevice``.

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
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.client.devices.pulse_tools import (
    VirtualAudioError,
    by_name,
    cmdline,
    daemon_pid,
    log_tail,
    pactl,
    require_tool,
    server_info,
    short_list,
    terminate,
    tool_env,
)
from agent.client.devices.silence_feeders import (
    ensure_feeder,
    find_feeder,
    is_feeder,
    recorded_feeders,
    stray_feeders,
)
from agent.clock import Deadline

__all__ = [
    "MIC_SINK",
    "MIC_SOURCE",
    "SPEAKER_SINK",
    "VirtualAudioError",
    "VirtualAudioStatus",
    "alsa_default_routes_to_pulse",
    "play_into_mic",
    "play_into_mic_and_wait",
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
_FED_SINKS = (MIC_SINK, SPEAKER_SINK)
_PLAY_NAME = "vlt-play-into-mic"

_DAEMON_START_S = 10.0


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


# -- our modules ------------------------------------------------------------------------


def _our_modules() -> list[tuple[int, str]]:
    """(index, name) of the modules that made our sinks and source, the remap source first."""
    ours = []
    pattern = re.compile(
        rf"(?:^|\s)(?:sink_name|source_name)=({MIC_SINK}|{MIC_SOURCE}|{SPEAKER_SINK})(?:\s|$)"
    )
    for row in short_list("modules"):
        if len(row) >= 3 and pattern.search(row[2]) and row[0].isdigit():
            ours.append((int(row[0]), row[1]))
    return sorted(ours, key=lambda m: m[1] != "module-remap-source")


# -- start, stop, status --------------------------------------------------------------


def _start_daemon() -> int | None:
    """Start a PulseAudio daemon for this user with no hardware modules; return its pid."""
    pulseaudio = require_tool("pulseaudio")
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
    deadline = Deadline(_DAEMON_START_S)
    info = server_info()
    while info is None and not deadline.expired():
        time.sleep(0.05)
        info = server_info()
    if info is None:
        detail = log_tail(log_path) or log_tail(state_dir() / "pulseaudio.out")
        raise VirtualAudioError(
            f"pulseaudio did not start (exit status {result.returncode}): {detail or 'no log'}; "
            f"log: {log_path}"
        )
    return daemon_pid(info)


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
    require_tool("pactl")
    require_tool("pacat")
    with _locked():
        state = _read_state()
        info = server_info()
        if info is None:
            pid = _start_daemon()
            info = server_info() or {}
            state = {"started_daemon": True, "daemon_pid": pid}
            log.info("started pulseaudio (pid %s)", pid)
        elif state.get("server_address") != info.get("Server String"):
            state = {}  # state of another daemon (since gone): start afresh
        state["server_address"] = info.get("Server String")

        sinks = by_name("sinks")
        if MIC_SINK not in sinks:
            pactl(
                "load-module",
                "module-null-sink",
                f"sink_name={MIC_SINK}",
                f"rate={rate}",
                "channels=1",
                "format=s16le",
                "sink_properties=device.description=vlt_virtual_microphone_input",
            )
        if SPEAKER_SINK not in sinks:
            pactl(
                "load-module",
                "module-null-sink",
                f"sink_name={SPEAKER_SINK}",
                "sink_properties=device.description=vlt_virtual_speaker",
            )
        if MIC_SOURCE not in by_name("sources"):
            pactl(
                "load-module",
                "module-remap-source",
                f"master={MIC_SINK}.monitor",
                f"source_name={MIC_SOURCE}",
                "source_properties=device.description=vlt_virtual_microphone",
            )

        if info.get("Default Source") != MIC_SOURCE:
            state.setdefault("previous_default_source", info.get("Default Source"))
            pactl("set-default-source", MIC_SOURCE)
        if info.get("Default Sink") != SPEAKER_SINK:
            state.setdefault("previous_default_sink", info.get("Default Sink"))
            pactl("set-default-sink", SPEAKER_SINK)

        server = info.get("Server String")
        feeders = {sink: ensure_feeder(state, server, sink, rate, state_dir()) for sink in _FED_SINKS}
        state["feeders"] = feeders
        _write_state(state)
    return status()


def status() -> VirtualAudioStatus:
    """What is up now (never starts anything)."""
    require_tool("pactl")
    alsa = alsa_default_routes_to_pulse()
    info = server_info()
    if info is None:
        return VirtualAudioStatus(daemon_running=False, alsa_default_routes_to_pulse=alsa)
    state = _read_state()
    if state.get("server_address") != info.get("Server String"):
        state = {}
    sinks = by_name("sinks")
    mic = sinks.get(MIC_SINK)
    name = info.get("Server Name", "PulseAudio")
    version = info.get("Server Version", "")
    return VirtualAudioStatus(
        daemon_running=True,
        server=f"{name} {version}".strip(),
        server_address=info.get("Server String"),
        started_daemon=bool(state.get("started_daemon")),
        mic_sink=mic is not None,
        mic_source=MIC_SOURCE in by_name("sources"),
        speaker_sink=SPEAKER_SINK in sinks,
        mic_format=mic[3] if mic is not None and len(mic) > 3 else None,
        feeder_pid=find_feeder(state, info.get("Server String"), MIC_SINK),
        speaker_feeder_pid=find_feeder(state, info.get("Server String"), SPEAKER_SINK),
        default_source=info.get("Default Source"),
        default_sink=info.get("Default Sink"),
        alsa_default_routes_to_pulse=alsa,
    )


def stop() -> VirtualAudioStatus:
    """Undo :func:`start`: end the feeders, unload our modules, restore the previous
    defaults, and end the daemon if :func:`start` started it."""
    require_tool("pactl")
    with _locked():
        state = _read_state()
        info = server_info()
        # The feeders of this daemon (or, with none answering, of the one we recorded).
        server = state.get("server_address") if info is None else info.get("Server String")
        feeders = set(stray_feeders(server)) if server else set()
        feeders.update(pid for pid in recorded_feeders(state).values() if is_feeder(pid, server))
        for feeder in sorted(feeders):
            terminate(feeder)
        if info is not None:
            for index, _name in _our_modules():
                pactl("unload-module", str(index), check=False)
            same_daemon = state.get("server_address") == info.get("Server String")
            if same_daemon:
                # Only defaults that still exist (not ours: those are unloaded now).
                if state.get("previous_default_source"):
                    pactl("set-default-source", state["previous_default_source"], check=False)
                if state.get("previous_default_sink"):
                    pactl("set-default-sink", state["previous_default_sink"], check=False)
            daemon = state.get("daemon_pid")
            if same_daemon and state.get("started_daemon") and isinstance(daemon, int):
                argv = cmdline(daemon)
                if argv is not None and (not argv or "pulseaudio" in Path(argv[0]).name):
                    terminate(daemon)
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


# -- playing into the mic ---------------------------------------------------------------


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
        [require_tool("paplay"), f"--device={MIC_SINK}", f"--client-name={_PLAY_NAME}", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=tool_env(),
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
