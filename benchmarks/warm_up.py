"""What warm-up buys: each real stage's first call vs the next ones, cold and after warm_up().

In a fresh process per case (so nothing is warm from before), builds the default
pipeline's Silero VAD, faster-whisper and Piper stages and times, on the caller's
own speech ("Hi, what time do you open tomorrow?"):

- ``cold``: the first finalize / synthesis / VAD window of the process, then the
  second (the difference is what the first turn used to pay);
- ``warm``: ``warm_up()`` first (timed), then the same first and second calls.

Run:  .venv/bin/python benchmarks/warm_up.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEXT = "Hi, what time do you open tomorrow?"


def _case(warm: bool) -> dict[str, float]:
    import asyncio

    import numpy as np

    from agent.client.user_speech import render_user_audio
    from agent.clock import MonotonicClock
    from agent.stages.asr_whisper import WhisperASR, WhisperASRConfig
    from agent.stages.interfaces import SessionContext
    from agent.stages.tts_piper import PiperTTS, PiperTTSConfig
    from agent.stages.vad_silero import SileroVAD, SileroVADConfig

    rate = 16000
    ctx = SessionContext(clock=MonotonicClock(), sample_rate=rate, frame_samples=320)
    speech = render_user_audio(TEXT, None, rate).pcm
    out: dict[str, float] = {}

    async def main() -> None:
        vad = SileroVAD(SileroVADConfig(), ctx)
        asr = WhisperASR(WhisperASRConfig(speculative=False, partial_interval_ms=0), ctx)
        tts = PiperTTS(PiperTTSConfig(), ctx)
        await asr.model()
        await tts.voice()
        if warm:
            for name, stage in (("vad", vad), ("asr", asr), ("tts", tts)):
                t = time.perf_counter()
                await stage.warm_up()
                out[f"warm_up_{name}_ms"] = (time.perf_counter() - t) * 1e3
        for attempt in ("first", "second"):
            t = time.perf_counter()
            vad.process(np.zeros(320, np.int16), 0)
            out[f"vad_{attempt}_ms"] = (time.perf_counter() - t) * 1e3
            asr.feed(speech, 0)
            t = time.perf_counter()
            await asr.finalize(len(speech), None)
            out[f"asr_{attempt}_ms"] = (time.perf_counter() - t) * 1e3
            t = time.perf_counter()
            async for _ in tts.synthesize("We open at nine tomorrow morning."):
                out.setdefault(f"tts_{attempt}_ms", (time.perf_counter() - t) * 1e3)

    asyncio.run(main())
    return out


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--case":
        print(json.dumps(_case(sys.argv[2] == "warm")))
        return
    rows = {}
    for case in ("cold", "warm"):
        done = subprocess.run(
            [sys.executable, __file__, "--case", case], capture_output=True, text=True, check=True
        )
        rows[case] = json.loads(done.stdout.strip().splitlines()[-1])
    print("| stage | cold: 1st call | cold: 2nd | warm-up | warm: 1st call | warm: 2nd |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for stage, what in (
        ("vad", "one 20 ms frame"),
        ("asr", "finalize (fresh decode)"),
        ("tts", "first audio"),
    ):
        c, w = rows["cold"], rows["warm"]
        print(
            f"| {stage} ({what}) | {c[f'{stage}_first_ms']:.1f} | {c[f'{stage}_second_ms']:.1f} | "
            f"{w[f'warm_up_{stage}_ms']:.1f} | {w[f'{stage}_first_ms']:.1f} | {w[f'{stage}_second_ms']:.1f} |"
        )


if __name__ == "__main__":
    main()
