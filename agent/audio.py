"""PCM helpers: wire bytes, levels, onset detection, resampling, WAV files, test speech.

PCM is a ``numpy`` array of ``int16``: mono has shape ``(n,)``, stereo ``(n, 2)``.
Levels are in dBFS relative to an amplitude of 32768 (so a full-scale square
wave is 0 dBFS and a full-scale sine about -3 dBFS).

The functions marked *hot path* run once per 20 ms frame on every stream, so
they are plain vectorised numpy with no Python loop over samples.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import wave
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soxr

from agent.errors import VltError

__all__ = [
    "AUDIBLE_DBFS",
    "PCM",
    "AudioFileError",
    "PhraseResampler",
    "bytes_to_pcm",
    "find_onset",
    "frame_rms_dbfs",
    "pcm_to_bytes",
    "read_wav",
    "read_wav_channels",
    "resample",
    "speech_bounds",
    "speechlike",
    "to_mono",
    "write_wav",
]

#: Mono (or, where a function says so, stereo) 16-bit PCM samples.
PCM = npt.NDArray[np.int16]

#: The listener rule: sound counts as audible above this level. Every client
#: (replay, live demo) finds the agent's first audible sample with it, so their
#: voice-to-voice figures end at the same kind of instant.
AUDIBLE_DBFS = -40.0

#: Amplitude that 0 dBFS refers to.
FULL_SCALE = 32768.0

_ACCEPTED = "accepted: 16-bit PCM WAV, mono or stereo, any sample rate"

Floats = npt.NDArray[np.float64]


class AudioFileError(VltError):
    """An audio file is missing, unreadable or in a format the testbed does not take."""

    def __init__(self, path: str | Path, problem: str, *, hint: str = _ACCEPTED) -> None:
        self.path = str(path)
        self.reason = problem
        super().__init__(f"{path}: {problem}; {hint}")


# --------------------------------------------------------------------------- bytes


def pcm_to_bytes(pcm: PCM) -> bytes:
    """Little-endian int16 bytes of ``pcm`` (stereo interleaved). Hot path."""
    # astype(copy=False) is a no-op on little-endian hosts; tobytes() emits C order,
    # which for (n, 2) is exactly the interleaved L R L R layout of WAV and the wire.
    return pcm.astype("<i2", copy=False).tobytes()


def bytes_to_pcm(data: bytes) -> PCM:
    """Mono PCM from little-endian int16 bytes. Hot path.

    The result is a read-only view of ``data`` (no copy); copy it before
    modifying. Raises ``ValueError`` if ``len(data)`` is odd.
    """
    return np.frombuffer(data, "<i2")


def to_mono(pcm: PCM) -> PCM:
    """``pcm`` itself if mono; the average of the channels if ``(n, channels)``."""
    if pcm.ndim == 1:
        return pcm
    # Averaging in int32 cannot overflow, and the mean of int16 values fits int16.
    summed: npt.NDArray[np.int32] = pcm.astype(np.int32).sum(axis=1)
    return (summed // int(pcm.shape[1])).astype(np.int16)


# --------------------------------------------------------------------------- levels


def _amplitude(dbfs: float) -> float:
    return FULL_SCALE * math.pow(10.0, dbfs / 20.0)


def frame_rms_dbfs(pcm: PCM) -> float:
    """RMS level of ``pcm`` in dBFS; ``-inf`` for digital silence or no samples. Hot path."""
    if pcm.size == 0:
        return -math.inf
    x = pcm.reshape(-1).astype(np.float64)
    # np.dot uses BLAS: one pass, no temporary array of squares.
    mean_square = float(np.dot(x, x)) / x.size
    if mean_square == 0.0:
        return -math.inf
    return 10.0 * math.log10(mean_square / (FULL_SCALE * FULL_SCALE))


def _window_samples(sample_rate: int, window_ms: float) -> int:
    return max(1, round(window_ms * sample_rate / 1000.0))


def find_onset(
    pcm: PCM, sample_rate: int, threshold_dbfs: float = AUDIBLE_DBFS, window_ms: float = 5.0
) -> int | None:
    """Index of the first audible sample of ``pcm``, or ``None`` if nothing is audible.

    Audible means: the first *sliding* window of ``window_ms`` whose RMS exceeds
    ``threshold_dbfs`` (a window, so one isolated click does not count), refined to
    the first sample in that window whose magnitude exceeds the threshold's
    amplitude. Input shorter than a window is judged as one window. Stereo is
    downmixed. Hot path: runs on every received agent frame.
    """
    x = to_mono(pcm)
    n = x.shape[0]
    if n == 0:
        return None
    amp = _amplitude(threshold_dbfs)
    w = min(_window_samples(sample_rate, window_ms), n)
    # Exact integer sums of squares (int16² · n stays far below 2⁶³), so a sliding
    # window costs two subtractions per position instead of w multiplications.
    wide = x.astype(np.int64)
    csum = np.empty(n + 1, dtype=np.int64)
    csum[0] = 0
    np.cumsum(wide * wide, out=csum[1:])
    loud = (csum[w:] - csum[:-w]) > (w * amp * amp)
    start = int(np.argmax(loud))
    if not loud[start]:
        return None
    # RMS above the threshold implies some sample in the window is above it too.
    window = np.abs(wide[start : start + w]) > amp
    return start + int(np.argmax(window))


def speech_bounds(
    pcm: PCM, sample_rate: int, threshold_dbfs: float = AUDIBLE_DBFS, window_ms: float = 10.0
) -> tuple[int, int] | None:
    """``(first, last + 1)``: where audible sound starts and ends in ``pcm``, or ``None``.

    The same rule as :func:`find_onset`, applied forwards for the start and
    backwards for the end.
    """
    x = to_mono(pcm)
    first = find_onset(x, sample_rate, threshold_dbfs, window_ms)
    if first is None:
        return None
    from_end = find_onset(x[::-1], sample_rate, threshold_dbfs, window_ms)
    assert from_end is not None  # something audible forwards is audible backwards
    return first, x.shape[0] - from_end


# --------------------------------------------------------------------------- resampling


def _to_int16(y: Floats | npt.NDArray[np.float32]) -> PCM:
    rounded: Floats = np.rint(y).astype(np.float64)
    return np.clip(rounded, -32768, 32767).astype(np.int16)


def resample(pcm: PCM, src_rate: int, dst_rate: int) -> PCM:
    """``pcm`` (mono or stereo) converted from ``src_rate`` to ``dst_rate`` Hz with soxr.

    Returns ``pcm`` itself when the rates are equal. Works in float so that
    overshoot of the anti-aliasing filter is clipped rather than wrapped.
    """
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {src_rate} → {dst_rate}")
    if src_rate == dst_rate:
        return pcm
    y = soxr.resample(pcm.astype(np.float32), src_rate, dst_rate)
    return _to_int16(np.asarray(y, dtype=np.float32))


# --------------------------------------------------------------------------- WAV files


def read_wav(path: str | Path) -> tuple[PCM, int]:
    """``(mono PCM, sample rate)`` from a 16-bit PCM WAV file (stereo is downmixed).

    Anything else — missing, unreadable, not a WAV, another sample width, no
    audio frames — raises :class:`AudioFileError` naming the file.
    """
    pcm, rate = read_wav_channels(path)
    return (to_mono(pcm) if pcm.ndim == 2 else pcm), rate


def read_wav_channels(path: str | Path) -> tuple[PCM, int]:
    """As :func:`read_wav`, keeping a stereo file's channels (shape ``(n, 2)``)."""
    try:
        with wave.open(str(path), "rb") as f:
            width, channels, rate = f.getsampwidth(), f.getnchannels(), f.getframerate()
            if width != 2:
                raise AudioFileError(path, f"has {8 * width}-bit samples")
            if channels not in (1, 2):
                raise AudioFileError(path, f"has {channels} channels")
            data = f.readframes(f.getnframes())
    except FileNotFoundError:
        raise AudioFileError(path, "file not found") from None
    except IsADirectoryError:
        raise AudioFileError(path, "is a directory, not a file") from None
    except (wave.Error, EOFError) as e:
        # wave.Error covers "not RIFF/WAVE" and non-PCM formats (float, μ-law, …).
        raise AudioFileError(path, f"is not a readable PCM WAV file ({e or 'truncated'})") from e
    except OSError as e:
        raise AudioFileError(path, f"cannot be read ({e.strerror or e})") from e
    frames = len(data) // (2 * channels)
    if frames == 0:
        raise AudioFileError(path, "contains no audio frames")
    if rate <= 0:
        raise AudioFileError(path, f"has an invalid sample rate {rate}")
    pcm = np.frombuffer(data[: frames * 2 * channels], "<i2").astype(np.int16)
    return (pcm.reshape(frames, 2) if channels == 2 else pcm), rate


