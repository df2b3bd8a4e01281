"""The caller's audio for a scenario turn: the one place a user turn becomes PCM.

Replays, the recorder and the ground-truth ``user.speech_start``/``user.speech_end``
marks all go through :func:`render_user_audio`, so they cannot disagree about
where the caller's speech is.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.audio import PCM, AudioFileError, read_wav, resample, speech_bounds, speechlike, write_wav

__all__ = ["USER_PITCH_HZ", "USER_VOICE", "UserUtterance", "render_user_audio", "user_speech_cache_dir"]

log = logging.getLogger("vlt.user_speech")

#: The synthetic caller's voice pitch: higher than the agent's default 120 Hz, so the
#: two are easy to tell apart by ear and in a spectrogram of a recording.
USER_PITCH_HZ = 180.0

#: The caller's Piper voice and settings. The only bundled voice is the agent's
#: too (joe has one speaker). Noise is off so that a text gives the same audio on
#: every machine and every run: a scenario is then the same input everywhere,
#: and the disk cache only saves time, it never changes what is heard.
USER_VOICE: dict[str, float | str] = {
    "voice": "en_US-joe-medium",
    "length_scale": 1.0,
    "noise_scale": 0.0,
    "noise_w": 0.0,
}
#: Bumped when the rendering changes, so old cache files are not reused.
_CACHE_VERSION = 2


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


def render_user_audio(
    text: str | None, wav: Path | None, sample_rate: int, noise_ms: float | None = None
) -> UserUtterance:
    """The caller's audio for one scenario turn, at ``sample_rate`` Hz.

    With ``wav`` the recording is used (resampled, stereo downmixed) and
    ``text`` is only its transcript; the speech bounds are where the file is
    audible, and a file with no audible speech raises :class:`AudioFileError`.
    Otherwise ``text`` is synthesised by :func:`_synthesize` with Piper
    (:data:`USER_VOICE`; the speech-like stand-in if piper-tts is not
    installed), trimmed to its speech; the speech bounds are measured in the
    result. Results are cached in memory (replays repeat
    turns) and Piper's on disk (:func:`user_speech_cache_dir`); a WAV is
    re-read when its modification time or size changes.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if noise_ms is not None:
        return _noise(noise_ms, sample_rate)
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
    from agent.stages.tts_piper import piper_available

    if not piper_available():
        _warn_no_piper()
        pcm = speechlike(text, sample_rate, pitch_hz=USER_PITCH_HZ)
        # speechlike starts and ends with the speech itself: its bounds are exact.
        return UserUtterance(_frozen(pcm), 0, int(pcm.shape[0]))
    pcm = _piper_speech(text, sample_rate)
    bounds = speech_bounds(pcm, sample_rate)
    if bounds is None:
        raise ValueError(f"user turn {text!r} synthesised to no audible speech")
    return UserUtterance(_frozen(pcm), *bounds)


@functools.cache
def _warn_no_piper() -> None:
    log.warning(
        "piper-tts is not installed: text turns use the speech-like stand-in, which real ASR "
        "cannot transcribe (pip install -e '.[speech]')"
    )


def user_speech_cache_dir() -> Path:
    """Where synthesised caller speech is kept: ``$VLT_CACHE_DIR/user-speech``, else
    ``.cache/vlt/user-speech`` in the project (a source checkout), else the user's cache."""
    if env := os.environ.get("VLT_CACHE_DIR"):
        return Path(env).expanduser() / "user-speech"
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file():
        return root / ".cache" / "vlt" / "user-speech"
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "vlt" / "user-speech"


def _piper_speech(text: str, sample_rate: int) -> PCM:
    """Piper's rendering of ``text`` at ``sample_rate``, from the disk cache when there."""
    from agent.stages.tts_piper import resolve_voice

    voice_path = resolve_voice(str(USER_VOICE["voice"]))
    key = {
        "version": _CACHE_VERSION,
        "text": text,
        "sample_rate": sample_rate,
        # The model file's name and size identify the voice without hashing 60 MB.
        "voice": [voice_path.name, voice_path.stat().st_size],
        "settings": USER_VOICE,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    path = user_speech_cache_dir() / f"{digest}.wav"
    if path.is_file():
        try:
            cached, rate = read_wav(path)
            if rate == sample_rate:
                return cached
        except AudioFileError as exc:
            log.warning("ignoring a damaged cache file: %s", exc)
    pcm = _trim(_render_piper(text, sample_rate), sample_rate)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(path, pcm, sample_rate)
    except OSError as exc:  # a read-only checkout still replays, just without the cache
        log.info("cannot cache caller speech in %s: %s", path.parent, exc)
    return pcm


def _render_piper(text: str, sample_rate: int) -> PCM:
    from agent.stages.tts_piper import load_voice, synthesis_config

    voice = load_voice(str(USER_VOICE["voice"]))
    syn = synthesis_config(
        length_scale=float(USER_VOICE["length_scale"]),
        noise_scale=float(USER_VOICE["noise_scale"]),
        noise_w=float(USER_VOICE["noise_w"]),
    )
    chunks = [np.asarray(chunk.audio_int16_array, dtype=np.int16) for chunk in voice.synthesize(text, syn)]
    if not chunks:
        raise ValueError(f"user turn {text!r} has nothing Piper can speak")
    return resample(np.concatenate(chunks), voice.config.sample_rate, sample_rate)


def _trim(pcm: PCM, sample_rate: int) -> PCM:
    """Cut Piper's near-silent padding (below -40 dBFS) before and after the speech.

    Piper pads each sentence with 0 to 40 ms of near-silence before and 100 to
    250 ms after. Cut, a turn's speech starts when the scenario says it does
    (``pause_ms`` and ``barge_in_ms`` count to the speech itself, as with the
    stand-in voice), and the caller's track is exactly silent between turns
    (the replay client sends digital silence there).
    """
    bounds = speech_bounds(pcm, sample_rate)
    return pcm if bounds is None else pcm[bounds[0] : bounds[1]].copy()


@functools.lru_cache(maxsize=32)
def _noise(noise_ms: float, sample_rate: int) -> UserUtterance:
    """A cough-like burst: seeded noise, low-passed, sharp attack, decaying, peak -12 dBFS.

    Not speech (no voicing, no formants), but loud enough for any energy VAD and
    broadband enough to fool a weak neural one: what a no-reply turn is for.
    """
    n = max(1, round(noise_ms * sample_rate / 1000))
    rng = np.random.default_rng(n)
    white = rng.standard_normal(n + 8)
    # A short moving average: most energy below ~2 kHz, like a cough or a bump.
    burst = np.convolve(white, np.ones(8) / 8, mode="valid")[:n]
    t = np.arange(n) / sample_rate
    attack = np.minimum(1.0, t / 0.01)
    decay = np.exp(-t / max(noise_ms / 1000 / 3, 1e-3))
    shaped = burst * attack * decay
    peak = float(np.abs(shaped).max()) or 1.0
    pcm = np.rint(shaped / peak * 32768 * 10 ** (-12 / 20)).astype(np.int16)
    bounds = speech_bounds(pcm, sample_rate)
    start, end = bounds if bounds is not None else (0, n)
    return UserUtterance(_frozen(pcm), start, end)


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
