"""AgentReply: what the agent told a client about one turn, message by message."""

from __future__ import annotations

from agent.client.agent_reply import AgentReply
from agent.wire.protocol import AgentText, MarkList, ResponseDone, Transcript


def test_a_new_reply_is_pending_and_empty() -> None:
    reply = AgentReply()
    assert (reply.status, reply.reason, reply.transcript) == ("pending", "", None)
    assert reply.server_marks == {} and reply.stats == {} and reply.partials == []
    assert (reply.streamed_text, reply.reply, reply.audio_samples) == ("", "", 0)


def test_marks_accumulate_and_a_later_mark_of_the_same_name_wins() -> None:
    reply = AgentReply()
    reply.add_marks(MarkList(turn=0, marks={"vad.end_of_turn": 10, "asr.final": 20}))
    reply.add_marks(MarkList(turn=0, marks={"asr.final": 25, "llm.first_token": 30}))
    assert reply.server_marks == {"vad.end_of_turn": 10, "asr.final": 25, "llm.first_token": 30}


def test_partials_are_kept_in_order_and_the_final_transcript_is_set_apart() -> None:
    reply = AgentReply()
    reply.add_transcript(Transcript(turn=0, text="a table", final=False))
    reply.add_transcript(Transcript(turn=0, text="a table for", final=False))
    reply.add_transcript(Transcript(turn=0, text="a table for two"))
    assert reply.partials == ["a table", "a table for"]
    assert reply.transcript == "a table for two"


def test_the_reply_text_streams_in_pieces_joined_by_spaces() -> None:
    reply = AgentReply()
    reply.add_transcript(Transcript(turn=0, text="hello"))
    reply.add_text(AgentText(turn=0, text="Sure,"))
    reply.add_text(AgentText(turn=0, text="for what time?"))
    assert reply.text == ["Sure,", "for what time?"]
    assert reply.streamed_text == reply.reply == "Sure, for what time?"


def test_a_second_final_transcript_restarts_the_turn_and_drops_the_abandoned_text() -> None:
    reply = AgentReply()
    reply.add_transcript(Transcript(turn=0, text="a table"))
    reply.add_text(AgentText(turn=0, text="For how many?"))
    reply.add_transcript(Transcript(turn=0, text="a table for two"))
    assert reply.transcript == "a table for two"
    assert reply.text == [] and reply.streamed_text == ""
    reply.add_text(AgentText(turn=0, text="At what time?"))
    assert reply.reply == "At what time?"


def test_a_partial_after_the_reply_began_keeps_the_reply_text() -> None:
    reply = AgentReply()
    reply.add_text(AgentText(turn=0, text="Sure."))
    reply.add_transcript(Transcript(turn=0, text="and", final=False))
    assert reply.text == ["Sure."] and reply.partials == ["and"]


def test_response_done_sets_stats_status_and_reason() -> None:
    reply = AgentReply()
    stats = {"output_tokens": 12, "reply": "Sure."}
    reply.apply_done(ResponseDone(turn=0, status="interrupted", reason="barge-in", stats=stats))
    assert (reply.status, reply.reason, reply.stats) == ("interrupted", "barge-in", stats)


def test_without_streamed_text_the_reply_is_the_one_the_stats_name() -> None:
    reply = AgentReply()
    reply.apply_done(ResponseDone(turn=0, status="ok", reason="", stats={"reply": "Booked."}))
    assert reply.streamed_text == "" and reply.reply == "Booked."
    reply.add_text(AgentText(turn=0, text="Table booked."))
    assert reply.reply == "Table booked."  # the streamed text, when there is some, wins


def test_the_client_can_end_a_turn_the_agent_never_finished() -> None:
    reply = AgentReply()
    reply.end("no_response", "no response within 15000 ms")
    assert (reply.status, reply.reason, reply.stats) == ("no_response", "no response within 15000 ms", {})
