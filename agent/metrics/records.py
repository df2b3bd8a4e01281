"""The types of a run folder's JSON: a turn record, the summary, the manifest.

Types only, no behaviour: what ``turns.jsonl`` (one :class:`TurnRecord` a
line), ``summary.json`` (:class:`Summary`) and ``manifest.json``
(:class:`Manifest`) hold, key by key. The replay client (``vlt replay``) and
the live client (``vlt demo``) write the same shapes; keys only one of them
writes are ``NotRequired`` and say which. tests/metrics/test_records.py checks
a real run's files against these declarations, so a key added or dropped on
either side fails there.

Times are on the client's clock. ``*_ms`` values are milliseconds, ``*_ns``
nanoseconds; ``None`` (JSON null) where a value could not be measured.
"""

# No ``from __future__ import annotations`` here: on Python 3.11 TypedDict cannot
# see NotRequired/Required inside string annotations and would call every key required.

from typing import Any, Literal, NotRequired, Required, TypedDict

__all__ = [
    "AgentInfo",
    "AnalysisSettings",
    "AsrStats",
    "AssertionResult",
    "AudioFormat",
    "BargeIn",
    "CallerPacing",
    "ClockOffset",
    "DemoOptions",
    "Devices",
    "Environment",
    "Expectation",
    "HeardFigures",
    "ItlStats",
    "LatencyMs",
    "LlmStats",
    "Manifest",
    "ManifestClock",
    "ManifestDetails",
    "ManifestExtra",
    "Marks",
    "MetricStats",
    "PlayoutCounters",
    "RecordSource",
    "Summary",
    "TelemetryCounts",
    "TurnPlayout",
    "TurnRecord",
    "TurnSource",
    "TurnStats",
    "WerSummary",
]

#: Mark name → nanoseconds since the run's origin (``manifest.clock.origin_ns``), in
#: time order. Names are open-ended (any stage may stamp its own): ``user.*`` and
#: ``client.*`` are the client's, the rest the agent's moved onto the client clock.
Marks = dict[str, int]


# -- turn record -------------------------------------------------------------------


class LatencyMs(TypedDict):
    """A turn's hops (agent.metrics.timeline.HOPS) and derived figures, in ms."""

    endpointing: float | None
    asr_finalize: float | None
    llm_ttft: float | None
    first_phrase: float | None
    tts_first_audio: float | None
    transport: float | None
    audio_onset: float | None
    unaccounted: float | None
    """voice_to_voice minus the sum of the hops; None unless every hop was measured."""
    voice_to_voice: float | None
    """``user.speech_end`` → the first audible agent sample (at the listener in a live session)."""
    llm_tpot: float | None
    """Time per output token: ``llm.first_token`` → ``llm.done`` over (output tokens - 1)."""
    barge_in_stop: float | None
    """Interrupting speech start → the end of the interrupted reply *as the caller hears it*
    (replay: the end of playout of every frame received, buffered audio included; demo: the
    last agent sample handed to the output device). None unless this turn barged in."""
    barge_in_flush: float | None
    """The agent's stop (its ``server.interrupted`` of the interrupted turn) → the interrupted
    turn's last agent frame received; None unless this turn barged in (or a mark is missing)."""
    playout: NotRequired[float | None]
    """Live only: first audible sample's arrival → handed to the output device."""
    voice_to_voice_arrival: NotRequired[float | None]
    """Live only: voice-to-voice as the replay client counts it (the sample plays on arrival)."""


class ItlStats(TypedDict):
    """Inter-token latency: the gaps between consecutive LLM content chunks, in ms."""

    n: int
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    max: float | None


class LlmStats(TypedDict, total=False):
    """The agent's per-turn stats (its ``response_done``) less reply, transcript and asr.

    Whatever the agent sends passes through; these are the keys vlt's own agent
    sends. Empty when the agent never finished the turn (no_response).
    """

    output_tokens: int
    token_source: str
    """``usage``: the LLM reported the count; ``counted``: estimated from the reply text."""
    content_chunks: int
    """Streamed chunks that carried text."""
    phrases: int
    """Phrases the chunker released to TTS."""
    prompt_tokens: int
    """Only when the LLM reported it."""
    server_timing: dict[str, Any]
    """The LLM server's own timing fields, as it reported them (backend-specific)."""
    itl_ms: ItlStats
    tpot_ms: float | None
    """First → last content chunk over (output tokens - 1); None with fewer than two tokens."""
    vad_splits: int
    """Times the agent's VAD ended this turn early and it restarted (a continuation)."""
    truncated: str
    """Only when a limit cut the reply short: ``max_reply_chars`` (the pipeline's ``[limits]``)."""
    end_of_turn: dict[str, Any]
    """The ``semantic`` VAD's last decision: ``probability`` (Smart Turn's P(complete)),
    ``text`` (complete/incomplete/unknown), ``window_ms``, ``check_ms`` and
    ``decided_ms`` (silence after the speech when the model started and when it ended the turn)."""


