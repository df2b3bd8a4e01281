"""The live client: a person talks to the agent through a microphone and a speaker.

Where the replay client knows exactly where its scripted speech starts and
ends, a live session has to find the user's speech in what the microphone
captured: a client-side VAD (Silero, as the agent's default) marks
``user.speech_start`` / ``user.speech_end`` at the receive time of the samples
where the speech started and ended. The agent numbers turns (its VAD decides
the end of turn); each agent turn is matched to the latest utterance the
client heard end before the agent declared the end of turn.

Voice-to-voice *at the listener* ends when the turn's first audible agent
sample is handed to the output device (``client.first_audio_played``: the time
of the device callback that took it, plus its position in the block). The
replay client's figure — the sample would play on arrival
(``client.first_audio_received``) — is kept too; the hop between the two,
``playout``, is what the jitter buffer and the device callback add.

Echo: by default the session is half-duplex — while the agent is audible (and
``echo_tail_ms`` after), the microphone's audio is replaced by silence, so a
loudspeaker cannot make the agent interrupt itself. With ``barge_in`` (meant
for headphones) the microphone stays open; speech detected while the agent is
audible flushes the playout buffer at once, sends ``interrupt``, and the stop
latency (interrupting speech start → last agent sample handed to the device)
is recorded with the interrupting turn.

Every finished turn is appended (fsynced) to the run folder's ``turns.jsonl``;
the summary, manifest and stereo recording are written when the session ends,
however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from websockets.exceptions import ConnectionClosed

from agent.audio import PCM, PhraseResampler, find_onset, frame_rms_dbfs, pcm_to_bytes
from agent.client.devices.live_audio import Microphone, Speaker
from agent.client.devices.playout_buffer import PlayoutBuffer, Pulled
from agent.client.dispatcher import TurnMessage
from agent.client.hud import HudState
from agent.client.lifecycle import ClientRun, client_run
from agent.client.live_turn import PASSING_STATUSES, LiveTurn, Utterance, build_live_record
from agent.client.recorder import StereoRecorder
from agent.client.speech_end import RecentAudio
from agent.clock import NS_PER_S, Clock
from agent.errors import ConnectError
from agent.metrics.clocksync import OffsetEstimate
from agent.metrics.records import DemoOptions, Manifest, ManifestExtra, Summary, TurnPlayout, TurnRecord
from agent.metrics.results import metric_stats, metric_values
from agent.metrics.timeline import LISTENER_V2V_END
from agent.stages.interfaces import SessionContext
from agent.wire.protocol import (
    AgentText,
    Bye,
    Error,
    Interrupt,
    MarkList,
    ResponseDone,
    Transcript,
)

if TYPE_CHECKING:
    from agent.stages.vad_silero import EnergyVAD, SileroVAD
    from agent.telemetry.publisher import Telemetry

__all__ = ["PASSING_STATUSES", "LiveOptions", "LiveResult", "LiveSession", "live_session", "make_client_vad"]

log = logging.getLogger("vlt.live")


@dataclass(frozen=True, slots=True)
class LiveOptions:
    #: Keep the microphone open while the agent speaks, and let speech interrupt it.
    barge_in: bool = False
    #: End the session after this many finished turns / seconds (None: until stopped).
    turns: int | None = None
    duration_s: float | None = None
    #: Jitter buffer: agent audio queued before a response starts playing.
    prebuffer_ms: float = 40.0
    #: Half-duplex: the microphone stays muted this long after the agent's last sample.
    echo_tail_ms: float = 200.0
    #: A turn the agent opened but never finished is recorded as no_response after this.
    reply_timeout_ms: float = 15_000.0
    #: Client VAD: ``silero`` (the agent default's) or ``energy``.
    vad: str = "silero"
    clock_sync_rounds: int = 8


@dataclass
class LiveResult:
    run_dir: Path
    records: list[TurnRecord]
    summary: Summary
    offset: OffsetEstimate | None
    #: The session's origin on the client clock (``marks_ns`` count from it).
    origin_ns: int


def make_client_vad(kind: str, clock: Clock, rate: int, frame: int) -> tuple[SileroVAD | EnergyVAD, str]:
    """The client's VAD and a note when it had to fall back to ``energy``."""
    from agent.stages.vad_silero import EnergyVAD, EnergyVADConfig, SileroVAD, SileroVADConfig

    ctx = SessionContext(clock, rate, frame)
    if kind == "silero":
        try:
            return SileroVAD(SileroVADConfig(), ctx), ""
        except Exception as exc:  # any reason Silero cannot load: say so, fall back to energy
            return EnergyVAD(EnergyVADConfig(), ctx), f"client VAD: energy ({exc})"
    return EnergyVAD(EnergyVADConfig(), ctx), ""


