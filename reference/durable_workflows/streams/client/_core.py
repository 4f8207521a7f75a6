"""The sans-IO core of the client: requests out, responses in, results or errors.

Nothing here opens a socket, reads a clock or sleeps. Each operation is a
generator (an *op*) that yields :class:`Request` or :class:`Sleep` steps and is
sent back a :class:`Response` (or ``None`` after a sleep); its return value is the
operation's result. A transport failure is thrown into the op as
:class:`~durable_workflows.streams.errors.StreamNetworkError`, so an op decides
itself whether a retry is safe. The sync and async front ends differ only in how
they carry a step out (``run_sync`` here, ``run_async`` in ``_async``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn, TypedDict, TypeVar, Unpack
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from .. import protocol as p
from ..errors import (
    BadRequest,
    ContentTypeMismatch,
    OperationNotSupported,
    PayloadTooLarge,
    ProducerFenced,
    ProducerSequenceGap,
    RateLimited,
    SequenceConflict,
    ServerError,
    StreamClosed,
    StreamConfigConflict,
    StreamConflict,
    StreamForbidden,
    StreamGone,
    StreamHTTPError,
    StreamNetworkError,
    StreamNotFound,
    StreamProtocolError,
)

T = TypeVar("T")

LiveMode = Literal["long-poll", "sse"]

#: Sentinels a reader may start from (PROTOCOL.md section 8).
OFFSET_START = p.OFFSET_START
OFFSET_NOW = p.OFFSET_NOW


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True, slots=True)
class Request:
    """An HTTP request to send. ``live`` asks for the long read timeout (the server
    may hold it); ``streaming`` asks for the body to be handed over incrementally."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes = b""
    live: bool = False
    streaming: bool = False


@dataclass(frozen=True, slots=True)
class Response:
    """An HTTP response; ``headers`` has lower-case names."""

    status: int
    headers: Mapping[str, str]
    content: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait this long before the next step (retry backoff)."""

    seconds: float


Step = Request | Sleep
Op = Generator[Step, Response | None, T]


def send(request: Request) -> Generator[Step, Response | None, Response]:
    """Yield one request and return its response (``resp = yield from send(req)``)."""
    response = yield request
    if response is None:  # pragma: no cover - a driver bug
        raise RuntimeError("the driver answered a request with no response")
    return response


def sleep(seconds: float) -> Generator[Step, Response | None, None]:
    yield Sleep(seconds)


def run_sync(
    op: Op[T], transport: Callable[[Request], Response], pause: Callable[[float], None]
) -> T:
    """Drive an op to completion with a blocking transport.

    ``transport`` raises :class:`StreamNetworkError` when no response came back;
    the error is thrown into the op.
    """
    try:
        step = next(op)
        while True:
            if isinstance(step, Sleep):
                pause(step.seconds)
                step = op.send(None)
                continue
            try:
                response = transport(step)
            except StreamNetworkError as exc:
                step = op.throw(exc)
            else:
                step = op.send(response)
    except StopIteration as stop:
        result: T = stop.value
        return result
    finally:
        op.close()


def backoff(attempt: int, *, base: float = 0.05, cap: float = 2.0) -> float:
    """Delay before retry number ``attempt`` (1, 2, ...): exponential, capped."""
    return float(min(cap, base * (2 ** (attempt - 1))))


#: Statuses that say "try again later": a repeat of a safe request may succeed.
RETRYABLE_STATUSES = (429, 503)

#: The longest ``Retry-After`` the client honours before retrying on its own.
MAX_RETRY_AFTER = 10.0


def retry_delay(response: Response, attempt: int, *, base: float = 0.05) -> float:
    """Delay before repeating a request the server turned away with 429 or 503:
    its ``Retry-After`` (capped), else the exponential backoff."""
    hint = _retry_after(response)
    if hint is not None:
        return min(hint, MAX_RETRY_AFTER)
    return backoff(attempt, base=base)


@dataclass(slots=True)
class Retries:
    """A budget of ``limit`` repeats for requests that are safe to send again.

    One budget may serve several requests of one operation (``used`` carries over).
    """

    limit: int
    base: float = 0.05
    used: int = 0

    def send(self, request: Request) -> Generator[Step, Response | None, Response]:
        """Send ``request``; after a transport failure or a 429/503 wait and send it
        again while the budget lasts. Returns the last response (any status)."""
        while True:
            try:
                response = yield from send(request)
            except StreamNetworkError:
                self.used += 1
                if self.used > self.limit:
                    raise
                yield from sleep(backoff(self.used, base=self.base))
                continue
            if response.status in RETRYABLE_STATUSES and self.used < self.limit:
                self.used += 1
                yield from sleep(retry_delay(response, self.used, base=self.base))
                continue
            return response


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """Metadata from ``HEAD`` (PROTOCOL.md section 5.5)."""

    content_type: str | None
    next_offset: str
    closed: bool
    ttl: int | None = None
    expires_at: str | None = None


@dataclass(frozen=True, slots=True)
class CreateResult:
    """Outcome of ``PUT``: ``created`` is False when an identical stream already existed."""

    created: bool
    next_offset: str | None
    closed: bool
    content_type: str | None
    location: str | None = None


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Outcome of ``POST``.

    ``next_offset`` is the tail after the append (the server may leave it out of a
    producer duplicate). ``duplicate`` is True when the server recognised a
    producer retry and stored nothing (204 to a producer append with a body).
    """

    next_offset: str | None
    closed: bool
    duplicate: bool = False
    producer_epoch: int | None = None
    producer_seq: int | None = None


