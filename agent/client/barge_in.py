"""Barge-in figures, shared by the replay and live clients. Pure: instants in, ms out.

A barge-in has three instants after the interrupting speech starts, in order:

- the agent stops (``server.interrupted`` of the interrupted turn, on the client clock);
- the interrupted turn's last agent frame arrives at the client;
- the caller stops *hearing* the agent: the end of playout of everything received
  (replay), or the last agent sample handed to the output device (``vlt demo``).

``stop_ms`` runs to the last of them, because that is what the caller hears; the
older figure, speech start → last frame received, stays as ``received_ms``, and
``flush_ms`` (the agent's stop → its last frame received) is the hop that shows
how much the agent had already sent when it stopped. The difference
``stop_ms - received_ms`` is the audio the client had buffered (about the
agent's ``lead_ms`` plus a frame in a replay).
"""

from __future__ import annotations

from agent.metrics.records import BargeIn

__all__ = ["barge_in_figures"]


def _ms(start: int | None, end: int | None) -> float | None:
    return None if start is None or end is None else (end - start) / 1e6


def barge_in_figures(
    interrupted_turn: int | None,
    speech_start_ns: int | None,
    heard_end_ns: int | None,
    last_frame_ns: int | None,
    agent_stop_ns: int | None,
) -> BargeIn:
    """The record's ``barge_in`` object (``stop_ms`` is ``latency_ms.barge_in_stop`` and
    ``flush_ms`` is ``latency_ms.barge_in_flush``); None for what lacks an instant."""
    return {
        "interrupted_turn": interrupted_turn,
        "stop_ms": _ms(speech_start_ns, heard_end_ns),
        "received_ms": _ms(speech_start_ns, last_frame_ns),
        "flush_ms": _ms(agent_stop_ns, last_frame_ns),
    }
