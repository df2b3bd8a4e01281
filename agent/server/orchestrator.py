"""One turn's response: ASR finalize → LLM stream → phrase chunker → TTS → audio out.

This is the one place where the server's marks are stamped, at hop boundaries,
by wrapping each stage's call or stream. Stages themselves contain no timing
code, so a new backend cannot forget or skew its metrics.

The LLM and TTS run concurrently: phrases go into a queue as soon as the
chunker releases them, and TTS audio is streamed out while the LLM is still
generating.

Every hop has a deadline (the pipeline's ``[limits]``, :class:`TurnLimits`): a
hop that hangs fails the turn with a reason naming it (``llm: no content
within 10000 ms``) while the marks stamped so far still go to the client; a
reply longer than ``max_reply_chars`` is cut there.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agent.audio import PCM, PhraseResampler
from agent.clock import Clock
from agent.errors import BackendError
from agent.metrics.stats import describe
from agent.server.audio_out import AudioOut
from agent.stages.chunker import ChunkerConfig, PhraseChunker
from agent.stages.interfaces import ASR, LLM, TTS, ASRStats, LLMDelta, LLMRequest
from agent.stages.llm import estimate_tokens
from agent.stages.turn_limits import TurnLimits
from agent.wire.protocol import AgentText, Message, Script, Transcript

__all__ = ["Conversation", "TurnMarks", "TurnResult", "guarded", "respond", "stamped"]

T = TypeVar("T")
SendMessage = Callable[[Message], Awaitable[None]]


class TurnMarks:
    """A turn's server-side marks; each name keeps its first stamp."""

    def __init__(
        self,
        clock: Clock,
        turn: int,
        initial: dict[str, int] | None = None,
        on_stamp: Callable[[int, str, int], None] | None = None,
    ) -> None:
        self._clock = clock
        self.turn = turn
        self.marks: dict[str, int] = dict(initial or {})
        #: Told (turn, name, t_ns) of every mark as it is stamped (live telemetry).
        self._on_stamp = on_stamp
        if on_stamp is not None:
            for name, t_ns in self.marks.items():
                on_stamp(turn, name, t_ns)

    def stamp(self, name: str) -> None:
        if name not in self.marks:
            self.stamp_at(name, self._clock.now_ns())

    def stamp_at(self, name: str, t_ns: int) -> None:
        """Stamp ``name`` at ``t_ns``, a time read already (unless it is stamped)."""
        if name not in self.marks:
            self.marks[name] = t_ns
            if self._on_stamp is not None:
                self._on_stamp(self.turn, name, t_ns)

    def now_ns(self) -> int:
        """The clock's time, for per-chunk arrivals too many to be named marks."""
        return self._clock.now_ns()

    @property
    def clock(self) -> Clock:
        return self._clock


async def stamped(
    stream: AsyncIterator[T],
    marks: TurnMarks,
    first: str,
    last: str | None = None,
    counts: Callable[[T], bool] = lambda _: True,
) -> AsyncGenerator[T, None]:
    """Yield ``stream``'s items, stamping ``first`` at the first item that
    ``counts`` and ``last`` when the stream is exhausted."""
    try:
        async for item in stream:
            if counts(item):
                marks.stamp(first)
            yield item
    finally:
        # Closed with us (a reply cut at its cap), not whenever the GC gets to it:
        # a backend's stream holds a connection.
        await _aclose(stream)
    if last is not None:
        marks.stamp(last)


