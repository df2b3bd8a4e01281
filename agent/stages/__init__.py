"""Stage interfaces and implementations: VAD, ASR, LLM, TTS and the phrase chunker.

Each stage kind is a small async (or, for VAD, synchronous) interface; the
orchestrator in :mod:`agent.server.orchestrator` composes them and records all
timing at the hop boundaries, so no stage contains measurement code.
"""
