"""The replay client: speaks a scenario into an agent and measures every turn.

It behaves like a caller on a phone line: the upstream audio is one continuous
stream of 20 ms frames paced in real time (silence between utterances), and the
agent's audio is "played" as it arrives. Everything the client measures comes
from what crosses the websocket, so it works against any agent that speaks the
protocol:

- ``user.speech_start`` / ``user.speech_end``: ground truth — where the
  scenario put speech in the stream, anchored to the send time of the frame
  carrying it (a frame is sent once its 20 ms have been "captured");
- ``client.first_frame_received``: arrival of the turn's first agent frame;
- ``client.first_audio_received``: when the first *audible* agent sample plays,
  found in the received audio itself (playout starts at arrival, or when the
  previous audio finishes);
- barge-in stop latency: the interrupting speech start → the end of the
  interrupted turn's audio as the caller hears it (its last audible sample as
  played out, buffered audio included), with the agent's stop → last frame received as
  ``barge_in_flush`` (agent.client.barge_in).

Server marks arrive per turn and are moved onto the client clock with the NTP
style offset estimate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from websockets.exceptions import ConnectionClosed

from agent.audio import PCM, find_onset, pcm_to_bytes
from agent.client.agent_reply import AgentReply
from agent.client.barge_in import barge_in_figures
from agent.client.caller_pacing import CallerPacer
from agent.client.dispatcher import TurnMessage
from agent.client.lifecycle import ClientRun, client_run
from agent.client.recorder import StereoRecorder
from agent.client.turn_record import client_marks, latency_ms, llm_tpot_ms, marks_since, stats_fields
from agent.client.user_speech import UserUtterance, render_user_audio
from agent.clock import NS_PER_S, Clock
from agent.config.scenario import Scenario, Turn
from agent.metrics.assertions import check_assertions
from agent.metrics.clocksync import OffsetEstimate
from agent.metrics.pacing import DEFAULT_LATE_MS, caller_warning
from agent.metrics.records import BargeIn, Expectation, Manifest, ManifestExtra, Summary, TurnRecord
from agent.metrics.timeline import analyze
from agent.metrics.wer import wer_counts
from agent.wire.protocol import (
    AgentText,
    Bye,
    Error,
    MarkList,
    ResponseDone,
    Script,
    Transcript,
    encode,
)

if TYPE_CHECKING:
    from agent.telemetry.publisher import Telemetry

__all__ = ["ReplayOptions", "ReplayResult", "replay"]

log = logging.getLogger("vlt.replay")

#: Silence recorded after the last reply, so the recording ends cleanly.
TAIL_MS = 300
#: A reply to a no-reply turn has ended once nothing of it arrived or played this long.
SETTLE_MS = 1000


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    #: None: take the agent's pipeline defaults (the server's hello states them).
    sample_rate: int | None = None
    frame_ms: int | None = None
    clock_sync_rounds: int = 8
    #: A turn with an upstream frame sent later than this (ms) is flagged (agent.metrics.pacing).
    late_ms: float = DEFAULT_LATE_MS


@dataclass
class ReplayResult:
    run_dir: Path
    records: list[TurnRecord]
    summary: Summary
    offset: OffsetEstimate | None
    completed: bool


@dataclass
class _ClientTurn:
    """What the client knows about one turn while it is in flight."""

    turn: Turn
    marks: dict[str, int] = field(default_factory=dict)
    reply: AgentReply = field(default_factory=AgentReply)
    last_frame_ns: int | None = None
    #: The last time anything of this turn's reply arrived (audio or a message).
    last_activity_ns: int | None = None
    playout_end_ns: int | None = None
    #: The end of the last audible agent sample of the turn, as played out.
    heard_end_ns: int | None = None
    speech_sent: asyncio.Event = field(default_factory=asyncio.Event)
    audible: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class _Replay:
    def __init__(
        self,
        run: ClientRun,
        scenario: Scenario,
        on_turn: Callable[[TurnRecord], None] | None,
        late_ms: float = DEFAULT_LATE_MS,
    ) -> None:
        self.run = run
        self.ws = run.ws
        self.clock = run.clock
        self.scenario = scenario
        self.rate = run.sample_rate
        self.frame = self.rate * run.frame_ms // 1000
        self.frame_ns = self.frame * NS_PER_S // self.rate
        self.on_turn = on_turn
        self.turns = [_ClientTurn(t) for t in scenario.turns]
        self.records: list[TurnRecord] = []
        self.recorder = StereoRecorder(self.rate)
        self.completed = False
        self._silence = np.zeros(self.frame, dtype=np.int16)
        self._silence_bytes = pcm_to_bytes(self._silence)
        self._speech: deque[tuple[_ClientTurn, UserUtterance, int]] = deque()
        self._replying: deque[_ClientTurn] = deque()  # speech sent, reply not finished
        self._playout_end_ns = 0
        self.pacing = CallerPacer(len(self.turns), late_ms)
        dispatcher = run.dispatcher
        dispatcher.on_turn(MarkList, self._turn, self._on_marks)
        dispatcher.on_turn(Transcript, self._turn, self._on_transcript)
        dispatcher.on_turn(AgentText, self._turn, self._on_agent_text)
        dispatcher.on_turn(ResponseDone, self._turn, self._on_response_done)
        dispatcher.on(Error, self._on_error)

    # -- what the lifecycle asks of a client (agent.client.lifecycle.RunClient) --

    def stop(self) -> None:
        pass  # no device to stop: the microphone is a task of the run

    def final_records(self) -> list[TurnRecord]:
        return self.records

    def conclude(self, summary: Summary, manifest: Manifest, finished_utc: str) -> None:
        summary["caller"] = self.pacing.run_pacing()
        summary["completed"] = manifest["completed"] = self.completed
        if self.scenario.assertions is not None:
            summary["assertions"] = check_assertions(self.scenario, self.records, summary)
        manifest["finished_utc"] = finished_utc

    # -- receiving ---------------------------------------------------------

    def on_audio(self, pcm: PCM, now: int) -> None:
        start = max(now, self._playout_end_ns)
        self._playout_end_ns = start + len(pcm) * NS_PER_S // self.rate
        self.recorder.add_agent((start - self.run.origin_ns) * self.rate // NS_PER_S, pcm)
        if not self._replying:
            log.debug("agent audio with no turn awaiting a reply")
            return
        ct = self._replying[0]
        ct.marks.setdefault("client.first_frame_received", now)
        ct.last_frame_ns = ct.last_activity_ns = now
        ct.playout_end_ns = self._playout_end_ns
        ct.reply.audio_samples += len(pcm)
        # The end of the last audible sample so far: where the caller stops hearing this
        # turn (a barge-in's stop), by the same rule as its onset.
        if (tail := find_onset(pcm[::-1], self.rate)) is not None:
            ct.heard_end_ns = start + (len(pcm) - tail) * NS_PER_S // self.rate
        if not ct.audible.is_set():
            onset = find_onset(pcm, self.rate)
            if onset is not None:
                ct.marks["client.first_audio_received"] = start + onset * NS_PER_S // self.rate
                ct.audible.set()

    def _turn(self, message: TurnMessage, now: int) -> _ClientTurn | None:
        """The scenario turn ``message`` is about (None, with a warning, if there is none)."""
        if not 0 <= message.turn < len(self.turns):
            log.warning("agent sent %s for unknown turn %d", message.TYPE, message.turn)
            return None
        ct = self.turns[message.turn]
        ct.last_activity_ns = now
        return ct

    def _on_marks(self, ct: _ClientTurn, message: MarkList, now: int) -> None:
        ct.reply.add_marks(message)

    def _on_transcript(self, ct: _ClientTurn, message: Transcript, now: int) -> None:
        ct.reply.add_transcript(message)

    def _on_agent_text(self, ct: _ClientTurn, message: AgentText, now: int) -> None:
        ct.reply.add_text(message)

    def _on_response_done(self, ct: _ClientTurn, message: ResponseDone, now: int) -> None:
        if ct.done.is_set():
            return  # ended already (the client gave up waiting): its status and record stand
        ct.reply.apply_done(message)
        self._finish(ct)

    def _on_error(self, message: Error, now: int) -> None:
        log.warning("agent error %s: %s", message.code, message.message)

    def _finish(self, ct: _ClientTurn) -> None:
        """The turn has ended (its reply's status is set): stop waiting for it."""
        with contextlib.suppress(ValueError):
            self._replying.remove(ct)
        ct.done.set()

    # -- sending -----------------------------------------------------------

    async def microphone(self) -> None:
        """Send one frame per frame period, forever: speech when queued, else silence.

        Frame k is due once its 20 ms have been captured; how late it really went out
        is kept (``self.pacing``), and the recording places it where it was sent.
        """
        k = 0
        current: tuple[_ClientTurn, UserUtterance, int] | None = None
        while True:
            due = self.run.origin_ns + (k + 1) * self.frame_ns
            await self.clock.sleep_until(due)
            first = k * self.frame
            # Speech starts at its base, never before: a late loop must not slice its
            # utterance from the end (a negative offset), which once sent a turn's
            # last words ahead of its first ones.
            if current is None and self._speech and self._speech[0][2] <= first:
                current = self._speech.popleft()
                ct, utt, base = current
                self.pacing.speech_started(ct.turn.index)
                # Noise is not speech: no script announces it (an oracle VAD must not hear it).
                if ct.turn.noise_ms is None:
                    await self.ws.send(
                        encode(
                            Script(
                                turn=ct.turn.index,
                                speech_start_sample=base + utt.speech_start,
                                speech_end_sample=base + utt.speech_end,
                                text=ct.turn.text,
                                reply=ct.turn.reply,
                            )
                        )
                    )
            if current is None:
                await self.ws.send(self._silence_bytes)
                self._sent(self._silence, k, due)
                k += 1
                continue
            ct, utt, base = current
            # Speech may begin a frame or two after this one (the microphone ran late):
            # a negative start would slice the utterance's end into the silence before it.
            at = first - base
            pcm = utt.pcm[max(0, at) : max(0, at + self.frame)]
            if len(pcm) < self.frame:
                pcm = np.concatenate((pcm, self._silence[: self.frame - len(pcm)]))
            await self.ws.send(pcm_to_bytes(pcm))
            sent = self._sent(pcm, k, due)
            end = first + self.frame
            for name, sample in (
                ("user.speech_start", base + utt.speech_start),
                ("user.speech_end", base + utt.speech_end),
            ):
                if first <= sample < end or (name == "user.speech_end" and sample == end):
                    ct.marks[name] = sent - (end - sample) * NS_PER_S // self.rate
            if "user.speech_end" in ct.marks and not ct.speech_sent.is_set():
                self._replying.append(ct)
                ct.speech_sent.set()
            if end >= base + len(utt.pcm):
                current = None
            k += 1

    def _sent(self, pcm: PCM, k: int, due: int) -> int:
        """Frame ``k`` (due at ``due``) went out now: keep its lateness, record it where it went."""
        sent = self.clock.now_ns()
        late = self.pacing.frame_sent(sent - due)
        # On schedule (within a millisecond) a frame is placed on the schedule, so the
        # caller's track stays sample-contiguous; a late one where it was really sent.
        self.recorder.place_user(
            k * self.frame + (late * self.rate // NS_PER_S if late >= 1_000_000 else 0), pcm
        )
        return sent

    def next_frame_sample(self) -> int:
        """The stream position of the next frame due by the clock. A late microphone has
        sent fewer: it catches up with silence first (speech starts at its place in time)."""
        elapsed = self.clock.now_ns() - self.run.origin_ns
        return (elapsed // self.frame_ns) * self.frame

    # -- the conversation --------------------------------------------------

    async def converse(self) -> None:
        for i, ct in enumerate(self.turns):
            turn = ct.turn
            if i == 0:
                start = self.clock.now_ns() + round(turn.pause_ms * 1e6)
            elif turn.barge_in_ms is not None:
                prev = self.turns[i - 1]
                await _first_of(prev.audible.wait(), prev.done.wait())
                heard = prev.marks.get("client.first_audio_received", self.clock.now_ns())
                start = heard + round(turn.barge_in_ms * 1e6)
            else:
                prev = self.turns[i - 1]
                await prev.done.wait()
                start = max(self.clock.now_ns(), self._playout_end_ns) + round(turn.pause_ms * 1e6)
            await self.clock.sleep_until(start)
            utt = _end_on_frame(
                render_user_audio(turn.text or None, turn.wav, self.rate, turn.noise_ms), self.frame
            )
            # Speech starts at the next frame boundary the microphone has not sent yet.
            base = self.next_frame_sample() + self.frame
            self._speech.append((ct, utt, base))
            await ct.speech_sent.wait()
            watch = self._watch_no_reply(ct) if turn.expect.no_reply else self._watch_reply(ct)
            asyncio.get_running_loop().create_task(watch)
        await self.turns[-1].done.wait()
        for ct in self.turns:
            await ct.done.wait()
        await self.clock.sleep_until(max(self.clock.now_ns(), self._playout_end_ns) + TAIL_MS * 1_000_000)

    async def _watch_reply(self, ct: _ClientTurn) -> None:
        """Record the turn when its reply ends, or fail it when the reply stalls.

        The timeout counts from the user's speech end and restarts whenever some
        of the reply arrives: a long reply is not a missing one.
        """
        timeout_ns = round(self.scenario.reply_timeout_ms * 1e6)
        since = ct.marks.get("user.speech_end", self.clock.now_ns())
        while not ct.done.is_set():
            since = max(since, ct.last_activity_ns or since)
            remaining_ns = since + timeout_ns - self.clock.now_ns()
            if remaining_ns <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining_ns / NS_PER_S):
                    await ct.done.wait()
        if not ct.done.is_set():
            ct.reply.end("no_response", f"no response within {self.scenario.reply_timeout_ms:g} ms")
            self._finish(ct)
        self._record(ct)

    async def _watch_no_reply(self, ct: _ClientTurn) -> None:
        """A turn the agent must not answer: listen for the scenario's window; a reply
        heard in it is followed like any other (and fails the turn's ``no_reply``)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.scenario.no_reply_window_ms / 1000):
                await ct.audible.wait()
        if ct.audible.is_set():
            await self._follow_spurious_reply(ct)
        elif ct.turn.barge_in_ms is not None:
            # Talked over a reply: whether it stopped (a false barge-in) is known when it ends.
            await self.turns[ct.turn.index - 1].done.wait()
        if not ct.done.is_set():
            ct.reply.end("ok", "answered a turn meant to get no reply" if ct.audible.is_set() else "")
            self._finish(ct)
        self._record(ct)

    async def _follow_spurious_reply(self, ct: _ClientTurn) -> None:
        """Wait out a reply to a no-reply turn: until its response_done, or until
        SETTLE_MS pass with nothing of it arriving or playing. (The agent may number
        it as another turn: unannounced noise has no script to take a number from.)"""
        settle_ns = SETTLE_MS * 1_000_000
        while not ct.done.is_set():
            quiet_at = max(ct.last_activity_ns or 0, ct.playout_end_ns or 0) + settle_ns
            remaining_ns = quiet_at - self.clock.now_ns()
            if remaining_ns <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining_ns / NS_PER_S):
                    await ct.done.wait()

    # -- results -----------------------------------------------------------

    def _record(self, ct: _ClientTurn) -> None:
        record = build_record(ct, self.turns, self.run.offset, self.run.origin_ns, self.rate)
        record["caller"] = pacing = self.pacing.turn_pacing(ct.turn.index)
        if pacing["flagged"]:
            log.warning("%s", caller_warning(ct.turn.index, pacing))
        self.records.append(record)
        self.run.writer.append_turn(record)
        if self.on_turn is not None:
            self.on_turn(record)


def build_record(
    ct: _ClientTurn,
    turns: list[_ClientTurn],
    offset: OffsetEstimate | None,
    origin_ns: int,
    sample_rate: int,
) -> TurnRecord:
    """A turn's record: marks on the client clock (ns since the run's origin),
    hop latencies, voice-to-voice, barge-in and expectation results."""
    agent = ct.reply
    marks = client_marks(agent.server_marks, ct.marks, offset)
    timeline = analyze(marks)
    latency = latency_ms(timeline)
    latency["llm_tpot"] = llm_tpot_ms(marks, agent.stats)
    barge_in: BargeIn | None = None
    latency["barge_in_stop"] = latency["barge_in_flush"] = None
    if ct.turn.barge_in_ms is not None and ct.turn.index > 0 and not ct.turn.expect.no_reply:
        prev = turns[ct.turn.index - 1]
        # The caller hears the interrupted reply until its last audible sample plays
        # (audio buffered at the client included); the agent's stop is its own mark.
        stopped = client_marks(prev.reply.server_marks, {}, offset).get("server.interrupted")
        barge_in = barge_in_figures(
            prev.turn.index,
            ct.marks.get("user.speech_start"),
            prev.heard_end_ns,
            prev.last_frame_ns,
            stopped,
        )
        barge_in["interrupted_status"] = prev.reply.status
        latency["barge_in_stop"], latency["barge_in_flush"] = barge_in["stop_ms"], barge_in["flush_ms"]
    reply = agent.reply
    checks: list[Expectation] = []
    for phrase in ct.turn.expect.contains:
        checks.append(
            {
                "check": "contains",
                "value": phrase,
                "ok": phrase not in ct.turn.expect.missing(reply),
            }
        )
    if ct.turn.expect.no_reply:
        checks += no_reply_checks(ct.turn, ct.audible.is_set(), turns[ct.turn.index - 1].reply.status)
    limit = ct.turn.expect.max_v2v_ms
    if limit is not None:
        v2v = latency["voice_to_voice"]
        checks.append({"check": "max_v2v_ms", "value": limit, "ok": v2v is not None and v2v <= limit})
    stats = stats_fields(agent.stats, len(agent.partials))
    return {
        "turn": ct.turn.index,
        "status": agent.status,
        "reason": agent.reason,
        "user_text": ct.turn.text,
        "transcript": agent.transcript,
        "scripted_reply": ct.turn.reply,
        "reply": reply,
        "barge_in_ms": ct.turn.barge_in_ms,
        "latency_ms": latency,
        "missing_marks": list(timeline.missing),
        "marks_ns": marks_since(marks, origin_ns),
        "llm": stats["llm"],
        "asr": stats["asr"],
        "wer": _wer(ct.turn.text, agent.transcript),
        "agent_audio_ms": agent.audio_samples * 1000 / sample_rate,
        "barge_in": barge_in,
        "expectations": checks,
        "passed": agent.status in ("ok", "interrupted") and all(c["ok"] for c in checks),
    }


def no_reply_checks(turn: Turn, heard_reply: bool, previous_status: str) -> list[Expectation]:
    """A no-reply turn's checks: nothing answered it; a reply it talked over went on."""
    checks: list[Expectation] = [{"check": "no_reply", "value": turn.index, "ok": not heard_reply}]
    if turn.barge_in_ms is not None and turn.index > 0:
        ok = previous_status != "interrupted"
        checks.append({"check": "not_interrupted", "value": turn.index - 1, "ok": ok})
    return checks


def _wer(reference: str, transcript: str | None) -> float | None:
    """The transcript's word error rate; None without a reference text or a transcript."""
    if not reference or transcript is None:
        return None
    counts = wer_counts(reference, transcript)
    return counts.rate if counts.reference_words else None


def _end_on_frame(utt: UserUtterance, frame: int) -> UserUtterance:
    """Pad the front with silence so speech ends exactly on a frame boundary.

    The agent can only see the end of speech when the frame carrying it
    arrives; aligning it keeps endpointing from being quantised by the frame
    size (up to 20 ms of noise that belongs to neither the user nor the agent).
    """
    pad = -utt.speech_end % frame
    if not pad:
        return utt
    pcm = np.concatenate((np.zeros(pad, dtype=np.int16), utt.pcm))
    return UserUtterance(pcm, utt.speech_start + pad, utt.speech_end + pad)


async def _first_of(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


async def replay(
    scenario: Scenario,
    url: str,
    clock: Clock,
    run_dir: Path,
    *,
    options: ReplayOptions | None = None,
    manifest_extra: ManifestExtra | None = None,
    on_turn: Callable[[TurnRecord], None] | None = None,
    telemetry: Telemetry | None = None,
) -> ReplayResult:
    """Replay ``scenario`` against the agent at ``url``; results go to ``run_dir``
    (and, with ``telemetry``, to an MQTT broker as they are measured)."""
    opts = options or ReplayOptions()
    async with client_run(
        url, clock, run_dir, sample_rate=opts.sample_rate, frame_ms=opts.frame_ms, telemetry=telemetry
    ) as run:
        session = _Replay(run, scenario, on_turn, opts.late_ms)
        run.begin(session, "replay", {"scenario": scenario.as_dict()}, manifest_extra)
        await run.sync_clock(opts.clock_sync_rounds, at="start")
        run.write_manifest()
        run.fix_origin()
        microphone = run.spawn(session.microphone())
        await run.unless_closed(session.converse())
        session.completed = True
        with contextlib.suppress(ConnectionClosed):
            microphone.cancel()
            await run.sync_clock(opts.clock_sync_rounds, at="end")
            await run.send(Bye(reason="scenario complete"))
    return ReplayResult(run.writer.dir, session.records, run.summary, run.offset, session.completed)