@dataclass(frozen=True, slots=True)
class ReadResult:
    """A piece of the stream.

    ``items`` holds the messages for ``application/json`` streams, and the byte
    chunks as received for every other content type (``data`` joins them).
    ``next_offset`` is where to read next. ``up_to_date`` means the reader reached
    the tail when the server answered (more may come); ``closed`` means the stream
    is closed and nothing more will ever come (EOF).
    """

    items: list[Any]
    next_offset: str
    up_to_date: bool
    closed: bool
    cursor: str | None = None
    content_type: str | None = None

    @property
    def is_json(self) -> bool:
        return p.is_json(self.content_type)

    @property
    def data(self) -> bytes:
        """The bytes of a non-JSON stream's items, joined."""
        if self.is_json:
            raise TypeError("a JSON stream's read yields messages: use .items")
        return b"".join(self.items)


# --------------------------------------------------------------------------- URLs


def join_url(base: str | None, path: str) -> str:
    """A stream URL: ``path`` itself when absolute, else ``base`` + ``/`` + ``path``.

    Each path segment is percent-encoded (``/`` separates segments).
    """
    if path.startswith(("http://", "https://")):
        return path
    if base is None:
        raise ValueError(f"{path!r} is not an absolute URL and the client has no base_url")
    return base.rstrip("/") + "/" + quote(path.lstrip("/"), safe="/")


def with_query(url: str, params: Mapping[str, str | None]) -> str:
    """``url`` with ``params`` added, every parameter sorted by name (section 10).

    Values are percent-encoded completely, so offsets travel opaque.
    """
    parts = urlsplit(url)
    pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    pairs += [(k, v) for k, v in params.items() if v is not None]
    pairs.sort(key=lambda kv: kv[0])
    query = urlencode(pairs, quote_via=quote, safe="")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


# --------------------------------------------------------------------------- encoding


def encode_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def encode_message(message: Any) -> bytes:
    """The POST body that appends ``message`` as ONE message of a JSON stream.

    The server flattens one level of a top-level array (section 9.1.2), so the
    message is always wrapped: ``{"a":1}`` -> ``[{"a":1}]``, ``[1,2]`` -> ``[[1,2]]``.
    """
    return encode_json([message])


def encode_batch(messages: Iterable[Any]) -> bytes:
    """The POST body that appends each element of ``messages`` as one message."""
    batch = list(messages)
    if not batch:
        raise ValueError("an append needs at least one message (the server rejects [])")
    return encode_json(batch)


def format_expires_at(value: str | datetime) -> str:
    if isinstance(value, str):
        if p.parse_expires_at(value) is None:
            raise ValueError(f"expires_at {value!r} is not an RFC 3339 timestamp with a zone")
        return value
    if value.tzinfo is None:
        raise ValueError("expires_at must be timezone-aware")
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check_int(name: str, value: int, upper: int = p.MAX_SAFE_INTEGER) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= upper:
        raise ValueError(f"{name} must be an integer in 0..{upper}, not {value!r}")
    return str(value)


# --------------------------------------------------------------------------- builders


@dataclass(frozen=True, slots=True)
class ProducerHeaders:
    producer_id: str
    epoch: int
    seq: int

    def apply(self, headers: dict[str, str]) -> None:
        if not self.producer_id:
            raise ValueError("producer_id must be a non-empty string")
        headers["Producer-Id"] = self.producer_id
        headers["Producer-Epoch"] = _check_int("producer epoch", self.epoch)
        headers["Producer-Seq"] = _check_int("producer seq", self.seq)


