"""The message dispatcher: routing by type, per-turn routing, unhandled types."""

from __future__ import annotations

from typing import Any

import pytest

from agent.client.dispatcher import MessageDispatcher, TurnMessage
from agent.wire.protocol import AgentText, Bye, Error, Interrupt, MarkList, Pong, Transcript


def test_each_message_goes_to_the_handler_of_its_type_with_its_arrival_time() -> None:
    dispatcher = MessageDispatcher()
    seen: list[tuple[str, Any, int]] = []
    dispatcher.on(Pong, lambda m, now: seen.append(("pong", m, now)))
    dispatcher.on(Error, lambda m, now: seen.append(("error", m, now)))
    pong, error = Pong(t0_ns=1, t1_ns=2, t2_ns=3), Error(code="x", message="boom")
    dispatcher.dispatch(error, 10)
    dispatcher.dispatch(pong, 20)
    assert seen == [("error", error, 10), ("pong", pong, 20)]


def test_a_type_without_a_handler_is_dropped_but_still_observed() -> None:
    dispatcher = MessageDispatcher()
    handled: list[Any] = []
    observed: list[int] = []
    dispatcher.on(Bye, lambda m, now: handled.append(m))
    dispatcher.after_each(lambda: observed.append(len(handled)))
    dispatcher.dispatch(Interrupt(reason="nobody listens"), 5)  # no handler: no error
    dispatcher.dispatch(Bye(reason="done"), 6)
    assert handled == [Bye(reason="done")]
    # Listeners run after every message, handled or not, and after its handler.
    assert observed == [0, 1]


def test_registering_a_type_twice_is_refused() -> None:
    dispatcher = MessageDispatcher()
    dispatcher.on(Pong, lambda m, now: None)
    with pytest.raises(ValueError, match="Pong"):
        dispatcher.on(Pong, lambda m, now: None)


def test_turn_messages_reach_their_turns_state_and_unknown_turns_are_dropped() -> None:
    dispatcher = MessageDispatcher()
    turns: dict[int, list[str]] = {0: [], 1: []}
    asked: list[tuple[str, int, int]] = []

    def turn_of(message: TurnMessage, now: int) -> list[str] | None:
        asked.append((message.TYPE, message.turn, now))
        return turns.get(message.turn)

    def on_text(state: list[str], message: AgentText, now: int) -> None:
        state.append(f"{message.text}@{now}")

    def on_marks(state: list[str], message: MarkList, now: int) -> None:
        state.extend(sorted(message.marks))

    dispatcher.on_turn(AgentText, turn_of, on_text)
    dispatcher.on_turn(MarkList, turn_of, on_marks)
    dispatcher.dispatch(AgentText(turn=1, text="hello"), 7)
    dispatcher.dispatch(MarkList(turn=0, marks={"vad.end_of_turn": 3, "asr.final": 4}), 8)
    dispatcher.dispatch(AgentText(turn=5, text="lost"), 9)  # turn_of: None, dropped
    dispatcher.dispatch(Transcript(turn=0, text="no handler", final=True), 10)
    assert turns == {0: ["asr.final", "vad.end_of_turn"], 1: ["hello@7"]}
    # turn_of sees the message itself (a client may say what it drops); the
    # transcript has no handler, so no turn is looked up for it.
    assert asked == [("agent_text", 1, 7), ("marks", 0, 8), ("agent_text", 5, 9)]
