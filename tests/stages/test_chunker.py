"""LLM text → speakable phrases (agent.stages.chunker)."""

from __future__ import annotations

import random

import pytest

from agent.stages.chunker import ChunkerConfig, PhraseChunker
from agent.stages.llm import REPLY_BANK, tokenize


def whole(text: str, config: ChunkerConfig | None = None) -> list[str]:
    chunker = PhraseChunker(config)
    return chunker.push(text) + chunker.flush()


def streamed(text: str, config: ChunkerConfig | None = None) -> list[str]:
    chunker = PhraseChunker(config)
    out: list[str] = []
    for token in tokenize(text):
        out += chunker.push(token)
    return out + chunker.flush()


# --------------------------------------------------------------------------- first phrase


def test_first_phrase_waits_for_first_min_words_at_a_clause_boundary() -> None:
    chunker = PhraseChunker(ChunkerConfig(first_min_words=3))
    assert chunker.push("Yes,") == []  # one word: too early
    assert chunker.push(" I,") == []  # two words: still too early
    assert chunker.push(" can") == []  # three words but no boundary yet
    assert chunker.push(",") == ["Yes, I, can,"]


def test_first_phrase_is_not_released_without_a_boundary() -> None:
    chunker = PhraseChunker()
    assert chunker.push("one two three four five") == []
    assert chunker.flush() == ["one two three four five"]


def test_first_phrase_released_at_first_eligible_clause() -> None:
    assert whole("Hello, there, friend, how are you") == ["Hello, there, friend,", "how are you"]
    assert whole("Yes, sure: now") == ["Yes, sure: now"]  # only two words at the colon


@pytest.mark.parametrize("text", ["Sure.", "Wow!", "Really?"])
def test_sentence_end_always_releases(text: str) -> None:
    chunker = PhraseChunker(ChunkerConfig(first_min_words=5, min_words=10))
    assert chunker.push(text) == [text]
    assert chunker.flush() == []


def test_sentence_end_releases_even_when_streamed() -> None:
    chunker = PhraseChunker()
    assert chunker.push("Sure") == []
    assert chunker.push(".") == ["Sure."]  # at the very end of the buffer: no waiting
    assert chunker.push(" Ok") == []
    assert chunker.flush() == ["Ok"]


def test_several_sentences() -> None:
    assert whole("Is it? Yes! Sure.") == ["Is it?", "Yes!", "Sure."]


# --------------------------------------------------------------------------- later phrases


def test_later_phrases_need_min_words_at_a_clause_boundary() -> None:
    config = ChunkerConfig(first_min_words=3, min_words=6)
    text = "Yes, I can, do that for you, today and tomorrow at once, fine."
    # "do that for you," has only 4 words: the later phrase goes on to the next comma.
    assert whole(text, config) == ["Yes, I can,", "do that for you, today and tomorrow at once,", "fine."]


def test_later_phrase_exactly_min_words() -> None:
    config = ChunkerConfig(first_min_words=1, min_words=3)
    assert whole("Hi, one two, three four five, six", config) == [
        "Hi,",
        "one two, three four five,",
        "six",
    ]
    assert whole("Hi, one two three, four", config) == ["Hi,", "one two three,", "four"]


@pytest.mark.parametrize("mark", [",", ";", ":", "—"])
def test_clause_marks(mark: str) -> None:
    config = ChunkerConfig(first_min_words=2)
    assert whole(f"one two{mark} three", config) == [f"one two{mark}", "three"]


# --------------------------------------------------------------------------- no false splits


def test_decimal_does_not_split() -> None:
    assert whole("It opens at 9.30 tomorrow.") == ["It opens at 9.30 tomorrow."]
    chunker = PhraseChunker()
    assert chunker.push("It opens at 9.") == []  # might be 9.30: wait
    assert chunker.push("30 tomorrow.") == ["It opens at 9.30 tomorrow."]


def test_number_with_thousands_separator_does_not_split() -> None:
    chunker = PhraseChunker()
    assert chunker.push("The price is 3,") == []
    assert chunker.push("500 dollars, okay.") == ["The price is 3,500 dollars,", "okay."]


def test_number_at_sentence_end_releases_at_next_character() -> None:
    chunker = PhraseChunker()
    assert chunker.push("Call me at 5.") == []
    assert chunker.push(" Thanks") == ["Call me at 5."]


@pytest.mark.parametrize("abbr", ["Dr.", "Mr.", "Mrs.", "St.", "vs.", "etc."])
def test_abbreviation_does_not_split(abbr: str) -> None:
    assert whole(f"{abbr} Smith will see you, now at once.") == [
        f"{abbr} Smith will see you,",
        "now at once.",
    ]


