"""Emulated and oracle stages in virtual time: tokenizer, LLM, TTS, ASR, VAD."""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import numpy as np
import pytest

from agent import clock as clock_mod
from agent.audio import speechlike
from agent.clock import Clock, VirtualClock
from agent.stages.asr import EmulatedASR, EmulatedASRConfig
from agent.stages.interfaces import LLMDelta, LLMRequest, SessionContext, VadEvent
from agent.stages.llm import REPLY_BANK, EmulatedLLM, EmulatedLLMConfig, estimate_tokens, tokenize
from agent.stages.tts import EmulatedTTS, EmulatedTTSConfig
from agent.stages.vad import OracleVAD, OracleVADConfig
from agent.wire.protocol import Script

T = TypeVar("T")
MS = 1_000_000
RATE = 16_000
FRAME = 320  # 20 ms at 16 kHz

PARAGRAPH = (
    "The quick brown fox jumps over the lazy dog. Accelerators change two numbers of the "
    "LLM hop: time to first token and output tokens per second. A voice agent is a chain of "
    "microphone, voice activity detection, speech recognition, language model and speech "
    "synthesis, ending at the speaker. Whatever the hops don't cover is reported, never hidden."
)


def virtual(body: Callable[[SessionContext], Awaitable[T]]) -> T:
    """Run ``body(ctx)`` on the virtual-time loop with a fresh session context."""

    async def main(clock: Clock) -> T:
        return await body(SessionContext(clock=clock, sample_rate=RATE, frame_samples=FRAME))

    return clock_mod.run(main, virtual=True)


def ctx_stub() -> SessionContext:
    return SessionContext(clock=VirtualClock(), sample_rate=RATE, frame_samples=FRAME)


def request(reply: str | None = None, turn: int = 1, user: str = "Hello there") -> LLMRequest:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": user}]
    return LLMRequest(messages=messages, turn=turn, scripted_reply=reply)


async def timed_stream(llm: EmulatedLLM, req: LLMRequest, clock: Clock) -> list[tuple[int, LLMDelta]]:
    start = clock.now_ns()
    return [(clock.now_ns() - start, delta) async for delta in llm.stream(req)]


# --------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize(
    "text",
    [PARAGRAPH, *REPLY_BANK, "", "   ", "It's 9.30, isn't it?", "  leading and trailing  ", "a\nb\tc"],
)
def test_tokenize_concatenates_back(text: str) -> None:
    tokens = tokenize(text)
    assert "".join(tokens) == text
    assert all(tokens)  # no empty pieces


def test_tokens_per_word_like_bpe() -> None:
    ratio = len(tokenize(PARAGRAPH)) / len(PARAGRAPH.split())
    assert 1.2 <= ratio <= 1.6
    bank = " ".join(REPLY_BANK)
    assert 1.2 <= len(tokenize(bank)) / len(bank.split()) <= 1.6


def test_tokenize_pieces() -> None:
    assert tokenize("Sure, I can.") == ("Sure", ",", " I", " can", ".")
    assert tokenize("at 42") == ("at", " 4", "2")  # digits one by one
    long_word = tokenize(" Accelerators")
    assert len(long_word) > 1 and long_word[0].startswith(" ")
    assert estimate_tokens("Sure, I can.") == 5


# --------------------------------------------------------------------------- LLM


def test_llm_first_token_at_ttft_then_even_pace() -> None:
    reply = "Sure, I can help with that. Anything else?"
    config = EmulatedLLMConfig(ttft_ms=200, tokens_per_s=250)  # 4 ms per token

    async def body(ctx: SessionContext) -> list[tuple[int, LLMDelta]]:
        return await timed_stream(EmulatedLLM(config, ctx), request(reply), ctx.clock)

    out = virtual(body)
    text = [(t, d) for t, d in out if d.text]
    assert "".join(d.text for _, d in text) == reply
    assert [t for t, _ in text] == [200 * MS + i * 4 * MS for i in range(len(text))]
    final_t, final = out[-1]
    assert final.text == ""
    assert final.usage is not None
    assert final.usage["completion_tokens"] == len(text) == len(tokenize(reply))
    assert final.usage["prompt_tokens"] == estimate_tokens("Be brief.") + estimate_tokens("Hello there")
    assert final_t == text[-1][0]  # usage right after the last token
    assert len(out) == len(text) + 1


