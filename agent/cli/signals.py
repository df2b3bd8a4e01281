"""SIGTERM ends a run the way Ctrl-C does: every finished turn, the summary,
the manifest and the recording on disk, then exit 143 (128 + SIGTERM).

``kill`` (and CI runners, systemd, ``timeout``) send SIGTERM, whose default is
to die on the spot, leaving a run folder as ``kill -9`` would. asyncio's runner
already turns SIGINT into a clean cancellation of the run's main task, so
SIGTERM is forwarded to that path instead of a second one being built beside
it; :func:`terminated` then tells the CLI which signal it was.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

__all__ = ["sigterm_as_interrupt", "terminated"]

_received = False


def terminated() -> bool:
    """Whether the interrupt being handled came from SIGTERM."""
    return _received


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _received
    _received = True
    if not callable(signal.getsignal(signal.SIGINT)):
        # SIGINT ignored (a background job of a non-interactive shell): interrupt directly.
        raise KeyboardInterrupt
    # Runs between bytecodes of the main thread, like any Python signal handler:
    # SIGINT's handler (asyncio's, or the default KeyboardInterrupt) takes it from here.
    signal.raise_signal(signal.SIGINT)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM is handled like SIGINT (main thread only; elsewhere a no-op)."""
    global _received
    _received = False
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
