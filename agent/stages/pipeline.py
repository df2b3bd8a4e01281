"""Pipeline definitions (TOML): which VAD, ASR, LLM and TTS, with their settings.

A pipeline file has one table per stage role, each with a ``kind`` (see
:mod:`agent.stages.registry`) and that kind's settings, plus optional
``[audio]``, ``[conversation]``, ``[chunker]``, ``[output]`` and ``[limits]`` tables. Every
error names the file, the line where the TOML gives one, and the field.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config.toml import build_config, line_of, parse_toml, read_config_file
from agent.errors import ConfigError
from agent.stages.chunker import ChunkerConfig
from agent.stages.registry import REGISTRY, ROLES, StageKind, kinds_for
from agent.stages.turn_limits import TurnLimits
from agent.wire.protocol import SUPPORTED_SAMPLE_RATES

__all__ = [
    "AudioConfig",
    "ConversationConfig",
    "OutputConfig",
    "Pipeline",
    "StageSpec",
    "load_pipeline",
    "parse_pipeline",
    "pipeline_from_raw",
]

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful voice assistant on a phone call. Answer in one or two short "
    "spoken sentences. Never use lists, markdown, emojis or special characters."
)


@dataclass(frozen=True, slots=True)
class AudioConfig:
    sample_rate: int = field(default=16000, metadata={"choices": SUPPORTED_SAMPLE_RATES})
    """Session sample rate used when the client does not ask for one."""
    frame_ms: int = field(default=20, metadata={"choices": (10, 20, 30, 40, 60)})


@dataclass(frozen=True, slots=True)
class ConversationConfig:
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_history_turns: int = field(default=20, metadata={"min": 0})
    """User/assistant exchanges kept and sent with each request."""


@dataclass(frozen=True, slots=True)
class OutputConfig:
    lead_ms: float = field(default=60.0, metadata={"min": 0})
    """How far ahead of real-time playout the server may send agent audio. A
    small lead keeps the client's buffer short, so a barge-in stops the audio
    quickly, like a telephony agent does."""


@dataclass(frozen=True, slots=True)
class StageSpec:
    role: str
    kind: str
    config: Any
    entry: StageKind


@dataclass(frozen=True, slots=True)
class Pipeline:
    name: str
    description: str
    path: Path | None
    audio: AudioConfig
    conversation: ConversationConfig
    chunker: ChunkerConfig
    output: OutputConfig
    limits: TurnLimits
    stages: dict[str, StageSpec]
    raw: dict[str, Any]

    @property
    def virtual_time_ok(self) -> bool:
        return all(spec.entry.virtual_time for spec in self.stages.values())

    def real_time_stages(self) -> list[str]:
        return [f"{r}={s.kind}" for r, s in self.stages.items() if not s.entry.virtual_time]

    def as_dict(self) -> dict[str, Any]:
        """What was loaded, defaults filled in (for the run manifest)."""
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "path": None if self.path is None else str(self.path),
            "audio": dataclasses.asdict(self.audio),
            "conversation": dataclasses.asdict(self.conversation),
            "chunker": dataclasses.asdict(self.chunker),
            "output": dataclasses.asdict(self.output),
            "limits": dataclasses.asdict(self.limits),
        }
        for role, spec in self.stages.items():
            out[role] = {"kind": spec.kind, **dataclasses.asdict(spec.config)}
        return out

    def with_overrides(self, overrides: dict[str, Any]) -> Pipeline:
        """A copy with ``{"table.key": value}`` settings replaced (e.g. for sweeps)."""
        raw = copy.deepcopy(self.raw)
        for dotted, value in overrides.items():
            table, _, key = dotted.rpartition(".")
            if not table or not key:
                raise ConfigError(f"override {dotted!r} must look like table.key", path=self.path)
            raw.setdefault(table, {})[key] = value
        return _build(raw, self.path, None)


def load_pipeline(path: str | Path) -> Pipeline:
    path = Path(path)
    return parse_pipeline(read_config_file(path, "pipeline"), path)


def parse_pipeline(text: str, path: str | Path | None = None) -> Pipeline:
    raw = parse_toml(text, path)
    return _build(raw, None if path is None else Path(path), text)


def pipeline_from_raw(raw: dict[str, Any], path: str | Path | None = None) -> Pipeline:
    """The pipeline a parsed table (``Pipeline.raw``) describes, e.g. handed to another process."""
    return _build(copy.deepcopy(raw), None if path is None else Path(path), None)


_SECTIONS: dict[str, type[Any]] = {
    "audio": AudioConfig,
    "conversation": ConversationConfig,
    "chunker": ChunkerConfig,
    "output": OutputConfig,
    "limits": TurnLimits,
}
_TOP_KEYS = ("name", "description")


def _build(raw: dict[str, Any], path: Path | None, text: str | None) -> Pipeline:
    def fail(message: str, table: str = "", key: str | None = None) -> ConfigError:
        line = line_of(text, table, key)
        field_name = ".".join(p for p in (table, key) if p) or None
        return ConfigError(message, path=path, line=line, field=field_name)

    valid_top = sorted((*_TOP_KEYS, *_SECTIONS, *ROLES))
    for key in raw:
        if key not in valid_top:
            raise fail(f"unknown table or key; valid: {', '.join(valid_top)}", key=key)
    for key in _TOP_KEYS:
        if key in raw and not isinstance(raw[key], str):
            raise fail("expected a string", key=key)
    sections = {}
    for name, cls in _SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise fail("expected a table", key=name)
        sections[name] = build_config(cls, table, lambda m, k, n=name: fail(m, n, k))
    stages: dict[str, StageSpec] = {}
    for role in ROLES:
        table = raw.get(role)
        if table is None:
            raise fail(f"missing [{role}] table (kinds: {', '.join(kinds_for(role))})", key=role)
        if not isinstance(table, dict):
            raise fail("expected a table", key=role)
        kind = table.get("kind")
        if not isinstance(kind, str) or kind not in REGISTRY[role]:  # a list is not hashable
            what = "missing kind" if kind is None else f"unknown {role} kind {kind!r}"
            raise fail(f"{what}; valid: {', '.join(kinds_for(role))}", role, "kind")
        entry = REGISTRY[role][kind]
        settings = {k: v for k, v in table.items() if k != "kind"}
        config = build_config(entry.config_type, settings, lambda m, k, r=role: fail(m, r, k))
        stages[role] = StageSpec(role, kind, config, entry)
    default_name = path.stem if path is not None else "pipeline"
    return Pipeline(
        name=raw.get("name", default_name),
        description=raw.get("description", ""),
        path=path,
        stages=stages,
        raw=raw,
        **sections,
    )
