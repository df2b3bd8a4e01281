"""One websocket connection to the agent: handshake, upstream audio, turns.

The receive loop is the session's only reader. Audio frames go to the ASR and
the VAD; VAD events start a turn's response (end of turn) or interrupt the
current one (speech start while the agent is busy or audible: barge-in). Which
turn, and whether to interrupt, is decided by the session's :class:`TurnBook`;
the session carries out its decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from agent import __version__
from agent.audio import PhraseResampler, bytes_to_pcm
from agent.clock import Clock
from agent.errors import BackendError, ProtocolError, VltError
from agent.server.audio_out import AudioOut
from agent.server.limits import ServerLimits
from agent.server.orchestrator import Conversation, TurnMarks, TurnResult, respond
from agent.server.turn_book import CONTINUATION, ContinueTurn, StartTurn, TurnBook
from agent.server.warm_up import warm_up_stages
from agent.stages.end_of_turn import HearsTranscripts, SemanticVAD
from agent.stages.interfaces import Closable, PartialTranscripts, SessionContext, VadEvent
from agent.stages.pipeline import Pipeline
from agent.wire.json_guard import clip
from agent.wire.protocol import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_POLICY_VIOLATION,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_UNSUPPORTED_DATA,
    CLOSE_UNSUPPORTED_VERSION,
    PROTOCOL_VERSION,
    SUPPORTED_SAMPLE_RATES,
    Bye,
    Error,
    Hello,
    Interrupt,
    MarkList,
    Message,
    Ping,
    Pong,
    ResponseDone,
    Script,
    Transcript,
    check_pcm_frame,
    decode,
    encode,
)

if TYPE_CHECKING:
    from agent.telemetry.publisher import SessionTelemetry, Telemetry

__all__ = ["AgentSession"]

log = logging.getLogger("vlt.server")

_FRAME_MS_CHOICES = (10, 20, 30, 40, 60)
_ERROR_CLOSE_TIMEOUT_S = 1.0
#: Client ``error`` messages logged per session: a flood of them must not flood the log.
_CLIENT_ERRORS_LOGGED = 10
_CLOSE_FOR_CODE = {
    "unsupported_version": CLOSE_UNSUPPORTED_VERSION,
    "unsupported_format": CLOSE_UNSUPPORTED_DATA,
    # The client did nothing wrong: a stage could not be built on this server.
    "backend_unavailable": CLOSE_INTERNAL_ERROR,
    # A limit of ServerLimits: the messages were well-formed, but too many, too big or too few.
    "idle_timeout": CLOSE_POLICY_VIOLATION,
    "too_many_scripts": CLOSE_POLICY_VIOLATION,
    "script_too_large": CLOSE_POLICY_VIOLATION,
    "audio_ahead": CLOSE_POLICY_VIOLATION,
}


class AgentSession:
    def __init__(
        self,
        ws: ServerConnection,
        pipeline: Pipeline,
        clock: Clock,
        session_id: str,
        limits: ServerLimits | None = None,
        telemetry: Telemetry | None = None,
    ):
        self.ws = ws
        self.pipeline = pipeline
        self.clock = clock
        self.session_id = session_id
        self.limits = limits or ServerLimits()
        self._book = TurnBook()
        self._first_audio_ns: int | None = None  # when the first upstream frame arrived
        self._client_errors = 0  # error messages the client sent
        self._response: asyncio.Task[None] | None = None
        self._interrupt_reason = ""
        # Per turn: the final transcript of an attempt stopped (the user resumed) while
        # its ASR was still finalizing; the continuation waits for those words.
        self._unheard: dict[int, asyncio.Future[tuple[str, dict[str, Any] | None]]] = {}
        # The semantic end of turn: when its model started on the current pause, and
        # each turn's last decision (probability, text verdict, window) for its record.
        self._turn_check_ns: int | None = None
        self._end_of_turn: dict[int, dict[str, Any]] = {}
        self._sample = 0  # upstream samples received so far
        self._rate = pipeline.audio.sample_rate  # the session's, once hello has fixed it
        # Built after the handshake, which may fail first: until then, none.
        self._stages: dict[str, Any] = {}
        self._audio: AudioOut | None = None
        self._resample: PhraseResampler | None = None
        self._telemetry: SessionTelemetry | None = None
        if telemetry is not None:
            self._telemetry = telemetry.session("agent")
            self._telemetry.manifest(
                {"agent_session": session_id, "pipeline": pipeline.name, "description": pipeline.description}
            )

    async def run(self) -> None:
        try:
            await self._serve()
        except ProtocolError as exc:
            # A client that broke a rule may not read our close frame either (a flood
            # fills its socket): its slot is freed within a second, not websockets' 10.
            self.ws.close_timeout = _ERROR_CLOSE_TIMEOUT_S
            log.info(
                "session %s: protocol error: %s",
                self.session_id,
                clip(str(exc), self.limits.max_logged_chars),
            )
            with contextlib.suppress(ConnectionClosed):
                await self.send(Error(code=exc.code, message=exc.reason))
                await self.ws.close(_CLOSE_FOR_CODE.get(exc.code, CLOSE_PROTOCOL_ERROR), exc.code)
        except ConnectionClosed:
            log.info("session %s: client went away", self.session_id)
        except Exception as exc:
            log.exception("session %s: internal error", self.session_id)
            with contextlib.suppress(ConnectionClosed):
                await self.send(Error(code="internal_error", message=repr(exc)))
                await self.ws.close(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            await self._stop_response("session closed")
            await self._close_stages()
            if self._telemetry is not None:
                await self._telemetry.aclose()

    async def _close_stages(self) -> None:
        # Optional hook: a stage holding a resource (the openai LLM's HTTP client)
        # is Closable; it is closed once, when the session ends.
        for role, stage in self._stages.items():
            if not isinstance(stage, Closable):
                continue
            try:
                await stage.aclose()
            except Exception:
                log.exception("session %s: closing the %s stage failed", self.session_id, role)

    async def send(self, message: Message) -> None:
        await self.ws.send(encode(message))

    async def _serve(self) -> None:
        hello = await self._handshake()
        rate, frame_ms = self._format(hello)
        self._rate = rate
        frame_samples = rate * frame_ms // 1000
        ctx = SessionContext(
            clock=self.clock, sample_rate=rate, frame_samples=frame_samples, scripts=self._book.scripts
        )
        try:
            stages = {role: spec.entry.build(spec.config, ctx) for role, spec in self.pipeline.stages.items()}
        except VltError as exc:
            raise ProtocolError("backend_unavailable", str(exc)) from None
        self._stages = stages
        try:
            warm = await warm_up_stages(stages, self.clock)
        except VltError as exc:
            raise ProtocolError("backend_unavailable", str(exc)) from None
        self._audio = AudioOut(self.ws.send, self.clock, rate, frame_samples, self.pipeline.output.lead_ms)
        tts_rate = stages["tts"].sample_rate
        self._resample = PhraseResampler(tts_rate, rate) if tts_rate != rate else None
        conv = self.pipeline.conversation
        self._conversation = Conversation(conv.system_prompt, conv.max_history_turns)
        await self.send(
            Hello(
                protocol=PROTOCOL_VERSION,
                sample_rate=rate,
                frame_ms=frame_ms,
                role="agent",
                software=f"vlt/{__version__}",
                session=self.session_id,
                pipeline={
                    "name": self.pipeline.name,
                    "description": self.pipeline.description,
                    "warm_up": warm.as_dict(),
                },
            )
        )
        max_bytes = rate * 2  # up to one second of audio per frame
        vad, asr = stages["vad"], stages["asr"]
        # Optional: a streaming ASR's partial transcripts. Polling never waits for
        # inference (decodes run off the loop), so the receive loop is not held up.
        partials = asr if isinstance(asr, PartialTranscripts) else None
        while (data := await self._receive()) is not None:
            if isinstance(data, bytes):
                check_pcm_frame(data, max_bytes)
                self._check_audio_ahead(rate, len(data) // 2)
                pcm = bytes_to_pcm(data)
                asr.feed(pcm, self._sample)
                events = vad.process(pcm, self._sample)
                self._sample += len(pcm)
                for event in events:
                    await self._on_vad(event)
                if partials is not None and (partial := partials.poll_partial()) is not None:
                    if isinstance(vad, HearsTranscripts):
                        vad.hear(partial)  # the semantic end of turn judges the text too
                    turn = self._book.partial_turn(self._sample)
                    await self.send(Transcript(turn=turn, text=partial, final=False))
            else:
                received = self.clock.now_ns()
                await self._on_control(decode(data, self.limits.max_json_depth), received)

    async def _receive(self) -> str | bytes | None:
        """The next frame; None once the client closed normally. Silence past
        ``idle_timeout_s`` ends the session: an honest client never stops sending audio."""
        idle_s = self.limits.idle_timeout_s
        try:
            async with asyncio.timeout(idle_s):
                return await self.ws.recv()
        except TimeoutError:
            raise ProtocolError("idle_timeout", f"nothing received for {idle_s:g} s") from None
        except ConnectionClosedOK:
            return None

    def _check_audio_ahead(self, rate: int, samples: int) -> None:
        """Pending audio is bounded: upstream audio may not run ahead of the session's clock."""
        now = self.clock.now_ns()
        if self._first_audio_ns is None:
            self._first_audio_ns = now
        ahead_s = (self._sample + samples) / rate - (now - self._first_audio_ns) / 1e9
        if ahead_s > self.limits.max_audio_ahead_s:
            raise ProtocolError(
                "audio_ahead",
                f"upstream audio is {ahead_s:.1f} s ahead of real time; at most "
                f"{self.limits.max_audio_ahead_s:g} s (send audio as it is captured)",
            )

    async def _handshake(self) -> Hello:
        timeout_s = self.limits.handshake_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                first = await self.ws.recv()
        except TimeoutError:
            raise ProtocolError("handshake_timeout", f"no hello within {timeout_s:g} s") from None
        if isinstance(first, bytes):
            raise ProtocolError("hello_required", "the first message must be a hello text frame")
        hello = decode(first, self.limits.max_json_depth)
        if not isinstance(hello, Hello):
            raise ProtocolError("hello_required", f"the first message must be hello, not {hello.TYPE}")
        if hello.protocol != PROTOCOL_VERSION:
            raise ProtocolError(
                "unsupported_version",
                f"protocol {hello.protocol} is not supported; this server speaks {PROTOCOL_VERSION}",
            )
        self._format(hello)  # validates
        return hello

    def _format(self, hello: Hello) -> tuple[int, int]:
        """The session's sample rate and frame length: the client's, else the pipeline's."""
        rate = hello.sample_rate if hello.sample_rate is not None else self.pipeline.audio.sample_rate
        frame_ms = hello.frame_ms if hello.frame_ms is not None else self.pipeline.audio.frame_ms
        if rate not in SUPPORTED_SAMPLE_RATES:
            rates = ", ".join(map(str, SUPPORTED_SAMPLE_RATES))
            raise ProtocolError("unsupported_format", f"sample_rate {rate}; supported: {rates}")
        if frame_ms not in _FRAME_MS_CHOICES:
            choices = ", ".join(map(str, _FRAME_MS_CHOICES))
            raise ProtocolError("unsupported_format", f"frame_ms {frame_ms}; supported: {choices}")
        return rate, frame_ms

    async def _on_control(self, message: Message, received_ns: int) -> None:
        if isinstance(message, Ping):
            await self.send(Pong(t0_ns=message.t0_ns, t1_ns=received_ns, t2_ns=self.clock.now_ns()))
        elif isinstance(message, Script):
            self._add_script(message)
        elif isinstance(message, Interrupt):
            reason = clip(message.reason, self.limits.max_logged_chars)  # echoed in response_done
            await self._stop_response(reason or "client interrupt")
        elif isinstance(message, Bye):
            await self.ws.close()
        elif isinstance(message, Error):
            self._client_errors += 1
            if self._client_errors <= _CLIENT_ERRORS_LOGGED:
                log.warning(
                    "session %s: client reported %s: %s%s",
                    self.session_id,
                    clip(message.code, 60),
                    clip(message.message, self.limits.max_logged_chars),
                    "; further client errors of this session are not logged"
                    if self._client_errors == _CLIENT_ERRORS_LOGGED
                    else "",
                )
        else:
            raise ProtocolError("unexpected_message", f"a client may not send {message.TYPE}")

    def _add_script(self, script: Script) -> None:
        limits = self.limits
        chars = len(script.text) + len(script.reply or "")
        if chars > limits.max_script_chars:
            raise ProtocolError(
                "script_too_large",
                f"script for turn {script.turn} holds {chars:,} characters; "
                f"at most {limits.max_script_chars:,}",
            )
        self._book.script(script)
        # No VAD event can fall before sample 0 either: scripts shadowed there go too.
        self._book.scripts.prune(max(0, self._sample - round(limits.script_retention_s * self._rate)))
        if len(self._book.scripts) > limits.max_scripts:
            raise ProtocolError(
                "too_many_scripts",
                f"more than {limits.max_scripts} scripts held at once (announced ahead of the audio, "
                f"or within the last {limits.script_retention_s:g} s of it)",
            )

    async def _on_vad(self, event: VadEvent) -> None:
        now = self.clock.now_ns()
        if event.kind == "speech_start":
            audible_until = self._audio.playout_end_ns if self._audio is not None else 0
            stop = self._book.speech_start(event.sample, now, audible_until)
            if stop is not None:
                await self._stop_response(stop.reason)
            return
        if event.kind == "turn_check":
            self._turn_check_ns = now
            return
        turn = self._book.end_of_turn(event.sample, now)
        on_stamp = self._telemetry.mark if self._telemetry is not None else None
        marks = TurnMarks(self.clock, turn.turn, turn.marks, on_stamp)
        vad = self._stages.get("vad")
        if isinstance(vad, SemanticVAD) and vad.checks:
            # VAD silence = speech end → turn.check; turn model = turn.check → turn.complete.
            if self._turn_check_ns is not None:
                marks.stamp_at("turn.check", self._turn_check_ns)
            marks.stamp_at("turn.complete", now)
            self._end_of_turn[turn.turn] = vad.checks[-1].summary(vad.vad_rate)
        self._turn_check_ns = None
        await self._stop_response(turn.stop_reason)
        self._book.reply_started(turn.turn)
        self._response = asyncio.create_task(self._run_turn(turn, marks))

    async def _stop_response(self, reason: str) -> None:
        task = self._response
        if task is not None and not task.done():
            self._interrupt_reason = reason
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Also here: a task cancelled before its first step never runs _run_turn's finally.
        self._book.reply_ended()
        self._audio_discard()

    def _audio_discard(self) -> None:
        """Forget audio of a response that was cut short (after its task has stopped)."""
        if self._audio is not None:
            self._audio.discard()
            self._audio.playout_end_ns = 0
        if self._resample is not None:
            self._resample.reset()

    async def _run_turn(self, turn: StartTurn | ContinueTurn, marks: TurnMarks) -> None:
        try:
            if isinstance(turn, ContinueTurn):
                turn = await self._words_so_far(turn)
            await self._answer(turn, marks)
        finally:
            # In the task's last step, so the book and task.done() never disagree.
            self._book.reply_ended()

    async def _words_so_far(self, decision: ContinueTurn) -> ContinueTurn:
        """``decision`` with every word heard before its pause as the prefix: if the
        attempt the user cut short was still finalizing, its transcript first."""
        pending = self._unheard.get(decision.turn)
        if pending is None:
            return decision
        try:
            text, _ = await asyncio.shield(pending)  # cancelled here: it stays for the next attempt
        except BackendError as exc:
            log.warning(
                "session %s turn %d: ASR of the words before a pause failed: %s",
                self.session_id,
                decision.turn,
                exc,
            )
            text = ""
        except asyncio.CancelledError:
            if not pending.cancelled():
                raise  # this attempt was stopped: the words wait for the next one
            text = ""  # the ASR missed its deadline for them (the orchestrator gave up)
        del self._unheard[decision.turn]
        self._book.heard(decision.turn, text)
        return dataclasses.replace(decision, prefix=self._book.words_so_far(decision.turn))

    async def _answer(self, decision: StartTurn | ContinueTurn, marks: TurnMarks) -> None:
        turn = decision.turn
        assert self._audio is not None  # built before the receive loop that starts turns
        result = TurnResult()
        status, reason = "ok", ""
        try:
            await respond(
                turn=turn,
                end_sample=decision.end_sample,
                hint=decision.script,
                marks=marks,
                result=result,
                asr=self._stages["asr"],
                llm=self._stages["llm"],
                tts=self._stages["tts"],
                chunker_config=self.pipeline.chunker,
                conversation=self._conversation,
                audio=self._audio,
                resample=self._resample,
                send=self.send,
                transcript_prefix=decision.prefix if isinstance(decision, ContinueTurn) else "",
                limits=self.pipeline.limits,
            )
        except asyncio.CancelledError:
            self._book.heard(turn, result.transcript)
            if self._interrupt_reason == CONTINUATION:
                if not result.transcript and result.final is not None and not result.final.cancelled():
                    self._unheard[turn] = result.final  # stopped while the ASR finalized
                # The user was not done: the turn restarts at the next end of turn, so
                # the client and the chat history see one answer to the whole utterance.
                raise
            status, reason = "interrupted", self._interrupt_reason
            marks.stamp("server.interrupted")
            self._conversation.record(result.transcript, result.reply)
        except BackendError as exc:
            status, reason = "failed", str(exc)
            log.warning("session %s turn %d failed: %s", self.session_id, turn, exc)
        except ConnectionClosed:
            return  # the client is gone; the receive loop ends the session
        except Exception as exc:
            # A bug in a stage must not leave the client waiting for a reply that
            # never comes: report the turn as failed and keep the session going.
            log.exception("session %s turn %d: internal error", self.session_id, turn)
            status, reason = "failed", f"internal error: {exc!r}"
        self._book.heard(turn, result.transcript)
        marks.stamp("server.response_done")
        stats = result.stats()
        stats["transcript"] = result.transcript
        stats["reply"] = result.reply
        if (splits := self._book.vad_splits(turn)) is not None:
            stats["vad_splits"] = splits
        if (verdict := self._end_of_turn.get(turn)) is not None:
            stats["end_of_turn"] = verdict
        with contextlib.suppress(ConnectionClosed):
            await self.send(MarkList(turn=turn, marks=marks.marks))
            await self.send(ResponseDone(turn=turn, status=status, reason=reason, stats=stats))
