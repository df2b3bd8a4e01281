"""How long are the pauses *inside* the shipped scenarios' user utterances, as
the ``silero`` and ``energy`` endpointers count them? An ``endpoint_ms`` at or
below the longest one splits that utterance into two turns; the shortest
setting above all of them is the default (docs/speech.md, "Choosing endpoint_ms").

Every user turn's text of every ``scenarios/*.yaml`` is rendered by three
voices: the replay client's own caller voice (Piper joe, noise off, exactly the
audio a replay sends), Piper joe with its default noise (``--renders`` random
renders per text, for the spread), and espeak-ng (a very different, robotic
voice; skipped if ``espeak-ng`` is not installed). Each utterance is put
between 0.5 s and 2 s of silence and run through a VAD with an endpoint too
long to fire; while in a turn, the silence since the last confirmed speech is
recorded after every window, and the longest value before the utterance's
last speech is its longest inner pause. Also printed: how far after the true
onset ``speech_start`` is declared, and how far the last speech window ends
after the true end of speech (the VAD's tail, which endpointing adds to
``endpoint_ms``).

Run:  .venv/bin/python benchmarks/endpointing.py [--renders 5]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.audio import PCM, read_wav, resample, speech_bounds  # noqa: E402
from agent.client.user_speech import render_user_audio  # noqa: E402
from agent.clock import MonotonicClock  # noqa: E402
from agent.config.scenario import load_scenario  # noqa: E402
from agent.stages.interfaces import SessionContext  # noqa: E402
from agent.stages.vad_silero import EnergyVAD, EnergyVADConfig, SileroVAD, SileroVADConfig  # noqa: E402

RATE, FRAME = 16000, 320
NEVER_MS = 60_000.0
CANDIDATES_MS = (256, 320, 384, 448, 512)


def caller(text: str) -> PCM:
    return render_user_audio(text, None, RATE).pcm


def piper_noisy(text: str) -> PCM:
    from agent.stages.tts_piper import load_voice, synthesis_config

    voice = load_voice()
    pcm = np.concatenate([c.audio_int16_array for c in voice.synthesize(text, synthesis_config())])
    return resample(pcm, voice.config.sample_rate, RATE)


def espeak(text: str) -> PCM:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["espeak-ng", "-w", f"{tmp}/u.wav", text], check=True)
        pcm, rate = read_wav(f"{tmp}/u.wav")
    return resample(pcm, rate, RATE)


def measure(pcm: PCM, make_vad: Callable[[SessionContext], Any]) -> tuple[float, float, float]:
    """(longest inner pause, speech_start - onset, last speech window end - true end), ms."""
    lead = RATE // 2
    audio = np.concatenate((np.zeros(lead, np.int16), pcm, np.zeros(2 * RATE, np.int16)))
    vad = make_vad(SessionContext(clock=MonotonicClock(), sample_rate=RATE, frame_samples=FRAME))
    endpointer, events, silences = vad.endpointer, [], []
    for i in range(0, audio.shape[0], FRAME):
        events += vad.process(audio[i : i + FRAME], i)
        if endpointer.in_turn:
            silences.append((vad.classified_to, vad.classified_to - endpointer.speech_end))
    last = endpointer.segments[-1][1]
    pause = max((s for at, s in silences if at <= last), default=0)
    bounds = speech_bounds(pcm, RATE)
    assert bounds is not None
    start = next(e.sample for e in events if e.kind == "speech_start")
    ms = 1000 / RATE
    return pause * ms, (start - lead - bounds[0]) * ms, (last - lead - bounds[1]) * ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--renders", type=int, default=5, help="noisy Piper renders per text")
    args = parser.parse_args()
    scenarios = sorted((ROOT / "scenarios").glob("*.yaml"))
    texts = [t.text for path in scenarios for t in load_scenario(path).turns if t.text]
    voices: list[tuple[str, Callable[[str], PCM], int]] = [
        ("caller voice (Piper joe, noise off)", caller, 1),
        ("Piper joe, default noise", piper_noisy, args.renders),
    ]
    if shutil.which("espeak-ng"):
        voices.append(("espeak-ng", espeak, 1))
    vads: list[tuple[str, Callable[[SessionContext], Any]]] = [
        ("silero", lambda ctx: SileroVAD(SileroVADConfig(endpoint_ms=NEVER_MS), ctx)),
        ("energy -40 dBFS", lambda ctx: EnergyVAD(EnergyVADConfig(endpoint_ms=NEVER_MS), ctx)),
    ]
    print(f"{len(texts)} user utterances from scenarios/*.yaml, 16 kHz")
    for voice, render, n in voices:
        audio = [(text, render(text)) for text in texts for _ in range(n)]
        for vad_name, make_vad in vads:
            rows = [(measure(pcm, make_vad), text) for text, pcm in audio]
            pauses = np.array([r[0][0] for r in rows])
            (worst, _, _), worst_text = max(rows)
            starts = [r[0][1] for r in rows]
            tails = [r[0][2] for r in rows]
            print(f"\n{voice} / {vad_name}: {len(rows)} utterances")
            p95 = np.percentile(pauses, 95)
            print(f"  longest inner pause   {worst:5.0f} ms  (p95 {p95:.0f}) in {worst_text!r}")
            print(f"  speech_start - onset  median {np.median(starts):4.0f} ms, max {max(starts):4.0f} ms")
            print(f"  speech tail after end median {np.median(tails):4.0f} ms, max {max(tails):4.0f} ms")
            # An utterance splits when its longest inner pause reaches endpoint_ms.
            splits = ", ".join(f"{e} ms: {np.mean(pauses >= e):.0%}" for e in CANDIDATES_MS)
            print(f"  utterances split at endpoint_ms  {splits}")


if __name__ == "__main__":
    main()
