"""The HTTP face of the stream server: a plain ASGI application.

It parses requests into :class:`~.core.StreamCore` calls and renders the
results; live reads (long-poll, SSE) wait here on per-request events that the
core's change listener sets. Raw ASGI rather than a framework because the
protocol is mostly headers, streaming bodies and disconnect handling, which are
clearest written out. Streams live under ``/v1/stream/<path>``; the reserved
``/v1/stream/__ds/...`` routes go to the subscription manager.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs

from .. import protocol as p
from .core import (
    Producer,
    ProtocolError,
    ReadResult,
    StorageError,
    StreamCore,
    StreamMeta,
    Tx,
    format_body,
    sse_payload,
)
from .group_commit import GroupCommit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger(__name__)
T = TypeVar("T")

STREAM_PREFIX = "/v1/stream/"
#: The methods that write (and go through group commit).
WRITE_METHODS = frozenset({"PUT", "POST", "DELETE"})
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
#: Section 10.2: close SSE connections about every minute so CDNs can collapse.
SSE_MAX_SECONDS = 60.0
#: A request body must have arrived this long after the request started.
BODY_SECONDS = 60.0
#: How often expired streams are retired without being touched.
SWEEP_SECONDS = 60.0

#: ASGI scope extensions that chain two PUTs sent together by a caller in this process
#: (no HTTP request can carry them): the first (``REPORTS_CREATION``) notes whether it
#: created its stream, and the second (``BODY_IF_CREATED``) stores its body only if it
#: did, creating its stream empty if the first found its stream there. Both are planned
#: in that order, in one transaction when they arrive together (group commit).
REPORTS_CREATION = "durable_workflows.reports_creation"
BODY_IF_CREATED = "durable_workflows.body_if_created"

_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")

_CACHEABLE = "public, max-age=60, stale-while-revalidate=300"
_ALLOW_HEADERS = ", ".join(
    [
        "content-type",
        "authorization",
        "if-none-match",
        "Stream-Seq",
        "Stream-TTL",
        "Stream-Expires-At",
        "Stream-Closed",
        "Stream-Forked-From",
        "Stream-Fork-Offset",
        "Stream-Fork-Sub-Offset",
        "Producer-Id",
        "Producer-Epoch",
        "Producer-Seq",
    ]
)
_EXPOSE_HEADERS = ", ".join(
    [
        "Stream-Next-Offset",
        "Stream-Cursor",
        "Stream-Up-To-Date",
        "Stream-Closed",
        "Stream-TTL",
        "Stream-Expires-At",
        "Stream-SSE-Data-Encoding",
        "Producer-Epoch",
        "Producer-Seq",
        "Producer-Expected-Seq",
        "Producer-Received-Seq",
        "ETag",
        "Location",
        "Content-Type",
    ]
)
#: Sent on every response: the section 12.7 headers. CORS headers come from :class:`Cors`.
COMMON_HEADERS = {
    "x-content-type-options": "nosniff",
    "cross-origin-resource-policy": "cross-origin",
}
_PRIVATE = "private, max-age=60, stale-while-revalidate=300"


@dataclass(frozen=True)
class Cors:
    """Which web origins may call the server from a browser.

    ``origins`` None answers every origin with ``*`` and no credentials (a public
    server, and what the official conformance suite expects); a set answers only the
    origins listed, with credentials allowed, and leaves every other origin without a
    grant, so its browser refuses to hand the page the response.
    """

    origins: frozenset[str] | None = None
    max_age: int = 600

    def headers(self, origin: str | None) -> dict[str, str]:
        grant = {
            "access-control-allow-methods": "GET, POST, PUT, DELETE, HEAD, OPTIONS",
            "access-control-allow-headers": _ALLOW_HEADERS,
            "access-control-expose-headers": _EXPOSE_HEADERS,
            "access-control-max-age": str(self.max_age),
        }
        if self.origins is None:
            return {"access-control-allow-origin": "*", **grant}
        if origin is None or origin not in self.origins:
            return {"vary": "Origin"}
        return {
            "access-control-allow-origin": origin,
            "access-control-allow-credentials": "true",
            "vary": "Origin",
            **grant,
        }


class Gate(Protocol):
    """Decides whether a request may go on (:mod:`durable_workflows.access`): called
    after the body is read and before anything is stored; raises ProtocolError."""

    def check(self, request: Request) -> None: ...


class Disconnected(Exception):
    """The client went away before we answered."""


class BodyError(Exception):
    """A request body refused with ``status`` (413 too large, 408 too slow)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_bounded(receive: Receive, limit: int, seconds: float) -> bytes:
    """A request body of at most ``limit`` bytes that arrives within ``seconds``.

    Past the limit the rest is read and dropped, so the client reads the 413 rather
    than a reset connection; a body still arriving after ``seconds`` is a 408, so a
    slow client holds nothing for long. :class:`Disconnected` when the client leaves.
    """
    chunks: list[bytes] = []
    size = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        try:
            message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
        except TimeoutError as exc:
            raise BodyError(408, f"The body did not arrive within {seconds:g} s") from exc
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        if not message.get("more_body", False):
            if size > limit:
                raise BodyError(413, f"Body larger than {limit} bytes")
            return b"".join(chunks)