def test_abbreviation_with_inner_period_does_not_split() -> None:
    assert whole("e.g. this works, right.") == ["e.g. this works,", "right."]


def test_ellipsis() -> None:
    assert whole("Well... I think so. Hmm") == ["Well...", "I think so.", "Hmm"]
    assert whole("Wait... okay") == ["Wait...", "okay"]
    chunker = PhraseChunker()
    assert chunker.push("Well...") == ["Well..."]
    assert chunker.push(" I") == []


def test_streamed_ellipsis_releases_at_the_first_dot_and_drops_the_rest() -> None:
    # Waiting for the next token to rule out an ellipsis would delay every first
    # phrase by a token; instead the leftover dots are never sent to TTS.
    assert streamed("Well... I think so.") == ["Well.", "I think so."]
    assert whole("Well... I think so.") == ["Well...", "I think so."]


def test_ellipsis_tail_alone_is_never_a_phrase() -> None:
    chunker = PhraseChunker()
    assert chunker.push("Well.") == ["Well."]
    assert chunker.push(".") == []
    assert chunker.push(".") == []
    assert chunker.push(" I see.") == ["I see."]
    assert chunker.flush() == []


def test_no_ends_a_sentence() -> None:
    assert streamed("No. I cannot do that, sorry.") == ["No.", "I cannot do that, sorry."]


def test_streamed_single_letter_abbreviation_waits() -> None:
    assert streamed("Bring a tool, e.g. a hammer.") == ["Bring a tool,", "e.g. a hammer."]


# --------------------------------------------------------------------------- max_words, flush


def test_max_words_cuts_at_a_word_boundary() -> None:
    config = ChunkerConfig(max_words=4)
    assert whole("a b c d e f g h i j k", config) == ["a b c d", "e f g h", "i j k"]


def test_max_words_when_streamed_word_by_word() -> None:
    chunker = PhraseChunker(ChunkerConfig(max_words=3))
    out = []
    for word in ["one", " two", " three", " fo", "ur", " five"]:
        out += chunker.push(word)
    assert out == ["one two three"]
    assert chunker.flush() == ["four five"]


def test_flush_returns_the_remainder_once() -> None:
    chunker = PhraseChunker()
    assert chunker.push("Okay. and then some") == ["Okay."]
    assert chunker.flush() == ["and then some"]
    assert chunker.flush() == []


def test_flush_of_whitespace_is_empty() -> None:
    chunker = PhraseChunker()
    assert chunker.push("   ") == []
    assert chunker.flush() == []


def test_flush_then_reuse_counts_as_later_phrase() -> None:
    chunker = PhraseChunker(ChunkerConfig(first_min_words=1, min_words=3))
    assert chunker.push("Hi,") == ["Hi,"]
    assert chunker.flush() == []
    assert chunker.push("one, two three, four") == ["one, two three,"]


# --------------------------------------------------------------------------- streaming equivalence

TEXTS = (
    *REPLY_BANK,
    "It opens at 9.30 tomorrow, okay.",
    "Dr. Smith will see you, now at once.",
    "The total is 3,500 dollars, including tax; is that okay?",
    "Call me at 5. Thanks!",
    "Absolutely, I've rescheduled your appointment for Thursday afternoon at a quarter past "
    "three; you'll receive a confirmation by text message within the next few minutes.",
    "One two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty twenty-one twenty-two twenty-three "
    "twenty-four twenty-five twenty-six twenty-seven twenty-eight twenty-nine thirty "
    "thirty-one thirty-two.",
)


@pytest.mark.parametrize("text", TEXTS)
def test_streaming_token_by_token_matches_whole_text(text: str) -> None:
    assert streamed(text) == whole(text)


def test_streaming_random_splits_matches_whole_text() -> None:
    rng = random.Random(7)
    config = ChunkerConfig(first_min_words=2, min_words=4, max_words=12)
    for text in TEXTS:
        expected = whole(text, config)
        for _ in range(20):
            chunker = PhraseChunker(config)
            got: list[str] = []
            i = 0
            while i < len(text):
                j = i + rng.randint(1, 8)
                got += chunker.push(text[i:j])
                i = j
            got += chunker.flush()
            assert got == expected, text


@pytest.mark.parametrize("text", [*TEXTS, "Well... I think so. Hmm", "Hi there — how, are you"])
def test_phrases_reproduce_the_words(text: str) -> None:
    phrases = whole(text)
    assert all(p and p == p.strip() for p in phrases)
    assert " ".join(phrases).split() == text.split()
    assert " ".join(streamed(text)).split() == text.split() or "..." in text


def test_long_reply_is_split_into_several_phrases() -> None:
    phrases = whole(TEXTS[-1])
    assert len(phrases) >= 2
    assert all(len(p.split()) <= ChunkerConfig().max_words for p in phrases)