class CreateOptions(TypedDict, total=False):
    """The stream configuration a create may set (section 5.1), besides content type
    and initial data: ``ttl`` (seconds, sliding) and ``expires_at`` exclude each
    other; ``closed`` creates the stream closed; ``forked_from`` (the source's path
    or URL) with ``fork_offset``/``fork_sub_offset`` makes a fork."""

    ttl: int | None
    expires_at: str | datetime | None
    closed: bool
    forked_from: str | None
    fork_offset: str | None
    fork_sub_offset: int | None


def check_options(kind: type[Any], options: Mapping[str, object], where: str) -> None:
    """Reject a keyword ``kind`` (a TypedDict) does not name, as a Python signature would."""
    for name in options:
        if name not in kind.__annotations__:
            raise TypeError(f"{where}() got an unexpected keyword argument {name!r}")


def build_create(
    url: str,
    *,
    content_type: str | None = None,
    body: bytes | None = None,
    **options: Unpack[CreateOptions],
) -> Request:
    check_options(CreateOptions, options, "create")
    ttl = options.get("ttl")
    expires_at = options.get("expires_at")
    forked_from = options.get("forked_from")
    fork_offset = options.get("fork_offset")
    fork_sub_offset = options.get("fork_sub_offset")
    headers: dict[str, str] = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if ttl is not None and expires_at is not None:
        raise ValueError("give ttl or expires_at, not both (the server answers 400)")
    if ttl is not None:
        headers["Stream-TTL"] = _check_int("ttl", ttl)
    if expires_at is not None:
        headers["Stream-Expires-At"] = format_expires_at(expires_at)
    if options.get("closed", False):
        headers["Stream-Closed"] = "true"
    if forked_from is not None:
        # The header carries the source's path on this server; a full URL is cut down.
        if forked_from.startswith(("http://", "https://")):
            forked_from = urlsplit(forked_from).path
        headers["Stream-Forked-From"] = forked_from
    elif fork_offset is not None or fork_sub_offset is not None:
        raise ValueError("fork_offset and fork_sub_offset need forked_from")
    if fork_offset is not None:
        headers["Stream-Fork-Offset"] = fork_offset
    if fork_sub_offset is not None:
        headers["Stream-Fork-Sub-Offset"] = _check_int("fork_sub_offset", fork_sub_offset)
    return Request("PUT", url, headers, body or b"")


def build_append(
    url: str,
    body: bytes,
    *,
    content_type: str | None,
    seq: str | None = None,
    close: bool = False,
    producer: ProducerHeaders | None = None,
) -> Request:
    if not body and not close:
        raise ValueError("an append needs a non-empty body (only a close may be empty)")
    headers: dict[str, str] = {}
    if body:
        if not content_type:
            raise ValueError("an append with a body needs a content type")
        headers["Content-Type"] = content_type
    if seq is not None:
        if not seq:
            raise ValueError("Stream-Seq must be a non-empty string")
        headers["Stream-Seq"] = seq
    if close:
        headers["Stream-Closed"] = "true"
    if producer is not None:
        producer.apply(headers)
    return Request("POST", url, headers, body)


def build_head(url: str) -> Request:
    return Request("HEAD", url)


def build_delete(url: str) -> Request:
    return Request("DELETE", url)


def build_read(
    url: str, offset: str = OFFSET_START, *, live: LiveMode | None = None, cursor: str | None = None
) -> Request:
    if not offset:
        raise ValueError("offset must be a non-empty string")
    params: dict[str, str | None] = {"offset": offset, "live": live, "cursor": cursor}
    return Request("GET", with_query(url, params), live=live is not None, streaming=live == "sse")


# --------------------------------------------------------------------------- parsers


def int_header(response: Response, name: str) -> int | None:
    value = response.header(name)
    if value is None:
        return None
    return p.parse_producer_int(value.strip())


def _require_offset(request: Request, response: Response) -> str:
    offset = response.header(p.STREAM_NEXT_OFFSET)
    if not offset:
        raise StreamProtocolError(
            f"the {response.status} response has no Stream-Next-Offset header",
            method=request.method,
            url=request.url,
        )
    return offset


def parse_create(request: Request, response: Response) -> CreateResult:
    return CreateResult(
        created=response.status == 201,
        next_offset=response.header(p.STREAM_NEXT_OFFSET),
        closed=p.is_true(response.header(p.STREAM_CLOSED)),
        content_type=response.header(p.CONTENT_TYPE) or request.headers.get("Content-Type"),
        location=response.header("location"),
    )


