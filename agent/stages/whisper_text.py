"""Word-level cleanup of Whisper hypotheses: cutting repetition loops, LocalAgreement.

:func:`collapse_repeats` removes the loops Whisper falls into on audio cut
mid-word or followed by too little silence; :func:`agreed_prefix` is how many
leading words two consecutive decodes agree on (LocalAgreement-2 commits
those). Words compare ignoring case and punctuation. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["agreed_prefix", "collapse_repeats"]


def _key(word: str) -> str:
    return re.sub(r"[^\w']", "", word.casefold())


def collapse_repeats(text: str, times: int = 3, longest: int = 6) -> str:
    """``text`` with any run of 1 to ``longest`` words repeated ``times`` or more
    times in a row kept once ("The book. The book. The book." -> "The book."),
    and without a restart at its end ("How long is it? How long" -> "How long is it?").

    Audio cut mid-word, as partial decodes see it, sends Whisper into such loops;
    a person rarely says the same phrase three times running.
    """
    words = text.split()
    keys = [_key(w) for w in words]
    out: list[str] = []
    i = 0
    while i < len(words):
        step = 0
        for n in range(1, longest + 1):
            unit = keys[i : i + n]
            if len(unit) < n:
                break
            count = 1
            while keys[i + count * n : i + (count + 1) * n] == unit:
                count += 1
            if count >= times:
                out += words[i + (count - 1) * n : i + count * n]  # the last copy keeps its punctuation
                step = count * n
                break
        if not step:
            out.append(words[i])
            step = 1
        i += step
    return " ".join(_drop_restart(out))


def _drop_restart(words: list[str]) -> list[str]:
    """Cut a restart: the utterance's first words (3 or more) said again at the end."""
    keys = [_key(w) for w in words]
    for k in range(3, len(words) - 2):
        tail = keys[k:]
        if tail == keys[: len(tail)]:
            return words[:k]
    return words


def agreed_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    """How many leading words two hypotheses share (ignoring case and punctuation)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if _key(x) != _key(y):
            break
        n += 1
    return n
