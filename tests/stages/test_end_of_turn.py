"""The ``semantic`` end of turn on real audio: Silero, Smart Turn v3.2 (from the
pipecat-ai wheel) and the transcript faster-whisper tiny.en makes of the same
audio, for two synthetic voices — Piper (the caller's) and espeak-ng (Debian).

The model runs inline (an injected ``submit``) so each decision is the same on
every run; in a session it runs in a worker thread while the silence goes on.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from agent.audio import PCM, read_wav, resample
from agent.client.user_speech import render_user_audio
from agent.stages.asr_whisper import load_model
from agent.stages.end_of_turn import SemanticVAD, SemanticVADConfig, text_verdict
from agent.stages.interfaces import SessionContext
from agent.stages.whisper_model import WHISPER_RATE

RATE = 16000
FRAME = 320

COMPLETE = [
    "Hi, what time do you open tomorrow?",
    "Do you have any cordless drills in stock?",
    "I would like to book a table for six people.",
]
CUT = [
    "I would like to book a table for",
    "Could you tell me whether the",
    "Can I pay for the order with my",
]


def test_the_text_verdict() -> None:
    assert text_verdict("What time do you open tomorrow?") == "complete"
    assert text_verdict("I'd like to book a table.") == "complete"
    assert text_verdict("I'd like to book a table for.") == "incomplete"  # Whisper's stray full stop
    assert text_verdict("Could you tell me whether the") == "incomplete"
    assert text_verdict("Well, first,") == "incomplete"
    assert text_verdict("so I was thinking") == "unknown"
    assert text_verdict("  ") == "unknown"


_MISSING = [
    m for m in ("faster_whisper", "onnxruntime", "piper", "pipecat") if importlib.util.find_spec(m) is None
]
needs_models = pytest.mark.skipif(
    bool(_MISSING), reason=f"missing {_MISSING} (extra 'speech'; pip install --no-deps pipecat-ai)"
)


def piper(text: str) -> PCM:
    u = render_user_audio(text, None, RATE)
    return np.asarray(u.pcm[u.speech_start : u.speech_end])


def espeak(text: str, tmp: Path) -> PCM:
    path = tmp / "espeak.wav"
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    pcm, rate = read_wav(path)
    return np.asarray(resample(pcm, rate, RATE))


def transcribe(pcm: PCM) -> str:
    x = resample(pcm, RATE, WHISPER_RATE).astype(np.float32) / 32768
    return str(load_model().transcribe(x, len(pcm) / RATE, "fit", 1, 3.0))


def decide(pcm: PCM) -> tuple[float, dict[str, object]]:
    """Feed the utterance, then silence, frame by frame: (silence ms at the end of turn, the check)."""
    ctx = SessionContext(clock=None, sample_rate=RATE, frame_samples=FRAME)  # type: ignore[arg-type]

    def inline(work):  # type: ignore[no-untyped-def]
        import concurrent.futures

        future: concurrent.futures.Future[float] = concurrent.futures.Future()
        future.set_result(work())
        return future

    vad = SemanticVAD(SemanticVADConfig(), ctx, submit=inline)
    audio = np.concatenate([np.zeros(RATE // 4, np.int16), pcm, np.zeros(2 * RATE, np.int16)])
    vad.hear(transcribe(pcm))  # what the streaming ASR's speculative decode holds at the pause
    for start in range(0, len(audio) - FRAME + 1, FRAME):
        for event in vad.process(audio[start : start + FRAME], start):
            if event.kind == "end_of_turn":
                check = vad.checks[-1]  # earlier ones: pauses inside the utterance
                return (event.sample - check.speech_end) * 1000 / RATE, check.summary(RATE)
    raise AssertionError("no end of turn in 2 s of silence")


@needs_models
@pytest.mark.timeout(300)
@pytest.mark.parametrize("voice", ["piper", "espeak-ng"])
def test_complete_sentences_end_soon_and_cut_ones_wait(voice: str, tmp_path: Path) -> None:
    if voice == "espeak-ng" and shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng)")
    config = SemanticVADConfig()
    render = piper if voice == "piper" else lambda t: espeak(t, tmp_path)
    for text in COMPLETE:
        silence, check = decide(render(text))
        # Complete: never the longest wait (the model or the text is sure enough).
        assert silence < config.max_ms, (text, check)
        assert check["text"] != "incomplete", (text, check)
    for text in CUT:
        silence, check = decide(render(text))
        # Cut mid-clause: the text says incomplete, so the window is the longest.
        assert check["text"] == "incomplete", (text, check)
        assert silence >= config.max_ms, (text, check)
