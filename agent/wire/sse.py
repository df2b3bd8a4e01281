"""A sans-I/O parser for server-sent events (the ``text/event-stream`` format).

Feed it chunks exactly as they come off the wire; it returns the events that
became complete. It never touches a socket or a clock, so it is tested
synchronously on arbitrary chunkings, and the HTTP layer only moves bytes::

    parser = SSEParser()
    async for chunk in response.aiter_bytes():
        for event in parser.feed(chunk):
            if event.is_done:       # OpenAI's ``data: [DONE]`` sentinel
                ...

It follows the WHATWG HTML "server-sent events" parsing rules: lines end with
CRLF, LF or CR (a CR at the end of one chunk and an LF at the start of the next
are one line ending); a blank line dispatches the event; ``data:`` lines
accumulate, joined by ``\\n``; lines starting with ``:`` are comments (servers
send them as keep-alives); one space after the colon is dropped; a UTF-8 BOM at
the start is skipped; UTF-8 sequences split between chunks are decoded
correctly. An event whose blank line never arrived is not dispatched (as the
standard says), but :attr:`SSEParser.has_partial` tells the caller that the
stream stopped in the middle of one.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

__all__ = ["DONE", "SSEError", "SSEEvent", "SSEParser"]

#: The data of the event that ends an OpenAI-compatible stream.
DONE = "[DONE]"

_DEFAULT_MAX_LINE_CHARS = 4 * 1024 * 1024


class SSEError(ValueError):
    """The byte stream cannot be an event stream (a line beyond the size limit)."""


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event."""

    data: str
    """The ``data:`` lines joined by ``\\n`` (no trailing newline)."""
    event: str = "message"
    """The ``event:`` field, ``"message"`` when the server sent none."""
    id: str | None = None
    """The last event id seen so far in the stream (it carries over, per the standard)."""
    retry_ms: int | None = None
    """A ``retry:`` field sent with this event, if any."""

    @property
    def is_done(self) -> bool:
        """True for OpenAI's end-of-stream sentinel ``data: [DONE]``."""
        return self.data.strip() == DONE


class SSEParser:
    """Incremental event-stream parser: :meth:`feed` chunks, get complete events."""

    def __init__(self, *, max_line_chars: int = _DEFAULT_MAX_LINE_CHARS) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._max_line_chars = max_line_chars
        self._buffer = ""  # text not yet split into lines
        self._at_start = True  # a BOM is only skipped at the very start
        self._data: list[str] = []
        self._event = ""
        self._last_id: str | None = None
        self._retry: int | None = None
        self._fields_seen = False  # any field line since the last dispatch
        self.comments = 0
        """Comment lines seen (keep-alives, padding)."""

    @property
    def has_partial(self) -> bool:
        """True when the input so far ends inside an event (no blank line yet)."""
        return self._fields_seen or bool(self._buffer)

    def feed(self, chunk: bytes | str) -> list[SSEEvent]:
        """Parse one chunk; return the events it completed, in order."""
        text = self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        return self._parse(text, final=False)

    def close(self, *, flush: bool = False) -> list[SSEEvent]:
        """End of input: parse a last line that lacks its line ending. An event
        whose blank line never came is dropped, as the standard says, unless
        ``flush`` (lenient: it is dispatched); :attr:`has_partial` then says
        whether there was one (a truncated stream)."""
        events = self._parse(self._decoder.decode(b"", final=True), final=True)
        if flush and self._data:
            partial = self._dispatch()
            self._fields_seen = True  # still report that the stream stopped mid-event
            if partial is not None:
                events.append(partial)
        return events

    def _parse(self, text: str, *, final: bool) -> list[SSEEvent]:
        if self._at_start and text:
            text = text.removeprefix("\ufeff")
            self._at_start = not text
        buffer = self._buffer + text
        events: list[SSEEvent] = []
        start = 0
        while True:
            cr = buffer.find("\r", start)
            lf = buffer.find("\n", start)
            if cr < 0 and lf < 0:
                break
            if cr >= 0 and (lf < 0 or cr < lf):
                if cr + 1 == len(buffer) and not final:
                    break  # a lone CR at the end may be the first half of CRLF
                end, after = cr, cr + 2 if buffer.startswith("\n", cr + 1) else cr + 1
            else:
                end, after = lf, lf + 1
            event = self._line(buffer[start:end])
            if event is not None:
                events.append(event)
            start = after
        rest = buffer[start:]
        if final and rest:
            event = self._line(rest)  # a last line without its line ending
            if event is not None:
                events.append(event)
            rest = ""
        if len(rest) > self._max_line_chars:
            raise SSEError(f"an event-stream line exceeds {self._max_line_chars} characters")
        self._buffer = rest
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        self._fields_seen = True
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        # Any other field name is ignored, as the standard says.
        return None

    def _dispatch(self) -> SSEEvent | None:
        data, event, retry = self._data, self._event, self._retry
        self._data, self._event, self._retry, self._fields_seen = [], "", None, False
        if not data:
            return None  # a blank line with no data: nothing to dispatch
        return SSEEvent(data="\n".join(data), event=event or "message", id=self._last_id, retry_ms=retry)
