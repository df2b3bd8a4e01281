"""Piper TTS on this machine: time to first audio per phrase, padding, RTF, and
how the chunker's ``first_min_words`` trades time to first audio for phrase length.

1. Every phrase of every scripted reply in the shipped scenarios (chunked with
   the default policy) is synthesised by the ``piper`` stage exactly as the
   orchestrator drives it: time from the call to the first audio chunk (what
   ``tts_first_audio`` measures), to the last chunk, the audio's length, and
   Piper's leading/trailing silence (below -40 dBFS, as the client's onset rule).
2. For each ``first_min_words``, every reply is streamed token by token into the
   chunker; the first phrase's wait is its token count at the LLM profile's
   decode speed (Groq-class Llama 3.3 70B by default, as pipelines/default.toml),
   and Piper's time to first audio is measured on that phrase. Their sum is what
   the policy changes in voice-to-voice.

Run:  .venv/bin/python benchmarks/tts_piper.py [--profile groq-llama-3.3-70b] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.audio import speech_bounds  # noqa: E402
from agent.clock import MonotonicClock  # noqa: E402
from agent.config.accelerators import get_profile  # noqa: E402
from agent.stages.chunker import ChunkerConfig, PhraseChunker  # noqa: E402
from agent.stages.interfaces import SessionContext  # noqa: E402
from agent.stages.llm import tokenize  # noqa: E402
from agent.stages.tts_piper import PiperTTS, PiperTTSConfig  # noqa: E402


def replies() -> list[str]:
    out = []
    for path in sorted((ROOT / "scenarios").glob("*.yaml")):
        for turn in yaml.safe_load(path.read_text())["turns"]:
            if turn.get("reply"):
                out.append(" ".join(str(turn["reply"]).split()))
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def synth(tts: PiperTTS, text: str) -> tuple[float, float, float, float, float]:
    """(first audio ms, all audio ms, audio s, leading silence ms, trailing silence ms)."""
    start = time.perf_counter()
    first = None
    chunks = []
    async for pcm in tts.synthesize(text):
        if first is None:
            first = time.perf_counter() - start
        chunks.append(pcm)
    total = time.perf_counter() - start
    audio = np.concatenate(chunks)
    rate = tts.sample_rate
    bounds = speech_bounds(audio, rate) or (0, len(audio))
    return (
        (first or total) * 1000,
        total * 1000,
        len(audio) / rate,
        bounds[0] * 1000 / rate,
        (len(audio) - bounds[1]) * 1000 / rate,
    )


def first_phrase(reply: str, config: ChunkerConfig) -> tuple[str, int]:
    """The first phrase and the index of the token that released it."""
    chunker = PhraseChunker(config)
    tokens = tokenize(reply)
    for i, token in enumerate(tokens):
        released = chunker.push(token)
        if released:
            return released[0], i
    return chunker.flush()[0], len(tokens) - 1


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="groq-llama-3.3-70b")
    parser.add_argument("--repeat", type=int, default=3, help="syntheses per phrase (first audio: median)")
    args = parser.parse_args()
    profile = get_profile(args.profile)
    ctx = SessionContext(clock=MonotonicClock(), sample_rate=16000, frame_samples=320)

    started = time.perf_counter()
    tts = PiperTTS(PiperTTSConfig(), ctx)
    await tts.voice()
    print(f"voice load: {(time.perf_counter() - started) * 1000:.0f} ms (once per process)")
    print(f"load average (1, 5, 15 min) at the start: {os.getloadavg()}")
    await synth(tts, "Warming up.")

    texts = replies()
    default = ChunkerConfig()
    phrases: list[str] = []
    for reply in texts:
        chunker = PhraseChunker(default)
        for token in tokenize(reply):
            phrases.extend(chunker.push(token))
        phrases.extend(chunker.flush())

    runs: dict[int, list[tuple[float, float, float, float, float]]] = {i: [] for i in range(len(phrases))}
    for _ in range(args.repeat):
        for i, phrase in enumerate(phrases):
            runs[i].append(await synth(tts, phrase))
    rows = []
    for i, phrase in enumerate(phrases):
        median_first = statistics.median(r[0] for r in runs[i])
        best = min(runs[i], key=lambda r: r[1])
        rows.append((len(phrase.split()), median_first, *best[1:], min(r[0] for r in runs[i])))
    print(f"\n1. {len(phrases)} phrases of {len(texts)} scripted replies, default chunker")
    print(
        "| words | phrases | first audio p50 ms | p90 ms | max ms | best-of-N p50 ms | audio s p50 "
        "| RTF p50 | lead ms p50/max | tail ms p50 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    buckets = [(1, 3), (4, 6), (7, 10), (11, 30)]
    for lo, hi in [*buckets, (1, 30)]:
        sel = [r for r in rows if lo <= r[0] <= hi]
        if not sel:
            continue
        label = "all" if (lo, hi) == (1, 30) else f"{lo}-{hi}"
        firsts = [r[1] for r in sel]
        rtf = [r[2] / 1000 / r[3] for r in sel]
        print(
            f"| {label} | {len(sel)} | {pct(firsts, 50):.0f} | {pct(firsts, 90):.0f} | {max(firsts):.0f} | "
            f"{pct([r[6] for r in sel], 50):.0f} | {pct([r[3] for r in sel], 50):.2f} | {pct(rtf, 50):.2f} | "
            f"{pct([r[4] for r in sel], 50):.0f}/{max(r[4] for r in sel):.0f} | "
            f"{pct([r[5] for r in sel], 50):.0f} |"
        )

    gap_ms = 1000 / profile.tokens_per_s
    # first_min_words only moves a cut to an earlier clause boundary; "max N" cuts the
    # first phrase after N words even mid-clause (the chunker's max_words, applied to
    # the first phrase only here): the bound on what any first-phrase policy can buy.
    policies: list[tuple[str, ChunkerConfig]] = [
        (f"first_min_words = {n}", ChunkerConfig(first_min_words=n)) for n in (1, 2, 3, 4, 6, 10)
    ] + [(f"cut at {n} words", ChunkerConfig(first_min_words=1, max_words=n)) for n in (2, 3, 4, 6)]
    results: dict[str, list[tuple[int, float, list[float]]]] = {label: [] for label, _ in policies}
    for reply in texts:
        firsts: dict[str, list[float]] = {label: [] for label, _ in policies}
        for _ in range(args.repeat):
            # Round-robin over the policies, so load from other processes hits all alike.
            for label, config in policies:
                firsts[label].append((await synth(tts, first_phrase(reply, config)[0]))[0])
        for label, config in policies:
            phrase, index = first_phrase(reply, config)
            results[label].append((len(phrase.split()), index * gap_ms, firsts[label]))
    print(f"\n2. first phrase policy vs time to first audio ({profile.name}: {profile.tokens_per_s:g} tok/s)")
    print(
        "| policy | words in 1st phrase p50 (min-max) | 1st phrase wait p50 ms | Piper 1st audio p50 ms "
        "| best-of-N p50 ms | wait + Piper p50 ms | p90 ms |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, _ in policies:
        rows = results[label]
        words = [r[0] for r in rows]
        medians = [statistics.median(r[2]) for r in rows]
        sums = [r[1] + m for r, m in zip(rows, medians, strict=True)]
        print(
            f"| {label} | {pct(words, 50):.0f} ({min(words)}-{max(words)}) | "
            f"{pct([r[1] for r in rows], 50):.0f} | {pct(medians, 50):.0f} | "
            f"{pct([min(r[2]) for r in rows], 50):.0f} | {pct(sums, 50):.0f} | {pct(sums, 90):.0f} |"
        )
    print(f"\nload average (1, 5, 15 min) at the end: {os.getloadavg()}")


if __name__ == "__main__":
    asyncio.run(main())
