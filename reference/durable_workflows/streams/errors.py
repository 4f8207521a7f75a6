"""Typed errors of the Durable Streams client.

One class per protocol error status (PROTOCOL.md section 5), so callers can write
``except StreamClosed`` instead of inspecting status codes and headers. Every HTTP
error keeps what the server said (status, headers, a bounded body preview) and
the request it answered, and renders as one readable line.

::

    StreamError
    ├── StreamNetworkError          the request never got an HTTP answer
    ├── StreamProtocolError         the answer broke the protocol (bad header, bad SSE)
    └── StreamHTTPError             an error status
        ├── BadRequest              400
        ├── StreamForbidden         403
        │   └── ProducerFenced      403 with Producer-Epoch (stale producer epoch)
        ├── StreamNotFound          404
        ├── OperationNotSupported   405, 501
        ├── StreamConflict          409
        │   ├── StreamClosed        409 with Stream-Closed: true
        │   ├── ContentTypeMismatch 409, Content-Type differs from the stream's
        │   ├── SequenceConflict    409, Stream-Seq not above the last one
        │   ├── ProducerSequenceGap 409 with Producer-Expected-Seq/Received-Seq
        │   └── StreamConfigConflict 409 on PUT: exists with another config
        ├── StreamGone              410
        ├── PayloadTooLarge         413
        ├── RateLimited             429
        └── ServerError             5xx (except 501)
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "BadRequest",
    "ContentTypeMismatch",
    "OperationNotSupported",
    "PayloadTooLarge",
    "ProducerFenced",
    "ProducerSequenceGap",
    "RateLimited",
    "SequenceConflict",
    "ServerError",
    "StreamClosed",
    "StreamConfigConflict",
    "StreamConflict",
    "StreamError",
    "StreamForbidden",
    "StreamGone",
    "StreamHTTPError",
    "StreamNetworkError",
    "StreamNotFound",
    "StreamProtocolError",
]

#: How much of an error body an exception keeps (and prints).
BODY_PREVIEW_CHARS = 300


class StreamError(Exception):
    """Base class of every error the client raises."""

    def __init__(self, message: str, *, method: str | None = None, url: str | None = None):
        super().__init__(message)
        self.message = message
        self.method = method
        self.url = url


class StreamNetworkError(StreamError):
    """The request got no HTTP response (connection refused or reset, timeout)."""


class StreamProtocolError(StreamError):
    """The server's answer does not follow the protocol (missing header, bad SSE event)."""


class StreamHTTPError(StreamError):
    """The server answered with an error status.

    ``status``, ``headers`` (lower-case names) and ``body`` (a text preview) are what
    the server sent; ``detail`` is the client's explanation of what it means.
    Subclasses declare extra attributes (``current_epoch``, ``final_offset``, ...)
    with a default of ``None``; the client fills them from the response.
    """

    def __init__(
        self,
        detail: str,
        *,
        status: int,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: str = "",
        **extra: object,
    ) -> None:
        self.status = status
        self.detail = detail
        self.headers: dict[str, str] = dict(headers or {})
        self.body = body[:BODY_PREVIEW_CHARS]
        for name, value in extra.items():
            if name.startswith("_") or not hasattr(type(self), name):
                raise TypeError(f"{type(self).__name__} has no attribute {name!r}")
            setattr(self, name, value)
        text = f"{method} {url} -> {status}: {detail}"
        said = self.body.strip()
        if said and said.lower() not in detail.lower():
            text += f" (server said: {said!r})"
        super().__init__(text, method=method, url=url)


class BadRequest(StreamHTTPError):
    """400: malformed request (bad header, empty append, invalid JSON, bad offset)."""


class StreamForbidden(StreamHTTPError):
    """403 without producer information."""


class ProducerFenced(StreamForbidden):
    """403 on a producer append: a newer epoch of this Producer-Id has written.

    ``current_epoch`` is the server's epoch (``Producer-Epoch``), ``epoch`` the one
    that was sent. The sender is a zombie and must stop, or claim ``current_epoch + 1``.
    """

    current_epoch: int | None = None
    epoch: int | None = None


class StreamNotFound(StreamHTTPError):
    """404: no stream at this URL (or the fork source of a PUT does not exist)."""


class OperationNotSupported(StreamHTTPError):
    """405 or 501: the server does not offer this operation on this URL."""


class StreamConflict(StreamHTTPError):
    """409: the request conflicts with the stream's state."""


class StreamClosed(StreamConflict):
    """409 with ``Stream-Closed: true``: the stream is closed; ``final_offset`` is its tail."""

    final_offset: str | None = None


class ContentTypeMismatch(StreamConflict):
    """409: the append's Content-Type (``sent``) differs from ``stream_content_type``."""

    sent: str | None = None
    stream_content_type: str | None = None


class SequenceConflict(StreamConflict):
    """409: the append's ``Stream-Seq`` (``seq``) is not above the stream's last one.

    For a writer that uses Stream-Seq for fencing, this means another writer won.
    """

    seq: str | None = None


class ProducerSequenceGap(StreamConflict):
    """409 on a producer append: ``Producer-Seq`` (``received``) skipped past ``expected``."""

    expected: int | None = None
    received: int | None = None


class StreamConfigConflict(StreamConflict):
    """409 on create: a stream exists here with another configuration (or was deleted)."""


class StreamGone(StreamHTTPError):
    """410: the stream is soft-deleted, or the offset is before retained data."""


class PayloadTooLarge(StreamHTTPError):
    """413: the request body exceeds the server's limit."""


class RateLimited(StreamHTTPError):
    """429: too many requests; ``retry_after`` is the server's hint in seconds, if any."""

    retry_after: float | None = None


class ServerError(StreamHTTPError):
    """5xx: the server failed."""