class LiveSession:
    def __init__(
        self,
        run: ClientRun,
        mic: Microphone,
        speaker: Speaker,
        options: LiveOptions,
        state: HudState,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.run = run
        self.ws = run.ws
        self.clock = clock = run.clock
        self.rate = rate = run.sample_rate
        self.frame = frame = rate * run.frame_ms // 1000
        self.mic = mic
        self.speaker = speaker
        self.options = options
        self.state = state
        self.on_change = on_change
        self.buffer = PlayoutBuffer(round(options.prebuffer_ms * speaker.rate / 1000))
        self.recorder = StereoRecorder(rate)
        self.vad, notice = make_client_vad(options.vad, clock, rate, frame)
        if notice:
            state.notice = notice
        self.turns: dict[int, LiveTurn] = {}
        self.records: list[TurnRecord] = []
        self.utterances: list[Utterance] = []
        self.finished = asyncio.Event()
        #: Why the agent ended the session (empty: it did not).
        self.closed_reason = ""
        self._responding: int | None = None  # the turn incoming agent audio belongs to
        self._arrival_end_ns = 0  # the replay client's playout model: arrival order
        self._heard_until_ns = 0  # the device's last agent sample (for muting and status)
        self._playing_turn: int | None = None
        self._chunks: dict[int, tuple[PCM, int]] = {}  # chunk id → (session-rate pcm, turn)
        self._sample = 0  # microphone samples so far
        self._frame_times: list[tuple[int, int]] = []  # (first sample, receive time of its end)
        self._recent = RecentAudio(rate)  # for the speech end at the last audible sample
        self._awaiting_reply = False
        self._muted_frames = 0
        dispatcher = run.dispatcher
        dispatcher.on_turn(MarkList, self._turn, self._on_marks)
        dispatcher.on_turn(Transcript, self._turn, self._on_transcript)
        dispatcher.on_turn(AgentText, self._turn, self._on_agent_text)
        dispatcher.on_turn(ResponseDone, self._turn, self._on_done)
        dispatcher.on(Error, self._on_error)
        dispatcher.after_each(on_change)

    # -- time of microphone samples ------------------------------------------

    def _sample_time(self, sample: int) -> int:
        """When microphone sample ``sample`` was received (from its frame's receive time)."""
        for first, t_end in reversed(self._frame_times):
            if first <= sample:
                return t_end - (first + self.frame - sample) * NS_PER_S // self.rate
        first, t_end = self._frame_times[0]
        return t_end - (first + self.frame - sample) * NS_PER_S // self.rate

    # -- microphone ----------------------------------------------------------------

    def agent_audible(self, now: int) -> bool:
        return self.buffer.active or now < self._heard_until_ns

    async def microphone(self) -> None:
        tail_ns = round(self.options.echo_tail_ms * 1e6)
        silence = np.zeros(self.frame, dtype=np.int16)
        async for pcm, t_end in self.mic.frames():
            now = self.clock.now_ns()
            muted = not self.options.barge_in and (self.buffer.active or now < self._heard_until_ns + tail_ns)
            sent = silence if muted else pcm
            self._muted_frames += muted
            await self.ws.send(pcm_to_bytes(sent))
            self.recorder.add_user(sent)
            first = self._sample
            self._sample += len(sent)
            self._frame_times.append((first, t_end))
            self._recent.add(first, sent)
            if len(self._frame_times) > 1000:  # 20 s: far more than a VAD decision lags
                del self._frame_times[:500]
            self.state.level_dbfs = None if muted else frame_rms_dbfs(pcm)
            for event in self.vad.process(sent, first):
                if event.kind == "speech_start":
                    self._on_speech_start()
                else:
                    self._on_speech_end()
            self._update_status()
            self.on_change()

    def _on_speech_start(self) -> None:
        segments = self.vad.endpointer.segments
        utt = Utterance(self._sample_time(segments[-1][0]))
        self.utterances.append(utt)
        self.state.partial = ""
        now = self.clock.now_ns()
        if self.options.barge_in and self.agent_audible(now):
            self._barge_in(utt, now)

    def _on_speech_end(self) -> None:
        if not self.utterances:
            return
        end = self.vad.endpointer.speech_end
        # At the last audible sample (the replay's -40 dBFS rule), not the VAD's window edge.
        audible = self._recent.audible_end(end)
        self.utterances[-1].end_ns = self._sample_time(audible if audible is not None else end)
        self._awaiting_reply = True

    def _barge_in(self, utt: Utterance, now: int) -> None:
        """Speech over the agent: silence the speaker now, and tell the agent to stop."""
        turn = self._playing_turn if self._playing_turn is not None else self._responding
        self.buffer.flush()
        self._chunks.clear()
        stopped = max(now, self._heard_until_ns)
        self._heard_until_ns = now
        self._arrival_end_ns = now
        ct = self.turns.get(turn) if turn is not None else None
        if ct is not None:
            ct.cut = True
            ct.marks["client.playback_stopped"] = stopped
            ct.drained = True
        stop_ms = (stopped - utt.start_ns) / 1e6
        # The flush figures are filled in when the record is built (agent.client.barge_in).
        utt.barge_in = {"interrupted_turn": turn, "stop_ms": stop_ms, "received_ms": None, "flush_ms": None}
        utt.heard_end_ns = stopped
        self.state.barge_in_stop_ms = stop_ms
        asyncio.get_running_loop().create_task(self._send_interrupt())

    async def _send_interrupt(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.run.send(Interrupt(reason="barge-in (client VAD)"))

    # -- receiving -------------------------------------------------------------

    def _turn(self, message: TurnMessage, now: int) -> LiveTurn:
        """The turn ``message`` is about; the agent numbers them, so a new number opens one."""
        ct = self.turns.get(message.turn)
        if ct is None:
            ct = self.turns[message.turn] = LiveTurn(message.turn, now, last_activity_ns=now)
            asyncio.get_running_loop().create_task(self._watch(ct))
        ct.last_activity_ns = now
        return ct

    def on_audio(self, pcm: PCM, now: int) -> None:
        self._on_audio(pcm, now)
        self.on_change()

    def _on_audio(self, pcm: PCM, now: int) -> None:
        if self._responding is None:
            log.debug("agent audio outside a response")
            return
        ct = self.turns[self._responding]
        ct.last_frame_ns = now
        if ct.cut:
            return  # the listener barged in: the rest of this response is not played
        ct.last_activity_ns = now
        ct.marks.setdefault("client.first_frame_received", now)
        ct.reply.audio_samples += len(pcm)
        start = max(now, self._arrival_end_ns)
        self._arrival_end_ns = start + len(pcm) * NS_PER_S // self.rate
        onset = None
        if "client.first_audio_received" not in ct.marks:
            onset = find_onset(pcm, self.rate)
            if onset is not None:
                ct.marks["client.first_audio_received"] = start + onset * NS_PER_S // self.rate
        self._push(ct, pcm, onset)

    def _push(self, ct: LiveTurn, pcm: PCM, onset: int | None) -> None:
        device_pcm = pcm
        if self.speaker.rate != self.rate:
            if ct.resampler is None:
                ct.resampler = PhraseResampler(self.rate, self.speaker.rate)
            device_pcm = ct.resampler.chunk(pcm)
            if onset is not None:
                onset = min(onset * self.speaker.rate // self.rate, max(len(device_pcm) - 1, 0))
        chunk_id = self.buffer.push(device_pcm, ct.turn, onset)
        self._chunks[chunk_id] = (pcm, ct.turn)

    def _on_marks(self, ct: LiveTurn, message: MarkList, now: int) -> None:
        ct.reply.add_marks(message)

    def _on_transcript(self, ct: LiveTurn, message: Transcript, now: int) -> None:
        ct.reply.add_transcript(message)
        if message.final:
            self._responding = ct.turn
            self.state.transcript, self.state.partial, self.state.agent_text = message.text, "", ""
        else:
            self.state.partial = message.text

    def _on_agent_text(self, ct: LiveTurn, message: AgentText, now: int) -> None:
        ct.reply.add_text(message)
        self._responding = ct.turn
        self.state.agent_text = ct.reply.streamed_text

    def _on_error(self, message: Error, now: int) -> None:
        self.state.notice = f"agent error {message.code}: {message.message}"

    def _on_done(self, ct: LiveTurn, message: ResponseDone, now: int) -> None:
        ct.reply.apply_done(message)
        ct.done = True
        if self._responding == ct.turn:
            self._responding = None
        if ct.resampler is not None and not ct.cut:
            tail = ct.resampler.end()
            if len(tail):
                self.buffer.push(tail, ct.turn)
        if self.buffer.end(ct.turn) or ct.cut:
            ct.drained = True
        self._maybe_record(ct)

    def on_played(self, t_ns: int, pulled: Pulled) -> None:
        """The device took a block at ``t_ns`` (called on the loop, after the callback)."""
        dev_rate = self.speaker.rate
        for event in pulled.events:
            at = t_ns + event.offset * NS_PER_S // dev_rate
            ct = self.turns.get(event.turn)
            if event.kind == "chunk":
                self._playing_turn = event.turn
                end = at + event.length * NS_PER_S // dev_rate
                self._heard_until_ns = max(self._heard_until_ns, end)
                self._record_agent(event.chunk_id, event.start, event.length, at)
            elif event.kind == "onset" and ct is not None:
                ct.marks.setdefault(LISTENER_V2V_END, at)
                self._awaiting_reply = False
            elif event.kind == "drained" and ct is not None:
                ct.drained = True
                self._maybe_record(ct)
        self._update_status()
        self.on_change()

    def _record_agent(self, chunk_id: int, start: int, length: int, at: int) -> None:
        """Place what the device played on the recording's agent track."""
        entry = self._chunks.get(chunk_id)
        if entry is None:
            return
        pcm, _turn = entry
        ratio = self.rate / self.speaker.rate
        a, b = round(start * ratio), round((start + length) * ratio)
        position = (at - self.run.origin_ns) * self.rate // NS_PER_S
        self.recorder.add_agent(position, pcm[a:b])
        if b >= len(pcm):
            del self._chunks[chunk_id]

    # -- turns -------------------------------------------------------------------

    async def _watch(self, ct: LiveTurn) -> None:
        """Record a turn the agent opened but stopped answering (reply timeout)."""
        timeout_ns = round(self.options.reply_timeout_ms * 1e6)
        while not ct.recorded:
            due = ct.last_activity_ns + timeout_ns
            if ct.done:  # done, but its audio never finished playing (device stalled?)
                due = max(due, ct.last_activity_ns) + max(self.buffer.queued, 0) * NS_PER_S // max(
                    self.speaker.rate, 1
                )
            if self.clock.now_ns() >= due:
                if not ct.done:
                    ct.reply.end("no_response", f"no response within {self.options.reply_timeout_ms:g} ms")
                ct.done = ct.drained = True
                self._maybe_record(ct)
                return
            await self.clock.sleep_until(min(due, self.clock.now_ns() + NS_PER_S))

    def _maybe_record(self, ct: LiveTurn) -> None:
        if ct.recorded or not (ct.done and ct.drained):
            return
        ct.recorded = True
        playout: TurnPlayout = {
            "underruns_total": self.buffer.underruns,
            "input_latency_ms": self.mic.observed_latency_ms,
            "output_latency_ms": self.speaker.observed_latency_ms,
        }
        record = build_live_record(
            ct, self.utterances, self.run.offset, self.run.origin_ns, self.rate, playout, self.turns
        )
        self.records.append(record)
        self.run.writer.append_turn(record)
        self.state.turns.append(record)
        self._awaiting_reply = False
        if ct.reply.status == "interrupted" and ct.cut:
            self.state.agent_text = ""
        if self.options.turns is not None and len(self.records) >= self.options.turns:
            self.finished.set()
        self._update_status()
        self.on_change()

    def _update_status(self) -> None:
        now = self.clock.now_ns()
        if self.vad.endpointer.in_turn:
            status = "user speaking"
        elif self.buffer.active or now < self._heard_until_ns:
            status = "agent speaking"
        elif self._awaiting_reply or any(not t.recorded for t in self.turns.values()):
            status = "thinking"
        else:
            status = "listening"
        self.state.status = status

    # -- what the lifecycle asks of a client (agent.client.lifecycle.RunClient) --

    def stop(self) -> None:
        self.speaker.close()

    def final_records(self) -> list[TurnRecord]:
        self.finish_pending()
        return self.records

    def conclude(self, summary: Summary, manifest: Manifest, finished_utc: str) -> None:
        # The replay client's figure for the same turns (agent audio played on arrival).
        summary["metrics_ms"]["voice_to_voice_arrival"] = metric_stats(
            metric_values(self.records, "voice_to_voice_arrival")
        )
        summary["completed"] = not self.closed_reason
        manifest["devices"] = {"input": self.mic.describe(), "output": self.speaker.describe()}
        manifest["playout"] = {
            "underruns": self.buffer.underruns,
            "played_samples": self.buffer.played_samples,
            "dropped_samples": self.buffer.dropped_samples,
            "muted_frames": self._muted_frames,
        }
        manifest["finished_utc"] = finished_utc
        manifest["closed"] = self.closed_reason or None

    def finish_pending(self) -> None:
        """Record the turns still open when the session stops (their marks so far)."""
        for ct in list(self.turns.values()):
            if not ct.recorded and (ct.reply.server_marks or ct.marks):
                if not ct.done:
                    ct.reply.end("unfinished", "the session ended first")
                ct.done = ct.drained = True
                self._maybe_record(ct)


async def live_session(
    url: str,
    clock: Clock,
    run_dir: Path,
    make_audio: Callable[[int, int], tuple[Microphone, Speaker]],
    *,
    options: LiveOptions | None = None,
    state: HudState | None = None,
    on_change: Callable[[], None] = lambda: None,
    manifest_extra: ManifestExtra | None = None,
    telemetry: Telemetry | None = None,
) -> LiveResult:
    """Talk to the agent at ``url`` until ``options`` say stop, Ctrl-C, or the agent leaves.

    ``make_audio(sample_rate, frame_ms)`` opens the microphone and speaker once
    the agent has said which audio format the session uses.
    """
    opts = options or LiveOptions()
    state = state if state is not None else HudState(status="connecting", mode="", agent=url, devices="")
    async with client_run(url, clock, run_dir, telemetry=telemetry) as run:
        state.run_dir = str(run.writer.dir)
        mic, speaker = make_audio(run.sample_rate, run.frame_ms)
        session = LiveSession(run, mic, speaker, opts, state, on_change)
        options_manifest: DemoOptions = {
            "barge_in": opts.barge_in,
            "prebuffer_ms": opts.prebuffer_ms,
            "echo_tail_ms": opts.echo_tail_ms,
            "client_vad": opts.vad,
        }
        run.begin(session, "demo", {"options": options_manifest}, manifest_extra)
        await run.sync_clock(opts.clock_sync_rounds, at="start")
        run.fix_origin()
        speaker.start(session.buffer, session.on_played)
        microphone = run.spawn(session.microphone())
        run.manifest["devices"] = {"input": mic.describe(), "output": speaker.describe()}
        run.write_manifest()
        state.status = "listening"
        on_change()
        stops: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(session.finished.wait()),
            asyncio.ensure_future(run.wait_closed()),
        ]
        if opts.duration_s is not None:
            deadline = clock.now_ns() + round(opts.duration_s * 1e9)
            stops.append(asyncio.ensure_future(clock.sleep_until(deadline)))
        try:
            # A microphone that fails (device unplugged) ends the session with its error.
            await asyncio.wait([*stops, microphone], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for stop in stops:
                stop.cancel()
        if microphone.done():
            microphone.result()
        if run.closed_reason is not None:
            session.closed_reason = run.closed_reason
        else:
            with contextlib.suppress(ConnectionClosed):
                await run.send(Bye(reason="demo ended"))
    if session.closed_reason and not session.records:
        raise ConnectError(session.closed_reason)
    return LiveResult(run.writer.dir, session.records, run.summary, run.offset, run.origin_ns)
