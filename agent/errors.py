"""The testbed's exception hierarchy.

Errors are translated into these classes at the boundary where they happen, so
the CLI can print one clear line for any of them::

    VltError
    ├── ConfigError        a pipeline file or a setting is wrong
    ├── ScenarioError      a scenario file is wrong
    ├── BackendError       a stage's backend failed (names backend and status)
    ├── ProtocolError      a peer broke the wire protocol
    └── ConnectError       an agent URL cannot be reached, a port is busy
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "BackendError",
    "ConfigError",
    "ConnectError",
    "ProtocolError",
    "ScenarioError",
    "UnreachableError",
    "VltError",
    "where",
]


class VltError(Exception):
    """Base class: every error the CLI reports without a traceback."""


def where(path: str | Path | None, line: int | None = None, field: str | None = None) -> str:
    """Format a location prefix such as ``scenarios/x.yaml:12: turns[2].user``."""
    parts = []
    if path is not None:
        parts.append(str(path) if line is None else f"{path}:{line}")
    if field:
        parts.append(field)
    return ": ".join(parts)


class _LocatedError(VltError):
    """An error about one place in one file."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        self.reason = message
        prefix = where(path, line, field)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ConfigError(_LocatedError):
    """A pipeline definition or a command-line setting is invalid."""


class ScenarioError(_LocatedError):
    """A scenario file is invalid (names file, line and field)."""


class BackendError(VltError):
    """A stage backend failed; names the backend, where, and the status."""

    def __init__(
        self,
        backend: str,
        message: str,
        *,
        url: str | None = None,
        status: int | None = None,
    ) -> None:
        self.backend = backend
        self.url = url
        self.status = status
        self.reason = message
        bits = [backend]
        if url:
            bits.append(url)
        if status is not None:
            bits.append(f"HTTP {status}")
        super().__init__(f"{' '.join(bits)}: {message}")


class ProtocolError(VltError):
    """A websocket peer sent something the protocol does not allow."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.reason = message
        super().__init__(f"{code}: {message}")


class ConnectError(VltError):
    """A server cannot be reached, or cannot listen where it was asked to."""


class UnreachableError(ConnectError):
    """The agent to measure could not be connected to (nothing listening, the
    handshake refused or never finished): ``vlt`` exits 3, not 2, so a CI job can
    tell "the agent is down" from "the test is wrong"."""