def parse_append(request: Request, response: Response) -> AppendResult:
    producer = "Producer-Id" in request.headers
    return AppendResult(
        next_offset=response.header(p.STREAM_NEXT_OFFSET),
        closed=p.is_true(response.header(p.STREAM_CLOSED)),
        duplicate=producer and response.status == 204 and bool(request.content),
        producer_epoch=int_header(response, p.PRODUCER_EPOCH),
        producer_seq=int_header(response, p.PRODUCER_SEQ),
    )


def parse_head(request: Request, response: Response) -> StreamInfo:
    ttl = response.header(p.STREAM_TTL)
    return StreamInfo(
        content_type=response.header(p.CONTENT_TYPE),
        next_offset=_require_offset(request, response),
        closed=p.is_true(response.header(p.STREAM_CLOSED)),
        ttl=p.parse_ttl(ttl.strip()) if ttl else None,
        expires_at=response.header(p.STREAM_EXPIRES_AT),
    )


def decode_items(content: bytes, content_type: str | None, *, where: str) -> list[Any]:
    """The messages (JSON stream) or byte chunks (any other) of one response body."""
    if not p.is_json(content_type):
        return [content] if content else []
    if not content.strip():
        return []
    try:
        value = json.loads(content)
    except ValueError as exc:
        raise StreamProtocolError(
            f"{where}: the body of a JSON stream is not JSON ({exc})"
        ) from exc
    if not isinstance(value, list):
        raise StreamProtocolError(
            f"{where}: a JSON stream read must return an array, got {type(value).__name__}"
        )
    return value


def parse_read(
    request: Request, response: Response, *, content_type: str | None = None
) -> ReadResult:
    """A catch-up (200) or long-poll (200/204) answer."""
    ctype = response.header(p.CONTENT_TYPE) if response.status == 200 else None
    ctype = ctype or content_type
    closed = p.is_true(response.header(p.STREAM_CLOSED))
    if response.status == 204:
        offset = response.header(p.STREAM_NEXT_OFFSET)
        if not offset:
            raise StreamProtocolError(
                "a long-poll 204 has no Stream-Next-Offset header",
                method=request.method,
                url=request.url,
            )
        return ReadResult([], offset, True, closed, response.header(p.STREAM_CURSOR), ctype)
    return ReadResult(
        items=decode_items(response.content, ctype, where=f"GET {request.url}"),
        next_offset=_require_offset(request, response),
        up_to_date=p.is_true(response.header(p.STREAM_UP_TO_DATE)) or closed,
        closed=closed,
        cursor=response.header(p.STREAM_CURSOR),
        content_type=ctype,
    )


def merge_reads(parts: list[ReadResult]) -> ReadResult:
    last = parts[-1]
    items = [item for part in parts for item in part.items]
    content_type = next((r.content_type for r in reversed(parts) if r.content_type), None)
    return ReadResult(
        items, last.next_offset, last.up_to_date, last.closed, last.cursor, content_type
    )


# --------------------------------------------------------------------------- errors


