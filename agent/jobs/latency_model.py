"""The voice-to-voice latency model, and the knee of the token-speed curve. Pure.

With phrase-level TTS the agent can start speaking once the first phrase
exists, so (REFERENCES.md, "Why token speed saturates")::

    v2v ≈ endpointing + asr_finalize + network + ttft
          + (first-phrase tokens - 1) / tokens_per_s + tts_first_audio

``network`` is the ``transport`` hop plus ``audio_onset`` (the leading silence
of the agent's audio). The first token of the phrase arrives at TTFT, so the
phrase costs one inter-token gap per *further* token: ``tokens - 1``.

The model is applied **per turn**: every component but the token term is that
turn's measured hop, and the token count is what the pipeline's phrase chunker
makes of the turn's actual reply text. A point's prediction is then the same
statistic (p50, …) over the turns' predictions as the measurement takes over
the turns' voice-to-voice — so the two compare like for like, and whatever the
hops do not tile (the ``unaccounted`` residual, token jitter) shows up as the
error. In virtual time with the emulated pipeline the error is 0.

The *knee*: the token speed beyond which doubling tokens/s improves
voice-to-voice p50 by less than 5 %. For one turn, ``v(T) = a + b/T``
(``b`` = 1000 · (tokens - 1) ms·tok/s), and the improvement of doubling is
``b / (2 (a·T + b))``, which falls below ``f`` at ``T = b (1/(2f) - 1) / a``
(``9 b / a`` for 5 %).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from agent.metrics.records import TurnRecord
from agent.metrics.results import latencies
from agent.metrics.stats import percentile
from agent.stages.chunker import ChunkerConfig, PhraseChunker
from agent.stages.llm import tokenize

__all__ = [
    "COMPONENTS",
    "KNEE_IMPROVEMENT",
    "Knee",
    "TurnModel",
    "dominant_components",
    "first_phrase_tokens",
    "knee_sentence",
    "measured_knee",
    "model_knee",
    "predict",
    "turn_model",
]

#: Improvement of doubling tokens/s below which token speed has stopped paying.
KNEE_IMPROVEMENT = 0.05

#: The model's terms, in pipeline order (``first_phrase`` is the token term).
COMPONENTS: tuple[str, ...] = (
    "endpointing",
    "asr_finalize",
    "network",
    "llm_ttft",
    "first_phrase",
    "tts_first_audio",
)
_FIXED_HOPS = ("endpointing", "asr_finalize", "transport", "audio_onset", "llm_ttft", "tts_first_audio")


@dataclass(frozen=True, slots=True)
class TurnModel:
    """One measured turn, reduced to what the model needs."""

    fixed_ms: float
    """Sum of the measured components that do not depend on tokens/s."""
    tokens: int
    """Tokens in the first phrase (the chunker on the actual reply)."""
    components_ms: Mapping[str, float]
    """The fixed components by name (``network`` = transport + audio_onset), for explaining the knee."""

    def predict_ms(self, tokens_per_s: float) -> float:
        return self.fixed_ms + 1000.0 * max(self.tokens - 1, 0) / tokens_per_s


def first_phrase_tokens(reply: str, chunker: ChunkerConfig | None = None) -> int:
    """How many tokens the LLM must emit before the chunker releases the first phrase."""
    pieces = tokenize(reply)
    phrase_chunker = PhraseChunker(chunker)
    for i, token in enumerate(pieces):
        if phrase_chunker.push(token):
            return i + 1
    return len(pieces)  # no boundary: the first phrase is released when the stream ends


def turn_model(record: TurnRecord, chunker: ChunkerConfig | None = None) -> TurnModel | None:
    """The model inputs of one turn record, or None if it lacks a hop or a reply."""
    latency = latencies(record)
    values = {hop: latency.get(hop) for hop in _FIXED_HOPS}
    reply = record.get("reply") or ""
    if latency.get("voice_to_voice") is None or not reply or any(v is None for v in values.values()):
        return None
    hops = {k: float(v) for k, v in values.items() if v is not None}
    components = {
        "endpointing": hops["endpointing"],
        "asr_finalize": hops["asr_finalize"],
        "network": hops["transport"] + hops["audio_onset"],
        "llm_ttft": hops["llm_ttft"],
        "tts_first_audio": hops["tts_first_audio"],
    }
    return TurnModel(sum(components.values()), first_phrase_tokens(reply, chunker), components)


def predict(turns: Sequence[TurnModel], tokens_per_s: float, q: float = 50) -> float | None:
    """The ``q``-th percentile over the turns' predicted voice-to-voice at ``tokens_per_s``."""
    if not turns:
        return None
    return percentile(sorted(t.predict_ms(tokens_per_s) for t in turns), q)


