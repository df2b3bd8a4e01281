"""Audio-only voice-to-voice through the plain PCM target vs the protocol's figure.

vlt's own agent is measured twice per shipped scenario: through its protocol
(``ws://``: script hints, server marks, ``response_done``) and as a black box
(``pcm+ws://`` to :class:`agent.jobs.pcm_facade.PcmFacade`, which relays bare
PCM and keeps every message inside), where turns, replies and voice-to-voice
come from the audio alone. The agent is the same both times: energy VAD (no
hints needed), emulated ASR, LLM and TTS, the LLM decoding so fast that the
reply's text (the scenario's through the protocol, the reply bank's through
the facade, which passes no scripts) cannot move the first phrase. Printed per
scenario and clock: turns, mean voice-to-voice each way, the mean and largest
per-turn difference (black box - protocol), and the same for barge-in stop.
Target: |mean difference| <= 5 ms per scenario.

Run:  .venv/bin/python benchmarks/black_box.py [--virtual-only]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent import clock as clocks  # noqa: E402
from agent.client.replay import replay  # noqa: E402
from agent.config.scenario import load_scenario  # noqa: E402
from agent.jobs.pcm_facade import PcmFacade  # noqa: E402
from agent.server.app import AgentServer  # noqa: E402
from agent.stages.pipeline import load_pipeline  # noqa: E402

PIPELINE = """
name = "black-box-bench"
description = "energy VAD, emulated ASR/LLM/TTS; decode fast enough that the reply text does not matter"
[audio]
sample_rate = 16000
frame_ms = 20
[vad]
kind = "energy"
endpoint_ms = 520
[asr]
kind = "emulated"
finalize_ms = 150
[llm]
kind = "emulated"
ttft_ms = 200
tokens_per_s = 1000000
[tts]
kind = "emulated"
first_audio_ms = 90
rtf = 0.2
[output]
lead_ms = 60
"""


def _pair(pipeline: Any, scenario: Any, tmp: Path, virtual: bool) -> tuple[Any, Any]:
    async def main(clock: clocks.Clock) -> tuple[Any, Any]:
        async with AgentServer(pipeline, clock) as server:
            protocol = await replay(scenario, server.url, clock, tmp / "protocol")
            async with PcmFacade(server.url, clock) as facade:
                black_box = await replay(scenario, facade.pcm_url(), clock, tmp / "pcm")
        return protocol, black_box

    return clocks.run(main, virtual=virtual)


def _diffs(a: Any, b: Any, metric: str) -> tuple[list[float], list[float], list[float]]:
    xs, ys, ds = [], [], []
    for ra, rb in zip(a.records, b.records, strict=True):
        x, y = ra["latency_ms"][metric], rb["latency_ms"][metric]
        if x is not None and y is not None:
            xs.append(x)
            ys.append(y)
            ds.append(y - x)
    return xs, ys, ds


def main() -> None:
    clock_modes = (True,) if "--virtual-only" in sys.argv else (True, False)
    tmp_root = Path(tempfile.mkdtemp(prefix="vlt-black-box-"))
    (tmp_root / "p.toml").write_text(PIPELINE)
    pipeline = load_pipeline(tmp_root / "p.toml")
    rows = []
    for virtual in clock_modes:
        for path in sorted((ROOT / "scenarios").glob("*.yaml")):
            scenario = load_scenario(path)
            out = tmp_root / f"{path.stem}-{'virtual' if virtual else 'real'}"
            a, b = _pair(pipeline, scenario, out, virtual)
            xs, ys, ds = _diffs(a, b, "voice_to_voice")
            _, _, bs = _diffs(a, b, "barge_in_stop")
            statuses = sum(ra["status"] == rb["status"] for ra, rb in zip(a.records, b.records, strict=True))
            rows.append(
                (
                    path.stem,
                    "virtual" if virtual else "real",
                    f"{len(ds)}/{len(a.records)}",
                    f"{statistics.fmean(xs):.1f}",
                    f"{statistics.fmean(ys):.1f}",
                    f"{statistics.fmean(ds):+.2f}",
                    f"{max(abs(d) for d in ds):.2f}",
                    f"{statistics.fmean(bs):+.2f} (n={len(bs)})" if bs else "-",
                    f"{statuses}/{len(a.records)}",
                )
            )
    head = (
        "scenario",
        "clock",
        "turns",
        "v2v proto",
        "v2v pcm",
        "mean diff",
        "max |diff|",
        "barge stop diff",
        "same status",
    )
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    print(f"(ms; black box - protocol; runs in {tmp_root})")


if __name__ == "__main__":
    main()
