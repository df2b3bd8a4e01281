"""The caller's audio for a scenario turn: the one place a user turn becomes PCM.

Replays, the recorder and the ground-truth ``user.speech_start``/``user.speech_end``
marks all go through :func:`render_user_audio`, so they cannot disagree about
where the caller's speech is.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from agent.audio import PCM, AudioFileError, read_wav, resample, speech_bounds, speechlike

__all__ = ["USER_PITCH_HZ", "UserUtterance", "render_user_audio"]

#: The synthetic caller's voice pitch: higher than the agent's default 120 Hz, so the
#: two are easy to tell apart by ear and in a spectrogram of a recording.
USER_PITCH_HZ = 180.0


@dataclass(frozen=True, slots=True)
class UserUtterance:
    """One turn of caller audio and where the speech is inside it."""

    #: int16 mono at the requested sample rate; read-only, because it is shared
    #: through the cache by every replay of the same turn.
    pcm: PCM
    #: Sample index where speech begins within ``pcm``.
    speech_start: int
    #: Sample index (exclusive) where speech ends.
    speech_end: int


def render_user_audio(text: str | None, wav: Path | None, sample_rate: int) -> UserUtterance:
    """The caller's audio for one scenario turn, at ``sample_rate`` Hz.

    With ``wav`` the recording is used (resampled, stereo downmixed) and
    ``text`` is only its transcript; the speech bounds are where the file is
    audible, and a file with no audible speech raises :class:`AudioFileError`.
    Otherwise ``text`` is synthesised by :func:`_synthesize` — today the
    speech-like stand-in, later real Piper TTS; that swap changes only that
    function. Results are cached in memory (replays repeat turns); a WAV is
    re-read when its modification time or size changes.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if wav is not None:
        path = Path(wav).resolve()  # one cache entry per file, whatever the cwd
        return _from_wav(path, _file_stamp(path), sample_rate)
    if text is None or not text.strip():
        raise ValueError("a user turn needs text or a wav file")
    return _synthesize(text, sample_rate)


def _file_stamp(path: Path) -> tuple[int, int] | None:
    """(mtime, size) to key the cache on, so an edited file is not served stale."""
    try:
        stat = path.stat()
    except OSError:
        return None  # read_wav reports the problem, naming the file
    return stat.st_mtime_ns, stat.st_size


def _frozen(pcm: PCM) -> PCM:
    # Cached arrays are handed to every replay of a turn: one in-place edit would
    # corrupt them all, so make that an error instead.
    pcm.setflags(write=False)
    return pcm


@functools.lru_cache(maxsize=128)
def _synthesize(text: str, sample_rate: int) -> UserUtterance:
    """Text to caller speech. Swap this one function to change the caller's voice."""
    pcm = speechlike(text, sample_rate, pitch_hz=USER_PITCH_HZ)
    # speechlike starts and ends with the speech itself: its bounds are exact.
    return UserUtterance(_frozen(pcm), 0, int(pcm.shape[0]))


@functools.lru_cache(maxsize=128)
def _from_wav(path: Path, stamp: tuple[int, int] | None, sample_rate: int) -> UserUtterance:
    del stamp  # only part of the cache key
    pcm, rate = read_wav(path)
    pcm = resample(pcm, rate, sample_rate)
    bounds = speech_bounds(pcm, sample_rate)
    if bounds is None:
        raise AudioFileError(
            path,
            "contains no audible speech (nothing above -40 dBFS)",
            hint="record the turn louder or pick another file",
        )
    return UserUtterance(_frozen(pcm), *bounds)
