"""The sans-I/O SSE parser: synchronous, on every way the bytes can be split."""

from __future__ import annotations

import pytest

from agent.wire.sse import SSEError, SSEEvent, SSEParser

# Everything a server may send at once: a BOM, comments (keep-alives), CRLF,
# CR and LF line endings, multi-line data, a non-ASCII character (split across
# reads at some cut points), event/id/retry fields, an empty data line, a
# blank line with no data, an unknown field, and the [DONE] sentinel.
STREAM = (
    "\ufeff: keep-alive\r\n"
    "\r\n"
    'data: {"choices":[{"delta":{"role":"assistant"}}]}\r\n\r\n'
    ": ping\n"
    'data: {"choices":[{"delta":{"content":"Caf\u00e9 \u2014 ok"}}]}\n\n'
    "event: update\rid: 7\rretry: 1500\rdata: first\rdata:second\r\r"
    "data\n"
    "foo: ignored\n\n"
    "data:  two spaces\n\n"
    "data: [DONE]\n\n"
).encode()

EXPECTED = [
    SSEEvent('{"choices":[{"delta":{"role":"assistant"}}]}'),
    SSEEvent('{"choices":[{"delta":{"content":"Caf\u00e9 \u2014 ok"}}]}'),
    SSEEvent("first\nsecond", event="update", id="7", retry_ms=1500),
    SSEEvent("", id="7"),
    SSEEvent(" two spaces", id="7"),
    SSEEvent("[DONE]", id="7"),
]


def parse(chunks: list[bytes]) -> tuple[list[SSEEvent], SSEParser]:
    parser = SSEParser()
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    events += parser.close()
    return events, parser


def test_whole_stream_at_once() -> None:
    events, parser = parse([STREAM])
    assert events == EXPECTED
    assert events[-1].is_done and not events[0].is_done
    assert parser.comments == 2
    assert not parser.has_partial


def test_every_single_split_point_gives_the_same_events() -> None:
    for cut in range(1, len(STREAM)):
        assert parse([STREAM[:cut], STREAM[cut:]])[0] == EXPECTED, cut


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_small_reads(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert parse(chunks)[0] == EXPECTED


def test_every_pair_of_split_points_on_a_crlf_stream() -> None:
    data = b'data: {"a":\r\ndata: 1}\r\n\r\n: k\r\n\r\ndata: [DONE]\r\n\r\n'
    expected = [SSEEvent('{"a":\n1}'), SSEEvent("[DONE]")]
    for i in range(len(data)):
        for j in range(i, len(data)):
            assert parse([data[:i], data[i:j], data[j:]])[0] == expected, (i, j)


def test_str_chunks_are_accepted() -> None:
    parser = SSEParser()
    assert parser.feed("data: a\n") == []
    assert parser.feed("\n") == [SSEEvent("a")]


def test_events_are_returned_as_soon_as_their_blank_line_arrives() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: one\n\ndata: tw") == [SSEEvent("one")]
    assert parser.has_partial
    assert parser.feed(b"o\n") == []
    assert parser.feed(b"\n") == [SSEEvent("two")]
    assert not parser.has_partial


def test_a_cr_at_the_end_of_a_read_waits_for_a_possible_lf() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: x\r") == []
    # The LF completes the CRLF of the data line; only then the blank line dispatches.
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\r\n") == [SSEEvent("x")]


def test_an_unterminated_event_is_dropped_and_reported() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"choices": [') == []
    assert parser.close() == []
    assert parser.has_partial


def test_flush_dispatches_an_unterminated_event() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: [DONE]\n") == []
    (event,) = parser.close(flush=True)
    assert event.is_done
    assert parser.has_partial  # still says the blank line never came


def test_only_comments_is_no_event() -> None:
    events, parser = parse([b": a\n\n: b\n\n"])
    assert events == []
    assert parser.comments == 2
    assert not parser.has_partial


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    (event,) = parse([b"data: \xff\xfe ok\n\n"])[0]
    assert event.data == "\ufffd\ufffd ok"


def test_a_line_beyond_the_limit_is_an_error() -> None:
    parser = SSEParser(max_line_chars=16)
    assert parser.feed(b"data: short\n\n") == [SSEEvent("short")]
    with pytest.raises(SSEError, match="exceeds 16"):
        parser.feed(b"data: " + b"x" * 32)


def test_invalid_retry_and_id_with_nul_are_ignored() -> None:
    (event,) = parse([b"retry: 1s\nid: a\x00b\ndata: x\n\n"])[0]
    assert event.retry_ms is None
    assert event.id is None
