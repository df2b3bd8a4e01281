"""``vlt``'s exit statuses (docs name them; CI scripts branch on them)."""

from __future__ import annotations

__all__ = ["EXIT_ERROR", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_TERMINATED", "EXIT_UNREACHABLE"]

EXIT_OK = 0
#: The command ran, and what it checked failed (an expectation, a regression, a mic not ready).
EXIT_FAILED = 1
#: A usage, configuration or run error: argparse's own status for a bad option.
EXIT_ERROR = 2
#: The agent to measure could not be connected to (agent.errors.UnreachableError).
EXIT_UNREACHABLE = 3
#: 128 + SIGINT, as a shell reports a Ctrl-C.
EXIT_INTERRUPTED = 130
#: 128 + SIGTERM: a run ended by ``kill`` (finished like a Ctrl-C, agent/cli/signals.py).
EXIT_TERMINATED = 143
