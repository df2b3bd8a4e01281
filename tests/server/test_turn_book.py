"""The session's turn decisions by plain calls: numbering, continuation, barge-in.

No sockets, no event loop, no clock: sample positions and nanosecond times are
made up, as the session would pass them.
"""

from __future__ import annotations

from agent.server.turn_book import (
    BARGE_IN,
    CONTINUATION,
    NEW_TURN,
    BargeIn,
    ContinueTurn,
    Resume,
    StartTurn,
    TurnBook,
)
from agent.stages.interfaces import ScriptBook
from agent.wire.protocol import Script

SECOND = 16000  # samples


def scripted(*starts: int) -> TurnBook:
    """A book with one script per start sample, turns 0, 1, 2, … (each a second long)."""
    book = TurnBook()
    for turn, start in enumerate(starts):
        book.script(Script(turn=turn, speech_start_sample=start, speech_end_sample=start + SECOND))
    return book


def answer(book: TurnBook, sample: int, t_ns: int = 0) -> StartTurn | ContinueTurn:
    """An end of turn whose reply the session then starts."""
    decision = book.end_of_turn(sample, t_ns)
    book.reply_started(decision.turn)
    return decision


# --------------------------------------------------------------------------- numbering


def test_without_scripts_turns_count_from_zero() -> None:
    book = TurnBook()
    decisions = [book.end_of_turn(sample, 0) for sample in (100, 200, 300)]
    assert [d.turn for d in decisions] == [0, 1, 2]
    assert all(isinstance(d, StartTurn) and d.script is None for d in decisions)


def test_an_end_of_turn_takes_the_turn_of_the_script_covering_it() -> None:
    book = scripted(0, 2 * SECOND, 4 * SECOND)
    first = book.end_of_turn(SECOND + 100, 0)  # after the speech, before the next script
    third = book.end_of_turn(5 * SECOND, 0)  # the VAD missed turn 1
    assert isinstance(first, StartTurn) and first.turn == 0
    assert first.script is not None and first.script.speech_start_sample == 0
    assert first.end_sample == SECOND + 100
    assert isinstance(third, StartTurn) and third.turn == 2


def test_a_late_script_covers_only_what_comes_after_its_start() -> None:
    book = scripted(0)
    assert book.end_of_turn(100, 0).turn == 0
    book.script(Script(turn=1, speech_start_sample=SECOND, speech_end_sample=2 * SECOND))
    assert book.end_of_turn(SECOND + 1, 0).turn == 1
    assert [s.turn for s in book.scripts] == [0, 1]


def test_ends_outside_every_script_skip_announced_and_taken_ids() -> None:
    book = scripted(SECOND, 2 * SECOND)  # announces turns 0 and 1
    before = book.end_of_turn(SECOND - 1, 0)  # speech before the first script
    assert isinstance(before, StartTurn) and before.turn == 2 and before.script is None
    assert book.end_of_turn(0, 0).turn == 3
    assert book.end_of_turn(SECOND + 5, 0).turn == 0  # the scripts keep their own ids


def test_a_partial_belongs_to_the_covering_script_else_the_next_free_turn() -> None:
    book = scripted(SECOND)
    assert book.partial_turn(SECOND + 10) == 0
    # Before the script: the id the next unscripted end of turn will take, not used up.
    assert book.partial_turn(10) == 1
    assert book.partial_turn(10) == 1
    assert book.end_of_turn(20, 0).turn == 1
    assert book.partial_turn(30) == 2


def test_a_script_for_an_id_an_unscripted_turn_took_continues_that_turn() -> None:
    """Edge case kept from the session: ids are not re-announced, so a script
    arriving for a turn id already answered makes its end of turn a continuation."""
    book = TurnBook()
    assert book.end_of_turn(100, 0).turn == 0
    book.script(Script(turn=0, speech_start_sample=SECOND, speech_end_sample=2 * SECOND))
    late = book.end_of_turn(SECOND + 100, 0)
    assert isinstance(late, ContinueTurn) and late.turn == 0
    assert book.vad_splits(0) == 1


