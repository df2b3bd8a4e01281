"""``vlt analyze``: a recording of any conversation → a run folder (docs/black-box.md).

Reads a two-channel WAV (or two mono files: caller, then agent), finds the
caller's turns — from a scenario's utterances, or by energy — and measures
each turn as heard (agent.metrics.heard_turns). The run folder has the same
files as a replay's (turns.jsonl, summary.json, manifest.json, recording.wav),
so ``vlt report``, ``vlt baseline save`` and ``vlt regress --run`` read it;
what a recording cannot tell (hops, transcripts, reply text) is absent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from agent.audio import AUDIBLE_DBFS, PCM, AudioFileError, read_wav_channels, resample, write_wav
from agent.client.user_speech import render_user_audio
from agent.clock import NS_PER_S, utc_now
from agent.config.scenario import Scenario
from agent.errors import ConfigError
from agent.metrics.heard_turns import (
    AGENT_WINDOW_MS,
    CALLER_WINDOW_MS,
    HeardTurn,
    Span,
    caller_turns,
    heard_turns,
    sound_runs,
)
from agent.metrics.records import AnalysisSettings, BargeIn, Expectation, Manifest, Summary, TurnRecord
from agent.metrics.results import RunWriter, environment, summarize
from agent.metrics.timeline import analyze as timeline

__all__ = ["AnalyzeOptions", "AnalyzeResult", "analyze_recording", "load_conversation"]

log = logging.getLogger("vlt.analyze")


@dataclass(frozen=True, slots=True)
class AnalyzeOptions:
    caller: Literal["left", "right"] = "left"
    threshold_dbfs: float = AUDIBLE_DBFS
    #: Caller pauses shorter than this (with no agent sound in them) stay inside one turn.
    turn_gap_ms: float = 600.0
    #: Agent pauses shorter than this are inside one sound (barge-in: when it went quiet).
    bridge_ms: float = 300.0
    #: Silences inside a reply at least this long are listed.
    gap_ms: float = 300.0
    label: str = "recording"


@dataclass
class AnalyzeResult:
    run_dir: Path
    records: list[TurnRecord]
    summary: Summary
    turns_expected: int | None


def load_conversation(files: list[Path], caller: str) -> tuple[PCM, PCM, int]:
    """``(caller, agent, sample rate)`` from a stereo WAV or two mono WAVs (caller first)."""
    if len(files) == 1:
        pcm, rate = read_wav_channels(files[0])
        if pcm.ndim != 2:
            raise AudioFileError(
                files[0], "is mono: give a stereo recording, or the caller's and the agent's files"
            )
        left, right = pcm[:, 0], pcm[:, 1]
        return (left, right, rate) if caller == "left" else (right, left, rate)
    if len(files) != 2:
        raise ConfigError(f"give one stereo recording or two mono files, not {len(files)} files")
    (a, rate_a), (b, rate_b) = read_wav_channels(files[0]), read_wav_channels(files[1])
    for path, pcm in ((files[0], a), (files[1], b)):
        if pcm.ndim != 1:
            raise AudioFileError(path, "is stereo: with two files each must be mono (caller, then agent)")
    if rate_b != rate_a:
        b = resample(b, rate_b, rate_a)
    n = max(len(a), len(b))
    return np.pad(a, (0, n - len(a))), np.pad(b, (0, n - len(b))), rate_a


def _scenario_turns(scenario: Scenario, caller_runs: list[Span], rate: int) -> list[Span]:
    """Each scenario turn where it is in the caller's track: from the first caller
    sound after the previous turn, as long as the turn's utterance is."""
    turns: list[Span] = []
    cursor = 0
    for turn in scenario.turns:
        start = next((s for s, _ in caller_runs if s >= cursor), None)
        if start is None:
            log.warning(
                "the recording has %d of scenario %s's %d caller turns",
                len(turns),
                scenario.name,
                len(scenario.turns),
            )
            break
        utt = render_user_audio(turn.text or None, turn.wav, rate)
        end = start + (utt.speech_end - utt.speech_start)
        turns.append((start, end))
        cursor = end
    return turns


def _ms(samples: int, rate: int) -> float:
    return samples * 1000 / rate


def _ns(sample: int, rate: int) -> int:
    return sample * NS_PER_S // rate


