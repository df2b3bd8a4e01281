"""Reading TOML configuration files with errors that name file, line and field.

Pipelines (:mod:`agent.stages.pipeline`) and accelerator profiles
(:mod:`agent.config.accelerators`) are both TOML tables turned into frozen
dataclasses; this module is what they share, so neither imports the other.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_type_hints

from agent.config.typecheck import accepts, describe
from agent.errors import ConfigError

__all__ = ["build_config", "check_finite", "line_of", "parse_toml", "read_config_file"]

#: ``fail(message, key)`` returns the error to raise for ``key`` of the table being built.
Fail = Callable[..., Exception]

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column \d+\)")


def read_config_file(path: Path, what: str) -> str:
    """The text of a TOML file, or a :class:`ConfigError` naming it (``what``: "pipeline"…)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found", path=path) from None
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file ({exc.strerror})", path=path) from None


def not_utf8(path: Path, exc: UnicodeDecodeError) -> ConfigError:
    """The error for a file that is not UTF-8: its line and byte offset, from the raw bytes."""
    data = exc.object if isinstance(exc.object, bytes) else b""
    line = data.count(b"\n", 0, exc.start) + 1
    return ConfigError(f"not UTF-8 text (byte {exc.start}: {exc.reason})", path=path, line=line)


def parse_toml(text: str, path: str | Path | None) -> dict[str, Any]:
    """The tables of a TOML text; a syntax error becomes a ConfigError with its line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_POSITION.search(str(exc))
        line = int(match.group(1)) if match else None
        raise ConfigError(f"invalid TOML: {_TOML_POSITION.sub('', str(exc))}", path=path, line=line) from None
    except RecursionError:  # tomllib recurses per nested array or inline table
        raise ConfigError("invalid TOML: arrays or tables nested too deeply", path=path) from None


def build_config(cls: type[Any], table: dict[str, Any], fail: Fail) -> Any:
    """Instantiate a config dataclass from a table, checking keys, types and bounds.

    Field metadata may give ``choices``, ``min``, ``min_exclusive`` and ``max``.
    Every number must be finite: TOML can write ``nan`` and ``inf``, and no
    setting means either (a NaN would pass every bound check below, since
    every comparison with it is false).
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
        if not check_finite(value):
            raise fail(f"must be a finite number, got {value!r}", key)
        meta = fields[key].metadata
        if "choices" in meta and value not in meta["choices"]:
            raise fail(f"must be one of {', '.join(map(str, meta['choices']))}, got {value!r}", key)
        if "min" in meta and value < meta["min"]:
            raise fail(f"must be >= {meta['min']}, got {value!r}", key)
        if "min_exclusive" in meta and value <= meta["min_exclusive"]:
            raise fail(f"must be > {meta['min_exclusive']}, got {value!r}", key)
        if "max" in meta and value > meta["max"]:
            raise fail(f"must be <= {meta['max']}, got {value!r}", key)
    return cls(**table)


def check_finite(value: Any) -> bool:
    """False if ``value`` is, or holds (in a list or table), a NaN or an infinity."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(check_finite(v) for v in value)
    if isinstance(value, dict):
        return all(check_finite(v) for v in value.values())
    return True


_HEADER = re.compile(r"\[\s*(\"[^\"]*\"|'[^']*'|[^\]]+?)\s*\]\s*(#.*)?")


def line_of(text: str | None, table: str, key: str | None) -> int | None:
    """The 1-based line where ``key`` is set in ``[table]``, else the table's header line.

    ``table`` "" is the top level. Headers may be quoted (``["groq-llama-3.1-8b"]``).
    A name given as ``table`` that is set as a top-level key (``audio = 3`` where a
    table was expected) is found too, and so is a top-level table named as ``key``.
    """
    if text is None:
        return None
    current = ""
    header_line = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        header = _HEADER.fullmatch(stripped)
        if header:
            current = header.group(1).strip("\"'")
            if current == table:
                header_line = number
            continue
        if key is not None and current == table and re.match(rf"{re.escape(key)}\s*=", stripped):
            return number
        if key is None and table and not current and re.match(rf"{re.escape(table)}\s*=", stripped):
            return number
    if header_line is None and key is not None and not table:
        return line_of(text, key, None)
    return header_line
