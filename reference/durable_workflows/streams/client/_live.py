"""Live reads (long-poll and SSE) as a sans-IO state machine.

The driver asks :meth:`LiveReader.next_step` what to do, carries the request out,
and hands back the response (long-poll), or the response head, body chunks and
end of body (SSE). The reader returns :class:`ReadResult` batches to yield, keeps
the offset and cursor, reconnects from the last offset after the server ends an
SSE connection (it does so about every minute, section 5.8), retries transport
failures and 429/503 answers with backoff a bounded number of times in a row
(``Retry-After`` honoured), and stops for good at
the closed signal: a 204 with ``Stream-Closed`` or a control event with
``streamClosed``.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from .. import protocol as p
from ..errors import StreamNetworkError, StreamProtocolError
from ._core import (
    RETRYABLE_STATUSES,
    LiveMode,
    ReadResult,
    Request,
    Response,
    Sleep,
    StreamCore,
    backoff,
    build_head,
    build_read,
    decode_items,
    error_from_response,
    parse_head,
    parse_read,
    retry_delay,
)
from ._sse import SSEEvent, SSEParser

__all__ = ["LiveReader"]


class LiveReader:
    """Follows one stream from ``offset`` in ``live`` mode until it is closed."""

    def __init__(
        self, core: StreamCore, offset: str, live: LiveMode, *, max_failures: int = 5
    ) -> None:
        if live not in ("long-poll", "sse"):
            raise ValueError(f"live must be 'long-poll' or 'sse', not {live!r}")
        if not offset:
            raise ValueError("offset must be a non-empty string")
        self.core = core
        self.offset = offset
        self.cursor: str | None = None
        self.live: LiveMode = live
        self.done = False
        self.max_failures = max_failures
        self._failures = 0
        self._delay = 0.0
        self._pending: Request | None = None
        # SSE connection state
        self._parser: SSEParser | None = None
        self._base64 = False
        self._data: list[Any] = []
        self._controls = 0

    # -- what to do next

    def next_step(self) -> Request | Sleep | None:
        """The next request, a pause before reconnecting, or None when finished."""
        if self.done:
            return None
        if self._delay > 0:
            delay, self._delay = self._delay, 0.0
            return Sleep(delay)
        if self.live == "sse" and self.core.content_type is None:
            # SSE does not say how to decode data events; the content type does.
            self._pending = build_head(self.core.url)
        else:
            self._pending = build_read(
                self.core.url, self.offset, live=self.live, cursor=self.cursor
            )
        return self._pending

    def on_network_error(self, error: StreamNetworkError) -> None:
        """A request failed in transport: schedule a retry, or re-raise when it keeps failing."""
        self._failures += 1
        self._parser = None
        if self._failures > self.max_failures:
            raise error
        self._delay = backoff(self._failures, base=0.1, cap=5.0)

    # -- complete responses (long-poll answers, HEAD, and error answers to SSE)

    def on_response(self, response: Response) -> list[ReadResult]:
        request = self._request()
        if response.status in RETRYABLE_STATUSES:
            self._failures += 1
            if self._failures > self.max_failures:
                raise error_from_response(request, response)
            self._delay = retry_delay(response, self._failures, base=0.1)
            return []
        if request.method == "HEAD":
            if response.status != 200:
                raise error_from_response(request, response)
            info = parse_head(request, response)
            self.core.content_type = info.content_type or self.core.content_type
            if self.core.content_type is None:
                raise StreamProtocolError(
                    "HEAD did not report the stream's content type", method="HEAD", url=request.url
                )
            return []
        if response.status not in (200, 204) or request.streaming:
            raise error_from_response(request, response)
        self._failures = 0
        result = parse_read(request, response, content_type=self.core.content_type)
        self.core.content_type = result.content_type or self.core.content_type
        return [self._advance(result)]

    # -- SSE bodies

    def on_stream_open(self, response: Response) -> None:
        """The head of a 200 SSE answer (an error status goes to :meth:`on_response`)."""
        request = self._request()
        kind = p.media_type(response.header(p.CONTENT_TYPE))
        if kind != "text/event-stream":
            raise StreamProtocolError(
                f"an SSE read answered with Content-Type {kind!r}",
                method=request.method,
                url=request.url,
            )
        encoding = (response.header(p.STREAM_SSE_DATA_ENCODING) or "").strip().lower()
        self._base64 = encoding == "base64"
        self._parser = SSEParser()
        self._data = []
        self._controls = 0

    def feed(self, chunk: bytes) -> list[ReadResult]:
        if self._parser is None:
            raise RuntimeError("feed() before on_stream_open()")
        return self._events(self._parser.feed(chunk))

    def on_stream_end(self) -> list[ReadResult]:
        """The server ended the SSE body: batches still due; reconnect unless closed.

        Data not yet confirmed by a control event is dropped: the reconnect reads it
        again from the last confirmed offset.
        """
        if self._parser is None:
            return []
        results = self._events(self._parser.finish())
        self._parser = None
        self._data = []
        if not self.done and self._controls == 0:
            # Nothing useful came: back off, and give up if it keeps happening.
            self._failures += 1
            if self._failures > self.max_failures:
                raise StreamProtocolError(
                    f"the SSE connection ended {self._failures} times in a row without "
                    "a control event",
                    method="GET",
                    url=self._request().url,
                )
            self._delay = backoff(self._failures, base=0.1, cap=5.0)
        return results

    # -- internals

    def _request(self) -> Request:
        if self._pending is None:
            raise RuntimeError("no request is outstanding")
        return self._pending

    def _advance(self, result: ReadResult) -> ReadResult:
        self.offset = result.next_offset
        if result.cursor is not None:
            self.cursor = result.cursor
        if result.closed:
            self.done = True
        return result

    def _events(self, events: list[SSEEvent]) -> list[ReadResult]:
        results: list[ReadResult] = []
        for event in events:
            if self.done:
                break
            if event.event == "data":
                self._data.extend(self._decode_data(event.data))
            elif event.event == "control":
                results.append(self._advance(self._control(event.data)))
            # Other event types are skipped, as the protocol allows.
        return results

    def _decode_data(self, text: str) -> list[Any]:
        where = f"SSE data event from {self.core.url}"
        if self._base64:
            compact = text.replace("\n", "").replace("\r", "")
            try:
                raw = base64.b64decode(compact, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise StreamProtocolError(f"{where}: invalid base64 ({exc})") from exc
            return [raw] if raw else []
        return decode_items(text.encode("utf-8"), self.core.content_type, where=where)

    def _control(self, text: str) -> ReadResult:
        url = self._request().url
        try:
            control = json.loads(text)
        except ValueError as exc:
            raise StreamProtocolError(
                f"SSE control event is not JSON ({exc}): {text[:100]!r}", method="GET", url=url
            ) from exc
        offset = control.get("streamNextOffset") if isinstance(control, dict) else None
        if not isinstance(offset, str) or not offset:
            raise StreamProtocolError(
                f"SSE control event without streamNextOffset: {text[:100]!r}", method="GET", url=url
            )
        cursor = control.get("streamCursor")
        closed = control.get("streamClosed") is True
        self._controls += 1
        self._failures = 0
        items, self._data = self._data, []
        return ReadResult(
            items=items,
            next_offset=offset,
            up_to_date=control.get("upToDate") is True or closed,
            closed=closed,
            cursor=str(cursor) if cursor is not None else None,
            content_type=self.core.content_type,
        )
