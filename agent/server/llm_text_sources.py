"""Where the LLM emulator's reply text comes from: a :class:`TextSource` per server.

The scripted reply the testbed's client sends in the request's ``vlt`` field,
a small built-in reply bank, or any in-process LLM stage (a local llama.cpp
model) whose output the emulator re-paces to its accelerator profile. A source
only says *what* the tokens are; the emulator decides *when* each goes out.
"""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.clock import Clock
from agent.errors import ConfigError
from agent.stages.interfaces import LLM, LLMRequest, SessionContext
from agent.stages.llm import bank_reply, tokenize

__all__ = [
    "TEXT_SOURCES",
    "BankTextSource",
    "ScriptedTextSource",
    "StageTextSource",
    "TextRequest",
    "TextSource",
    "llamacpp_text_source",
    "make_text_source",
]

TEXT_SOURCES = ("scripted", "bank", "llamacpp")


@dataclass(frozen=True, slots=True)
class TextRequest:
    """What a text source is asked for: the conversation and, maybe, the scenario's reply."""

    messages: list[dict[str, str]]
    scripted_reply: str | None = None
    max_tokens: int | None = None


class TextSource(Protocol):
    """Where a reply's text comes from; the emulator decides when each token goes out."""

    name: str

    def tokens(self, request: TextRequest) -> AsyncGenerator[str, None]:
        """The reply's tokens, in order, as soon as each exists."""
        ...


class BankTextSource:
    """Always a built-in reply, chosen deterministically by the last user message."""

    name = "bank"

    async def tokens(self, request: TextRequest) -> AsyncGenerator[str, None]:
        for token in tokenize(bank_reply(request.messages)):
            yield token


class ScriptedTextSource:
    """The scenario's scripted reply when the request carries one, else the reply bank."""

    name = "scripted"

    async def tokens(self, request: TextRequest) -> AsyncGenerator[str, None]:
        text = request.scripted_reply or bank_reply(request.messages)
        for token in tokenize(text):
            yield token


class StageTextSource:
    """Any in-process LLM stage (``stream(LLMRequest)``) as a text source: its content, re-paced.

    The stage generates as fast as it can; the emulator sends each piece at
    the profile's time for it — late, never early, when the stage is slower.
    """

    def __init__(self, stage: LLM, name: str) -> None:
        self.stage = stage
        self.name = name
        self._turns = itertools.count()

    async def tokens(self, request: TextRequest) -> AsyncGenerator[str, None]:
        stream = self.stage.stream(LLMRequest(messages=request.messages, turn=next(self._turns)))
        try:
            async for delta in stream:
                if delta.text:
                    yield delta.text
        finally:
            # Stop the stage's generation now (e.g. at max_tokens), not when it is collected.
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()


def llamacpp_text_source(
    clock: Clock, model_path: str | Path | None = None, *, max_tokens: int = 256
) -> StageTextSource:
    """Text from a local GGUF model via the ``llamacpp`` LLM stage (llama-cpp-python).

    Imported lazily: llama-cpp-python is an optional extra that takes minutes to build.
    """
    if importlib.util.find_spec("llama_cpp") is None:
        raise ConfigError(
            "text source 'llamacpp' needs llama-cpp-python, which is not installed: "
            "pip install -e '.[llamacpp]' (built portably, see DESIGN.md)",
            field="text_source",
        )
    from agent.stages.llm_llamacpp import LlamaCppLLM, LlamaCppLLMConfig

    config = LlamaCppLLMConfig(model_path=str(model_path or ""), max_tokens=max_tokens)
    # The stage reads nothing but its config from the context; 16 kHz/20 ms is a placeholder.
    stage = LlamaCppLLM(config, SessionContext(clock=clock, sample_rate=16_000, frame_samples=320))
    return StageTextSource(stage, "llamacpp")


def make_text_source(name: str, clock: Clock, *, model_path: str | Path | None = None) -> TextSource:
    """The text source called ``name`` (one of :data:`TEXT_SOURCES`)."""
    if name == "scripted":
        return ScriptedTextSource()
    if name == "bank":
        return BankTextSource()
    if name == "llamacpp":
        return llamacpp_text_source(clock, model_path)
    raise ConfigError(f"unknown text source {name!r}; valid: {', '.join(TEXT_SOURCES)}", field="text_source")
