"""Routes the agent's messages by type, shared by the replay and live clients.

Each client registers a handler per message type it cares about; a message
about one turn (marks, transcripts, agent text, response done) can be routed
straight to that turn's state. Types nobody registered are dropped: the agent
may send more than a client uses (``decode`` has already rejected names the
protocol does not know).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from agent.wire.protocol import AgentText, MarkList, Message, ResponseDone, Transcript

__all__ = ["MessageDispatcher", "TurnMessage"]

log = logging.getLogger("vlt.client")

#: A message about one turn: each carries its number in ``turn``.
TurnMessage = MarkList | Transcript | AgentText | ResponseDone

M = TypeVar("M")
TM = TypeVar("TM", MarkList, Transcript, AgentText, ResponseDone)
#: A client's state for one turn.
S = TypeVar("S")


class MessageDispatcher:
    """Message type → the handler called with the message and its arrival time."""

    def __init__(self) -> None:
        self._handlers: dict[type[Any], Callable[[Any, int], None]] = {}
        self._after_each: list[Callable[[], None]] = []

    def on(self, kind: type[M], handler: Callable[[M, int], None]) -> None:
        """Call ``handler(message, arrival_ns)`` for each message of ``kind``."""
        if kind in self._handlers:
            # Two parts of a client claiming one type is a wiring mistake, not an override.
            raise ValueError(f"a handler for {kind.__name__} is already registered")
        self._handlers[kind] = handler

    def on_turn(
        self,
        kind: type[TM],
        turn_of: Callable[[TurnMessage, int], S | None],
        handler: Callable[[S, TM, int], None],
    ) -> None:
        """Route each ``kind`` message to its turn's state: ``turn_of(message,
        arrival_ns)`` finds (or opens) it, or returns None to drop the message."""

        def route(message: TM, now: int) -> None:
            state = turn_of(message, now)
            if state is not None:
                handler(state, message, now)

        self.on(kind, route)

    def after_each(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every message, handled or not (a display redraws)."""
        self._after_each.append(listener)

    def dispatch(self, message: Message, now: int) -> None:
        handler = self._handlers.get(type(message))
        if handler is None:
            log.debug("no handler for agent message %s", message.TYPE)
        else:
            handler(message, now)
        for listener in self._after_each:
            listener()