class AsrStats(TypedDict, total=False):
    """The agent's ASR stats (a streaming ASR's ``last_stats``, if it has any) plus the client's count."""

    partials_received: Required[int]
    """Partial transcripts the client received while the user spoke."""
    partials: int
    decodes: int
    final_source: str
    """Where the final transcript came from: ``speculative``, ``in_flight``, ``fresh``, ``no_speech``."""
    speculative: bool
    audio_s: float
    """Seconds of audio the final decode covered."""
    committed_words: int


class TurnStats(TypedDict):
    """The record's two stats objects (agent.client.turn_record.stats_fields)."""

    llm: LlmStats
    asr: AsrStats


class BargeIn(TypedDict):
    """This turn interrupted the previous reply."""

    interrupted_turn: int | None
    """None in a live session when no agent turn was playing."""
    stop_ms: float | None
    """Interrupting speech start → the end of the interrupted reply as the caller hears it
    (``latency_ms.barge_in_stop``)."""
    received_ms: float | None
    """Interrupting speech start → the interrupted turn's last agent frame received (what
    ``stop_ms`` was before it counted the audio still buffered at the caller)."""
    flush_ms: float | None
    """``latency_ms.barge_in_flush``: the agent's stop → its last frame received."""
    interrupted_status: NotRequired[str]
    """Replay only: the interrupted turn's status."""


class Expectation(TypedDict):
    """One of the scenario's checks on this turn (replay only; a live turn has none)."""

    check: Literal["contains", "max_v2v_ms", "no_reply", "not_interrupted"]
    value: str | float
    """The phrase the reply must contain, the voice-to-voice limit in ms; for
    ``no_reply`` this turn's number, for ``not_interrupted`` the number of the turn
    whose reply a no-reply turn talked over (it must not have stopped)."""
    ok: bool


class CallerPacing(TypedDict):
    """Replay only: how late the caller's upstream frames went out (agent.client.caller_pacing).

    A frame is due once its 20 ms have been "captured" (the run's origin + (k+1) frames);
    its lateness is its send time minus that. The turn's window runs from its first speech
    frame to the next turn's (turn 0: from the run's origin)."""

    frames: int
    lateness_p99_ms: float | None
    lateness_max_ms: float | None
    late_frames: int
    """Frames later than ``threshold_ms``."""
    threshold_ms: float
    flagged: bool
    """Some frame was later than ``threshold_ms``: the agent heard a stream that differs
    from the scenario's (speech and silences shifted), and the turn's figures with it."""


class TurnPlayout(TypedDict):
    """Live only: the playout buffer so far."""

    underruns_total: int
    """Underruns of the whole session up to this turn's end."""
    input_latency_ms: float | None
    """The microphone's device path (ADC → capture callback) as PortAudio last reported it
    at this turn's end; None when it does not (clock-driven devices, some host APIs)."""
    output_latency_ms: float | None
    """The speaker's device path (output callback → DAC), likewise."""


class TurnSource(TypedDict):
    """Where a recorded turn came from (its MQTT topic's host and session)."""

    host: str
    session: str


class HeardFigures(TypedDict):
    """``vlt analyze`` only: the turn as heard in a recording (agent.metrics.heard_turns),
    in ms from the recording's start."""

    speech_start_ms: float
    speech_end_ms: float
    reply_start_ms: float | None
    reply_end_ms: float | None
    """The end of the reply's last sound (it may run past the caller's next start)."""
    reply_sound_ms: float
    reply_silences_ms: list[float]
    """Each silence inside the reply at least the analysis' gap_ms long, in order."""
    longest_reply_silence_ms: float | None
    overlap_ms: float
    """Caller and agent both audible during the caller's speech."""
    talk_over_ms: float
    """The part of the overlap from agent sound that began while the caller spoke."""