def test_llm_non_integer_gap_stays_within_a_nanosecond() -> None:
    config = EmulatedLLMConfig(ttft_ms=123.5, tokens_per_s=275)

    async def body(ctx: SessionContext) -> list[tuple[int, LLMDelta]]:
        return await timed_stream(EmulatedLLM(config, ctx), request(PARAGRAPH), ctx.clock)

    times = [t for t, d in virtual(body) if d.text]
    assert times[0] == 123_500_000
    for i, t in enumerate(times):
        assert abs(t - (123.5e6 + i * 1e9 / 275)) <= 1


def test_llm_schedule_without_jitter() -> None:
    llm = EmulatedLLM(EmulatedLLMConfig(ttft_ms=50, tokens_per_s=100), ctx_stub())
    assert llm.schedule_ns(4, turn=1) == [50 * MS, 60 * MS, 70 * MS, 80 * MS]
    assert llm.schedule_ns(0, turn=1) == []


def test_llm_jitter_is_reproducible_per_seed_and_turn() -> None:
    config = EmulatedLLMConfig(ttft_ms=200, tokens_per_s=300, jitter=0.3, ttft_jitter_ms=20, seed=7)
    a = EmulatedLLM(config, ctx_stub()).schedule_ns(40, turn=3)
    b = EmulatedLLM(config, ctx_stub()).schedule_ns(40, turn=3)
    other_turn = EmulatedLLM(config, ctx_stub()).schedule_ns(40, turn=4)
    other_seed = EmulatedLLM(
        EmulatedLLMConfig(ttft_ms=200, tokens_per_s=300, jitter=0.3, ttft_jitter_ms=20, seed=8), ctx_stub()
    ).schedule_ns(40, turn=3)
    assert a == b
    assert a != other_turn
    assert a != other_seed
    assert a[0] != 200 * MS  # TTFT jittered
    assert all(y >= x for x, y in itertools.pairwise(a))  # never backwards
    gaps = np.diff(a)
    assert len(set(gaps.tolist())) > 1  # gaps actually vary
    # Mean gap stays near 1/tokens_per_s.
    assert gaps.mean() == pytest.approx(1e9 / 300, rel=0.25)


def test_llm_jitter_streams_on_its_schedule() -> None:
    config = EmulatedLLMConfig(ttft_ms=100, tokens_per_s=200, jitter=0.5, seed=1)
    reply = "Okay, got it. Is there anything else you'd like me to look at while I'm here?"

    async def body(ctx: SessionContext) -> tuple[list[int], list[int]]:
        llm = EmulatedLLM(config, ctx)
        out = await timed_stream(llm, request(reply, turn=2), ctx.clock)
        return [t for t, d in out if d.text], llm.schedule_ns(len(tokenize(reply)), 2)

    times, schedule = virtual(body)
    assert times == schedule
    assert times[0] == 100 * MS  # no TTFT jitter configured


def test_llm_uses_reply_bank_without_scripted_reply() -> None:
    user = "What time do you open tomorrow?"

    async def body(ctx: SessionContext) -> str:
        llm = EmulatedLLM(EmulatedLLMConfig(ttft_ms=0, tokens_per_s=1000), ctx)
        return "".join([d.text async for d in llm.stream(request(None, user=user))])

    text = virtual(body)
    assert text in REPLY_BANK
    assert text == REPLY_BANK[zlib.crc32(user.encode()) % len(REPLY_BANK)]


def test_llm_reply_for() -> None:
    llm = EmulatedLLM(EmulatedLLMConfig(), ctx_stub())
    assert llm.reply_for(request("Scripted.")) == "Scripted."
    assert llm.reply_for(request("")) in REPLY_BANK  # empty script: use the bank
    # the latest user message decides the bank reply
    history = LLMRequest(
        messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "second"},
        ],
        turn=2,
    )
    assert llm.reply_for(history) == REPLY_BANK[zlib.crc32(b"second") % len(REPLY_BANK)]
    assert llm.reply_for(LLMRequest(messages=[], turn=1)) == REPLY_BANK[0]  # crc32(b"") == 0


