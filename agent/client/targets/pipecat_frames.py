"""Pipecat's protobuf websocket frames (``ProtobufFrameSerializer``), audio only.

Pipecat's websocket transports carry ``pipecat.Frame`` messages (its
``frames.proto``): a ``oneof`` of text, audio, transcription, message and
interruption frames. A caller needs only audio, so this is a few lines of the
protobuf wire format rather than a dependency on pipecat (whose pins conflict
with this project's protobuf and soxr):

    Frame         { AudioRawFrame audio = 2; ... }
    AudioRawFrame { bytes audio = 3; uint32 sample_rate = 4; uint32 num_channels = 5; ... }
"""

from __future__ import annotations

__all__ = ["FrameError", "decode_audio", "encode_audio"]

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_FRAME_AUDIO = 2
_AUDIO_BYTES, _AUDIO_RATE, _AUDIO_CHANNELS = 3, 4, 5


class FrameError(ValueError):
    """Bytes that are not a protobuf message."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _field(number, _LEN) + _varint(len(payload)) + payload


def encode_audio(pcm: bytes, sample_rate: int, channels: int = 1) -> bytes:
    """A ``Frame`` holding one ``AudioRawFrame`` of 16-bit PCM."""
    audio = (
        _length_delimited(_AUDIO_BYTES, pcm)
        + _field(_AUDIO_RATE, _VARINT)
        + _varint(sample_rate)
        + _field(_AUDIO_CHANNELS, _VARINT)
        + _varint(channels)
    )
    return _length_delimited(_FRAME_AUDIO, audio)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= len(data) or shift > 63:
            raise FrameError("truncated varint")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7


def _fields(data: bytes) -> dict[int, bytes | int]:
    """Top-level fields of a message (the last of a repeated one wins, as in proto3)."""
    out: dict[int, bytes | int] = {}
    at = 0
    while at < len(data):
        key, at = _read_varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            out[number], at = _read_varint(data, at)
        elif wire == _LEN:
            size, at = _read_varint(data, at)
            if at + size > len(data):
                raise FrameError("truncated field")
            out[number], at = data[at : at + size], at + size
        elif wire in (_I64, _I32):
            at += 8 if wire == _I64 else 4
        else:
            raise FrameError(f"unsupported wire type {wire}")
    return out


def decode_audio(data: bytes) -> tuple[bytes, int, int] | None:
    """``(pcm, sample rate, channels)`` of a ``Frame`` carrying audio; None for any other frame."""
    audio = _fields(data).get(_FRAME_AUDIO)
    if not isinstance(audio, bytes):
        return None
    inner = _fields(audio)
    pcm = inner.get(_AUDIO_BYTES, b"")
    rate = inner.get(_AUDIO_RATE, 0)
    channels = inner.get(_AUDIO_CHANNELS, 1)
    if not isinstance(pcm, bytes) or not isinstance(rate, int) or not isinstance(channels, int):
        raise FrameError("an audio frame with fields of the wrong type")
    return pcm, rate, channels or 1