def _retry_after(response: Response) -> float | None:
    value = response.header("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None


def needs_conflict_probe(request: Request, response: Response) -> bool:
    """A 409 to an append that only the stream's content type can explain.

    Closed streams and producer gaps carry headers; what is left is a content-type
    mismatch or a Stream-Seq regression, which look alike on the wire (section 5.2).
    A HEAD tells them apart (and names the stream's type in the error).
    """
    return (
        response.status == 409
        and request.method == "POST"
        and bool(request.content)
        and not p.is_true(response.header(p.STREAM_CLOSED))
        and response.header(p.PRODUCER_EXPECTED_SEQ) is None
    )


def error_from_response(
    request: Request, response: Response, *, probe: Response | None = None
) -> StreamHTTPError:
    """The typed error for an error status. ``probe`` is a HEAD answer that tells a
    content-type mismatch from a Stream-Seq regression (see ``needs_conflict_probe``)."""
    status = response.status
    common: dict[str, Any] = {
        "status": status,
        "method": request.method,
        "url": request.url,
        "headers": response.headers,
        "body": response.text,
    }
    producer_id = request.headers.get("Producer-Id")
    if status == 400:
        return BadRequest("the server rejected the request as malformed", **common)
    if status == 403:
        current = int_header(response, p.PRODUCER_EPOCH)
        if producer_id is not None and current is not None:
            sent = int(request.headers["Producer-Epoch"])
            return ProducerFenced(
                f"producer {producer_id!r} is fenced: it sent epoch {sent}, "
                f"the server is at epoch {current}",
                current_epoch=current,
                epoch=sent,
                **common,
            )
        return StreamForbidden("forbidden", **common)
    if status == 404:
        if request.method == "PUT" and "Stream-Forked-From" in request.headers:
            source = request.headers["Stream-Forked-From"]
            return StreamNotFound(f"the fork source {source!r} does not exist", **common)
        return StreamNotFound("no stream at this URL", **common)
    if status in (405, 501):
        return OperationNotSupported(f"the server does not support {request.method} here", **common)
    if status == 409:
        return _conflict(request, response, probe, common)
    if status == 410:
        return StreamGone(
            "the stream is gone (deleted with live forks, or the offset is "
            "before the retained data)",
            **common,
        )
    if status == 413:
        return PayloadTooLarge(
            f"the {len(request.content)}-byte body is larger than the server accepts", **common
        )
    if status == 429:
        retry_after = _retry_after(response)
        hint = f"; retry after {retry_after:g} s" if retry_after is not None else ""
        return RateLimited(f"rate limited{hint}", retry_after=retry_after, **common)
    if status >= 500:
        return ServerError("the server failed", **common)
    return StreamHTTPError(f"unexpected status {status}", **common)


def _conflict(
    request: Request, response: Response, probe: Response | None, common: dict[str, Any]
) -> StreamConflict:
    if p.is_true(response.header(p.STREAM_CLOSED)):
        final = response.header(p.STREAM_NEXT_OFFSET)
        where = f" at offset {final}" if final else ""
        return StreamClosed(
            f"the stream is closed{where}; it accepts no more appends", final_offset=final, **common
        )
    expected = int_header(response, p.PRODUCER_EXPECTED_SEQ)
    if expected is not None or response.header(p.PRODUCER_RECEIVED_SEQ) is not None:
        received = int_header(response, p.PRODUCER_RECEIVED_SEQ)
        return ProducerSequenceGap(
            f"producer {request.headers.get('Producer-Id')!r} sent Producer-Seq {received}, "
            f"the server expected {expected}",
            expected=expected,
            received=received,
            **common,
        )
    if request.method == "PUT":
        return StreamConfigConflict(
            "a stream exists at this URL with another configuration (content type, "
            "TTL/expiry, closed state or fork), or the URL belongs to a deleted stream",
            **common,
        )
    if request.method != "POST" or not request.content:
        return StreamConflict("conflict", **common)
    sent_type = request.headers.get("Content-Type")
    seq = request.headers.get("Stream-Seq")
    stream_type = probe.header(p.CONTENT_TYPE) if probe and probe.status == 200 else None
    if seq is None:
        mismatch = True  # the only remaining 409 for an append without Stream-Seq
    elif stream_type is not None:
        mismatch = p.media_type(stream_type) != p.media_type(sent_type)
    else:  # no probe: fall back on the server's words
        mismatch = "content" in response.text.lower() and "type" in response.text.lower()
    if mismatch:
        theirs = f"the stream's {stream_type!r}" if stream_type else "the stream's content type"
        return ContentTypeMismatch(
            f"Content-Type {sent_type!r} does not match {theirs}",
            sent=sent_type,
            stream_content_type=stream_type,
            **common,
        )
    return SequenceConflict(
        f"Stream-Seq {seq!r} is not greater than the stream's last Stream-Seq "
        "(another writer appended first)",
        seq=seq,
        **common,
    )


def fail(request: Request, response: Response) -> Generator[Step, Response | None, NoReturn]:
    """Raise the typed error for ``response``, probing with HEAD when it is ambiguous."""
    probe: Response | None = None
    if needs_conflict_probe(request, response):
        try:
            probe = yield from send(build_head(request.url))
        except StreamNetworkError:
            probe = None
    raise error_from_response(request, response, probe=probe)


# --------------------------------------------------------------------------- ops


class Appends:
    """The append ops: raw bytes, JSON messages and close-only.

    Shared by :class:`StreamCore` and the producer core, which send the POST
    (``_append``) each their own way.
    """

    def _stream_core(self) -> StreamCore:
        raise NotImplementedError

    def _append(
        self, data: bytes, content_type: str | None, seq: str | None, close: bool
    ) -> Op[AppendResult]:
        raise NotImplementedError

    def append(
        self,
        data: bytes,
        *,
        content_type: str | None = None,
        seq: str | None = None,
        close: bool = False,
    ) -> Op[AppendResult]:
        """Append ``data`` (optionally with ``Stream-Seq`` = ``seq``, optionally closing);
        ``content_type`` defaults to the stream's, looked up once if unknown."""
        if data and content_type is None:
            content_type = yield from self._stream_core().known_content_type()
        return (yield from self._append(data, content_type, seq, close))

    def append_json(
        self, message: Any, *, seq: str | None = None, close: bool = False
    ) -> Op[AppendResult]:
        return self.append(
            encode_message(message), content_type=p.JSON_CONTENT_TYPE, seq=seq, close=close
        )

    def append_json_batch(
        self, messages: Iterable[Any], *, seq: str | None = None, close: bool = False
    ) -> Op[AppendResult]:
        return self.append(
            encode_batch(messages), content_type=p.JSON_CONTENT_TYPE, seq=seq, close=close
        )

    def close(self) -> Op[AppendResult]:
        """Close-only (section 5.3); idempotent (with producer headers a retry of it is too)."""
        return self.append(b"", close=True)


class StreamCore(Appends):
    """The sans-IO side of one stream: builds every op and remembers the content type.

    Both :class:`~durable_workflows.streams.Stream` and
    :class:`~durable_workflows.streams.AsyncStream` wrap one of these.
    """

    def __init__(self, url: str, *, content_type: str | None = None, read_retries: int = 2) -> None:
        self.url = url
        self.content_type = content_type
        self.read_retries = read_retries

    # -- lifecycle

    def create(
        self,
        content_type: str | None = None,
        *,
        data: bytes | None = None,
        **options: Unpack[CreateOptions],
    ) -> Op[CreateResult]:
        request = build_create(self.url, content_type=content_type, body=data, **options)
        response = yield from send(request)
        if response.status not in (200, 201):
            yield from fail(request, response)
        result = parse_create(request, response)
        self.content_type = result.content_type or self.content_type
        return result

    def create_json(
        self, messages: Iterable[Any] | None = None, **options: Unpack[CreateOptions]
    ) -> Op[CreateResult]:
        data = encode_json(list(messages)) if messages is not None else None
        return self.create(p.JSON_CONTENT_TYPE, data=data, **options)

    def head(self) -> Op[StreamInfo]:
        request = build_head(self.url)
        response = yield from self._read_request(request)
        if response.status != 200:
            yield from fail(request, response)
        info = parse_head(request, response)
        self.content_type = info.content_type or self.content_type
        return info

    def delete(self) -> Op[None]:
        request = build_delete(self.url)
        response = yield from send(request)
        if response.status not in (200, 202, 204):
            yield from fail(request, response)

    # -- writes

    def known_content_type(self) -> Op[str]:
        if self.content_type is None:
            yield from self.head()
        if self.content_type is None:
            raise StreamProtocolError(
                "HEAD did not report the stream's content type", method="HEAD", url=self.url
            )
        return self.content_type

    def _stream_core(self) -> StreamCore:
        return self

    def _append(
        self, data: bytes, content_type: str | None, seq: str | None, close: bool
    ) -> Op[AppendResult]:
        request = build_append(self.url, data, content_type=content_type, seq=seq, close=close)
        response = yield from send(request)
        if response.status not in (200, 204):
            yield from fail(request, response)
        return parse_append(request, response)

    # -- reads

    def _read_request(self, request: Request) -> Generator[Step, Response | None, Response]:
        """Send a GET or HEAD; repeat it (safe: it changes nothing) after a transport
        failure or a 429/503, at most ``read_retries`` times."""
        return (yield from Retries(self.read_retries).send(request))

    def read(self, offset: str = OFFSET_START) -> Op[ReadResult]:
        """Catch-up read from ``offset`` until the server says up-to-date (or closed)."""
        parts: list[ReadResult] = []
        while True:
            request = build_read(self.url, offset)
            response = yield from self._read_request(request)
            if response.status != 200:
                yield from fail(request, response)
            part = parse_read(request, response, content_type=self.content_type)
            self.content_type = part.content_type or self.content_type
            parts.append(part)
            if part.up_to_date or part.closed:
                return merge_reads(parts)
            if part.next_offset == offset:
                raise StreamProtocolError(
                    f"the server neither advanced past offset {offset!r} nor said up-to-date",
                    method="GET",
                    url=request.url,
                )
            offset = part.next_offset
