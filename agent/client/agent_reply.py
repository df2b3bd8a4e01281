"""What the agent told a client about one turn, built up message by message.

Both clients (replay, live demo) keep one of these per turn and hand it the
turn's MarkList, Transcript, AgentText and ResponseDone messages; what each
client does besides (the replay's events, the live HUD) stays with the client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.wire.protocol import AgentText, MarkList, ResponseDone, Transcript

__all__ = ["AgentReply"]


@dataclass
class AgentReply:
    #: The agent's marks for the turn, on its own clock.
    server_marks: dict[str, int] = field(default_factory=dict)
    #: "pending" until the agent (or the client, giving up) ends the turn.
    status: str = "pending"
    reason: str = ""
    #: The agent's per-turn stats, as ResponseDone carried them.
    stats: dict[str, Any] = field(default_factory=dict)
    transcript: str | None = None
    #: Partial transcripts received while the user spoke (streaming ASRs send them).
    partials: list[str] = field(default_factory=list)
    #: The reply's text pieces as they streamed.
    text: list[str] = field(default_factory=list)
    #: Agent audio samples received for the turn (at the session's rate).
    audio_samples: int = 0

    def add_marks(self, message: MarkList) -> None:
        self.server_marks.update(message.marks)

    def add_transcript(self, message: Transcript) -> None:
        if message.final:
            self.transcript = message.text
            # A final transcript precedes its response's text; a second one is a
            # restarted turn (a VAD split, docs/speech.md): drop the abandoned text.
            self.text.clear()
        else:
            self.partials.append(message.text)

    def add_text(self, message: AgentText) -> None:
        self.text.append(message.text)

    def apply_done(self, message: ResponseDone) -> None:
        self.stats = message.stats
        self.end(message.status, message.reason)

    def end(self, status: str, reason: str) -> None:
        """End the turn with ``status``: the agent's, or the client's when it gave up waiting."""
        self.status, self.reason = status, reason

    @property
    def streamed_text(self) -> str:
        """The reply's text so far, as one string."""
        return " ".join(self.text)

    @property
    def reply(self) -> str:
        """The reply as the record states it: the streamed text, else the text the
        agent's stats name (an agent that sends no AgentText)."""
        return self.streamed_text or str(self.stats.get("reply", ""))