# --------------------------------------------------------------------------- marks


def test_a_turn_gets_the_first_speech_start_since_the_last_end_of_turn() -> None:
    book = TurnBook()
    assert book.speech_start(10, 1_000) is None
    assert book.speech_start(20, 2_000) is None  # a second run of speech in the same turn
    first = book.end_of_turn(30, 3_000)
    assert first.marks == {"vad.speech_start": 1_000, "vad.end_of_turn": 3_000}
    assert list(first.marks) == ["vad.speech_start", "vad.end_of_turn"]  # wire order
    # No speech start heard for the next one: no mark, rather than a stale one.
    second = book.end_of_turn(40, 4_000)
    assert second.marks == {"vad.end_of_turn": 4_000}


def test_the_speech_start_that_barged_in_belongs_to_the_next_turn() -> None:
    book = scripted(0, SECOND)
    answer(book, 100, 1_000)
    assert book.speech_start(SECOND + 10, 5_000) == BargeIn(0)
    book.reply_ended()
    nxt = book.end_of_turn(SECOND + 500, 6_000)
    assert nxt.turn == 1
    assert nxt.marks["vad.speech_start"] == 5_000


# --------------------------------------------------------------------------- continuation


def test_a_split_utterance_continues_its_turn_with_the_words_so_far() -> None:
    book = scripted(0, 3 * SECOND)
    assert book.speech_start(10, 1_000) is None
    first = answer(book, SECOND // 2, 2_000)
    assert isinstance(first, StartTurn) and first.turn == 0
    assert book.vad_splits(0) is None
    # The user goes on after the pause while the reply runs: stop it silently.
    resumed = book.speech_start(SECOND // 2 + 3000, 2_500)
    assert resumed == Resume(0)
    assert resumed.reason == CONTINUATION
    book.heard(0, "Hi,")
    book.reply_ended()
    again = answer(book, SECOND, 4_000)
    assert isinstance(again, ContinueTurn)
    assert (again.turn, again.prefix, again.end_sample) == (0, "Hi,", SECOND)
    assert again.script.turn == 0
    # Endpointing runs over the whole utterance: the turn keeps its first speech start.
    assert again.marks == {"vad.speech_start": 1_000, "vad.end_of_turn": 4_000}
    assert book.vad_splits(0) == 1
    # The next utterance is a new turn again, with its own number.
    book.reply_ended()
    nxt = book.end_of_turn(4 * SECOND, 9_000)
    assert isinstance(nxt, StartTurn) and nxt.turn == 1
    assert book.vad_splits(1) is None


def test_splits_count_every_continuation() -> None:
    book = scripted(0)
    for sample in (100, 200, 300):
        book.end_of_turn(sample, 0)
    assert book.vad_splits(0) == 2


def test_a_continuation_keeps_the_longest_transcript_heard() -> None:
    book = scripted(0)
    answer(book, 100)
    book.heard(0, "Hi,")
    book.heard(0, "")  # an attempt stopped before its ASR final: nothing new heard
    book.reply_ended()
    again = book.end_of_turn(200, 0)
    assert isinstance(again, ContinueTurn) and again.prefix == "Hi,"


def test_words_heard_after_the_turn_continued_still_lead_it() -> None:
    # The first attempt was stopped while its ASR was finalizing: the book decides
    # the continuation before those words are known; the session asks again.
    book = scripted(0, 3 * SECOND)
    answer(book, SECOND // 2)
    book.speech_start(SECOND // 2 + 3000, 2_500)
    book.reply_ended()
    again = book.end_of_turn(SECOND, 4_000)
    assert isinstance(again, ContinueTurn) and again.prefix == ""
    book.heard(0, "I'd like to book a table")  # the stopped attempt's final, late
    assert book.words_so_far(0) == "I'd like to book a table"


def test_every_split_of_one_utterance_adds_its_words() -> None:
    # Two pauses: each attempt's transcript already carries the prefix it was given,
    # so the third attempt starts from all the words before its pause.
    book = scripted(0, 5 * SECOND)
    answer(book, SECOND)
    book.heard(0, "I'd like")
    book.reply_ended()
    second = book.end_of_turn(2 * SECOND, 0)
    assert isinstance(second, ContinueTurn)
    book.heard(0, f"{second.prefix} to book a table")
    book.reply_ended()
    third = book.end_of_turn(3 * SECOND, 0)
    assert isinstance(third, ContinueTurn) and third.prefix == "I'd like to book a table"
    assert book.vad_splits(0) == 2
    assert book.words_so_far(1) == ""  # a turn never heard


def test_a_continuation_without_a_first_speech_start_takes_the_resumed_one() -> None:
    book = scripted(0)
    book.end_of_turn(100, 1_000)  # no speech start heard (e.g. the VAD started mid-speech)
    book.speech_start(150, 1_500)
    again = book.end_of_turn(200, 2_000)
    assert isinstance(again, ContinueTurn) and again.prefix == ""
    assert again.marks == {"vad.speech_start": 1_500, "vad.end_of_turn": 2_000}


def test_what_a_new_end_of_turn_stops_a_running_reply_with() -> None:
    book = scripted(0, SECOND)
    assert book.end_of_turn(100, 0).stop_reason == NEW_TURN
    assert book.end_of_turn(200, 0).stop_reason == CONTINUATION
    assert book.end_of_turn(SECOND + 1, 0).stop_reason == NEW_TURN


# --------------------------------------------------------------------------- barge-in


def test_speech_while_the_agent_is_idle_stops_nothing() -> None:
    book = scripted(0, SECOND)
    assert book.speech_start(10, 1_000) is None
    answer(book, 100, 2_000)
    book.reply_ended()
    assert book.speech_start(SECOND + 10, 3_000, audible_until_ns=3_000) is None  # playout just ended


def test_speech_while_a_reply_runs_is_a_barge_in() -> None:
    book = scripted(0, SECOND)
    answer(book, 100)
    decision = book.speech_start(SECOND + 10, 1_000)
    assert decision == BargeIn(0)
    assert decision is not None and decision.reason == BARGE_IN


def test_speech_while_the_reply_is_still_audible_is_a_barge_in() -> None:
    book = TurnBook()
    answer(book, 100)
    book.reply_ended()
    assert book.speech_start(200, 1_000, audible_until_ns=1_001) == BargeIn(0)


def test_resuming_the_answered_utterance_while_it_is_audible_is_a_continuation() -> None:
    book = scripted(0, SECOND)
    answer(book, 100)
    book.reply_ended()
    assert book.speech_start(200, 1_000, audible_until_ns=5_000) == Resume(0)


def test_barge_in_names_the_latest_reply_started() -> None:
    book = TurnBook()
    answer(book, 100)
    book.reply_ended()
    answer(book, 200)
    assert book.speech_start(300, 1_000) == BargeIn(1)


def test_audio_without_any_reply_is_still_stopped() -> None:
    book = TurnBook()
    assert book.speech_start(10, 1_000, audible_until_ns=2_000) == BargeIn(None)


# -- bounded memory (issue 16) ------------------------------------------------------------


def test_script_book_prune_keeps_every_answer_from_the_cut_on() -> None:
    book = ScriptBook()
    scripts = [Script(turn=k, speech_start_sample=100 * k, speech_end_sample=100 * k + 50) for k in range(10)]
    for script in scripts:
        book.add(script)
    before = {sample: book.covering(sample) for sample in range(450, 1000, 7)}
    book.prune(450)
    assert len(book) == 6  # turns 4 (covers 450) to 9
    assert {sample: book.covering(sample) for sample in range(450, 1000, 7)} == before
    book.prune(10_000)
    assert [s.turn for s in book] == [9]  # the last one always stays


def test_the_book_keeps_only_recent_transcripts() -> None:
    book = TurnBook()
    for turn in range(100):
        book.heard(turn, f"words of turn {turn}")
    assert len(book._transcripts) <= 16
    assert book._transcripts[99] == "words of turn 99"