# --------------------------------------------------------------------------- TTS


def tts_chunks(config: EmulatedTTSConfig, text: str) -> list[tuple[int, np.ndarray]]:
    async def body(ctx: SessionContext) -> list[tuple[int, np.ndarray]]:
        tts = EmulatedTTS(config, ctx)
        assert tts.sample_rate == RATE
        start = ctx.clock.now_ns()
        return [(ctx.clock.now_ns() - start, chunk) async for chunk in tts.synthesize(text)]

    return virtual(body)


def test_tts_first_audio_then_rtf_pacing() -> None:
    config = EmulatedTTSConfig(first_audio_ms=90, rtf=0.2, chunk_ms=100)
    text = "Sure, I can help with that."
    chunks = tts_chunks(config, text)
    assert len(chunks) > 3
    assert chunks[0][0] == 90 * MS
    # each further 100 ms of audio takes 20 ms to synthesize
    assert [t for t, _ in chunks] == [90 * MS + k * 20 * MS for k in range(len(chunks))]
    step = 100 * RATE // 1000
    assert all(len(c) == step for _, c in chunks[:-1])
    assert 0 < len(chunks[-1][1]) <= step
    audio = np.concatenate([c for _, c in chunks])
    assert audio.dtype == np.int16
    np.testing.assert_array_equal(audio, speechlike(text, RATE))


def test_tts_rtf_zero_delivers_everything_at_first_audio() -> None:
    chunks = tts_chunks(EmulatedTTSConfig(first_audio_ms=50, rtf=0), "One two three four five.")
    assert len(chunks) > 1
    assert {t for t, _ in chunks} == {50 * MS}


def test_tts_duration_proportional_to_text_length() -> None:
    config = EmulatedTTSConfig(first_audio_ms=0, rtf=0.5, chunk_ms=50)
    four = "one two three four"
    durations = {}
    last_times = {}
    for n in (1, 2, 4):
        chunks = tts_chunks(config, " ".join([four] * n))
        durations[n] = sum(len(c) for _, c in chunks) / RATE
        last_times[n] = chunks[-1][0]
    assert durations[1] == pytest.approx(4 * 60 / 165, rel=0.02)
    assert durations[2] == pytest.approx(2 * durations[1], rel=0.02)
    assert durations[4] == pytest.approx(4 * durations[1], rel=0.02)
    # synthesis time follows the audio length at rtf
    assert last_times[4] == pytest.approx(0.5 * durations[4] * 1e9, abs=50 * MS)


def test_tts_empty_text_yields_nothing() -> None:
    assert tts_chunks(EmulatedTTSConfig(), "   ") == []


# --------------------------------------------------------------------------- ASR


def test_asr_returns_hint_text_after_finalize_ms() -> None:
    hint = Script(turn=1, speech_start_sample=0, speech_end_sample=16000, text="book a table for two")

    async def body(ctx: SessionContext) -> tuple[str, int, str, int]:
        asr = EmulatedASR(EmulatedASRConfig(finalize_ms=150), ctx)
        asr.feed(np.zeros(FRAME, dtype=np.int16), 0)  # ignored
        start = ctx.clock.now_ns()
        text = await asr.finalize(16000, hint)
        mid = ctx.clock.now_ns()
        empty = await asr.finalize(32000, None)
        return text, mid - start, empty, ctx.clock.now_ns() - mid

    assert virtual(body) == ("book a table for two", 150 * MS, "", 150 * MS)


def test_asr_zero_finalize_is_immediate() -> None:
    async def body(ctx: SessionContext) -> tuple[str, int]:
        asr = EmulatedASR(EmulatedASRConfig(finalize_ms=0), ctx)
        text = await asr.finalize(0, Script(turn=1, speech_start_sample=0, speech_end_sample=1, text="x"))
        return text, ctx.clock.now_ns()

    assert virtual(body) == ("x", 0)


# --------------------------------------------------------------------------- VAD