class TurnRecord(TypedDict):
    """One line of ``turns.jsonl``, written (and fsynced) when the turn ends."""

    turn: int
    status: str
    """``ok``, ``interrupted``, ``failed`` (the agent said so), ``no_response`` (reply
    timeout), ``unfinished`` (live: the session ended first)."""
    reason: str
    """Why the status is not ok; empty otherwise."""
    user_text: str
    """What the scenario had the user say (live: empty)."""
    transcript: str | None
    """The agent's final transcript; None if none arrived."""
    scripted_reply: NotRequired[str | None]
    """Replay only: the reply the scenario scripted for the emulated LLM."""
    reply: str
    """The agent's reply text as received (or from its stats)."""
    barge_in_ms: NotRequired[float | None]
    """Replay only: the scenario's barge-in offset for this turn."""
    latency_ms: LatencyMs
    missing_marks: list[str]
    """Marks a hop needed but the turn lacks, in hop order."""
    marks_ns: Marks
    llm: LlmStats
    asr: AsrStats
    wer: float | None
    """Word error rate of the transcript against user_text; None without both."""
    agent_audio_ms: float
    """Agent audio received for this turn."""
    barge_in: BargeIn | None
    caller: NotRequired[CallerPacing]
    """Replay only: the caller's send lateness over this turn's frames."""
    playout: NotRequired[TurnPlayout]
    """Live only."""
    heard: NotRequired[HeardFigures]
    """``vlt analyze`` only."""
    expectations: list[Expectation]
    passed: bool
    """The status counts as answered and every expectation held."""
    source: NotRequired[TurnSource]
    """``vlt record`` only: the session the turn came from."""


# -- summary -----------------------------------------------------------------------


class MetricStats(TypedDict):
    """agent.metrics.stats.describe of one metric's values over the turns that measured it."""

    n: int
    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    min: float | None
    max: float | None


class WerSummary(TypedDict):
    """agent.metrics.wer.corpus_wer over the turns with a reference text and a transcript."""

    n: int
    wer: float | None
    """Pooled: total errors / total reference words."""
    mean: float | None
    """Mean of the turns' own rates."""
    errors: int
    reference_words: int


class AssertionResult(TypedDict):
    """One check of a scenario's ``assert`` block (agent.metrics.assertions)."""

    check: Literal["v2v_p50_ms", "v2v_p95_ms", "missed_responses", "wer"]
    limit: float
    value: float | None
    """The run's figure; None if it could not be measured (the check fails)."""
    ok: bool


class Summary(TypedDict):
    """``summary.json``."""

    turns: int
    status: dict[str, int]
    """Turn status → how many turns had it."""
    expectations_failed: int
    """Turns whose ``passed`` is false."""
    metrics_ms: dict[str, MetricStats]
    """agent.metrics.results.METRICS (live: plus ``voice_to_voice_arrival``) → stats."""
    wer: WerSummary
    assertions: NotRequired[list[AssertionResult]]
    """Replay only, when the scenario has an ``assert`` block."""
    caller: NotRequired[CallerPacing]
    """Replay only: the caller's send lateness over every frame of the run; ``flagged``:
    some turn was flagged."""
    completed: NotRequired[bool]
    """Written by both clients: the run reached its end (replay) or was not closed by the agent (live)."""


# -- manifest ----------------------------------------------------------------------


class AgentInfo(TypedDict):
    """What the agent's hello said about itself."""

    software: str
    session: str | None
    pipeline: dict[str, Any] | None
    """The pipeline's name and description as the agent announced them; vlt's agent adds
    ``warm_up`` (agent.server.warm_up.WarmUp.as_dict: how long warming its stages took
    before the session's hello, total and per stage, in ms)."""


class AudioFormat(TypedDict):
    sample_rate: int
    frame_ms: int


class ClockOffset(TypedDict):
    """agent.metrics.clocksync.OffsetEstimate: server clock minus client clock."""

    offset_ns: int
    uncertainty_ns: int
    min_delay_ns: int
    samples: int


class ManifestClock(TypedDict):
    virtual: bool
    offset_start: NotRequired[ClockOffset]
    """Measured before the first turn; absent if the session ended first."""
    origin_ns: NotRequired[int]
    """The run's origin (marks_ns count from it), in ns after the client started connecting."""
    offset_end: NotRequired[ClockOffset]
    """Replay only: measured again after the last turn."""


