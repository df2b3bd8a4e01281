"""Audio utilities and the caller's speech: levels, onsets, resampling, WAV files, test speech."""

from __future__ import annotations

import math
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from agent.audio import (
    PCM,
    AudioFileError,
    bytes_to_pcm,
    find_onset,
    frame_rms_dbfs,
    pcm_to_bytes,
    read_wav,
    resample,
    speech_bounds,
    speechlike,
    write_wav,
)
from agent.client.user_speech import USER_PITCH_HZ, UserUtterance, render_user_audio
from agent.errors import VltError
from agent.stages.tts_piper import piper_available

RATE = 16_000
SENTENCE = (
    "I would like to book a table for two people tomorrow evening, "
    "somewhere quiet near the old station if possible."
)


def tone(seconds: float, rate: int = RATE, hz: float = 440.0, dbfs: float = -20.0) -> PCM:
    t = np.arange(round(seconds * rate)) / rate
    amplitude = 32768 * 10 ** (dbfs / 20) * math.sqrt(2)  # sine RMS = amplitude / √2
    return np.rint(amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def silence(seconds: float, rate: int = RATE) -> PCM:
    return np.zeros(round(seconds * rate), dtype=np.int16)


def peak_hz(pcm: PCM, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[np.argmax(spectrum)])


def write_raw_wav(path: Path, data: bytes, *, width: int, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(width)
        f.setframerate(RATE)
        f.writeframes(data)
    return path


# --------------------------------------------------------------------------- bytes, levels


def test_bytes_round_trip_is_little_endian() -> None:
    pcm = np.array([0, 1, -1, 32767, -32768, 258], dtype=np.int16)
    data = pcm_to_bytes(pcm)
    assert data[:6] == b"\x00\x00\x01\x00\xff\xff"
    back = bytes_to_pcm(data)
    assert back.dtype == np.int16
    np.testing.assert_array_equal(back, pcm)


def test_stereo_bytes_are_interleaved() -> None:
    stereo = np.array([[1, 2], [3, 4]], dtype=np.int16)
    np.testing.assert_array_equal(bytes_to_pcm(pcm_to_bytes(stereo)), [1, 2, 3, 4])


def test_rms_of_silence_and_tone() -> None:
    assert frame_rms_dbfs(silence(0.02)) == -math.inf
    assert frame_rms_dbfs(np.zeros(0, dtype=np.int16)) == -math.inf
    assert frame_rms_dbfs(tone(0.02, dbfs=-20.0)) == pytest.approx(-20.0, abs=0.1)
    assert frame_rms_dbfs(tone(0.02, dbfs=-50.0)) == pytest.approx(-50.0, abs=0.2)


# --------------------------------------------------------------------------- onsets


def test_onset_of_tone_after_silence_within_1_ms() -> None:
    pcm = np.concatenate([silence(0.1234), tone(0.2)])
    onset = find_onset(pcm, RATE)
    assert onset is not None
    assert abs(onset - round(0.1234 * RATE)) <= RATE // 1000


def test_onset_in_a_single_frame_and_at_its_start() -> None:
    frame = np.concatenate([silence(0.007), tone(0.013)])  # one 20 ms frame
    assert find_onset(frame, RATE) == pytest.approx(round(0.007 * RATE), abs=2)
    assert find_onset(tone(0.02), RATE) in (0, 1)  # sin(0) = 0, the next sample is loud
    assert find_onset(tone(0.002), RATE) in (0, 1)  # shorter than a window


def test_no_onset_in_silence_or_quiet_noise() -> None:
    rng = np.random.default_rng(1)
    quiet = np.rint(rng.normal(0, 32768 * 10 ** (-55 / 20), RATE)).astype(np.int16)
    assert frame_rms_dbfs(quiet) < -50
    assert find_onset(silence(1.0), RATE) is None
    assert find_onset(quiet, RATE) is None
    assert find_onset(np.zeros(0, dtype=np.int16), RATE) is None
    assert speech_bounds(quiet, RATE) is None


def test_a_lone_click_is_not_an_onset() -> None:
    pcm = silence(0.1)
    pcm[400] = 2000  # one sample: loud, but a 5 ms window of it is below -40 dBFS RMS
    assert find_onset(pcm, RATE) is None


def test_speech_bounds() -> None:
    pcm = np.concatenate([silence(0.25), tone(0.5), silence(0.3)])
    bounds = speech_bounds(pcm, RATE)
    assert bounds is not None
    start, end = bounds
    assert abs(start - round(0.25 * RATE)) <= RATE // 1000
    assert abs(end - round(0.75 * RATE)) <= RATE // 1000


# --------------------------------------------------------------------------- resampling


def test_resample_changes_length_by_ratio_and_keeps_pitch() -> None:
    source = tone(1.0, rate=22_050, dbfs=-10.0)
    out = resample(source, 22_050, RATE)
    assert out.dtype == np.int16
    assert abs(len(out) - RATE) <= 1
    assert peak_hz(out, RATE) == pytest.approx(440.0, abs=1.5)
    up = resample(source, 22_050, 48_000)
    assert abs(len(up) - 48_000) <= 1
    assert peak_hz(up, 48_000) == pytest.approx(440.0, abs=1.5)


def test_resample_identity_and_clipping() -> None:
    pcm = tone(0.1)
    assert resample(pcm, RATE, RATE) is pcm
    square = np.tile(np.array([32767] * 20 + [-32768] * 20, dtype=np.int16), 100)
    out = resample(square, RATE, 8_000)  # Gibbs overshoot must clip, not wrap around
    assert out.dtype == np.int16
    assert out.max() == 32767 and out.min() == -32768
    with pytest.raises(ValueError):
        resample(pcm, 0, RATE)


# --------------------------------------------------------------------------- WAV files


def test_wav_round_trip_mono(tmp_path: Path) -> None:
    pcm = tone(0.3, rate=22_050)
    path = tmp_path / "mono.wav"
    write_wav(path, pcm, 22_050)
    back, rate = read_wav(path)
    assert rate == 22_050
    np.testing.assert_array_equal(back, pcm)
    assert [p.name for p in tmp_path.iterdir()] == ["mono.wav"]  # no temp file left


def test_wav_round_trip_stereo_is_downmixed(tmp_path: Path) -> None:
    left, right = tone(0.2), tone(0.2, hz=1000.0)
    stereo = np.stack([left, right], axis=1)
    path = tmp_path / "stereo.wav"
    write_wav(path, stereo, RATE)
    with wave.open(str(path), "rb") as f:
        assert f.getnchannels() == 2 and f.getsampwidth() == 2
        np.testing.assert_array_equal(
            np.frombuffer(f.readframes(f.getnframes()), "<i2").reshape(-1, 2), stereo
        )
    mono, rate = read_wav(path)
    assert rate == RATE
    expected = (left.astype(np.int32) + right) // 2
    np.testing.assert_array_equal(mono, expected)


def test_write_wav_replaces_existing_file_and_rejects_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    write_wav(path, tone(0.5), RATE)
    write_wav(path, tone(0.1), RATE)
    assert len(read_wav(path)[0]) == round(0.1 * RATE)
    with pytest.raises(ValueError):
        write_wav(path, tone(0.1).astype(np.int32), RATE)
    with pytest.raises(ValueError):
        write_wav(path, np.zeros((10, 3), dtype=np.int16), RATE)
    assert len(read_wav(path)[0]) == round(0.1 * RATE)  # a failed write changes nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]


@pytest.mark.parametrize(
    ("name", "make", "problem"),
    [
        ("eight.wav", lambda p: write_raw_wav(p, bytes(100), width=1), "8-bit"),
        ("deep.wav", lambda p: write_raw_wav(p, bytes(300), width=3), "24-bit"),
        ("garbage.wav", lambda p: p.write_bytes(b"this is not a wav file at all" * 10), "WAV"),
        ("zero-bytes.wav", lambda p: p.write_bytes(b""), "WAV"),
        ("no-frames.wav", lambda p: write_raw_wav(p, b"", width=2), "no audio"),
        ("missing.wav", lambda p: None, "not found"),
        ("folder.wav", lambda p: p.mkdir(), "directory"),
    ],
)
def test_bad_wav_files_raise_audio_file_error(tmp_path: Path, name: str, make: object, problem: str) -> None:
    path = tmp_path / name
    assert callable(make)
    make(path)
    with pytest.raises(AudioFileError) as caught:
        read_wav(path)
    message = str(caught.value)
    assert isinstance(caught.value, VltError)
    assert str(path) in message
    assert problem in message
    assert "16-bit PCM WAV" in message  # says what is accepted


# --------------------------------------------------------------------------- speechlike


def test_speechlike_is_deterministic() -> None:
    a = speechlike(SENTENCE, RATE)
    assert a.dtype == np.int16 and a.ndim == 1 and len(a) > 0
    np.testing.assert_array_equal(a, speechlike(SENTENCE, RATE))
    np.testing.assert_array_equal(speechlike(SENTENCE, RATE, seed=7), speechlike(SENTENCE, RATE, seed=7))
    assert not np.array_equal(speechlike(SENTENCE, RATE, seed=7), speechlike(SENTENCE, RATE, seed=8))
    assert not np.array_equal(a[:4000], speechlike("Something else entirely.", RATE)[:4000])


def test_speechlike_empty_and_tiny_text() -> None:
    assert len(speechlike("", RATE)) == 0
    assert len(speechlike("  \n", RATE)) == 0
    one = speechlike("a", RATE)
    assert 0.1 * RATE < len(one) < 0.5 * RATE
    assert len(speechlike("...", RATE)) > 0  # non-empty text: at least a syllable


def test_speechlike_duration_follows_words_per_minute() -> None:
    words = len(SENTENCE.split())
    assert words == 20
    for wpm in (165.0, 120.0):
        pcm = speechlike(SENTENCE, RATE, words_per_minute=wpm)
        expected = words * 60 / wpm
        assert len(pcm) / RATE == pytest.approx(expected, rel=0.25)


def test_speechlike_level_and_edges() -> None:
    for rate in (RATE, 24_000, 48_000):
        pcm = speechlike(SENTENCE, rate)
        peak_dbfs = 20 * math.log10(np.abs(pcm.astype(np.int32)).max() / 32768)
        assert -12.0 <= peak_dbfs <= -3.0
        assert abs(pcm.mean()) < 5  # no DC offset
        onset = find_onset(pcm, rate)
        assert onset is not None and onset <= 0.005 * rate
        bounds = speech_bounds(pcm, rate)
        assert bounds is not None
        assert bounds[0] <= 0.005 * rate
        assert len(pcm) - bounds[1] <= 0.012 * rate  # ends with speech (a glottal period)


def test_speechlike_sounds_voiced() -> None:
    pitch = 150.0
    pcm = speechlike("aaaa", RATE, pitch_hz=pitch, words_per_minute=30.0)
    middle = pcm[len(pcm) // 4 : len(pcm) // 2].astype(np.float64)
    # The strongest autocorrelation lag inside 60-400 Hz is one pitch period
    # (allowing for the gentle glide and declination).
    ac = np.correlate(middle[:4000], middle[:4000], mode="full")[3999:]
    lag = RATE // 400 + int(np.argmax(ac[RATE // 400 : RATE // 60]))
    assert RATE / lag == pytest.approx(pitch, rel=0.2)


def test_speechlike_is_fast() -> None:
    text = " ".join([SENTENCE] * 2)  # ~14 s of speech
    speechlike(text, RATE)
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        speechlike(text, RATE)
        best = min(best, time.perf_counter() - t0)
    # Generous for slow CI machines; a per-sample Python loop would take seconds.
    assert best < 0.3


# --------------------------------------------------------------------------- user speech


def test_render_user_audio_from_text() -> None:
    utterance = render_user_audio("Hello, I need help with my order.", None, RATE)
    assert isinstance(utterance, UserUtterance)
    assert utterance.pcm.dtype == np.int16 and utterance.pcm.ndim == 1
    # The bounds are measured in the audio (Piper's padding is trimmed: speech starts at once).
    assert (utterance.speech_start, utterance.speech_end) == speech_bounds(utterance.pcm, RATE)
    if piper_available():
        assert 0 <= utterance.speech_start < 0.01 * RATE
        assert len(utterance.pcm) - 0.01 * RATE < utterance.speech_end <= len(utterance.pcm)
        assert 1.2 * RATE < utterance.speech_end - utterance.speech_start < 3.5 * RATE
    else:
        np.testing.assert_array_equal(
            utterance.pcm, speechlike("Hello, I need help with my order.", RATE, pitch_hz=USER_PITCH_HZ)
        )
    assert render_user_audio("Hello, I need help with my order.", None, RATE) is utterance
    assert not utterance.pcm.flags.writeable  # shared through the cache
    with pytest.raises(ValueError):
        render_user_audio(None, None, RATE)


def test_render_user_audio_from_wav(tmp_path: Path) -> None:
    src_rate = 22_050
    speech = speechlike("Can you hear me now?", src_rate, pitch_hz=200.0)
    lead, trail = 0.4, 0.6
    path = tmp_path / "turn.wav"
    write_wav(path, np.concatenate([silence(lead, src_rate), speech, silence(trail, src_rate)]), src_rate)

    utterance = render_user_audio("Can you hear me now?", path, RATE)
    total = lead + len(speech) / src_rate + trail
    assert len(utterance.pcm) == pytest.approx(total * RATE, abs=2)
    assert utterance.speech_start == pytest.approx(lead * RATE, abs=0.005 * RATE)
    end = (lead + len(speech) / src_rate) * RATE
    assert utterance.speech_end == pytest.approx(end, abs=0.012 * RATE)
    assert render_user_audio("Can you hear me now?", path, RATE) is utterance

    # An edited file is re-read rather than served from the cache.
    write_wav(path, np.concatenate([speech, silence(trail, src_rate)]), src_rate)
    assert render_user_audio("Can you hear me now?", path, RATE).speech_start <= 0.005 * RATE


def test_render_user_audio_wav_problems_name_the_file(tmp_path: Path) -> None:
    quiet = tmp_path / "quiet.wav"
    write_wav(quiet, silence(1.0), RATE)
    with pytest.raises(AudioFileError, match=r"quiet\.wav.*no audible speech"):
        render_user_audio(None, quiet, RATE)
    with pytest.raises(AudioFileError, match=r"nowhere\.wav.*not found"):
        render_user_audio("text is ignored when a wav is given", tmp_path / "nowhere.wav", RATE)