@dataclass(frozen=True, slots=True)
class Knee:
    """Where doubling tokens/s stops buying 5 % of voice-to-voice p50, for one TTFT."""

    ttft_ms: float
    model_tps: float | None
    """From the model (continuous); None when the turns have no token term."""
    measured_tps: float | None
    """From the measured grid (p50 at T vs 2T, interpolated in 1/T); None when the grid never flattens."""
    v2v_at_knee_ms: float | None
    """The model's p50 at the knee."""
    dominant: tuple[str, ...]
    """The largest fixed components, largest first."""


def _improvement(turns: Sequence[TurnModel], tps: float) -> float:
    slow, fast = predict(turns, tps), predict(turns, 2 * tps)
    assert slow is not None and fast is not None
    return (slow - fast) / slow if slow > 0 else 0.0


def model_knee(
    turns: Sequence[TurnModel],
    threshold: float = KNEE_IMPROVEMENT,
    lo: float = 0.1,
    hi: float = 1e7,
) -> float | None:
    """The smallest tokens/s beyond which doubling improves the model's p50 by < ``threshold``."""
    if not turns or all(t.tokens <= 1 for t in turns):
        return None
    if _improvement(turns, lo) < threshold:
        return lo
    if _improvement(turns, hi) >= threshold:
        return None
    # A percentile over several turns' curves is piecewise: bisect in log space
    # rather than rely on the one-turn closed form.
    for _ in range(100):
        mid = (lo * hi) ** 0.5
        if _improvement(turns, mid) < threshold:
            hi = mid
        else:
            lo = mid
        if hi / lo < 1 + 1e-9:
            break
    return hi


def _interpolate(points: Sequence[tuple[float, float]], tps: float) -> float | None:
    """p50 at ``tps`` from the measured grid, linear in 1/tps (the model's shape); None outside it."""
    for (t0, v0), (t1, v1) in itertools.pairwise(points):
        if t0 <= tps <= t1:
            if t1 == t0:
                return v0
            w = (1 / t0 - 1 / tps) / (1 / t0 - 1 / t1)
            return v0 + w * (v1 - v0)
    return None


def measured_knee(grid: Iterable[tuple[float, float]], threshold: float = KNEE_IMPROVEMENT) -> float | None:
    """The first grid speed T whose measured p50 improves by < ``threshold`` at 2T."""
    points = sorted((float(t), float(v)) for t, v in grid)
    for tps, v2v in points:
        doubled = _interpolate(points, 2 * tps)
        if doubled is None:
            break
        if v2v > 0 and (v2v - doubled) / v2v < threshold:
            return tps
    return None


def dominant_components(turns: Sequence[TurnModel], top: int = 2) -> tuple[str, ...]:
    """The ``top`` fixed components with the largest mean over the turns."""
    if not turns:
        return ()
    means = {name: sum(t.components_ms[name] for t in turns) / len(turns) for name in turns[0].components_ms}
    return tuple(sorted(means, key=lambda k: -means[k])[:top])


_WORDS = {
    "endpointing": "endpointing",
    "asr_finalize": "ASR finalize",
    "network": "the network",
    "llm_ttft": "TTFT",
    "tts_first_audio": "TTS first audio",
}


def _round(tps: float) -> str:
    """Two significant figures: the knee is a region, not a number."""
    value = float(f"{tps:.2g}")
    return f"{value:,.0f}" if value >= 10 else f"{value:g}"


def knee_sentence(knee: Knee) -> str:
    """The knee in words, e.g. "TTFT 200 ms: beyond ~48 tok/s, TTFT and endpointing dominate …"."""
    head = f"TTFT {knee.ttft_ms:g} ms: "
    tps = knee.model_tps if knee.model_tps is not None else knee.measured_tps
    if tps is None:
        return head + "no knee in range: every doubling of tokens/s still buys 5 % or more."
    parts = " and ".join(_WORDS.get(c, c) for c in knee.dominant) or "the other hops"
    where = f"beyond ~{_round(tps)} tok/s, {parts} dominate"
    detail = []
    if knee.model_tps is not None:
        detail.append(f"model {knee.model_tps:,.0f} tok/s")
    if knee.measured_tps is not None:
        detail.append(f"measured grid {knee.measured_tps:,.0f} tok/s")
    at = f" (v2v p50 ~{knee.v2v_at_knee_ms:,.0f} ms)" if knee.v2v_at_knee_ms is not None else ""
    return (
        f"{head}{where}: doubling tokens/s buys < {KNEE_IMPROVEMENT:.0%} of voice-to-voice p50{at}"
        f" [{'; '.join(detail)}]."
    )
