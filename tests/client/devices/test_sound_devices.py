"""agent.client.devices.sound_devices: device listing, choice, rate fallback and every error message.

These tests use a stand-in for the ``sounddevice`` module, not PortAudio: the
failures they check (a missing PortAudio library, no input device, a device
that rejects 16 kHz, a device that rejects every rate) cannot be produced on
demand with the real virtual device, which takes any rate. The real devices
are exercised in tests/test_virtual_audio.py.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import pytest

from agent.client.devices import sound_devices
from agent.client.devices.sound_devices import (
    DeviceError,
    format_devices,
    list_devices,
    load_sounddevice,
    open_stream,
    plan_stream,
    resolve_device,
    stream_latency_ms,
)


class FakePortAudioError(Exception):
    """Stands in for sounddevice.PortAudioError."""


def _dev(name: str, ins: int, outs: int, rate: float = 48000.0, hostapi: int = 0) -> dict[str, Any]:
    return {
        "name": name,
        "hostapi": hostapi,
        "max_input_channels": ins,
        "max_output_channels": outs,
        "default_samplerate": rate,
        "default_low_input_latency": 0.0087,
        "default_low_output_latency": 0.0087,
    }


class FakeStream:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.latency = 0.04
        self.started = False

    def start(self) -> None:
        self.started = True

    def close(self) -> None:
        pass


def fake_sd(
    devices: list[dict[str, Any]],
    default: tuple[int, int] = (-1, -1),
    accepts: Callable[[int, float], bool] = lambda index, rate: True,
) -> types.SimpleNamespace:
    """A ``sounddevice`` stand-in: query functions, defaults, settings checks, streams."""
    listed = [dict(d, index=i) for i, d in enumerate(devices)]

    def check(device: int, samplerate: float, channels: int, dtype: str) -> None:
        assert (channels, dtype) == (1, "int16")
        if not accepts(device, samplerate):
            raise FakePortAudioError("Invalid sample rate [PaErrorCode -9997]")

    return types.SimpleNamespace(
        PortAudioError=FakePortAudioError,
        query_devices=lambda *args, **kwargs: listed,
        query_hostapis=lambda index: {"name": ["ALSA", "JACK Audio Connection Kit"][index]},
        default=types.SimpleNamespace(device=list(default)),
        check_input_settings=check,
        check_output_settings=check,
        InputStream=FakeStream,
        OutputStream=FakeStream,
    )


LAPTOP = [
    _dev("HDA Intel PCH: ALC3246 Analog (hw:0,0)", 2, 2),
    _dev("HDMI 0 (hw:0,3)", 0, 8),
    _dev("USB Headset Mic (hw:1,0)", 1, 0, rate=44100),
    _dev("USB Headset (hw:1,0)", 0, 2, rate=44100),
    _dev("pulse", 32, 32, rate=44100),
    _dev("default", 32, 32, rate=44100),
]


# -- loading PortAudio --------------------------------------------------------------


def test_missing_portaudio_names_the_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_portaudio() -> Any:
        raise OSError("PortAudio library not found")  # what `import sounddevice` raises

    monkeypatch.setattr(sound_devices, "_import_sounddevice", no_portaudio)
    with pytest.raises(DeviceError) as err:
        load_sounddevice()
    message = str(err.value)
    assert "PortAudio library not found" in message
    assert "apt-get install libportaudio2" in message
    assert "dnf install portaudio" in message and "brew install portaudio" in message
    # ... and every public function reports it the same way.
    with pytest.raises(DeviceError, match="libportaudio2"):
        list_devices()


def test_missing_python_package_says_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_package() -> Any:
        raise ModuleNotFoundError("No module named 'sounddevice'")

    monkeypatch.setattr(sound_devices, "_import_sounddevice", no_package)
    with pytest.raises(DeviceError, match="pip install sounddevice"):
        load_sounddevice()


def test_vlt_devices_prints_one_line_error_without_portaudio(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main

    def no_portaudio() -> Any:
        raise OSError("PortAudio library not found")

    monkeypatch.setattr(sound_devices, "_import_sounddevice", no_portaudio)
    assert main(["devices"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vlt: error: PortAudio library not found")
    assert "apt-get install libportaudio2" in err[0]


# -- listing ------------------------------------------------------------------------


def test_list_and_format_devices_mark_the_defaults() -> None:
    sd = fake_sd(LAPTOP, default=(2, 0))
    devices = list_devices(sd=sd)
    assert [d.index for d in devices] == list(range(6))
    assert devices[2].is_default_input and not devices[2].is_default_output
    assert devices[0].is_default_output and devices[0].hostapi == "ALSA"
    table = format_devices(devices)
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["#", "in", "out", "rate"]
    row = next(line for line in lines if "USB Headset Mic" in line)
    assert row.lstrip().startswith(">") and "44100" in row and "ALSA" in row
    assert next(line for line in lines if "ALC3246" in line).startswith("<")
    assert "default input" in lines[-1]


def test_format_without_devices_says_how_to_get_a_virtual_mic() -> None:
    assert format_devices(list_devices(sd=fake_sd([]))).startswith("no audio devices found")
    assert "vlt virtual-mic start" in format_devices([])


# -- choosing a device --------------------------------------------------------------


def test_resolve_default_index_and_name() -> None:
    sd = fake_sd(LAPTOP, default=(5, 5))
    assert resolve_device(None, "input", sd=sd).name == "default"
    assert resolve_device(2, "input", sd=sd).name.startswith("USB Headset Mic")
    assert resolve_device("4", "output", sd=sd).name == "pulse"
    assert resolve_device("hdmi", "output", sd=sd).index == 1
    # "pulse" is a name exactly, not only a part of one.
    assert resolve_device("PULSE", "input", sd=sd).index == 4
    # "usb headset" names a mic and a headset; only one of them can record.
    assert resolve_device("usb headset", "input", sd=sd).index == 2
    assert resolve_device("usb headset", "output", sd=sd).index == 3


def test_no_input_device_says_connect_or_start_the_virtual_mic() -> None:
    speakers_only = fake_sd([_dev("HDMI 0", 0, 8)], default=(-1, 0))
    with pytest.raises(DeviceError) as err:
        resolve_device(None, "input", sd=speakers_only)
    assert str(err.value) == (
        "no input device found: connect a microphone, or start a virtual one with `vlt virtual-mic start`"
    )
    with pytest.raises(DeviceError, match=r"^no output device found: .*vlt virtual-mic start"):
        resolve_device(None, "output", sd=fake_sd([]))


def test_unknown_spec_lists_the_valid_devices() -> None:
    sd = fake_sd(LAPTOP, default=(5, 5))
    with pytest.raises(DeviceError) as err:
        resolve_device("studio", "input", sd=sd)
    message = str(err.value)
    assert message.startswith("no input device matches 'studio'; input devices: 0 HDA Intel")
    assert "2 USB Headset Mic (hw:1,0)" in message and "5 default" in message
    assert "HDMI" not in message  # not an input device
    with pytest.raises(DeviceError, match=r"no audio device has index 9; output devices: 0 HDA"):
        resolve_device(9, "output", sd=sd)


def test_ambiguous_spec_lists_the_matches() -> None:
    sd = fake_sd(LAPTOP, default=(5, 5))
    with pytest.raises(DeviceError) as err:
        resolve_device("hw:0", "output", sd=sd)
    assert str(err.value) == (
        "'hw:0' matches 2 output devices: 0 HDA Intel PCH: ALC3246 Analog (hw:0,0), 1 HDMI 0 (hw:0,3); "
        "give the index or more of the name"
    )


def test_device_without_channels_of_that_kind() -> None:
    sd = fake_sd(LAPTOP, default=(5, 5))
    with pytest.raises(DeviceError, match=r"^device 1 'HDMI 0 \(hw:0,3\)' has no input channels; input"):
        resolve_device(1, "input", sd=sd)
    with pytest.raises(DeviceError, match="has no output channels"):
        resolve_device("usb headset mic", "output", sd=sd)


def test_no_default_device_asks_for_one() -> None:
    sd = fake_sd(LAPTOP, default=(-1, -1))
    with pytest.raises(DeviceError, match="there is no default input device; choose one by index or name"):
        resolve_device(None, "input", sd=sd)


# -- rates and streams --------------------------------------------------------------


def test_plan_keeps_the_wanted_rate_when_accepted() -> None:
    sd = fake_sd(LAPTOP, default=(5, 5))
    plan = plan_stream(resolve_device(None, "input", sd=sd), "input", 16000, sd=sd)
    assert (plan.rate, plan.wanted_rate, plan.resampled) == (16000, 16000, False)


def test_plan_falls_back_to_the_default_rate_when_16k_is_rejected() -> None:
    # A USB headset that takes only its native 44.1 kHz.
    sd = fake_sd(LAPTOP, default=(2, 3), accepts=lambda index, rate: rate == 44100)
    device = resolve_device(None, "input", sd=sd)
    plan = plan_stream(device, "input", 16000, sd=sd)
    assert (plan.device, plan.kind, plan.rate, plan.wanted_rate) == (device, "input", 44100, 16000)
    assert plan.resampled


def test_plan_error_names_device_rates_and_portaudio_message() -> None:
    sd = fake_sd(LAPTOP, default=(2, 3), accepts=lambda index, rate: False)
    device = resolve_device(None, "output", sd=sd)
    with pytest.raises(DeviceError) as err:
        plan_stream(device, "output", 16000, sd=sd)
    message = str(err.value)
    assert message.startswith("output device 3 'USB Headset (hw:1,0)' (ALSA) takes no mono 16-bit stream")
    assert "at 16000 Hz or 44100 Hz" in message
    assert "Invalid sample rate [PaErrorCode -9997]" in message


def test_open_stream_passes_the_plan_and_translates_errors() -> None:
    sd = fake_sd(LAPTOP, default=(5, 5))
    plan = plan_stream(resolve_device(None, "input", sd=sd), "input", 16000, sd=sd)
    stream = open_stream(plan, blocksize=320, callback=print, start=True, sd=sd)
    assert stream.started
    assert stream.kwargs == {
        "device": 5,
        "samplerate": 16000,
        "channels": 1,
        "dtype": "int16",
        "blocksize": 320,
        "latency": "low",
        "callback": print,
    }
    assert stream_latency_ms(stream) == pytest.approx(40.0)

    def busy(**kwargs: Any) -> Any:
        raise FakePortAudioError("Device unavailable [PaErrorCode -9985]")

    sd.InputStream = busy
    with pytest.raises(DeviceError) as err:
        open_stream(plan, blocksize=320, callback=print, sd=sd)
    assert str(err.value) == (
        "cannot open input device 5 'default' at 16000 Hz: Device unavailable [PaErrorCode -9985]"
    )


def test_duplex_latency_is_the_sum() -> None:
    assert stream_latency_ms(types.SimpleNamespace(latency=(0.01, 0.02))) == pytest.approx(30.0)
