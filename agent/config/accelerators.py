"""Accelerator profiles (data, each with its source and date): built in, from files, as a table.

A profile says how one LLM served on one kind of hardware behaves as seen by a
client: time to first token (TTFT), prefill and decode speed, jitter, and how
those degrade when several streams share the accelerator. The numbers are
public figures from ``REFERENCES.md`` — all approximate; where a figure is an
estimate or a modelling assumption, the profile's ``notes`` say so. They are
data, not code: ``agent/data/accelerators.toml``, shipped in the package and
read by the same loader (and checks, and file:line:field errors) as a user's
profiles file.

What a profile's numbers mean in time — the timing model the ``emulated`` LLM
stage and the emulator server share — is :mod:`agent.config.accelerator_timing`.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import re
import threading
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_type_hints

from agent.config.toml import build_config, line_of, parse_toml, read_config_file
from agent.errors import ConfigError

__all__ = [
    "BUILTIN_PROFILES_RESOURCE",
    "DEFAULT_PROFILE",
    "PROFILES",
    "PROFILE_CHOICES",
    "AcceleratorProfile",
    "add_profiles",
    "builtin_profiles_file",
    "format_profiles_table",
    "get_profile",
    "load_builtin_profiles",
    "load_profiles",
    "parse_profiles",
    "with_overrides",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True, slots=True)
class AcceleratorProfile:
    """How one model on one accelerator looks from a streaming client (approximate)."""

    name: str
    """Identifier: ``vlt serve llm-emulator --profile NAME``, ``profile = "NAME"``."""
    label: str
    """The hardware and serving stack, e.g. ``Groq LPU``."""
    model: str
    """The model served, e.g. ``Llama 3.3 70B``."""
    ttft_ms: float = field(metadata={"min": 0})
    """Base latency to the first token of a one-token prompt on an idle accelerator:
    network round trip, API front end and scheduling (prefill is added on top)."""
    tokens_per_s: float = field(metadata={"min_exclusive": 0})
    """Single-stream decode speed (output tokens per second)."""
    source: str
    """Where the TTFT and tokens/s figures come from."""
    date: str
    """When those figures were published or measured."""
    prefill_tokens_per_s: float | None = field(default=None, metadata={"min_exclusive": 0})
    """Prompt processing speed; ``None``: prefill costs nothing (not modelled)."""
    jitter: float = field(default=0.0, metadata={"min": 0})
    """Relative standard deviation of each inter-token gap (0 = perfectly even)."""
    ttft_jitter_ms: float = field(default=0.0, metadata={"min": 0})
    """Standard deviation of the base latency."""
    max_batch: int = field(default=1, metadata={"min": 1})
    """Streams decoded together; further requests wait for a free slot."""
    batch_slowdown: float = field(default=0.0, metadata={"min": 0})
    """Per-stream slowdown per extra stream in the batch (0.02: each one costs 2 %)."""
    aggregate_tokens_per_s: float | None = field(default=None, metadata={"min_exclusive": 0})
    """Cap on the total decode throughput of all streams together; ``None``: no cap."""
    queue_ms_per_stream: float = field(default=0.0, metadata={"min": 0})
    """TTFT added by each other stream in the batch (its prefill and decode steps
    are interleaved with this request's prefill)."""
    notes: str = ""
    """Which numbers are estimates or modelling assumptions, and why."""

    def __post_init__(self) -> None:
        # A safety net for profiles built in code; files are checked (with line
        # numbers) by build_config before they get here.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or isinstance(value, str):
                continue
            if not math.isfinite(value):
                raise ConfigError(f"must be a finite number, got {value!r}", field=f.name)
            if "min" in f.metadata and value < f.metadata["min"]:
                raise ConfigError(f"must be >= {f.metadata['min']}, got {value!r}", field=f.name)
            if "min_exclusive" in f.metadata and value <= f.metadata["min_exclusive"]:
                raise ConfigError(f"must be > {f.metadata['min_exclusive']}, got {value!r}", field=f.name)


# --------------------------------------------------------------------------- the built-in profiles

#: What the emulator server emulates unless told otherwise (a fast, widely used 70B).
DEFAULT_PROFILE = "groq-llama-3.3-70b"

#: Where the built-in profiles live, relative to the ``agent`` package (shipped as package data).
BUILTIN_PROFILES_RESOURCE = ("data", "accelerators.toml")

#: What every built-in table must give itself: a user file may leave them out (and
#: gets "undated"), but a shipped number without its source and date is a bug.
_BUILTIN_REQUIRED = ("label", "model", "source", "date", "notes")

#: Every known profile by name: the built-ins, plus any added with :func:`add_profiles`.
#: Loaded from the package's data file on first use (module ``__getattr__`` below).
PROFILES: dict[str, AcceleratorProfile]

# Reentrant, so a load that somehow recursed fails with an ImportError instead of hanging.
_LOAD_LOCK = threading.RLock()


def builtin_profiles_file() -> Traversable:
    """The shipped ``agent/data/accelerators.toml`` (a real file in a source or wheel install)."""
    resource = importlib.resources.files("agent")
    for part in BUILTIN_PROFILES_RESOURCE:
        resource = resource / part
    return resource


def load_builtin_profiles() -> dict[str, AcceleratorProfile]:
    """The profiles of the package's data file, checked like a user's file (file:line:field errors)."""
    resource = builtin_profiles_file()
    path = str(resource)
    try:
        text = resource.read_text(encoding="utf-8")
    except OSError as exc:
        # A packaging bug (the .toml left out of the wheel): say which file, not a traceback.
        raise ConfigError(f"cannot read the built-in profiles ({exc.strerror or exc})", path=path) from None
    profiles = parse_profiles(text, path, base={})
    # parse_profiles accepted the TOML, so this second parse cannot fail.
    for name, table in tomllib.loads(text).items():
        missing = [key for key in _BUILTIN_REQUIRED if key not in table]
        if missing:
            raise ConfigError(
                f"a built-in profile must set {', '.join(missing)} itself",
                path=path,
                line=line_of(text, name, None),
                field=name,
            )
    return profiles


def _profiles() -> dict[str, AcceleratorProfile]:
    """:data:`PROFILES`, loading the built-ins the first time it is needed.

    Not at import: a command that never needs a profile does not pay for reading
    and checking the file.
    Reads the module global each time, so replacing it (``monkeypatch.setattr``)
    is seen everywhere.
    """
    profiles: dict[str, AcceleratorProfile] | None = globals().get("PROFILES")
    if profiles is None:
        with _LOAD_LOCK:
            profiles = globals().get("PROFILES")
            if profiles is None:
                profiles = load_builtin_profiles()
                globals()["PROFILES"] = profiles
    return profiles


if not TYPE_CHECKING:  # hidden from mypy, which would otherwise accept any attribute of this module

    def __getattr__(name: str) -> Any:
        """PEP 562: ``accelerators.PROFILES`` and ``from agent.config.accelerators import PROFILES``."""
        if name == "PROFILES":
            return _profiles()
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _ProfileNames:
    """The valid ``profile`` values of a config field: "" (none) or a known name.

    Used as ``choices`` field metadata so a pipeline file naming an unknown
    profile fails at load with file:line:field; it reads :data:`PROFILES` live,
    so profiles added later are accepted too.
    """

    def __contains__(self, name: object) -> bool:
        return name == "" or name in _profiles()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(_profiles()))


