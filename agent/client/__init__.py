"""Clients of the agent: the scenario replay client and its helpers."""
