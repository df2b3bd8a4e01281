"""What a server allows each client, so a hostile or broken one cannot hurt the rest.

Every limit has a default meant for an honest caller never to meet (a replay,
a live demo, a 1,000-turn soak) and is set with ``vlt serve agent`` options
(``--max-sessions``, ``--idle-timeout-s`` ...). Exceeding one ends only that
session, with an ``error`` message naming the limit and a close code
(docs/protocol.md, "Limits"): 1008 for a limit, 1013 when the server is full.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.errors import ConfigError
from agent.wire.json_guard import DEFAULT_MAX_JSON_DEPTH

__all__ = ["ServerLimits"]


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_sessions: int = 64
    """Sessions served at once; one more is refused with ``server_busy`` (close 1013)."""
    handshake_timeout_s: float = 10.0
    """Time from connecting to the client's ``hello``."""
    idle_timeout_s: float = 60.0
    """Longest silence (no frame of any kind) after ``hello``. An honest client
    streams audio all the time (docs/protocol.md), so this only ends dead sessions."""
    max_scripts: int = 64
    """``script`` messages held at once: those announced for audio not yet sent,
    plus those of the last ``script_retention_s`` of audio (older ones are dropped)."""
    script_retention_s: float = 60.0
    """How far behind the upstream audio a script is kept (its turn can still end)."""
    max_script_chars: int = 16_384
    """Characters of ``text`` + ``reply`` in one ``script``."""
    max_audio_ahead_s: float = 5.0
    """Pending audio: how far the upstream audio may run ahead of real time (the
    session's clock since its first audio frame). A microphone cannot; a flood can."""
    max_logged_chars: int = 300
    """Characters of a client's text (an ``error`` message, an interrupt reason)
    that reach the log or are echoed back; the rest is cut, its length noted."""
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    """Deepest array/object nesting in a text frame (checked before parsing)."""
    max_pending_requests: int = 64
    """TTS service (``vlt serve tts``): ``synthesize`` requests queued at once."""
    max_synthesize_chars: int = 16_384
    """TTS service: characters of text in one ``synthesize`` request."""

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            # Zero or less would refuse every client; non-finite numbers never compare.
            if not value > 0 or value == float("inf"):
                raise ConfigError(f"must be a finite number > 0, got {value!r}", field=name)