PROFILE_CHOICES = _ProfileNames()


def get_profile(name: str) -> AcceleratorProfile:
    """The profile called ``name``; a :class:`ConfigError` listing the valid names otherwise."""
    try:
        return _profiles()[name]
    except KeyError:
        raise ConfigError(
            f"unknown accelerator profile {name!r}; valid: {', '.join(sorted(_profiles()))}",
            field="profile",
        ) from None


# --------------------------------------------------------------------------- user profiles (TOML)


class _Unset:
    """Marks a setting a profiles-file table left out (``None`` is a real value for some)."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET = _Unset()


def _settings_class() -> type[Any]:
    """Every profile field but ``name``, plus ``base``: what one table of a profiles file may set.

    Same types and bounds as :class:`AcceleratorProfile` (so :func:`build_config`
    checks them and its messages read "expected a number"), all optional.
    """
    hints = get_type_hints(AcceleratorProfile)
    specs: list[tuple[str, Any, Any]] = [
        (f.name, hints[f.name], field(default=_UNSET, metadata=f.metadata))
        for f in dataclasses.fields(AcceleratorProfile)
        if f.name != "name"
    ]
    specs.append(("base", str, field(default=_UNSET)))
    return dataclasses.make_dataclass("ProfileSettings", specs, frozen=True)


def _given(settings: Any) -> dict[str, Any]:
    return {f.name: v for f in dataclasses.fields(settings) if (v := getattr(settings, f.name)) is not _UNSET}


_SETTINGS = _settings_class()
_REQUIRED = tuple(
    f.name
    for f in dataclasses.fields(AcceleratorProfile)
    if f.default is dataclasses.MISSING and f.name not in ("name", "source", "date", "label", "model")
)


def parse_profiles(
    text: str,
    path: str | Path | None = None,
    base: Mapping[str, AcceleratorProfile] | None = None,
) -> dict[str, AcceleratorProfile]:
    """The profiles in a TOML text (one table per profile, named by its header).

    A table may start from an existing profile (``base = "NAME"``: a built-in
    or one defined earlier in the file) and change only some settings. Errors
    name the file, line and field.
    """
    known = dict(_profiles() if base is None else base)

    def fail(message: str, table: str, key: str | None = None) -> ConfigError:
        dotted = ".".join(p for p in (table, key) if p) or None
        return ConfigError(message, path=path, line=line_of(text, table, key), field=dotted)

    raw = parse_toml(text, path)

    found: dict[str, AcceleratorProfile] = {}
    for name, table in raw.items():
        if not isinstance(table, dict):
            raise fail('expected a table per profile, e.g. ["my-gpu-llama-8b"]', name)
        if not _NAME.fullmatch(name):
            raise fail("a profile name uses letters, digits, '.', '_' and '-' only", name)
        for key, value in table.items():
            if isinstance(value, dict):
                # Most likely an unquoted dotted header: [my-llama-3.1-8b] nests tables.
                raise ConfigError(
                    f'a profile name with dots must be quoted: ["{name}.{key}"]',
                    path=path,
                    line=line_of(text, f"{name}.{key}", None),
                    field=f"{name}.{key}",
                )
        settings = build_config(_SETTINGS, table, lambda m, k, n=name: fail(m, n, k))
        values = _given(settings)
        parent_name = values.pop("base", None)
        if parent_name is not None:
            if parent_name not in known:
                raise fail(
                    f"unknown base profile {parent_name!r}; valid: {', '.join(sorted(known))}", name, "base"
                )
            merged = dataclasses.asdict(known[parent_name]) | values
        else:
            missing = [k for k in _REQUIRED if k not in values]
            if missing:
                raise fail(f'missing {", ".join(missing)} (or set base = "PROFILE")', name)
            merged = {
                "label": name,
                "model": "",
                "source": f"user profile file {path or ''}".strip(),
                "date": "undated",
                **values,
            }
        merged["name"] = name
        # TOML integers are accepted for numbers; keep the float fields floats.
        for f in dataclasses.fields(AcceleratorProfile):
            if isinstance(merged.get(f.name), int) and f.name != "max_batch":
                merged[f.name] = float(merged[f.name])
        try:
            profile = AcceleratorProfile(**merged)
        except ConfigError as exc:
            raise fail(exc.reason, name, exc.field) from None
        found[name] = known[name] = profile
    return found


def load_profiles(
    path: str | Path, base: Mapping[str, AcceleratorProfile] | None = None
) -> dict[str, AcceleratorProfile]:
    """The built-in profiles (or ``base``) merged with those of a TOML file; file wins on a name."""
    path = Path(path)
    text = read_config_file(path, "profiles")
    merged = dict(_profiles() if base is None else base)
    merged.update(parse_profiles(text, path, merged))
    return merged


def add_profiles(path: str | Path) -> list[str]:
    """Load a profiles file into :data:`PROFILES` (for this process); returns the names it defined."""
    merged = load_profiles(path)
    profiles = _profiles()
    added = [name for name, profile in merged.items() if profiles.get(name) is not profile]
    profiles.update(merged)
    return added


def with_overrides(profile: AcceleratorProfile, overrides: Mapping[str, Any]) -> AcceleratorProfile:
    """A copy with some settings replaced (checked like a file's), e.g. from command-line flags."""

    def fail(message: str, key: str) -> ConfigError:
        return ConfigError(message, field=key)

    settings = build_config(_SETTINGS, {k: v for k, v in overrides.items() if k != "base"}, fail)
    changes = _given(settings)
    return dataclasses.replace(profile, **changes) if changes else profile


# --------------------------------------------------------------------------- presentation


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    text = f"{value:,.0f}" if value >= 10 or value == math.floor(value) else f"{value:,.1f}"
    return text + unit


def format_profiles_table(profiles: Mapping[str, AcceleratorProfile], *, markdown: bool = False) -> str:
    """The profiles as a text (or Markdown) table: name, model, TTFT, speeds, source, date."""
    header = ["profile", "hardware", "model", "base TTFT ms", "prefill tok/s", "tok/s", "source", "date"]
    rows = [
        [
            p.name,
            p.label,
            p.model,
            _fmt(p.ttft_ms),
            _fmt(p.prefill_tokens_per_s),
            _fmt(p.tokens_per_s),
            p.source,
            p.date,
        ]
        for p in sorted(profiles.values(), key=lambda p: p.name)
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    numeric = {3, 4, 5}
    out = []
    for row in [header, *rows]:
        cells = [
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)
