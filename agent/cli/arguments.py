"""Small argument-parsing helpers shared by the ``vlt`` command modules."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

from agent.errors import ConfigError

__all__ = [
    "Subcommands",
    "check_port",
    "check_run_folders",
    "finite_float",
    "floats",
    "positive_int",
    "split_list",
]

#: What ``add_subparsers()`` returns; argparse gives it no public name.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1 (argparse reports anything else as a usage error)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def finite_float(text: str) -> float:
    """An argparse ``type``: a number that is not nan or inf (``float()`` takes both)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def check_port(port: int, option: str = "--port") -> None:
    """A TCP port the OS can listen on (0: any free one); else one clear line, not an OverflowError."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"{option} must be between 0 and 65535 (0 picks a free port), got {port}")


def check_run_folders(runs_dir: Path | None, out: Path | None) -> None:
    """Fail before any work if the run folder could not be written (see agent.metrics.results)."""
    from agent.metrics.results import check_new_run_dir, check_runs_root

    if out is not None:
        check_new_run_dir(out, option="--out")
    elif runs_dir is not None:
        check_runs_root(runs_dir, option="--runs-dir")


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
    if not values or any(not (0 < v < math.inf) for v in values):  # also false for nan
        raise ConfigError(f"{what}: give one or more positive numbers, got {text!r}")
    return values
