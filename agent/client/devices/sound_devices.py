"""Audio devices through PortAudio (python ``sounddevice``): list, choose, plan and open streams.

The only module that imports ``sounddevice``, and only inside functions, so
``vlt`` runs (and its tests pass) on machines without PortAudio. Every
PortAudio failure becomes a :class:`DeviceError` that says what to do.

Every function takes an optional ``sd``: the ``sounddevice`` module to use
(default: :func:`load_sounddevice`). Tests pass a stand-in to reproduce
failures that real devices do not produce on demand.

Measured on PulseAudio's virtual devices (ALSA ``pulse``/``default`` plugin,
``vlt virtual-mic start``, whose silence feeders keep both null sinks
running; see agent/client/devices/virtual_audio.py), 16 kHz mono int16:

- input, ``blocksize=320`` (20 ms), ``latency="low"``: clean; PortAudio
  reports 40 ms; audio played into the virtual mic reaches a callback
  21-26 ms after ``paplay`` starts; the first callback comes ~22 ms after
  ``start()``;
- output, ``blocksize=320``, ``latency="low"`` or ``"high"``: clean, reported
  40 ms (11 of 11 runs); ``latency=0.1``: reported 120 ms; ``blocksize=0``
  with ``"low"`` (PortAudio picks 64-frame callbacks, reported 8 ms)
  underruns now and then ("ALSA lib pcm.c: underrun occurred" on stderr),
  with ``"high"`` it is clean (34.8 ms). Without the feeder in the speaker
  sink, 20 ms blocks at 40 ms underran continuously.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Literal

from agent.errors import VltError

__all__ = [
    "DeviceError",
    "DeviceInfo",
    "Kind",
    "StreamPlan",
    "format_devices",
    "list_devices",
    "load_sounddevice",
    "open_stream",
    "plan_stream",
    "rescan",
    "resolve_device",
    "stream_latency_ms",
]

Kind = Literal["input", "output"]
#: The ``sounddevice`` module, or a stand-in with the same attributes (tests).
SoundDevice = Any

PORTAUDIO_INSTALL = (
    "install PortAudio: `apt-get install libportaudio2` (Debian/Ubuntu), "
    "`dnf install portaudio` (Fedora), `brew install portaudio` (macOS)"
)
VIRTUAL_MIC_HINT = "start a virtual one with `vlt virtual-mic start`"
_NO_DEVICE_HINT = {
    "input": f"connect a microphone, or {VIRTUAL_MIC_HINT}",
    "output": f"connect speakers or headphones, or {VIRTUAL_MIC_HINT} (it adds a virtual speaker)",
}


class DeviceError(VltError):
    """An audio device is missing, unknown, or rejects the settings; says what to do."""


def _import_sounddevice() -> ModuleType:
    # A separate function so tests can replace the import (a missing PortAudio).
    return importlib.import_module("sounddevice")


def load_sounddevice() -> ModuleType:
    """Import ``sounddevice`` (which loads PortAudio), or explain how to install what is missing."""
    try:
        return _import_sounddevice()
    except OSError as exc:  # sounddevice raises OSError("PortAudio library not found")
        raise DeviceError(f"PortAudio library not found ({exc}); {PORTAUDIO_INSTALL}") from None
    except ImportError as exc:
        raise DeviceError(
            f"the Python package sounddevice is not installed ({exc}): pip install sounddevice"
        ) from None


def _sd(sd: SoundDevice | None) -> SoundDevice:
    return load_sounddevice() if sd is None else sd


def _message(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # PortAudioError.__str__ queries PortAudio itself
        text = repr(exc.args)
    return text or type(exc).__name__


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device, as ``vlt devices`` lists it."""

    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    #: PortAudio's suggested low latencies, in seconds.
    default_low_input_latency: float
    default_low_output_latency: float
    is_default_input: bool = False
    is_default_output: bool = False

    def channels(self, kind: Kind) -> int:
        return self.max_input_channels if kind == "input" else self.max_output_channels

    @property
    def label(self) -> str:
        """``3 'USB Audio'``: how errors name a device."""
        return f"{self.index} {self.name!r}"


