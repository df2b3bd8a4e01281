"""What a client can measure: vlt's own protocol or a black-box agent, chosen by URL.

``ws://``/``wss://`` is vlt's protocol (docs/protocol.md); ``pcm+ws://``/
``pcm+wss://`` a plain PCM websocket agent (docs/black-box.md).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from agent.client.connection import open_session
from agent.client.targets.link import AgentLink, ProtocolLink
from agent.client.targets.pcm_ws import PCM_SCHEMES, open_pcm_ws
from agent.clock import Clock
from agent.wire.protocol import Hello

__all__ = ["AgentLink", "is_black_box", "open_target"]


def is_black_box(url: str) -> bool:
    """``url`` names an agent measured from its audio alone."""
    return urlsplit(url).scheme in PCM_SCHEMES


async def open_target(
    url: str, clock: Clock, sample_rate: int | None, frame_ms: int | None
) -> tuple[AgentLink, Hello]:
    """Connect to the agent ``url`` names; the link and the agent's hello (for a
    black box, one standing for it: the target's audio format comes from its URL)."""
    if is_black_box(url):
        return await open_pcm_ws(url, clock)
    ws, hello = await open_session(url, clock, sample_rate, frame_ms)
    return ProtocolLink(ws), hello
