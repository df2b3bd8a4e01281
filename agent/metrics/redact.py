"""Keeping API keys out of everything the testbed writes: one redaction for all.

A backend may echo the caller's key anywhere: in an error body, in ``usage``,
``x_groq.usage``, ``time_info`` or ``timings`` (which become a turn's
``llm.server_timing``), even in the reply text. So every writer — the run
folder (:mod:`agent.metrics.results`), the LLM stage's errors and timings,
the CLI's log lines and printed turns — passes its text through
:func:`redact`, which replaces

* the known secrets: the API key values the ``openai`` stage read from the
  environment variables its pipeline names (it registers them with
  :func:`add_secret` when it is built; the in-process agent shares the
  process with the run writer), and
* anything shaped like a key: ``sk-…``, ``gsk_…`` and ``Bearer …``, which
  covers a remote agent's keys too.

Redact *before* truncating: a snippet cut in the middle of a key would keep a
prefix that no longer matches the key. :func:`redact` and
:func:`redact_value` are pure given their ``secrets``; by default they use the
process's registered ones.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

__all__ = ["MASK", "MIN_SECRET_LENGTH", "add_secret", "known_secrets", "redact", "redact_value"]

MASK = "***"
#: Shorter registered values are left alone: replacing every ``test`` in a
#: reply would garble records, and no provider issues keys that short. (The
#: stage still masks its own key of any length in its error messages.)
MIN_SECRET_LENGTH = 8

_SHAPES = re.compile(
    r"(?<![A-Za-z0-9])(?:sk-[A-Za-z0-9_-]{16,}|gsk_[A-Za-z0-9]{16,})"
    r"|(?<=Bearer )[A-Za-z0-9._~+/=-]+",
    re.IGNORECASE,
)

_known: set[str] = set()
_lock = threading.Lock()

T = TypeVar("T")


def add_secret(value: str) -> None:
    """Redact ``value`` from everything this process writes from now on."""
    if len(value) >= MIN_SECRET_LENGTH:
        with _lock:
            _known.add(value)


def known_secrets() -> tuple[str, ...]:
    """The registered secrets, longest first (so a key containing another is masked whole)."""
    with _lock:
        return tuple(sorted(_known, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every secret and every key-shaped string replaced by ``***``."""
    for secret in known_secrets() if secrets is None else secrets:
        if secret:
            text = text.replace(secret, MASK)
    return _SHAPES.sub(MASK, text)


def redact_value(value: T, secrets: Iterable[str] | None = None) -> T:
    """A copy of a JSON-like value with :func:`redact` applied to every string in it, keys included."""
    chosen = known_secrets() if secrets is None else tuple(secrets)
    return _redact_value(value, chosen)  # type: ignore[no-any-return]


def _redact_value(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, Mapping):
        return {
            (redact(k, secrets) if isinstance(k, str) else k): _redact_value(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_value(v, secrets) for v in value]
    return value