def _record(h: HeardTurn, prev: HeardTurn | None, scenario: Scenario | None, rate: int) -> TurnRecord:
    turn = scenario.turns[h.index] if scenario is not None and h.index < len(scenario.turns) else None
    marks = {"user.speech_start": _ns(h.speech[0], rate), "user.speech_end": _ns(h.speech[1], rate)}
    if h.reply_start is not None:
        marks["client.first_audio_received"] = _ns(h.reply_start, rate)
    t = timeline(marks)
    latency = t.as_ms()
    latency["llm_tpot"] = None
    barge_in: BargeIn | None = None
    # A recording holds what was heard, not when frames arrived: no flush, no received figure.
    latency["barge_in_stop"] = latency["barge_in_flush"] = None
    if h.barge_in_heard_end is not None:
        stop = _ms(h.barge_in_heard_end - h.speech[0], rate)
        latency["barge_in_stop"] = stop
        barge_in = {
            "interrupted_turn": prev.index if prev is not None else None,
            "stop_ms": stop,
            "received_ms": None,
            "flush_ms": None,
        }
    if h.reply_start is None:
        status, reason = "no_response", "no agent sound between this turn's end and the caller's next"
    elif h.talked_over:
        status, reason = "interrupted", "the reply was still audible when the caller spoke again"
    else:
        status, reason = "ok", ""
    checks: list[Expectation] = []
    if turn is not None and turn.expect.max_v2v_ms is not None:
        v2v = latency["voice_to_voice"]
        limit = turn.expect.max_v2v_ms
        checks.append({"check": "max_v2v_ms", "value": limit, "ok": v2v is not None and v2v <= limit})
    silences = [_ms(b - a, rate) for a, b in h.reply_silences]
    return {
        "turn": h.index,
        "status": status,
        "reason": reason,
        "user_text": turn.text if turn is not None else "",
        "transcript": None,
        "reply": "",
        "latency_ms": latency,  # type: ignore[typeddict-item]  # as_ms() has a key per hop
        "missing_marks": list(t.missing),
        "marks_ns": dict(sorted(marks.items(), key=lambda kv: kv[1])),
        "llm": {},
        "asr": {"partials_received": 0},
        "wer": None,
        "agent_audio_ms": _ms(h.reply_sound, rate),
        "barge_in": barge_in,
        "heard": {
            "speech_start_ms": _ms(h.speech[0], rate),
            "speech_end_ms": _ms(h.speech[1], rate),
            "reply_start_ms": None if h.reply_start is None else _ms(h.reply_start, rate),
            "reply_end_ms": None if h.reply_end is None else _ms(h.reply_end, rate),
            "reply_sound_ms": _ms(h.reply_sound, rate),
            "reply_silences_ms": silences,
            "longest_reply_silence_ms": max(silences, default=None),
            "overlap_ms": _ms(h.overlap, rate),
            "talk_over_ms": _ms(h.talk_over, rate),
        },
        "expectations": checks,
        "passed": status in ("ok", "interrupted") and all(c["ok"] for c in checks),
    }


def analyze_recording(
    files: list[Path],
    run_dir: Path,
    *,
    scenario: Scenario | None = None,
    options: AnalyzeOptions | None = None,
) -> AnalyzeResult:
    """Analyse ``files`` and write the run folder ``run_dir``."""
    opts = options or AnalyzeOptions()
    caller, agent, rate = load_conversation(files, opts.caller)
    started = utc_now().isoformat()
    caller_runs = sound_runs(caller, rate, threshold_dbfs=opts.threshold_dbfs, window_ms=CALLER_WINDOW_MS)
    agent_runs = sound_runs(agent, rate, threshold_dbfs=opts.threshold_dbfs, window_ms=AGENT_WINDOW_MS)
    if scenario is not None:
        spans = _scenario_turns(scenario, caller_runs, rate)
    else:
        spans = caller_turns(caller_runs, agent_runs, round(opts.turn_gap_ms * rate / 1000))
    heard = heard_turns(
        spans,
        agent_runs,
        bridge_samples=round(opts.bridge_ms * rate / 1000),
        gap_samples=round(opts.gap_ms * rate / 1000),
    )
    writer = RunWriter(run_dir)
    records = []
    for i, h in enumerate(heard):
        record = _record(h, heard[i - 1] if i else None, scenario, rate)
        records.append(record)
        writer.append_turn(record)
    summary = summarize(records)
    complete = scenario is None or len(heard) == len(scenario.turns)
    summary["completed"] = complete
    settings: AnalysisSettings = {
        "files": [str(f) for f in files],
        "caller": opts.caller if len(files) == 1 else "first file",
        "turns_from": "scenario" if scenario is not None else "energy",
        "threshold_dbfs": opts.threshold_dbfs,
        "turn_gap_ms": opts.turn_gap_ms,
        "bridge_ms": opts.bridge_ms,
        "gap_ms": opts.gap_ms,
    }
    manifest: Manifest = {
        "kind": "analyze",
        "state": "complete" if complete else "interrupted",
        "started_utc": started,
        "url": Path(files[0]).resolve().as_uri(),
        "agent": {"software": "recording (audio only)", "session": None, "pipeline": {"name": opts.label}},
        "audio": {"sample_rate": rate, "frame_ms": 0},
        # A baseline pairs runs by scenario: without one, the label stands for it.
        "scenario": scenario.as_dict() if scenario is not None else {"name": opts.label, "turns": []},
        "clock": {"virtual": False, "origin_ns": 0},
        "environment": environment(),
        "analysis": settings,
        "completed": complete,
        "finished_utc": utc_now().isoformat(),
    }
    writer.write_json("summary.json", summary)
    writer.write_json("manifest.json", manifest)

    write_wav(writer.dir / "recording.wav", np.stack((caller, agent), axis=1).astype(np.int16), rate)
    writer.close()
    return AnalyzeResult(writer.dir, records, summary, len(scenario.turns) if scenario is not None else None)
