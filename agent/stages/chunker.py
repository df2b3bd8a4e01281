"""LLM text → speakable phrases. Pure and synchronous.

A sentence end is released as soon as its punctuation arrives, without waiting
for the next token to rule out an ellipsis: that would add a token's time to
every first phrase. A streamed "Well..." is therefore spoken as "Well." and the
leftover dots are dropped.

The chunker decides when TTS may start: releasing the first phrase early cuts
time to first audio, releasing it too early (two words, mid-clause) costs
prosody. So the first phrase has its own, more eager policy: it goes at the
first clause boundary once it has ``first_min_words`` words, or at any sentence
end. Later phrases, which are spoken while the LLM keeps generating, wait for a
sentence end or a clause boundary with ``min_words`` words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["ChunkerConfig", "PhraseChunker"]

_SENTENCE_END = frozenset(".!?")
_CLAUSE_END = frozenset(",;:—")
# Words after which a period does not end a sentence.
# ("no" is deliberately absent: a spoken "No." ends a sentence far more often
# than "No. 5" abbreviates "number".)
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "vs", "etc", "e.g", "i.e", "jr", "sr"})
# Punctuation left over at the front of a phrase (the rest of an ellipsis the
# previous phrase was released on) is not spoken.
_LEADING_PUNCTUATION = ".,;:!?—… "
_WORD = re.compile(r"\S+")


@dataclass(frozen=True, slots=True)
class ChunkerConfig:
    """Phrase release policy (all counts are words)."""

    first_min_words: int = field(default=3, metadata={"min": 1})
    """The first phrase is released at a clause boundary once it has this many words."""
    min_words: int = field(default=6, metadata={"min": 1})
    """Later phrases are released at a clause boundary once they have this many words."""
    max_words: int = field(default=30, metadata={"min": 2})
    """A phrase with no boundary is cut at a word boundary at this length."""


class PhraseChunker:
    """Accumulates streamed text and releases complete phrases."""

    def __init__(self, config: ChunkerConfig | None = None) -> None:
        self.config = config or ChunkerConfig()
        self._buffer = ""
        self._released = 0

    def push(self, text: str) -> list[str]:
        """Add streamed text; return the phrases that became complete."""
        self._buffer += text
        phrases: list[str] = []
        while (cut := self._next_cut()) is not None:
            phrase, self._buffer = self._buffer[:cut].lstrip(_LEADING_PUNCTUATION).strip(), self._buffer[cut:]
            if phrase:
                phrases.append(phrase)
                self._released += 1
        return phrases

    def flush(self) -> list[str]:
        """The stream ended: release whatever is left."""
        phrase, self._buffer = self._buffer.lstrip(_LEADING_PUNCTUATION).strip(), ""
        if not phrase:
            return []
        self._released += 1
        return [phrase]

    def _next_cut(self) -> int | None:
        buf = self._buffer
        min_clause = self.config.first_min_words if self._released == 0 else self.config.min_words
        words = 0
        in_word = False
        last_space = None
        spoken = False  # a phrase of punctuation alone (an ellipsis' tail) is never cut
        for i, ch in enumerate(buf):
            if ch.isspace():
                in_word = False
                last_space = i
                continue
            spoken = spoken or ch.isalnum()
            if not spoken:
                continue
            if not in_word:
                in_word = True
                words += 1
                if words > self.config.max_words and last_space is not None:
                    return last_space
            if ch in _SENTENCE_END and self._ends_sentence(buf, i):
                return i + 1
            if ch in _CLAUSE_END and words >= min_clause and self._is_boundary(buf, i):
                return i + 1
        return None

    @staticmethod
    def _is_boundary(buf: str, i: int) -> bool:
        """Punctuation ends a phrase if followed by space, or if it ends the buffer
        and is not between digits (``3,5`` / ``3.5`` wait for the next character)."""
        if i + 1 < len(buf):
            return buf[i + 1].isspace() or buf[i + 1] in "\"')"
        return not (i > 0 and buf[i - 1].isdigit())

    @classmethod
    def _ends_sentence(cls, buf: str, i: int) -> bool:
        if buf[i] == "." and i + 1 < len(buf) and buf[i + 1] == ".":
            return False  # an ellipsis in progress
        if not cls._is_boundary(buf, i):
            return False
        if buf[i] == ".":
            words = _WORD.findall(buf[: i + 1])
            last = words[-1].rstrip(".").lower() if words else ""
            if last in _ABBREVIATIONS:
                return False
            # "e." at the end of the stream may be the start of "e.g.": wait for more.
            if i + 1 == len(buf) and len(last) == 1 and last.isalpha() and last not in "ai":
                return False
        return True
