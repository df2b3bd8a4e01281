"""JSON from a peer, decoded with limits: nesting depth checked before parsing, lone surrogates found.

``json.loads`` recurses once per nesting level, so 10⁵ ``[`` from a peer
raises ``RecursionError`` (a traceback, a 1011 close) instead of a clear error;
and JSON may escape a lone UTF-16 surrogate (``"\\ud800"``), which decodes to a
Python string that cannot be encoded to UTF-8 anywhere later (a log line, a
CRC, a TTS engine). Both are caught here, at the boundary, for every decoder
of peer JSON: the agent protocol, the service protocol and the LLM emulator.
Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = [
    "DEFAULT_MAX_JSON_DEPTH",
    "JSONDepthError",
    "clip",
    "find_lone_surrogate",
    "json_depth",
    "loads_limited",
    "may_hold_surrogate",
]

#: Deepest nesting of arrays/objects accepted by default. The agent protocol needs
#: 3, an OpenAI chat request with tool schemas rarely more than 10.
DEFAULT_MAX_JSON_DEPTH = 32

# A JSON string literal (escapes included), removed before counting brackets:
# a bracket inside a string is text, not nesting.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
# Each byte of the text → +1 for an opening bracket, -1 (as int8) for a closing one, else 0.
_BRACKET_STEP = bytes(1 if c in b"[{" else 255 if c in b"]}" else 0 for c in range(256))
# A lone surrogate needs a \uD800-\uDFFF escape; text without one needs no walk.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class JSONDepthError(ValueError):
    """The text nests arrays/objects deeper than allowed (or its brackets do not balance)."""


def json_depth(text: str | bytes) -> int:
    """The deepest array/object nesting in JSON ``text`` (brackets inside strings ignored).

    Linear and non-recursive (a few ms per MiB): it runs *before* the
    recursive parser. For text that is not JSON the number is meaningless but
    still finite; unbalanced closing brackets can make it smaller than it looks.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    steps = _STRING.sub("", text).encode("utf-8", "surrogatepass").translate(_BRACKET_STEP)
    if not steps:
        return 0
    import numpy as np  # lazily: only texts with many brackets get here

    return max(0, int(np.cumsum(np.frombuffer(steps, dtype=np.int8), dtype=np.int64).max()))


def loads_limited(text: str | bytes, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that raises :class:`JSONDepthError` instead of recursing past ``max_depth``.

    Other malformed input raises ``ValueError`` (``json.JSONDecodeError``) or
    ``UnicodeDecodeError`` as ``json.loads`` does.
    """
    opening = (
        text.count("[") + text.count("{") if isinstance(text, str) else text.count(b"[") + text.count(b"{")
    )
    # Fast path: fewer opening brackets than the limit cannot nest deeper than it.
    if opening > max_depth and (depth := json_depth(text)) > max_depth:
        raise JSONDepthError(f"JSON nested {depth} levels deep; at most {max_depth} allowed")
    return json.loads(text)


def find_lone_surrogate(value: Any, path: str = "") -> tuple[str, str] | None:
    """Where in decoded JSON ``value`` a string (or key) holds a lone UTF-16 surrogate.

    Returns ``(path, what)`` such as ``("reply", "\\ud800 at index 5")``, or
    None. The walk is iterative, so any depth is safe.
    """
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if (at := _lone_surrogate_at(item)) is not None:
                return where, f"\\u{ord(item[at]):04x} at index {at}"
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and (at := _lone_surrogate_at(key)) is not None:
                    return where, f"a key holds \\u{ord(key[at]):04x}"
                stack.append((f"{where}.{key}" if where else str(key), child))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", child) for i, child in enumerate(item))
    return None


def _lone_surrogate_at(text: str) -> int | None:
    """Index of the first lone surrogate in ``text``, or None.

    The UTF-8 encoder finds it in C (~0.5 ms per MiB); a regex over every
    character took ten times as long, on the event loop, for each big message.
    """
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def may_hold_surrogate(text: str | bytes) -> bool:
    """False when JSON ``text`` cannot decode to a lone surrogate: it has no
    \\uD800-\\uDFFF escape and (as a websocket text frame always is) is valid UTF-8."""
    if isinstance(text, bytes):
        return _SURROGATE_ESCAPE.search(text.decode("utf-8", "replace")) is not None
    return _SURROGATE_ESCAPE.search(text) is not None or _lone_surrogate_at(text) is not None


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters for a log line, saying how long it was;
    lone surrogates are escaped so the line can always be written."""
    if len(text) > limit:
        text = f"{text[:limit]}… ({len(text):,} characters)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