def write_wav(path: str | Path, pcm: PCM, sample_rate: int) -> None:
    """Write int16 ``pcm`` (mono ``(n,)`` or stereo ``(n, 2)``) as a WAV file, atomically.

    The file is written under a temporary name in the same folder and renamed
    into place, so a crash leaves either the old file or the whole new one.
    """
    if pcm.dtype != np.int16:
        raise ValueError(f"write_wav needs int16 samples, got {pcm.dtype}")
    if pcm.ndim == 1:
        channels = 1
    elif pcm.ndim == 2 and pcm.shape[1] == 2:
        channels = 2
    else:
        raise ValueError(f"write_wav needs shape (n,) or (n, 2), got {pcm.shape}")
    target = Path(path)
    tmp_name = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 lets the umask decide the permissions, as for any new file
    # (tempfile.mkstemp would make recordings private to their owner).
    fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as raw:
            with wave.open(raw, "wb") as f:
                f.setnchannels(channels)
                f.setsampwidth(2)
                f.setframerate(sample_rate)
                f.writeframes(pcm_to_bytes(np.ascontiguousarray(pcm)))
            raw.flush()
            # Without fsync a power loss after the rename could leave an empty file.
            os.fsync(raw.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        tmp_name.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- test speech

# (F1, F2, F3) in Hz of a few English vowels, chosen per syllable by its spelling
# so that the same word always sounds the same.
_VOWELS: dict[str, tuple[float, float, float]] = {
    "a": (730.0, 1090.0, 2440.0),
    "e": (530.0, 1840.0, 2480.0),
    "i": (390.0, 1990.0, 2550.0),
    "o": (570.0, 840.0, 2410.0),
    "u": (440.0, 1020.0, 2240.0),
    "y": (270.0, 2290.0, 3010.0),
}
_SCHWA = (500.0, 1500.0, 2500.0)
_BANDWIDTHS = (80.0, 110.0, 160.0)

_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[,;:.!?]")
_VOWEL_GROUP = re.compile(r"[aeiouy]+")
_PAUSE_S = {",": 0.16, ";": 0.22, ":": 0.22, ".": 0.34, "!": 0.34, "?": 0.34}
_WORD_GAP = 0.15  # fraction of a word's time left silent after it
_MIN_SYLLABLE_S = 0.06  # longer than attack + decay
_ATTACK_S, _DECAY_S = 0.012, 0.030
_PEAK_DBFS = -6.0


def _pulse_table(size: int = 2048) -> Floats:
    """One period of a differentiated Rosenberg glottal pulse, indexed by phase.

    The flow opens over 40 % of the period and shuts over 16 %; its derivative
    (lip radiation) ends each period with a sharp closing spike, which gives the
    falling but harmonic-rich spectrum of a voice. A lookup table makes the
    source one gather per sample instead of trigonometry per sample.
    """
    p = np.arange(size) / size
    opening = 0.5 * (1.0 - np.cos(np.pi * np.minimum(p, 0.4) / 0.4))
    closing = np.cos(0.5 * np.pi * np.clip((p - 0.4) / 0.16, 0.0, 1.0))
    flow = np.where(p < 0.4, opening, closing)
    return np.diff(flow, append=flow[0]) * size


_PULSE = _pulse_table()


def _syllables(word: str) -> list[str]:
    """The vowel groups that stand for a word's 1-3 syllables (first letter of each)."""
    lower = word.lower()
    groups = [g[0] for g in _VOWEL_GROUP.findall(lower)]
    # A final silent "e" ("time", "made") is not a syllable; "-le" ("table") is.
    if len(groups) > 1 and lower.endswith("e") and not lower.endswith("le"):
        groups.pop()
    if not groups:
        groups = ["@"]  # digits or consonant-only tokens: one neutral vowel
    if len(groups) > 3:
        groups = [groups[0], groups[len(groups) // 2], groups[-1]]
    return groups


def _words(text: str) -> list[tuple[list[str], float]]:
    """``(syllables, pause after in seconds)`` per word of ``text``."""
    words: list[tuple[list[str], float]] = []
    for token in _TOKEN.findall(text):
        if token in _PAUSE_S:
            if words:
                words[-1] = (words[-1][0], max(words[-1][1], _PAUSE_S[token]))
        else:
            words.append((_syllables(token), 0.0))
    return words or [(["@"], 0.0)]  # punctuation or symbols only: one syllable


def _raised_cosine(x: Floats) -> Floats:
    """0 → 1 smoothly as ``x`` goes 0 → 1 (clipped outside)."""
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(x, 0.0, 1.0))


def speechlike(
    text: str,
    sample_rate: int,
    *,
    pitch_hz: float = 120.0,
    words_per_minute: float = 165.0,
    seed: int | None = None,
) -> PCM:
    """Deterministic, audible, speech-like int16 mono audio for ``text``.

    Not words, but it has what latency measurement and VAD care about: a voice
    at a gently falling pitch, vowel-like formants that change per syllable,
    short gaps between words and longer pauses at punctuation. It lasts about
    ``words x 60 / words_per_minute`` seconds (plus punctuation pauses), peaks at
    -6 dBFS, and starts and ends with the speech itself, so onset and speech
    bounds are the whole array. Same ``text`` and ``seed`` give identical samples
    (the default seed is a CRC of the text, not the salted ``hash()``).
    Empty or whitespace-only text gives an empty array.
    """
    if sample_rate <= 0 or pitch_hz <= 0 or words_per_minute <= 0:
        raise ValueError("sample_rate, pitch_hz and words_per_minute must be positive")
    if not text.strip():
        return np.zeros(0, dtype=np.int16)
    rng = np.random.default_rng(zlib.crc32(text.encode("utf-8")) if seed is None else seed)
    words = _words(text)

    # Time budget: n_words x 60/wpm in all, shared so that longer words take longer.
    word_s = 60.0 / words_per_minute
    weights = np.array([0.7 + 0.3 * len(syllables) for syllables, _ in words])
    slots = word_s * len(words) * weights / weights.sum()
    gap_s = _WORD_GAP * word_s

    # Plan the syllables (a Python loop over syllables, never over samples).
    bounds: list[tuple[float, float]] = []
    vowels: list[str] = []
    pitch: list[tuple[float, float]] = []
    gains: list[float] = []
    t = 0.0
    for i, ((syllables, pause), slot) in enumerate(zip(words, slots, strict=True)):
        last_word = i == len(words) - 1
        voiced_s = max(slot - (0.0 if last_word else gap_s), _MIN_SYLLABLE_S * len(syllables))
        shares = rng.uniform(0.85, 1.15, len(syllables))
        for j, length in enumerate(voiced_s * shares / shares.sum()):
            stressed, final = j == 0, j == len(syllables) - 1
            begin_hz = pitch_hz * (rng.uniform(0.96, 1.10) if stressed else rng.uniform(0.92, 1.02))
            end_hz = begin_hz * rng.uniform(0.94, 1.0)
            if final and pause >= _PAUSE_S["."]:
                end_hz *= 0.88  # pitch falls at the end of a sentence
            bounds.append((t, t + float(length)))
            vowels.append(syllables[j])
            pitch.append((begin_hz, end_hz))
            gains.append(1.0 if stressed else rng.uniform(0.7, 0.9))
            t += float(length)
        if not last_word:
            t += gap_s + pause

    # Rounding both ends of every syllable keeps neighbouring syllables from overlapping.
    edges = np.rint(np.array(bounds) * sample_rate).astype(np.int64)
    starts, lengths = edges[:, 0], edges[:, 1] - edges[:, 0]
    total = int(starts[-1] + lengths[-1])
    count, width = len(vowels), int(lengths.max())
    pos = np.arange(width, dtype=np.float64)

    # Glottal source, all syllables at once, one row each. Pitch glides linearly from
    # f_start to f_end over a syllable, so its phase (the integral) is a quadratic in
    # time and needs no cumulative sum. Declination drifts the utterance down ~15 %.
    declination = 1.08 - 0.16 * starts / total
    f_start, f_end = np.array(pitch).T * declination * (_PULSE.shape[0] / sample_rate)
    phase = np.outer(f_start, pos) + np.outer((f_end - f_start) / (2 * lengths), pos * pos)
    source = _PULSE[phase.astype(np.int64) & (_PULSE.shape[0] - 1)]

    # Vowel colour: a cascade of two-pole resonators, applied in the frequency domain
    # because numpy has no IIR filter and a syllable's formants are constant. The
    # zero padding (20 ms, longer than the resonances ring) keeps circular wrap-around out.
    formants = np.array([_VOWELS.get(v, _SCHWA) for v in vowels])
    formants *= rng.uniform(0.95, 1.05, formants.shape)
    nfft = 1 << (width + sample_rate // 50 - 1).bit_length()
    f2 = np.fft.rfftfreq(nfft, 1.0 / sample_rate) ** 2
    # Analogue resonator magnitude |F²/(F² - f² + j·B·f)|: 1 at DC, ≈F/B at F.
    power = np.ones((count, f2.shape[0]))
    for k, bandwidth in enumerate(_BANDWIDTHS):
        power *= (formants[:, k, None] ** 2 - f2) ** 2 + bandwidth**2 * f2
    gain = np.prod(formants**2, axis=1)[:, None] / np.sqrt(power)
    gain[:, 0] = 0.0  # no DC
    voiced = np.fft.irfft(np.fft.rfft(source, nfft, axis=1) * gain, nfft, axis=1)[:, :width]

    # Envelope: raised-cosine attack and decay, 0 at a row's first sample and from its
    # end on, so the utterance starts and ends with speech and the padding is silent.
    attack = max(1, round(_ATTACK_S * sample_rate))
    decay = max(1, round(_DECAY_S * sample_rate))
    env = (pos[None, :] < lengths[:, None]).astype(np.float64)
    env[:, :attack] *= _raised_cosine(np.arange(attack) / attack)
    tail = (lengths - decay)[:, None] + np.arange(decay)
    env[np.arange(count)[:, None], tail] *= _raised_cosine(np.arange(decay, 0, -1) / decay)
    voiced *= env
    # Remove each syllable's DC in proportion to its envelope, keeping its ends at 0.
    voiced -= env * (voiced.sum(axis=1) / env.sum(axis=1))[:, None]
    peaks = np.abs(voiced).max(axis=1)
    voiced *= (np.array(gains) / np.where(peaks > 0.0, peaks, 1.0))[:, None]

    out = np.zeros(total)
    for row, (start, length) in enumerate(zip(starts, lengths, strict=True)):
        out[start : start + length] = voiced[row, :length]
    out *= _amplitude(_PEAK_DBFS) / np.abs(out).max()
    return _to_int16(out)


class PhraseResampler:
    """Streaming resampling of one phrase at a time (TTS rate → session rate).

    A fresh soxr stream per phrase, flushed at the phrase's end: one stream for
    the whole session would hold back each phrase's last ~20 ms until the next
    phrase — audio that belongs to this turn, heard as leading silence later.
    """

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self._stream: Any = None

    def chunk(self, pcm: PCM) -> PCM:
        if self._stream is None:
            self._stream = soxr.ResampleStream(self.src_rate, self.dst_rate, 1, dtype="int16")
        out: PCM = np.asarray(self._stream.resample_chunk(pcm), dtype=np.int16)
        return out

    def reset(self) -> None:
        """Drop a phrase cut short (barge-in)."""
        self._stream = None

    def end(self) -> PCM:
        """The phrase's remaining samples; the next chunk starts a new phrase."""
        if self._stream is None:
            return np.zeros(0, dtype=np.int16)
        out: PCM = np.asarray(
            self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True), dtype=np.int16
        )
        self._stream = None
        return out
