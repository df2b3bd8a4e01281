"""The websocket agent server: sessions, the per-turn orchestrator, paced audio out."""

from agent.server.app import AgentServer

__all__ = ["AgentServer"]
