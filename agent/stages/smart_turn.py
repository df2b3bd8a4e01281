"""Smart Turn v3.2: an audio model that says whether a speaker has finished their turn.

The weights (``smart-turn-v3.2-cpu.onnx``, BSD-2, ~8.7 MB) ship as package
data inside the ``pipecat-ai`` wheel on PyPI; nothing is downloaded at run
time. Only the file is used: this module never imports ``pipecat`` (whose own
dependencies — numba, openai, Pillow, protobuf … — a voice agent does not need),
it runs the ONNX file with onnxruntime on Whisper log-mel features computed by
faster-whisper's feature extractor (already a dependency of the ``speech``
extra). ``pip install --no-deps pipecat-ai`` is enough (docs/speech.md).

The model's input: the last 8 s of 16 kHz audio (zero-padded at the front when
shorter), normalised to zero mean and unit variance, as an 80 x 800 log-mel
tensor; its output: P(the turn is complete), a sigmoid probability.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np

from agent.audio import FULL_SCALE, PCM, resample
from agent.errors import ConfigError

__all__ = ["SMART_TURN_FILE", "SMART_TURN_RATE", "SmartTurn", "smart_turn_path"]

SMART_TURN_FILE = "smart-turn-v3.2-cpu.onnx"
SMART_TURN_RATE = 16000
_SECONDS = 8


def smart_turn_path() -> Path:
    """Where the installed ``pipecat-ai`` keeps the Smart Turn weights (no import of pipecat)."""
    spec = importlib.util.find_spec("pipecat")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        path = Path(root) / "audio" / "turn" / "smart_turn" / "data" / SMART_TURN_FILE
        if path.is_file():
            return path
    raise ConfigError(
        f"the semantic end of turn needs {SMART_TURN_FILE} from the pipecat-ai wheel: "
        "pip install --no-deps pipecat-ai (or pip install -e '.[turn]')",
        field="vad.kind",
    )


@functools.cache
def _feature_extractor() -> Any:
    from faster_whisper.feature_extractor import FeatureExtractor

    return FeatureExtractor(feature_size=80, sampling_rate=SMART_TURN_RATE, chunk_length=_SECONDS)


@functools.cache
def _session(path: str, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One thread: measured 73-79 ms per inference here against 162-177 ms on two
    # (issue 13), since the decode worker and Silero want the other core.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


class SmartTurn:
    """The loaded model (shared per process and thread count); :meth:`probability` is thread-safe."""

    _lock = threading.Lock()

    def __init__(self, threads: int = 1) -> None:
        with self._lock:  # one load even if two sessions start together
            self._session = _session(str(smart_turn_path()), threads)

    @staticmethod
    def features(pcm: PCM, rate: int) -> Any:
        """The (1, 80, 800) log-mel input for the last 8 s of ``pcm`` (int16 at ``rate``)."""
        x = resample(np.asarray(pcm), rate, SMART_TURN_RATE).astype(np.float32) / FULL_SCALE
        n = _SECONDS * SMART_TURN_RATE
        x = x[-n:]
        x = np.pad(x, (n - len(x), 0))
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)  # Whisper's do_normalize
        mel = _feature_extractor()(x, padding=0)
        return mel[None, :, : _SECONDS * 100].astype(np.float32)

    def probability(self, pcm: PCM, rate: int) -> float:
        """P(complete) for the utterance that ends ``pcm``."""
        out = self._session.run(None, {"input_features": self.features(pcm, rate)})
        return float(np.asarray(out[0]).reshape(-1)[0])
