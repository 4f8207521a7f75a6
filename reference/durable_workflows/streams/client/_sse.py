"""An incremental Server-Sent Events parser (sans-IO): bytes in, events out.

Follows the WHATWG event-stream rules the protocol relies on (PROTOCOL.md section
5.8): lines end in CRLF, LF or CR; ``data:`` lines of one event are joined with
``\\n``; one optional space after the colon is dropped; a blank line dispatches the
event; comments (``:``), ``id`` and ``retry`` are ignored; an event whose data
buffer is empty is not dispatched. Chunks may split lines, CRLF pairs and UTF-8
sequences anywhere.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

__all__ = ["SSEEvent", "SSEParser"]


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event: its type (``message`` when none was given) and data."""

    event: str
    data: str


class SSEParser:
    """Feed it the response body in chunks; it returns the events completed so far."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._event = ""
        self._data: list[str] = []
        self._seen_bom = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        text = self._decoder.decode(chunk)
        if not self._seen_bom and text:
            self._seen_bom = True
            text = text.removeprefix("\ufeff")
        self._buffer += text
        return self._drain(final=False)

    def finish(self) -> list[SSEEvent]:
        """The end of the body: a trailing line is processed; an unterminated event is dropped."""
        self._buffer += self._decoder.decode(b"", final=True)
        events = self._drain(final=True)
        if self._buffer:
            self._line(self._buffer, events)
            self._buffer = ""
        # Per the SSE rules an event is dispatched only by a blank line.
        self._event = ""
        self._data = []
        return events

    def _drain(self, *, final: bool) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        buffer = self._buffer
        start = 0
        length = len(buffer)
        while start < length:
            cr = buffer.find("\r", start)
            lf = buffer.find("\n", start)
            if cr == -1 and lf == -1:
                break
            if cr != -1 and (lf == -1 or cr < lf):
                if cr + 1 == length and not final:
                    break  # a CR at the end may be the first half of CRLF
                end = cr
                nxt = cr + 2 if cr + 1 < length and buffer[cr + 1] == "\n" else cr + 1
            else:
                end = lf
                nxt = lf + 1
            self._line(buffer[start:end], events)
            start = nxt
        self._buffer = buffer[start:]
        return events

    def _line(self, line: str, events: list[SSEEvent]) -> None:
        if line == "":
            if self._data:
                events.append(SSEEvent(self._event or "message", "\n".join(self._data)))
            self._event = ""
            self._data = []
            return
        if line.startswith(":"):
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        # id, retry and unknown fields carry nothing the protocol uses.