class Environment(TypedDict):
    """agent.metrics.results.environment: what a result needs to be reproduced."""

    python: str
    platform: str
    machine: str
    processor: str
    cpu_count: int | None
    hostname: str
    packages: dict[str, str | None]
    """Distribution → version; None where it is not installed."""


class DemoOptions(TypedDict):
    barge_in: bool
    prebuffer_ms: float
    echo_tail_ms: float
    client_vad: str


class Devices(TypedDict):
    """The audio devices' own descriptions (agent.client.devices.live_audio)."""

    input: dict[str, Any]
    output: dict[str, Any]


class PlayoutCounters(TypedDict):
    """Live only: the playout buffer and microphone over the session."""

    underruns: int
    played_samples: int
    dropped_samples: int
    muted_frames: int
    """Microphone frames replaced by silence while the agent was audible (half-duplex)."""


class TelemetryCounts(TypedDict):
    """With ``--mqtt``: what became of the run's telemetry messages (agent.telemetry)."""

    broker: str
    """The broker URL, without the password."""
    topic: str
    """``<prefix>/<host>/<session>``: where the run's messages went."""
    sent: int
    """Accepted by the broker (QoS 1: acknowledged)."""
    dropped: int
    """Lost: the queue was full (broker away or slow), or the run ended before they could go."""
    pending: int
    """Still queued when the counts were taken (0 once the session is closed)."""


class RecordSource(TypedDict):
    """``vlt record``: a session whose turns the folder holds."""

    host: str
    session: str
    manifest: dict[str, Any] | None
    """The session's manifest as last published (None if none arrived)."""
    turns: int
    status: str
    """The session's last status: online, offline, or unknown."""


class AnalysisSettings(TypedDict):
    """``vlt analyze``: the recording and the rule its turns were found by."""

    files: list[str]
    caller: Literal["left", "right", "first file"]
    turns_from: Literal["scenario", "energy"]
    threshold_dbfs: float
    turn_gap_ms: float
    bridge_ms: float
    gap_ms: float


class ManifestDetails(TypedDict, total=False):
    """What a client puts after the audio format: the replay its scenario, the live client its options."""

    scenario: dict[str, Any]
    options: DemoOptions


class ManifestExtra(TypedDict, total=False):
    """What the caller adds after the environment: the in-process agent's pipeline."""

    pipeline: dict[str, Any]


class Manifest(TypedDict):
    """``manifest.json``: written when the run starts, rewritten when it ends."""

    kind: Literal["replay", "demo", "record", "analyze"]
    """``record``: turns collected from a fleet by ``vlt record`` (see ``sources``);
    ``analyze``: turns found in a recording by ``vlt analyze``."""
    state: Literal["running", "complete", "interrupted"]
    """``running`` from the first write until the run ends (a folder left so was
    killed outright); then ``complete``, or ``interrupted`` when a signal, an
    error or the agent closing ended it first."""
    started_utc: str
    url: str
    agent: AgentInfo
    audio: AudioFormat
    scenario: NotRequired[dict[str, Any]]
    """Replay only: the scenario as loaded (agent.config.scenario.Scenario.as_dict)."""
    options: NotRequired[DemoOptions]
    """Live only."""
    clock: ManifestClock
    environment: Environment
    pipeline: NotRequired[dict[str, Any]]
    """The pipeline's settings as loaded (Pipeline.as_dict); only for an in-process agent."""
    analysis: NotRequired[AnalysisSettings]
    """``vlt analyze`` only: what was analysed and how."""
    target: NotRequired[dict[str, Any]]
    """Only for a black-box agent (docs/black-box.md): its kind (``pcm-ws``) and settings."""
    devices: NotRequired[Devices]
    """Live only."""
    playout: NotRequired[PlayoutCounters]
    """Live only, at the end."""
    completed: NotRequired[bool]
    """Replay only, at the end: the scenario ran to its end."""
    finished_utc: NotRequired[str]
    """At the end."""
    closed: NotRequired[str | None]
    """Live only, at the end: why the agent closed the session; None if the client ended it."""
    telemetry: NotRequired[TelemetryCounts]
    """With ``--mqtt``, at the end (docs/telemetry.md)."""
    sources: NotRequired[list[RecordSource]]
    """``vlt record`` only: the sessions collected."""