def run_vad(
    vad: OracleVAD, n_frames: int, ctx: SessionContext, add: dict[int, Script] | None = None
) -> list[tuple[int, VadEvent]]:
    """Feed ``n_frames`` silent frames; ``add`` announces scripts before a given frame."""
    out = []
    for k in range(n_frames):
        if add and k in add:
            ctx.scripts.add(add[k])
        for event in vad.process(np.zeros(FRAME, dtype=np.int16), k * FRAME):
            out.append((k, event))
    return out


def test_oracle_vad_events_at_the_right_samples_and_frames() -> None:
    ctx = ctx_stub()
    ctx.scripts.add(Script(turn=1, speech_start_sample=8_100, speech_end_sample=40_100, text="hi"))
    vad = OracleVAD(OracleVADConfig(endpoint_ms=300, start_ms=60), ctx)
    events = run_vad(vad, 200, ctx)
    start_at = 8_100 + 960  # 60 ms at 16 kHz
    end_at = 40_100 + 4_800  # 300 ms
    assert events == [
        (start_at // FRAME, VadEvent("speech_start", start_at)),
        (end_at // FRAME, VadEvent("end_of_turn", end_at)),
    ]


def test_oracle_vad_end_of_turn_on_a_frame_boundary() -> None:
    ctx = ctx_stub()
    ctx.scripts.add(Script(turn=1, speech_start_sample=1_000, speech_end_sample=16_000))
    vad = OracleVAD(OracleVADConfig(endpoint_ms=200, start_ms=0), ctx)
    events = run_vad(vad, 100, ctx)
    end_at = 16_000 + 3_200
    # declared in the frame whose last sample completes endpoint_ms of silence
    assert events == [
        (1_000 // FRAME, VadEvent("speech_start", 1_000)),
        (end_at // FRAME - 1, VadEvent("end_of_turn", end_at)),
    ]


def test_oracle_vad_several_turns_and_late_scripts() -> None:
    ctx = ctx_stub()
    vad = OracleVAD(OracleVADConfig(endpoint_ms=100, start_ms=20), ctx)
    first = Script(turn=1, speech_start_sample=3_210, speech_end_sample=10_010)
    second = Script(turn=2, speech_start_sample=30_050, speech_end_sample=40_050)
    events = run_vad(vad, 160, ctx, add={0: first, 50: second})
    samples = [(e.kind, e.sample) for _, e in events]
    assert samples == [
        ("speech_start", 3_210 + 320),
        ("end_of_turn", 10_010 + 1_600),
        ("speech_start", 30_050 + 320),
        ("end_of_turn", 40_050 + 1_600),
    ]
    for frame, event in events:
        assert frame * FRAME <= event.sample < (frame + 1) * FRAME


def test_oracle_vad_one_big_chunk_reports_both_events_once() -> None:
    ctx = ctx_stub()
    ctx.scripts.add(Script(turn=1, speech_start_sample=500, speech_end_sample=5_000))
    vad = OracleVAD(OracleVADConfig(endpoint_ms=50, start_ms=10), ctx)
    events = vad.process(np.zeros(20_000, dtype=np.int16), 0)
    assert events == [VadEvent("speech_start", 660), VadEvent("end_of_turn", 5_800)]
    assert vad.process(np.zeros(FRAME, dtype=np.int16), 20_000) == []


def test_oracle_vad_without_scripts_is_silent() -> None:
    ctx = ctx_stub()
    vad = OracleVAD(OracleVADConfig(), ctx)
    assert run_vad(vad, 50, ctx) == []


def test_oracle_vad_follows_the_session_sample_rate() -> None:
    ctx = SessionContext(clock=VirtualClock(), sample_rate=8_000, frame_samples=160)
    ctx.scripts.add(Script(turn=1, speech_start_sample=1_000, speech_end_sample=4_000))
    vad = OracleVAD(OracleVADConfig(endpoint_ms=300, start_ms=60), ctx)
    events = vad.process(np.zeros(10_000, dtype=np.int16), 0)
    assert events == [VadEvent("speech_start", 1_480), VadEvent("end_of_turn", 6_400)]
