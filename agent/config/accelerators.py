"""Accelerator profiles (data, each with its source and date) and the timing model.

A profile says how one LLM served on one kind of hardware behaves as seen by a
client: time to first token (TTFT), prefill and decode speed, jitter, and how
those degrade when several streams share the accelerator. The numbers are
public figures from ``REFERENCES.md`` — all approximate; where a figure is an
estimate or a modelling assumption, the profile's ``notes`` say so. They are
data, not code: ``agent/data/accelerators.toml``, shipped in the package and
read by the same loader (and checks, and file:line:field errors) as a user's
profiles file.

The timing model is pure (no clock, no I/O): it turns a profile, a prompt size
and a load into nanosecond offsets. The in-process ``emulated`` LLM stage and
the OpenAI-compatible emulator server (:mod:`agent.server.llm_emulator`) both
pace tokens with it, so the emulator's behaviour is one piece of code used two
ways. The equations are in ``docs/accelerators.md``::

    b          = min(n, max_batch)                              streams decoding together
    rate(n)    = min(tokens_per_s / (1 + batch_slowdown·(b-1)),
                     aggregate_tokens_per_s / b)                per-stream decode speed
    ttft(n, p) = queue_ms_per_stream·(b-1)                      contention with the batch
               + p / prefill_tokens_per_s                       prefill of p prompt tokens
               + max(0, ttft_ms + N(0, ttft_jitter_ms))         network and scheduling
    gap_i      = max(0, 1 + N(0, jitter)) / rate(n_i)           i-th inter-token gap
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import random
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
    "TTFTParts",
    "TokenTimer",
    "add_profiles",
    "aggregate_tokens_per_s",
    "builtin_profiles_file",
    "decode_batch",
    "format_profiles_table",
    "gap_ns",
    "get_profile",
    "load_builtin_profiles",
    "load_profiles",
    "parse_profiles",
    "stream_tokens_per_s",
    "token_schedule_ns",
    "ttft_ns",
    "ttft_parts",
    "with_overrides",
]

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000
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
            if "min" in f.metadata and value < f.metadata["min"]:
                raise ConfigError(f"must be >= {f.metadata['min']}, got {value!r}", field=f.name)
            if "min_exclusive" in f.metadata and value <= f.metadata["min_exclusive"]:
                raise ConfigError(f"must be > {f.metadata['min_exclusive']}, got {value!r}", field=f.name)


# --------------------------------------------------------------------------- the timing model


def decode_batch(profile: AcceleratorProfile, active_streams: int) -> int:
    """Streams decoding together when ``active_streams`` want to (at least 1)."""
    return max(1, min(active_streams, profile.max_batch))


def stream_tokens_per_s(profile: AcceleratorProfile, active_streams: int) -> float:
    """Decode speed of each stream while ``active_streams`` share the accelerator.

    Batching makes each decode step a little slower (``batch_slowdown``) and the
    total can never exceed the accelerator's throughput (``aggregate_tokens_per_s``).
    """
    batch = decode_batch(profile, active_streams)
    rate = profile.tokens_per_s / (1.0 + profile.batch_slowdown * (batch - 1))
    if profile.aggregate_tokens_per_s is not None:
        rate = min(rate, profile.aggregate_tokens_per_s / batch)
    return rate


def aggregate_tokens_per_s(profile: AcceleratorProfile, active_streams: int) -> float:
    """Total decode throughput of the accelerator under that load."""
    return decode_batch(profile, active_streams) * stream_tokens_per_s(profile, active_streams)


@dataclass(frozen=True, slots=True)
class TTFTParts:
    """One request's planned time to first token, in nanoseconds, by cause."""

    queue_ns: float
    """Contention with the other streams in the batch."""
    prefill_ns: float
    """Processing the prompt."""
    base_ns: float
    """Network and scheduling (jitter included)."""

    @property
    def total_ns(self) -> int:
        return round(self.queue_ns + self.prefill_ns + self.base_ns)


def ttft_parts(
    profile: AcceleratorProfile,
    prompt_tokens: int,
    active_streams: int,
    rng: random.Random | None = None,
) -> TTFTParts:
    """TTFT = queueing + prompt tokens ÷ prefill speed + base latency (± jitter).

    ``active_streams`` counts this request. Draws one number from ``rng`` when
    the profile has TTFT jitter (``None``: no jitter).
    """
    queue = profile.queue_ms_per_stream * NS_PER_MS * (decode_batch(profile, active_streams) - 1)
    prefill = 0.0
    if profile.prefill_tokens_per_s is not None and prompt_tokens > 0:
        prefill = prompt_tokens * NS_PER_S / profile.prefill_tokens_per_s
    base = profile.ttft_ms * NS_PER_MS
    if rng is not None and profile.ttft_jitter_ms:
        # Only the base latency varies: no jitter makes prefill faster than the hardware.
        base = max(0.0, base + rng.gauss(0.0, profile.ttft_jitter_ms * NS_PER_MS))
    return TTFTParts(queue_ns=queue, prefill_ns=prefill, base_ns=base)


def ttft_ns(
    profile: AcceleratorProfile,
    prompt_tokens: int,
    active_streams: int,
    rng: random.Random | None = None,
) -> int:
    """Planned time from request to first token (see :func:`ttft_parts`)."""
    return ttft_parts(profile, prompt_tokens, active_streams, rng).total_ns


def gap_ns(profile: AcceleratorProfile, active_streams: int, rng: random.Random | None = None) -> float:
    """One inter-token gap (float ns) at the current load; draws once from ``rng`` if jittered."""
    gap = NS_PER_S / stream_tokens_per_s(profile, active_streams)
    if rng is not None and profile.jitter:
        gap *= max(0.0, 1.0 + rng.gauss(0.0, profile.jitter))
    return gap


class TokenTimer:
    """Successive token offsets, with the load re-read at every token.

    Gaps are summed as floats and each offset rounded on its own, so a
    non-integer gap never accumulates rounding error. Under a constant load it
    gives exactly :func:`token_schedule_ns`; the emulator server feeds it the
    number of streams active at each token, so streams slow down as others join
    and speed up as they finish.
    """

    def __init__(self, profile: AcceleratorProfile, first_ns: int, rng: random.Random | None = None):
        self.profile = profile
        self._rng = rng
        self._t = float(first_ns)
        self._emitted = 0

    def next_ns(self, active_streams: int) -> int:
        """The offset of the next token, given the streams active now."""
        if self._emitted:
            self._t += gap_ns(self.profile, active_streams, self._rng)
        self._emitted += 1
        return round(self._t)


def token_schedule_ns(
    profile: AcceleratorProfile,
    n_tokens: int,
    *,
    prompt_tokens: int = 0,
    active_streams: int = 1,
    rng: random.Random | None = None,
) -> list[int]:
    """Offsets from the request at which each of ``n_tokens`` is emitted, at a constant load.

    Random draws, in order: the TTFT jitter, then one per gap after the first token.
    """
    timer = TokenTimer(profile, ttft_ns(profile, prompt_tokens, active_streams, rng), rng)
    return [timer.next_ns(active_streams) for _ in range(n_tokens)]


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
