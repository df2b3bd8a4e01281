"""Word error rate of a transcript against the scenario's text, via jiwer.

Both sides are normalised first, so that only words count: lowercase, numbers
spelled out ("7:30" -> "seven thirty", "10" -> "ten"), punctuation dropped
(apostrophes inside words kept: "I'd" stays one word), whitespace collapsed.
Whisper writes numbers as digits while scenarios spell them, and a latency
testbed should not report "730" for "seven thirty" as two errors.

``word_error_rate`` is one utterance's rate; :func:`corpus_wer` pools the
errors of many (total errors / total reference words), which weights long
utterances by their length — the rate usually reported for a test set.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from agent.metrics.records import WerSummary

__all__ = ["WerCounts", "corpus_wer", "normalize", "number_words", "wer_counts", "word_error_rate"]

# Word lists as strings, because one word per line would take 30 lines.
_ONES_TEXT = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
)
_ONES = _ONES_TEXT.split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()  # noqa: SIM905
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))

# "7:30", "7.30" (a time as Whisper writes "seven thirty"), then plain integers
# with optional thousands separators ("1,500").
_TIME = re.compile(r"\b(\d{1,2})[:.](\d{2})\b")
_INTEGER = re.compile(r"\b\d{1,3}(?:,\d{3})+\b|\b\d+\b")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_NOT_WORD = re.compile(r"[^\w\s']|_")


def number_words(n: int) -> str:
    """``n`` (>= 0) in English words: 730 -> "seven hundred thirty"."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    for scale, name in _SCALES:
        if n >= scale:
            high, rest = divmod(n, scale)
            return number_words(high) + " " + name + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError("unreachable")  # pragma: no cover


def _time_words(match: re.Match[str]) -> str:
    hour, minute = int(match.group(1)), int(match.group(2))
    if minute == 0:
        return number_words(hour)  # "7:00" is said "seven" (or "seven o'clock")
    spoken = number_words(minute) if minute >= 10 else "oh " + number_words(minute)
    return f"{number_words(hour)} {spoken}"


def _ordinal_words(match: re.Match[str]) -> str:
    words = number_words(int(match.group(1))).split()
    last = words[-1]
    irregular = {
        "one": "first",
        "two": "second",
        "three": "third",
        "five": "fifth",
        "eight": "eighth",
        "nine": "ninth",
        "twelve": "twelfth",
    }
    if last in irregular:
        words[-1] = irregular[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def normalize(text: str) -> str:
    """Lowercase words only, numbers spelled out, single spaces."""
    text = text.casefold()
    text = _TIME.sub(_time_words, text)
    text = _ORDINAL.sub(_ordinal_words, text)
    text = _INTEGER.sub(lambda m: number_words(int(m.group(0).replace(",", ""))), text)
    text = text.replace("-", " ")  # "twenty-one", "e-mail": the parts are the words
    text = _NOT_WORD.sub(" ", text)
    words = [w.strip("'") for w in text.split()]
    return " ".join(w for w in words if w)


@dataclass(frozen=True, slots=True)
class WerCounts:
    """One utterance's errors (substitutions + deletions + insertions) and reference length."""

    errors: int
    reference_words: int

    @property
    def rate(self) -> float:
        if self.reference_words == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.reference_words


def wer_counts(reference: str, hypothesis: str) -> WerCounts:
    """Errors and reference length after :func:`normalize`."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        return WerCounts(len(hyp.split()), 0)
    if not hyp:
        n = len(ref.split())
        return WerCounts(n, n)  # jiwer rejects an empty hypothesis: everything was deleted
    import jiwer

    out = jiwer.process_words(ref, hyp)
    return WerCounts(out.substitutions + out.deletions + out.insertions, len(ref.split()))


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, after normalising.

    0 for a perfect transcript; can exceed 1 when the hypothesis adds words. An
    empty reference gives 0 if the hypothesis is empty too, else infinity.
    """
    return wer_counts(reference, hypothesis).rate


def corpus_wer(pairs: Iterable[tuple[str, str]]) -> WerSummary:
    """Pooled and per-utterance WER of ``(reference, hypothesis)`` pairs.

    ``wer``: total errors / total reference words; ``mean``: the mean of the
    utterances' rates; ``n``: utterances; both rates are None when there are none.
    """
    counts = [wer_counts(ref, hyp) for ref, hyp in pairs]
    counts = [c for c in counts if c.reference_words > 0]
    if not counts:
        return {"n": 0, "wer": None, "mean": None, "errors": 0, "reference_words": 0}
    errors = sum(c.errors for c in counts)
    words = sum(c.reference_words for c in counts)
    return {
        "n": len(counts),
        "wer": errors / words,
        "mean": sum(c.rate for c in counts) / len(counts),
        "errors": errors,
        "reference_words": words,
    }
