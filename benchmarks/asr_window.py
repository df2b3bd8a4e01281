"""Whisper's encoder window: decode time and word error rate, ``fit`` vs ``full``.

Every user turn of ``scenarios/*.yaml`` is rendered by Piper joe twice (the
caller voice with noise off, and once with the voice's default noise), cut
the way the ``faster-whisper`` stage cuts an utterance (300 ms before the
first frame at or above -45 dBFS, 100 ms after the last), and decoded once
per setting on the shared model, one decode at a time. Printed per setting:
pooled WER, how many transcripts came out longer than the text by 3+ words
(Whisper saying the utterance again), and the decode time (median, p90).

Run:  .venv/bin/python benchmarks/asr_window.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agent.audio import frame_rms_dbfs, resample  # noqa: E402
from agent.config.scenario import load_scenario  # noqa: E402
from agent.metrics.wer import corpus_wer  # noqa: E402
from agent.stages.asr_whisper import load_model  # noqa: E402
from agent.stages.tts_piper import load_voice, synthesis_config  # noqa: E402

RATE, FRAME = 16000, 320
SETTINGS = (("fit", 1.0), ("fit", 2.0), ("fit", 3.0), ("full", 0.0))


def cut(pcm: np.ndarray) -> np.ndarray:
    loud = [i for i in range(0, len(pcm), FRAME) if frame_rms_dbfs(pcm[i : i + FRAME]) >= -45.0]
    start, end = max(0, loud[0] - RATE * 3 // 10), min(len(pcm), loud[-1] + FRAME + RATE // 10)
    return pcm[start:end]


def main() -> None:
    model, voice = load_model(), load_voice()
    texts = [
        t.text for p in sorted((ROOT / "scenarios").glob("*.yaml")) for t in load_scenario(p).turns if t.text
    ]
    audio = []
    for text in texts:
        for syn in (synthesis_config(noise_scale=0.0, noise_w=0.0), synthesis_config()):
            raw = np.concatenate([c.audio_int16_array for c in voice.synthesize(text, syn)])
            pcm = cut(resample(raw, voice.config.sample_rate, RATE))
            audio.append((text, pcm.astype(np.float32) / 32768))
    model.transcribe(audio[0][1], 1.0, "fit", 1, 3.0)  # warm up
    median_s = statistics.median(len(a) for _, a in audio) / RATE
    print(f"{len(audio)} utterances ({len(texts)} texts x 2 renders), median {median_s:.1f} s")
    for window, pad in SETTINGS:
        hyps, times = [], []
        for _, x in audio:
            t0 = time.perf_counter()
            hyps.append(model.transcribe(x, len(x) / RATE, window, 1, pad))
            times.append((time.perf_counter() - t0) * 1000)
        wer = corpus_wer((t, h) for (t, _), h in zip(audio, hyps, strict=True))
        longer = sum(len(h.split()) >= len(t.split()) + 3 for (t, _), h in zip(audio, hyps, strict=True))
        label = f"{window} + {pad:g} s" if window == "fit" else "full (30 s)"
        p90 = float(np.percentile(times, 90))
        print(
            f"{label:12s} WER {wer['wer']:.3f}  repeated {longer:2d}  "
            f"decode median {statistics.median(times):4.0f} ms, p90 {p90:4.0f} ms"
        )


if __name__ == "__main__":
    main()
