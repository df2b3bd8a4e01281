"""Pipecat's protobuf frames, audio only: the wire format by hand, checked both ways."""

from __future__ import annotations

import pytest

from agent.client.targets.pipecat_frames import FrameError, decode_audio, encode_audio


def test_audio_round_trip() -> None:
    pcm = bytes(range(256)) * 3
    assert decode_audio(encode_audio(pcm, 24000)) == (pcm, 24000, 1)


def test_known_bytes() -> None:
    # Frame{audio: AudioRawFrame{audio: b"\x01\x02", sample_rate: 16000, num_channels: 1}}
    # 16000 = 0x3e80 -> varint 80 7d.
    assert encode_audio(b"\x01\x02", 16000) == bytes.fromhex(
        "12 09 1a 02 01 02 20 80 7d 28 01".replace(" ", "")
    )


def test_other_frames_are_not_audio() -> None:
    text_frame = bytes.fromhex("0a 05 1a 03 68 69 21".replace(" ", ""))  # Frame{text: {text: "hi!"}}
    assert decode_audio(text_frame) is None
    # Unknown fields, fixed-width ones included, are skipped.
    assert decode_audio(bytes([0x31]) + b"\0" * 8 + encode_audio(b"\x05\x06", 8000)) == (b"\x05\x06", 8000, 1)


@pytest.mark.parametrize("data", [b"\x12\x09\x1a", b"\x12\xff", b"\x0f"])
def test_garbage_is_a_frame_error(data: bytes) -> None:
    with pytest.raises(FrameError):
        decode_audio(data)
