"""Small argument-parsing helpers shared by the ``vlt`` command modules."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TypeAlias

from agent.errors import ConfigError

__all__ = ["Subcommands", "floats", "positive_int", "split_list"]

#: What ``add_subparsers()`` returns; argparse gives it no public name.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1 (argparse reports anything else as a usage error)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def split_list(text: str | None) -> tuple[str, ...] | None:
    """The non-blank items of a comma-separated option, or None when it was not given."""
    if text is None:
        return None
    return tuple(item.strip() for item in text.split(",") if item.strip())


def floats(text: str | None, default: Sequence[float], what: str) -> list[float]:
    """Comma-separated positive numbers of option ``what``, or ``default`` when it was not given."""
    if text is None:
        return list(default)
    try:
        values = [float(item) for item in split_list(text) or ()]
    except ValueError:
        raise ConfigError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"{what}: give one or more positive numbers, got {text!r}")
    return values
