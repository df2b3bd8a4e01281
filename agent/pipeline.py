"""Pipeline definitions (TOML): which VAD, ASR, LLM and TTS, with their settings.

A pipeline file has one table per stage role, each with a ``kind`` (see
:mod:`agent.stages.registry`) and that kind's settings, plus optional
``[audio]``, ``[conversation]``, ``[chunker]`` and ``[output]`` tables. Every
error names the file, the line where the TOML gives one, and the field.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from agent.errors import ConfigError
from agent.protocol import SUPPORTED_SAMPLE_RATES
from agent.stages.chunker import ChunkerConfig
from agent.stages.registry import REGISTRY, ROLES, StageKind, kinds_for
from agent.typecheck import accepts, describe

__all__ = [
    "AudioConfig",
    "ConversationConfig",
    "OutputConfig",
    "Pipeline",
    "StageSpec",
    "build_config",
    "load_pipeline",
    "parse_pipeline",
    "read_config_file",
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


def read_config_file(path: Path, what: str) -> str:
    """The text of a TOML file, or a :class:`ConfigError` naming it (``what``: "pipeline"…)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found", path=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file ({exc.strerror})", path=path) from None


def load_pipeline(path: str | Path) -> Pipeline:
    path = Path(path)
    return parse_pipeline(read_config_file(path, "pipeline"), path)


def parse_pipeline(text: str, path: str | Path | None = None) -> Pipeline:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        line = int(match.group(1)) if match else None
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(f"invalid TOML: {message}", path=path, line=line) from None
    return _build(raw, None if path is None else Path(path), text)


_SECTIONS: dict[str, type[Any]] = {
    "audio": AudioConfig,
    "conversation": ConversationConfig,
    "chunker": ChunkerConfig,
    "output": OutputConfig,
}
_TOP_KEYS = ("name", "description")


def _build(raw: dict[str, Any], path: Path | None, text: str | None) -> Pipeline:
    def fail(message: str, table: str = "", key: str | None = None) -> ConfigError:
        line = _line_of(text, table, key) if text is not None else None
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
        if kind not in REGISTRY[role]:
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


def build_config(cls: type[Any], table: dict[str, Any], fail: Any) -> Any:
    """Instantiate a config dataclass from a table, checking keys, types and bounds.

    ``fail(message, key)`` must return the exception to raise.
    """
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in table.items():
        if key not in fields:
            valid = ", ".join(sorted(fields)) or "(none)"
            raise fail(f"unknown setting; valid: {valid}", key)
        expected = hints[key]
        if not accepts(expected, value):
            raise fail(f"expected {describe(expected)}, got {value!r}", key)
        meta = fields[key].metadata
        if "choices" in meta and value not in meta["choices"]:
            raise fail(f"must be one of {', '.join(map(str, meta['choices']))}, got {value!r}", key)
        if "min" in meta and value < meta["min"]:
            raise fail(f"must be >= {meta['min']}, got {value!r}", key)
        if "min_exclusive" in meta and value <= meta["min_exclusive"]:
            raise fail(f"must be > {meta['min_exclusive']}, got {value!r}", key)
    return cls(**table)


def _line_of(text: str | None, table: str, key: str | None) -> int | None:
    """The 1-based line where ``key`` is set in ``[table]`` (or the header itself)."""
    if text is None:
        return None
    current = ""
    header_line = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        header = re.fullmatch(r"\[\s*([^\]]+?)\s*\]\s*(#.*)?", stripped)
        if header:
            current = header.group(1)
            if current == table:
                header_line = number
            continue
        if key is not None and current == table and re.match(rf"{re.escape(key)}\s*=", stripped):
            return number
    if header_line is None and key is not None and not table:
        return _line_of(text, key, None)  # a top-level table referred to by name
    return header_line