@dataclass
class Request:
    method: str
    path: str  # below /v1/stream/, percent-decoded
    query: dict[str, list[str]]
    headers: dict[str, str]
    scope: Scope
    receive: Receive
    body: bytes = b""
    #: A write the group commit expects (:meth:`GroupCommit.expect`) and is not yet queued.
    expected: bool = False

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def base_url(self) -> str:
        scheme = self.scope.get("scheme", "http")
        host = self.headers.get("host")
        if host is None:
            server = self.scope.get("server") or ("127.0.0.1", 80)
            host = f"{server[0]}:{server[1]}"
        return f"{scheme}://{host}"


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class CreationChain:
    """What the first of two chained PUTs did (see :data:`REPORTS_CREATION`)."""

    #: "created", "found" (the stream was there), or None: refused, or not planned yet.
    outcome: str | None = None
    path: str = ""
    uid: str = ""

    def body_for(self, body: bytes, tx: Tx) -> bytes:
        """The chained PUT's body as it may be stored in ``tx``: all of it only if the
        first PUT's creation is in ``tx`` (one it planned in a batch whose commit then
        failed is not: a retry plans again), none if it found its stream."""
        if self.outcome == "found":
            return b""
        meta = tx.get(self.path) if self.outcome == "created" else None
        if meta is None or meta.uid != self.uid:
            raise ProtocolError(409, "Not created: the PUT it is chained to was refused")
        return body


class SubscriptionHandler(Protocol):
    """What the app needs from the subscription manager (``__ds`` routes)."""

    async def handle(self, request: Request) -> Reply: ...

    def on_stream_change(self, path: str, appended: bool) -> None: ...

    def start(self) -> None: ...

    async def aclose(self) -> None: ...


class Waiters:
    """Per-path sets of events that live readers sleep on; set on every change."""

    def __init__(self) -> None:
        self._by_path: dict[str, set[asyncio.Event]] = {}

    def add(self, path: str, event: asyncio.Event) -> None:
        self._by_path.setdefault(path, set()).add(event)

    def discard(self, path: str, event: asyncio.Event) -> None:
        events = self._by_path.get(path)
        if events is not None:
            events.discard(event)
            if not events:
                del self._by_path[path]

    def notify(self, path: str) -> None:
        for event in self._by_path.get(path, ()):
            event.set()

    def count(self) -> int:
        return sum(len(events) for events in self._by_path.values())

    def wake_all(self) -> None:
        for events in self._by_path.values():
            for event in events:
                event.set()