async def _aclose(stream: AsyncIterator[Any]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


async def guarded(
    stream: AsyncIterator[T],
    clock: Clock,
    *,
    hop: str,
    gap_ms: float,
    total_ms: float | None = None,
    counts: Callable[[T], bool] = lambda _: True,
    what: str = "output",
    detail: Callable[[], str] = lambda: "",
) -> AsyncGenerator[T, None]:
    """``stream``'s items, failing with :class:`BackendError` naming ``hop`` when
    no item that ``counts`` comes for ``gap_ms`` (from the start, then from the
    last one), or the stream has not ended ``total_ms`` after the start.
    ``detail()`` adds what is known when nothing came at all.

    Items that do not count (keep-alives, empty chunks) pass but do not hold
    the deadline off: that is how a server sending only comments is caught.
    """
    start = clock.now_ns()
    gap_ns = round(gap_ms * 1e6)
    total_end = None if total_ms is None else start + round(total_ms * 1e6)
    last, n = start, 0
    items = aiter(stream)
    try:
        while True:
            end = last + gap_ns if total_end is None else min(last + gap_ns, total_end)
            try:
                async with asyncio.timeout(max(0, end - clock.now_ns()) / 1e9) as timer:
                    item = await anext(items)
            except StopAsyncIteration:
                return
            except TimeoutError:
                if not timer.expired():
                    raise  # the stage's own TimeoutError, not our deadline
                if total_end is not None and end == total_end:
                    reason = f"not finished within {total_ms:g} ms (after {n} {what} chunks)"
                elif n == 0:
                    extra = detail()
                    reason = f"no {what} within {gap_ms:g} ms{f' ({extra})' if extra else ''}"
                else:
                    reason = f"no {what} for {gap_ms:g} ms after {n} {what} chunks"
                raise BackendError(hop, reason) from None
            if counts(item):
                n += 1
                last = clock.now_ns()
            yield item
    finally:
        await _aclose(items)


@dataclass
class Conversation:
    """The chat history of a session, sent with each request."""

    system_prompt: str
    max_turns: int
    exchanges: list[tuple[str, str]] = field(default_factory=list)

    def messages(self, user_text: str) -> list[dict[str, str]]:
        out = [{"role": "system", "content": self.system_prompt}]
        kept = self.exchanges[-self.max_turns :] if self.max_turns else []
        for user, assistant in kept:
            out += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        out.append({"role": "user", "content": user_text})
        return out

    def record(self, user_text: str, reply: str) -> None:
        self.exchanges.append((user_text, reply))


@dataclass
class TurnResult:
    """What a turn produced, whether or not it finished."""

    transcript: str = ""
    phrases: list[str] = field(default_factory=list)
    spoken_phrases: int = 0
    usage: dict[str, int] | None = None
    server_timing: dict[str, Any] | None = None
    token_chunks: int = 0
    #: Arrival time of each non-empty LLM text chunk (for ITL and TPOT).
    chunk_ns: list[int] = field(default_factory=list)
    #: What a streaming ASR reports about its finalize (``last_stats``), if it does.
    asr_stats: dict[str, Any] | None = None
    #: Which limit cut the reply short (``"max_reply_chars"``), if one did.
    truncated: str | None = None
    #: The final transcript (with the prefix) being made: it outlives a turn stopped
    #: while the ASR finalizes, so a continuation can still take those words.
    final: asyncio.Future[tuple[str, dict[str, Any] | None]] | None = None

    @property
    def reply(self) -> str:
        return " ".join(self.phrases)

    def stats(self) -> dict[str, Any]:
        if self.usage and "completion_tokens" in self.usage:
            tokens, source = self.usage["completion_tokens"], "usage"
        else:
            tokens, source = estimate_tokens(self.reply), "counted"
        out: dict[str, Any] = {
            "output_tokens": tokens,
            "token_source": source,
            "content_chunks": self.token_chunks,
            "phrases": len(self.phrases),
        }
        if self.usage and "prompt_tokens" in self.usage:
            out["prompt_tokens"] = self.usage["prompt_tokens"]
        if self.server_timing:
            out["server_timing"] = self.server_timing
        # ITL: gaps between consecutive content chunks; TPOT: first → last content
        # chunk per further token (latency_ms.llm_tpot uses llm.done as its end).
        itl = describe((b - a) / 1e6 for a, b in itertools.pairwise(self.chunk_ns))
        out["itl_ms"] = {k: itl[k] for k in ("n", "p50", "p90", "p95", "p99", "max")}
        span = self.chunk_ns[-1] - self.chunk_ns[0] if self.chunk_ns else 0
        out["tpot_ms"] = span / 1e6 / (tokens - 1) if len(self.chunk_ns) > 1 and tokens > 1 else None
        if self.asr_stats is not None:
            out["asr"] = dict(self.asr_stats)
        if self.truncated is not None:
            out["truncated"] = self.truncated
        return out


def _has_text(delta: LLMDelta) -> bool:
    return bool(delta.text)


async def respond(
    *,
    turn: int,
    end_sample: int,
    hint: Script | None,
    marks: TurnMarks,
    result: TurnResult,
    asr: ASR,
    llm: LLM,
    tts: TTS,
    chunker_config: ChunkerConfig,
    conversation: Conversation,
    audio: AudioOut,
    resample: PhraseResampler | None,
    send: SendMessage,
    transcript_prefix: str = "",
    limits: TurnLimits | None = None,
) -> None:
    """Run one turn's response; raises :class:`BackendError` if a stage fails or a
    hop misses its deadline (``limits``).

    ``transcript_prefix``: what the user said before a pause the VAD took for the
    end of this turn (a continuation, see the session); it leads the transcript.
    """
    limits = limits or TurnLimits()
    # Shielded: a stop (the user resumed) must not lose what the ASR already took in.
    result.final = asyncio.ensure_future(_final_transcript(asr, end_sample, hint, transcript_prefix))
    result.final.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved if abandoned
    try:
        async with asyncio.timeout(limits.asr_final_ms / 1000) as timer:
            result.transcript, result.asr_stats = await asyncio.shield(result.final)
    except TimeoutError:
        if not timer.expired():
            raise
        result.final.cancel()  # a hung ASR: nothing will come for a continuation either
        raise BackendError("asr", f"no final transcript within {limits.asr_final_ms:g} ms") from None
    marks.stamp("asr.final")
    await send(Transcript(turn=turn, text=result.transcript, final=True))

    request = LLMRequest(
        messages=conversation.messages(result.transcript),
        turn=turn,
        scripted_reply=hint.reply if hint is not None else None,
    )
    phrases: asyncio.Queue[str | None] = asyncio.Queue()
    speaker = asyncio.create_task(
        _speak(turn, phrases, marks, result, tts, audio, resample, send, limits.tts_audio_ms)
    )
    try:
        chunker = PhraseChunker(chunker_config)
        marks.stamp("llm.request")

        def opened() -> str:
            return "the stream opened, no text yet" if "llm.first_chunk" in marks.marks else "no response yet"

        raw = guarded(
            llm.stream(request),
            marks.clock,
            hop="llm",
            gap_ms=limits.llm_content_ms,
            total_ms=limits.llm_reply_ms,
            counts=_has_text,
            what="content",
            detail=opened,
        )
        # llm.first_chunk: any chunk, even the role-only one (vLLM's TTFT); llm.first_token: text.
        chunks = stamped(raw, marks, "llm.first_chunk")
        stream = stamped(chunks, marks, "llm.first_token", "llm.done", _has_text)
        room = limits.max_reply_chars
        try:
            async for delta in stream:
                if delta.usage is not None:
                    result.usage = delta.usage
                if delta.server_timing is not None:
                    result.server_timing = delta.server_timing
                if not delta.text:
                    continue
                text = delta.text[:room]
                room -= len(text)
                if text:
                    result.token_chunks += 1
                    result.chunk_ns.append(marks.now_ns())
                    for phrase in chunker.push(text):
                        _release(phrase, marks, result, phrases)
                if len(text) < len(delta.text):
                    # The backend went past max_tokens (or has none): the reply ends here.
                    result.truncated = "max_reply_chars"
                    marks.stamp("llm.done")
                    break
        finally:
            await stream.aclose()
        for phrase in chunker.flush():
            _release(phrase, marks, result, phrases)
        phrases.put_nowait(None)
        await speaker
    finally:
        if not speaker.done():
            speaker.cancel()
            with contextlib.suppress(asyncio.CancelledError, BackendError):
                await speaker
    conversation.record(result.transcript, result.reply)


async def _final_transcript(
    asr: ASR, end_sample: int, hint: Script | None, prefix: str
) -> tuple[str, dict[str, Any] | None]:
    """The turn's final transcript, ``prefix`` first, and the ASR's finalize stats."""
    text = await asr.finalize(end_sample, hint)
    # Optional, read right after finalize: a streaming ASR's partials and speculation.
    stats = asr.last_stats if isinstance(asr, ASRStats) else None
    return (f"{prefix} {text}".strip() if prefix else text), stats


def _release(phrase: str, marks: TurnMarks, result: TurnResult, queue: asyncio.Queue[Any]) -> None:
    marks.stamp("llm.first_phrase")
    result.phrases.append(phrase)
    queue.put_nowait(phrase)


async def _speak(
    turn: int,
    phrases: asyncio.Queue[str | None],
    marks: TurnMarks,
    result: TurnResult,
    tts: TTS,
    audio: AudioOut,
    resample: PhraseResampler | None,
    send: SendMessage,
    tts_audio_ms: float,
) -> None:
    """Synthesise phrases in order and play them out.

    Synthesis runs ahead of playout: phrase N+1 is synthesised while phrase N
    is still being paced out to the client, as a real agent must, or every
    phrase boundary would add the TTS's time to first audio as a silence.
    """
    clips: asyncio.Queue[tuple[str, PCM | None] | None] = asyncio.Queue()
    synthesis = asyncio.create_task(_synthesize(phrases, clips, marks, tts, resample, tts_audio_ms))
    try:
        await _play(turn, clips, marks, result, audio, send)
        await synthesis  # re-raises a TTS failure
    finally:
        if not synthesis.done():
            synthesis.cancel()
            with contextlib.suppress(asyncio.CancelledError, BackendError):
                await synthesis


async def _synthesize(
    phrases: asyncio.Queue[str | None],
    clips: asyncio.Queue[tuple[str, PCM | None] | None],
    marks: TurnMarks,
    tts: TTS,
    resample: PhraseResampler | None,
    tts_audio_ms: float,
) -> None:
    """TTS each phrase as soon as it is released; ``(phrase, None)`` ends a phrase."""
    try:
        number = 0
        while (phrase := await phrases.get()) is not None:
            marks.stamp("tts.request")
            number += 1
            audio = guarded(
                tts.synthesize(phrase),
                marks.clock,
                hop="tts",
                gap_ms=tts_audio_ms,
                what=f"audio for phrase {number}",
            )
            async for pcm in stamped(audio, marks, "tts.first_audio"):
                clips.put_nowait((phrase, resample.chunk(pcm) if resample is not None else pcm))
            if resample is not None:
                clips.put_nowait((phrase, resample.end()))
            clips.put_nowait((phrase, None))
    finally:
        clips.put_nowait(None)  # also on failure, so playout never waits forever


async def _play(
    turn: int,
    clips: asyncio.Queue[tuple[str, PCM | None] | None],
    marks: TurnMarks,
    result: TurnResult,
    audio: AudioOut,
    send: SendMessage,
) -> None:
    def audio_sent(t_ns: int) -> None:
        # Stamped per frame, not after write() returns: a barge-in that cancels
        # the first write must not lose the mark of audio that did go out.
        marks.stamp_at("server.first_audio_sent", t_ns)

    announced = False
    while (clip := await clips.get()) is not None:
        phrase, pcm = clip
        if pcm is None:  # the phrase is complete
            if not announced:
                await send(AgentText(turn=turn, text=phrase))
            announced = False
            result.spoken_phrases += 1
            continue
        sent = await audio.write(pcm, audio_sent)
        if sent is not None and not announced:
            # Text goes after the phrase's first audio: audio is the critical path.
            await send(AgentText(turn=turn, text=phrase))
            announced = True
    # Only the response's last frame may be short: a phrase's tail waits for the
    # next phrase's audio, so the stream stays in whole frames.
    await audio.flush(audio_sent)