def rescan(*, sd: SoundDevice | None = None) -> None:
    """Restart PortAudio so it sees devices that appeared since it started (no streams may be open).

    PortAudio lists devices once, at ``import sounddevice``: a process that
    imported it before PulseAudio ran (``vlt virtual-mic start``) sees no
    ``pulse``/``default`` devices until it rescans. This also reloads ALSA's
    configuration, whose hook routes ``default`` to PulseAudio only if it runs.
    """
    sd = _sd(sd)
    sd._terminate()
    sd._initialize()


def _default_indices(sd: SoundDevice) -> tuple[int, int]:
    try:
        pair = [sd.default.device[0], sd.default.device[1]]
    except Exception:
        return -1, -1
    indices = []
    for kind, value in zip(("input", "output"), pair, strict=True):
        if isinstance(value, str):  # the user set sd.default.device to a name
            try:
                value = sd.query_devices(value, kind=kind)["index"]
            except Exception:
                value = -1
        indices.append(value if isinstance(value, int) else -1)
    return indices[0], indices[1]


def list_devices(*, sd: SoundDevice | None = None) -> list[DeviceInfo]:
    """Every device PortAudio sees, with the default input and output marked."""
    sd = _sd(sd)
    try:
        raw = list(sd.query_devices())
    except sd.PortAudioError as exc:
        raise DeviceError(f"PortAudio cannot list devices: {_message(exc)}") from None
    default_in, default_out = _default_indices(sd)
    hostapis: dict[int, str] = {}
    devices = []
    for position, dev in enumerate(raw):
        index = int(dev.get("index", position))
        api = int(dev.get("hostapi", -1))
        if api not in hostapis:
            try:
                hostapis[api] = str(sd.query_hostapis(api)["name"])
            except Exception:
                hostapis[api] = "?"
        devices.append(
            DeviceInfo(
                index=index,
                name=str(dev["name"]),
                hostapi=hostapis[api],
                max_input_channels=int(dev["max_input_channels"]),
                max_output_channels=int(dev["max_output_channels"]),
                default_samplerate=float(dev["default_samplerate"]),
                default_low_input_latency=float(dev.get("default_low_input_latency", 0.0)),
                default_low_output_latency=float(dev.get("default_low_output_latency", 0.0)),
                is_default_input=index == default_in,
                is_default_output=index == default_out,
            )
        )
    return devices


def format_devices(devices: Sequence[DeviceInfo]) -> str:
    """The table ``vlt devices`` prints (``>`` default input, ``<`` default output, ``*`` both)."""
    if not devices:
        return (
            "no audio devices found (PortAudio sees none). Without audio hardware, start a "
            "virtual microphone and speaker: vlt virtual-mic start"
        )
    rows = [("", "#", "in", "out", "rate Hz", "low in/out ms", "host API", "name")]
    for dev in devices:
        mark = {(True, True): "*", (True, False): ">", (False, True): "<"}.get(
            (dev.is_default_input, dev.is_default_output), ""
        )
        rows.append(
            (
                mark,
                str(dev.index),
                str(dev.max_input_channels),
                str(dev.max_output_channels),
                f"{dev.default_samplerate:g}",
                f"{dev.default_low_input_latency * 1000:.1f}/{dev.default_low_output_latency * 1000:.1f}",
                dev.hostapi,
                dev.name,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    right = {1, 2, 3, 4}
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=False))
        ]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    lines.append("> default input, < default output, * both; choose others by index or name")
    return "\n".join(lines)


def _brief(devices: Sequence[DeviceInfo]) -> str:
    return ", ".join(f"{d.index} {d.name}" for d in devices)