class Connection:
    """Watches one live request for a client disconnect while we wait for data."""

    def __init__(self, receive: Receive) -> None:
        self.wake = asyncio.Event()
        self.disconnected = False
        self._task = asyncio.ensure_future(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                self.wake.set()
                return

    async def wait(self, seconds: float) -> bool:
        """Sleep until woken or for ``seconds``; True when woken."""
        try:
            await asyncio.wait_for(self.wake.wait(), max(seconds, 0.0))
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self._task.cancel()


class StreamsApp:
    """The ASGI application. ``core`` decides; this class only speaks HTTP."""

    def __init__(
        self,
        core: StreamCore,
        *,
        long_poll_timeout: float = 30.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        subscriptions: SubscriptionHandler | None = None,
        sse_max_seconds: float = SSE_MAX_SECONDS,
        clock: Callable[[], float] = time.time,
        gate: Gate | None = None,
        cors: Cors | None = None,
    ) -> None:
        self.core = core
        #: PUT, POST and DELETE commit through it: writes that arrive together
        #: share one storage transaction (:mod:`.group_commit`).
        self.writes = GroupCommit(core)
        self.gate = gate
        self.cors = cors or Cors()
        #: PRIV-006: reads that needed a credential stay out of shared caches.
        self.cacheable = _CACHEABLE if gate is None else _PRIVATE
        self.long_poll_timeout = long_poll_timeout
        self.max_body_bytes = max_body_bytes
        self.body_seconds = BODY_SECONDS
        self.subscriptions = subscriptions
        self.sse_max_seconds = sse_max_seconds
        self.waiters = Waiters()
        self._clock = clock
        #: Set on shutdown: live reads end as if their timeout had passed.
        self._ending = False
        core.set_listener(self._on_change)

    def end_live_reads(self) -> None:
        """End every long-poll and SSE response now, as their timeouts would (a
        long-poll answers 204 up to date), and every later one at once: called when
        the server is about to stop, so that no reader is cut off mid-response."""
        self._ending = True
        self.waiters.wake_all()

    def _on_change(self, path: str, appended: bool) -> None:
        self.waiters.notify(path)
        # The change is already committed: its writer must still get its 2xx, so a
        # failure of what follows is logged, never raised.
        if self.subscriptions is not None:
            try:
                self.subscriptions.on_stream_change(path, appended)
            except Exception:
                log.exception("subscription hook failed for %s", path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        send = _with_headers(send, self.cors.headers(_origin(scope)))
        request = Request(
            method=scope["method"].upper(),
            path="",
            query=parse_qs(
                scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True
            ),
            headers=_headers(scope),
            scope=scope,
            receive=receive,
        )
        if request.method in WRITE_METHODS:
            request.expected = True
            self.writes.expect()
        try:
            await self._dispatch(request, send)
        except Disconnected:
            return
        except ProtocolError as error:
            await _respond(send, _error_reply(error))
        except StorageError as error:
            # Nothing was applied (the core commits before it changes state), so
            # the client may retry; a producer retry is deduplicated if it did land.
            await _respond(send, _error_reply(ProtocolError(503, f"Storage error: {error}")))
        finally:
            self._arrived(request)

    def _arrived(self, request: Request) -> None:
        if request.expected:
            request.expected = False
            self.writes.arrived()

    async def _write(self, request: Request, op: Callable[[Tx], T]) -> T:
        """``op`` committed with the other writes of its turn (:mod:`.group_commit`)."""
        self._arrived(request)
        return await self.writes.run(op)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        sweeper: asyncio.Future[None] | None = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.subscriptions is not None:
                    self.subscriptions.start()
                sweeper = asyncio.ensure_future(self._sweep_expired())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if sweeper is not None:
                    sweeper.cancel()
                if self.subscriptions is not None:
                    await self.subscriptions.aclose()
                self.core.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _sweep_expired(self) -> None:
        """Retire expired streams even if nobody asks for them again."""
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                self.core.sweep()
            except StorageError:
                continue  # retried at the next sweep

    async def _dispatch(self, request: Request, send: Send) -> None:
        full_path: str = request.scope["path"]
        if request.method == "OPTIONS":
            await _respond(send, Reply(204))
            return
        if not full_path.startswith(STREAM_PREFIX) or len(full_path) == len(STREAM_PREFIX):
            await _respond(send, Reply(404, {"content-type": "text/plain"}, b"Not found"))
            return
        request.path = full_path[len(STREAM_PREFIX) :]
        if _CONTROL_CHARACTER.search(request.path):
            # A decoded %00 or %0A could never be echoed in a header (Location), nor
            # named safely in a log: refused before anything is created.
            raise ProtocolError(400, "Stream paths may not contain control characters")
        if request.method in ("PUT", "POST"):
            # Read (or drain) the body before any check can refuse the request, so
            # every refusal reaches the client instead of a reset connection.
            request.body = await self.read_body(request)
        if self.gate is not None:
            self.gate.check(request)  # before anything is stored, touched or routed
        if request.path == "__ds" or request.path.startswith("__ds/"):
            if self.subscriptions is None:
                raise ProtocolError(404, "Subscriptions are not enabled")
            await _respond(send, await self.subscriptions.handle(request))
            return
        if request.method == "GET":
            await self._get(request, send)
            return
        if request.method == "PUT":
            reply = await self._put(request)
        elif request.method == "POST":
            reply = await self._post(request)
        elif request.method == "HEAD":
            reply = self._head(request)
        elif request.method == "DELETE":
            path = request.path
            await self._write(request, lambda tx: self.core.delete(path, tx))
            reply = Reply(204)
        else:
            reply = Reply(405, {"content-type": "text/plain"}, b"Method not allowed")
        await _respond(send, reply)

    async def read_body(self, request: Request) -> bytes:
        """The whole request body; 413 past ``max_body_bytes``, 408 past ``body_seconds``."""
        try:
            return await read_bounded(request.receive, self.max_body_bytes, self.body_seconds)
        except BodyError as error:
            raise ProtocolError(error.status, str(error)) from error

    # ------------------------------------------------------------------ PUT

    async def _put(self, request: Request) -> Reply:
        content_type = request.header(p.CONTENT_TYPE)
        if not p.is_valid_content_type(content_type):
            content_type = None
        ttl_header = request.header(p.STREAM_TTL)
        expires_header = request.header(p.STREAM_EXPIRES_AT)
        if ttl_header is not None and expires_header is not None:
            raise ProtocolError(400, "Send Stream-TTL or Stream-Expires-At, not both")
        ttl = None
        if ttl_header is not None:
            ttl = p.parse_ttl(ttl_header)
            if ttl is None:
                raise ProtocolError(400, "Invalid Stream-TTL")
        expires_ts = None
        if expires_header is not None:
            expires = p.parse_expires_at(expires_header)
            if expires is None:
                raise ProtocolError(400, "Invalid Stream-Expires-At")
            expires_ts = expires.timestamp()
        forked_from = request.header(p.STREAM_FORKED_FROM)
        fork_offset = request.header(p.STREAM_FORK_OFFSET)
        sub_header = request.header(p.STREAM_FORK_SUB_OFFSET)
        sub_offset = 0
        if forked_from is not None:
            forked_from = _stream_path(forked_from)
        if fork_offset is not None and (forked_from is None or not p.is_offset(fork_offset)):
            raise ProtocolError(400, "Invalid Stream-Fork-Offset")
        if sub_header is not None:
            parsed = p.parse_non_negative(sub_header)
            if forked_from is None or parsed is None:
                raise ProtocolError(400, "Invalid Stream-Fork-Sub-Offset")
            sub_offset = parsed
        closed = p.is_true(request.header(p.STREAM_CLOSED))
        extensions = request.scope.get("extensions") or {}
        reports: CreationChain | None = extensions.get(REPORTS_CREATION)
        gated: CreationChain | None = extensions.get(BODY_IF_CREATED)

        def create(tx: Tx) -> tuple[bool, StreamMeta]:
            if reports is not None:
                reports.outcome = None  # planned again after a failed group commit
            made = self.core.create(
                request.path,
                content_type=content_type,
                ttl_seconds=ttl,
                expires_at=expires_header,
                expires_at_ts=expires_ts,
                closed=closed,
                body=request.body if gated is None else gated.body_for(request.body, tx),
                forked_from=forked_from,
                fork_offset=fork_offset,
                fork_sub_offset=sub_offset,
                tx=tx,
            )
            if reports is not None:
                reports.outcome = "created" if made[0] else "found"
                reports.path, reports.uid = made[1].path, made[1].uid
            return made

        created, meta = await self._write(request, create)
        headers = {p.CONTENT_TYPE: meta.content_type, p.STREAM_NEXT_OFFSET: meta.tail}
        if created:
            # As the client sent it (percent-encoded), never the decoded path.
            raw = request.scope.get("raw_path") or request.scope["path"].encode()
            headers["location"] = request.base_url() + raw.decode("latin-1")
        if meta.closed:
            headers[p.STREAM_CLOSED] = "true"
        return Reply(201 if created else 200, headers)

    # ----------------------------------------------------------------- POST

    async def _post(self, request: Request) -> Reply:
        content_type = request.header(p.CONTENT_TYPE)
        close = p.is_true(request.header(p.STREAM_CLOSED))
        stream_seq = request.header(p.STREAM_SEQ)
        producer = _producer(request)  # a 400 for bad headers is not worth a batch slot
        result = await self._write(
            request,
            lambda tx: self.core.append(
                request.path,
                content_type=content_type,
                body=request.body,
                close=close,
                stream_seq=stream_seq,
                producer=producer,
                tx=tx,
            ),
        )
        return Reply(result.status, result.headers)

    # ----------------------------------------------------------------- HEAD

    def _head(self, request: Request) -> Reply:
        meta = self.core.head(request.path)
        headers = {
            p.CONTENT_TYPE: meta.content_type,
            p.STREAM_NEXT_OFFSET: meta.tail,
            "cache-control": "no-store",
        }
        if meta.closed:
            headers[p.STREAM_CLOSED] = "true"
        if meta.ttl_seconds is not None:
            headers[p.STREAM_TTL] = str(meta.ttl_seconds)
        if meta.expires_at is not None:
            headers[p.STREAM_EXPIRES_AT] = meta.expires_at
        return Reply(200, headers)

    # ------------------------------------------------------------------ GET

    async def _get(self, request: Request, send: Send) -> None:
        offsets = request.query.get(p.OFFSET_PARAM)
        offset: str | None = None
        if offsets is not None:
            if len(offsets) != 1 or not offsets[0]:
                raise ProtocolError(400, "Give exactly one non-empty offset")
            offset = offsets[0]
            if offset not in (p.OFFSET_START, p.OFFSET_NOW) and not p.is_offset(offset):
                raise ProtocolError(400, "Malformed offset")
        live = request.query.get(p.LIVE_PARAM, [None])[0]
        if live not in (None, "long-poll", "sse"):
            raise ProtocolError(400, "live must be long-poll or sse")
        if live is not None and offset is None:
            raise ProtocolError(400, f"{live} reads require an offset")
        cursor = request.query.get(p.CURSOR_PARAM, [None])[0]
        meta = self.core.head(request.path)  # 404 / 410 before anything else
        self.core.touch(request.path)
        if live == "sse":
            await self._sse(request, send, meta, offset or p.OFFSET_START, cursor)
            return
        if live == "long-poll":
            await _respond(send, await self._long_poll(request, offset or p.OFFSET_START, cursor))
            return
        if offset == p.OFFSET_NOW:
            await _respond(send, _now_reply(meta))
            return
        result = self.core.read(request.path, offset or p.OFFSET_START)
        await _respond(send, self._data_reply(request, offset or p.OFFSET_START, result, None))

    def _data_reply(
        self, request: Request, start: str, result: ReadResult, cursor: str | None
    ) -> Reply:
        meta = result.meta
        headers = {
            p.CONTENT_TYPE: meta.content_type,
            p.STREAM_NEXT_OFFSET: result.next_offset,
            "cache-control": self.cacheable,
        }
        if self.gate is not None:  # a private cache must not hand it to another token
            headers["vary"] = "Authorization"
        if result.up_to_date:
            headers[p.STREAM_UP_TO_DATE] = "true"
        if result.closed:
            headers[p.STREAM_CLOSED] = "true"
        if cursor is not None:
            headers[p.STREAM_CURSOR] = cursor
        # The ETag names the range and, via ":c", whether it ends in EOF (10.1).
        etag = f'"{meta.uid}:{start}:{result.next_offset}{":c" if result.closed else ""}"'
        headers["etag"] = etag
        if _etag_matches(request.header("if-none-match"), etag):
            return Reply(304, {"etag": etag})
        return Reply(200, headers, format_body(meta, result.records))

    async def _long_poll(self, request: Request, offset: str, cursor: str | None) -> Reply:
        path = request.path
        if offset == p.OFFSET_NOW:
            offset = self.core.head(path).tail
        connection = Connection(request.receive)
        self.waiters.add(path, connection.wake)
        deadline = asyncio.get_running_loop().time() + self.long_poll_timeout
        try:
            while True:
                connection.wake.clear()
                result = self.core.read(path, offset)
                if result.records:
                    self.core.touch(path)
                    reply_cursor = p.response_cursor(cursor, self._clock())
                    return self._data_reply(request, offset, result, reply_cursor)
                remaining = deadline - asyncio.get_running_loop().time()
                if result.closed or remaining <= 0 or self._ending:
                    return _poll_end_reply(result, p.response_cursor(cursor, self._clock()))
                await connection.wait(remaining)
                if connection.disconnected:
                    raise Disconnected
        finally:
            self.waiters.discard(path, connection.wake)
            connection.close()

    async def _sse(
        self, request: Request, send: Send, meta: StreamMeta, offset: str, cursor: str | None
    ) -> None:
        path = request.path
        current = meta.tail if offset == p.OFFSET_NOW else offset
        cache = "no-cache" if self.gate is None else "private, no-cache"
        headers = {p.CONTENT_TYPE: "text/event-stream", "cache-control": cache}
        if not p.sse_is_text(meta.content_type):
            headers[p.STREAM_SSE_DATA_ENCODING] = "base64"
        await _start(send, 200, headers)
        connection = Connection(request.receive)
        self.waiters.add(path, connection.wake)
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + self.sse_max_seconds
        need_control = True  # the first event, and one after each idle timeout
        try:
            while not connection.disconnected and loop.time() < ends_at and not self._ending:
                connection.wake.clear()
                try:
                    result = self.core.read(path, current)
                except ProtocolError:
                    break  # deleted or expired meanwhile: end the stream
                events = ""
                if result.records:
                    self.core.touch(path)
                    events += _sse_event("data", sse_payload(result.meta, result.records))
                    need_control = True
                if need_control or result.closed:
                    control = _control(result, p.response_cursor(cursor, self._clock()))
                    events += _sse_event("control", json.dumps(control))
                    need_control = False
                if events:
                    # A data event and its control event go out in one write, so
                    # a reader never sees one without the other.
                    await send(
                        {"type": "http.response.body", "body": events.encode(), "more_body": True}
                    )
                if result.closed:
                    break
                current = result.next_offset
                if result.up_to_date:
                    remaining = min(self.long_poll_timeout, ends_at - loop.time())
                    woken = await connection.wait(remaining)
                    self.core.touch(path)
                    need_control = not woken
        finally:
            self.waiters.discard(path, connection.wake)
            connection.close()
        if not connection.disconnected:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


# --------------------------------------------------------------------- helpers


def _headers(scope: Scope) -> dict[str, str]:
    return header_dict(scope.get("headers", []))


def header_dict(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """ASGI's raw headers as lower-case names to values, repeats joined with ", "."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in raw:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _origin(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"origin":
            return str(value.decode("latin-1"))
    return None


def _with_headers(send: Send, extra: dict[str, str]) -> Send:
    """``send`` with ``extra`` added to the response's headers (CORS)."""
    encoded = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *encoded]}
        await send(message)

    return sending


def _stream_path(value: str) -> str:
    """A ``Stream-Forked-From`` value (a URL path) as a path below /v1/stream/."""
    return value[len(STREAM_PREFIX) :] if value.startswith(STREAM_PREFIX) else value.lstrip("/")


def _producer(request: Request) -> Producer | None:
    """The idempotent-producer headers: all three or none (400 otherwise)."""
    values = [request.header(h) for h in (p.PRODUCER_ID, p.PRODUCER_EPOCH, p.PRODUCER_SEQ)]
    if all(v is None for v in values):
        return None
    producer_id, epoch_text, seq_text = values
    if producer_id is None or epoch_text is None or seq_text is None:
        raise ProtocolError(400, "Send Producer-Id, Producer-Epoch and Producer-Seq together")
    if not producer_id:
        raise ProtocolError(400, "Producer-Id must not be empty")
    epoch = p.parse_producer_int(epoch_text)
    seq = p.parse_producer_int(seq_text)
    if epoch is None or seq is None:
        raise ProtocolError(400, "Producer-Epoch and Producer-Seq must be integers 0..2^53-1")
    return Producer(producer_id, epoch, seq)


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    candidates = [c.strip().removeprefix("W/") for c in if_none_match.split(",")]
    return etag in candidates or "*" in candidates


def _now_reply(meta: StreamMeta) -> Reply:
    """Catch-up ``offset=now``: no data, the tail, never cached, no ETag (section 8)."""
    headers = {
        p.CONTENT_TYPE: meta.content_type,
        p.STREAM_NEXT_OFFSET: meta.tail,
        p.STREAM_UP_TO_DATE: "true",
        "cache-control": "no-store",
    }
    if meta.closed:
        headers[p.STREAM_CLOSED] = "true"
    return Reply(200, headers, b"[]" if p.is_json(meta.content_type) else b"")


def _poll_end_reply(result: ReadResult, cursor: str) -> Reply:
    """A long-poll 204: timed out, or at the tail of a closed stream (EOF)."""
    headers = {
        p.STREAM_NEXT_OFFSET: result.next_offset,
        p.STREAM_UP_TO_DATE: "true",
        "cache-control": "no-store",
    }
    if result.closed:
        headers[p.STREAM_CLOSED] = "true"
    else:
        headers[p.STREAM_CURSOR] = cursor
    return Reply(204, headers)


def _control(result: ReadResult, cursor: str) -> dict[str, Any]:
    control: dict[str, Any] = {"streamNextOffset": result.next_offset}
    if result.closed:
        control["streamClosed"] = True
        control["upToDate"] = True
    else:
        control["streamCursor"] = cursor
        if result.up_to_date:
            control["upToDate"] = True
    return control


def _error_reply(error: ProtocolError) -> Reply:
    headers = {p.CONTENT_TYPE: "text/plain; charset=utf-8", **error.headers}
    return Reply(error.status, headers, error.message.encode())


def _encode_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    merged = {**COMMON_HEADERS, **headers}
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in merged.items()]


async def _start(send: Send, status: int, headers: dict[str, str]) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": _encode_headers(headers)}
    )


async def _respond(send: Send, reply: Reply) -> None:
    headers = reply.headers
    if reply.status not in (204, 304):
        headers = {**headers, "content-length": str(len(reply.body))}
    await _start(send, reply.status, headers)
    await send({"type": "http.response.body", "body": reply.body, "more_body": False})


def _sse_event(event: str, payload: str) -> str:
    """One SSE event; every payload line gets its own ``data:`` (no CR injection)."""
    lines = payload.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return f"event: {event}\n" + "".join(f"data:{line}\n" for line in lines) + "\n"
