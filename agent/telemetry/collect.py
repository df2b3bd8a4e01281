"""``vlt record``: a fleet's turn records, as they are published, into one run folder.

The folder is an ordinary run folder (turns.jsonl appended and fsynced per
turn, manifest.json, summary.json), so ``vlt report``, ``vlt baseline save``
and ``vlt regress --run`` read it like a replay's. Each turn record gains
``source`` (the host and session it came from). The manifest's ``kind`` is
``record``; ``sources`` lists the sessions; ``scenario``, ``pipeline``,
``agent``, ``audio`` and ``clock`` are the sessions' own when they agree (a
baseline needs one scenario), and ``completed`` is true when every session
that sent turns finished its scenario.

Only what is published while the recorder runs is collected: sessions known
only from the broker's retained copies (they ended before it started) are
ignored, and a session already running when it started is recorded from its
next turn on (``sources[].turns`` says how many).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from agent.clock import utc_now
from agent.metrics.records import AgentInfo, AudioFormat, Manifest, RecordSource, Summary, TurnRecord
from agent.metrics.results import RunWriter, environment, summarize
from agent.telemetry.schema import Incoming

__all__ = ["FleetRecorder"]

_CLIENT_KINDS = ("replay", "demo")


@dataclass
class _Source:
    host: str
    session: str
    manifest: dict[str, Any] | None = None
    kind: str = ""
    turns: int = 0
    status: str = "unknown"
    live: bool = False
    seen: set[int] = field(default_factory=set)

    def as_dict(self) -> RecordSource:
        return {
            "host": self.host,
            "session": self.session,
            "manifest": self.manifest,
            "turns": self.turns,
            "status": self.status,
        }


class FleetRecorder:
    def __init__(self, run_dir: str | Path, broker: str) -> None:
        self.writer = RunWriter(run_dir)
        self.broker = broker
        self.started_utc = utc_now().isoformat()
        self.records: list[TurnRecord] = []
        self._sources: dict[tuple[str, str], _Source] = {}
        self.write_manifest()

    @property
    def dir(self) -> Path:
        return self.writer.dir

    def update(self, message: Incoming) -> TurnRecord | None:
        """Take one message; the turn record if it was a new turn (now on disk)."""
        if not message.session or message.type == "mark":
            return None
        key = (message.host, message.session)
        source = self._sources.get(key)
        if source is None:
            source = self._sources[key] = _Source(message.host, message.session)
        if not message.retained:
            source.live = True
        data = message.data
        if message.type == "manifest" and isinstance(data.get("manifest"), dict):
            source.manifest, source.kind = data["manifest"], str(data.get("kind", ""))
        elif message.type == "status":
            source.status = str(data.get("state", "unknown"))
            if source.status == "offline" and source.live:
                self.write_manifest()
        elif message.type == "turn" and not message.retained and isinstance(data.get("record"), dict):
            record: TurnRecord = data["record"]
            turn = record.get("turn")
            if not isinstance(turn, int) or turn in source.seen:
                return None  # a QoS 1 duplicate after a reconnection
            source.seen.add(turn)
            source.turns += 1
            record["source"] = {"host": message.host, "session": message.session}
            self.records.append(record)
            self.writer.append_turn(record)
            return record
        return None

    def sessions(self) -> list[_Source]:
        """The client sessions recorded (live, with a replay or demo manifest or turns)."""
        return [
            s
            for s in self._sources.values()
            if s.live and (s.turns or s.kind in _CLIENT_KINDS) and s.kind != "agent"
        ]

    def finished(self) -> int:
        """Recorded client sessions that have gone offline."""
        return sum(1 for s in self.sessions() if s.status == "offline")

    def manifest(self) -> Manifest:
        sources = self.sessions()
        manifests = [s.manifest for s in sources if s.manifest is not None]

        def common(key: str) -> Any:
            values = [m.get(key) for m in manifests]
            texts = {json.dumps(v, sort_keys=True, default=str) for v in values}
            return values[0] if values and len(texts) == 1 else None

        clock = common("clock")
        agent = cast("AgentInfo | None", common("agent"))
        audio = cast("AudioFormat | None", common("audio"))
        manifest: Manifest = {
            "kind": "record",
            "state": "running",
            "started_utc": self.started_utc,
            "url": self.broker,
            "agent": agent or {"software": "", "session": None, "pipeline": None},
            "audio": audio or {"sample_rate": 0, "frame_ms": 0},
            "clock": {"virtual": isinstance(clock, dict) and bool(clock.get("virtual"))},
            "environment": environment(),
            "sources": [s.as_dict() for s in sources],
        }
        if (scenario := common("scenario")) is not None:
            manifest["scenario"] = scenario
        if (pipeline := common("pipeline")) is not None:
            manifest["pipeline"] = pipeline
        return manifest

    def write_manifest(self, *, final: bool = False) -> Manifest:
        manifest = self.manifest()
        if final:
            sources = self.sessions()
            manifest["completed"] = bool(sources) and all(
                (s.manifest or {}).get("completed", False) for s in sources
            )
            manifest["finished_utc"] = utc_now().isoformat()
            manifest["state"] = "complete"
        self.writer.write_json("manifest.json", manifest)
        return manifest

    def close(self) -> Summary:
        """Write summary.json and the final manifest.json."""
        summary = summarize(self.records)
        summary["completed"] = bool(self.write_manifest(final=True).get("completed"))
        self.writer.write_json("summary.json", summary)
        self.writer.close()
        return summary