def resolve_device(spec: str | int | None, kind: Kind, *, sd: SoundDevice | None = None) -> DeviceInfo:
    """The device to use for ``kind``.

    ``spec``: None for the default device of that kind; an int or a string of
    digits for an index; otherwise a case-insensitive part of the name (an
    exact name wins over names that contain it).
    """
    devices = list_devices(sd=sd)
    usable = [d for d in devices if d.channels(kind) > 0]
    if not usable:
        raise DeviceError(f"no {kind} device found: {_NO_DEVICE_HINT[kind]}")
    valid = f"{kind} devices: {_brief(usable)} (vlt devices lists them)"

    if spec is None:
        default = next((d for d in usable if getattr(d, f"is_default_{kind}")), None)
        if default is None:
            raise DeviceError(f"there is no default {kind} device; choose one by index or name: {valid}")
        return default

    text = str(spec).strip()
    if isinstance(spec, int) or text.isdigit():
        index = int(text)
        device = next((d for d in devices if d.index == index), None)
        if device is None:
            raise DeviceError(f"no audio device has index {index}; {valid}")
    else:
        wanted = text.casefold()
        matches = [d for d in devices if d.name.casefold() == wanted] or [
            d for d in devices if wanted in d.name.casefold()
        ]
        if not matches:
            raise DeviceError(f"no {kind} device matches {text!r}; {valid}")
        if len(matches) > 1:
            # "USB" may name a USB mic and USB speakers: keep those that can do `kind`.
            matches = [d for d in matches if d.channels(kind) > 0] or matches
        if len(matches) > 1:
            raise DeviceError(
                f"{text!r} matches {len(matches)} {kind} devices: {_brief(matches)}; "
                "give the index or more of the name"
            )
        device = matches[0]
    if device.channels(kind) == 0:
        raise DeviceError(f"device {device.label} has no {kind} channels; {valid}")
    return device


@dataclasses.dataclass(frozen=True)
class StreamPlan:
    """How a mono int16 stream will open: at ``rate``, which differs from
    ``wanted_rate`` when the device refused it (the caller then resamples)."""

    device: DeviceInfo
    kind: Kind
    rate: int
    wanted_rate: int

    @property
    def resampled(self) -> bool:
        return self.rate != self.wanted_rate


def plan_stream(
    device: DeviceInfo, kind: Kind, wanted_rate: int, *, sd: SoundDevice | None = None
) -> StreamPlan:
    """Check that ``device`` takes mono int16 at ``wanted_rate``, else at its default rate."""
    sd = _sd(sd)
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    rates = [int(wanted_rate)]
    default_rate = round(device.default_samplerate)
    if default_rate > 0 and default_rate != wanted_rate:
        rates.append(default_rate)
    failures = []
    for rate in rates:
        try:
            check(device=device.index, samplerate=rate, channels=1, dtype="int16")
        except sd.PortAudioError as exc:
            failures.append(f"{rate} Hz: {_message(exc)}")
            continue
        return StreamPlan(device=device, kind=kind, rate=rate, wanted_rate=int(wanted_rate))
    raise DeviceError(
        f"{kind} device {device.label} ({device.hostapi}) takes no mono 16-bit stream at "
        f"{' or '.join(f'{r} Hz' for r in rates)} ({'; '.join(failures)}); choose another device "
        "(vlt devices)"
    )


def open_stream(
    plan: StreamPlan,
    *,
    blocksize: int,
    callback: Callable[..., None],
    latency: str | float = "low",
    start: bool = False,
    sd: SoundDevice | None = None,
) -> Any:
    """An ``sd.InputStream`` / ``sd.OutputStream`` (mono int16 at ``plan.rate``), started if ``start``.

    ``blocksize`` is frames per callback (0: PortAudio picks, varying; see the
    module notes for what works on PulseAudio). PortAudio errors at open or
    start become a :class:`DeviceError` naming the device.
    """
    sd = _sd(sd)
    cls = sd.InputStream if plan.kind == "input" else sd.OutputStream
    what = f"{plan.kind} device {plan.device.label} at {plan.rate} Hz"
    try:
        stream = cls(
            device=plan.device.index,
            samplerate=plan.rate,
            channels=1,
            dtype="int16",
            blocksize=blocksize,
            latency=latency,
            callback=callback,
        )
    except sd.PortAudioError as exc:
        raise DeviceError(f"cannot open {what}: {_message(exc)}") from None
    if start:
        try:
            stream.start()
        except sd.PortAudioError as exc:
            stream.close()
            raise DeviceError(f"cannot start {what}: {_message(exc)}") from None
    return stream


def stream_latency_ms(stream: Any) -> float:
    """PortAudio's latency of an open stream, in ms (input plus output for a duplex stream)."""
    latency = stream.latency
    if isinstance(latency, (tuple, list)):
        return float(sum(latency)) * 1000.0
    return float(latency) * 1000.0
