"""The protocol rules of a Durable Streams server, without HTTP or sockets.

:class:`StreamCore` owns every stream's metadata and decides each operation
(create, append, close, read, delete) exactly as PROTOCOL.md says, reporting
refusals as :class:`ProtocolError` (an HTTP status plus headers). It never
awaits: each call runs to completion, so on one event loop every validation
and its append happen atomically, which gives the per-(stream, producer)
serialisation of section 5.2.1 for free. Persistence goes through a
:class:`~.storage.Storage`; a call returns only after its change is committed
there, so an acknowledged write is as durable as the storage makes it.

Scope choices we document (PROTOCOL.md leaves them to the server):

* ``Stream-Seq`` is scoped **per stream**: one last value per stream, compared
  byte-wise; a fork starts with none.
* Idempotent-producer duplicates are answered (204) **before** the
  ``Stream-Seq`` check, so a retried request carrying both never gets a 409.
* A record is one append (one POST body, or one PUT body); JSON records hold the
  flattened messages of that append. Offsets are ``<appends>_<bytes>``.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from .. import protocol as p

#: Producer state is kept 7 days after its last use (PROTOCOL.md 5.2.1).
PRODUCER_STATE_TTL_SECONDS = 7 * 24 * 3600
#: A read returns at most about this many bytes; clients page with the offset.
READ_CHUNK_BYTES = 1024 * 1024
#: A sliding TTL refreshed only by reads is persisted at most this often.
TOUCH_PERSIST_SECONDS = 1.0


class ProtocolError(Exception):
    """A request the protocol refuses: the status and headers to answer with."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class StorageError(Exception):
    """The storage could not commit or read; nothing of the request was applied."""


@dataclass
class ProducerState:
    epoch: int
    last_seq: int
    updated_at: float


@dataclass
class StreamMeta:
    """Everything about a stream except its records; persisted as one row."""

    path: str
    uid: str  # differs between a deleted stream and one re-created at its path
    content_type: str
    tail: str
    created_at: float
    last_access: float
    ttl_seconds: int | None = None
    expires_at: str | None = None  # as the client sent it (compared on re-PUT)
    expires_at_ts: float | None = None
    closed: bool = False
    closed_by: tuple[str, int, int] | None = None  # (producer id, epoch, seq)
    stream_seq: str | None = None
    producers: dict[str, ProducerState] = field(default_factory=dict)
    forked_from: str | None = None
    fork_offset: str | None = None
    fork_sub_offset: int = 0
    ref_count: int = 0
    soft_deleted: bool = False

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["producers"] = {k: v.__dict__ for k, v in self.producers.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StreamMeta:
        data = dict(data)
        data["producers"] = {k: ProducerState(**v) for k, v in data["producers"].items()}
        if data.get("closed_by") is not None:
            data["closed_by"] = tuple(data["closed_by"])
        return cls(**data)


@dataclass(frozen=True)
class Record:
    """One append: ``offset`` is the stream position just after it."""

    offset: str
    data: bytes


class Storage(Protocol):
    """Where metadata and records live. ``commit`` is atomic and durable on return.

    Failures are raised as :class:`StorageError`; the core changes its in-memory
    state only after a commit returned, so a failed commit changes nothing.
    """

    def load(self) -> list[StreamMeta]: ...

    def commit(
        self,
        metas: Sequence[StreamMeta] = (),
        records: Sequence[tuple[str, Record]] = (),
        deleted: Sequence[str] = (),
    ) -> None: ...

    def read(self, path: str, after: str, upto: str | None, max_bytes: int) -> list[Record]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Producer:
    id: str
    epoch: int
    seq: int


@dataclass(frozen=True)
class AppendResult:
    """A successful (2xx) append or close: status 200 or 204 and headers."""

    status: int
    headers: dict[str, str]


@dataclass(frozen=True)
class ReadResult:
    records: list[Record]
    next_offset: str
    up_to_date: bool
    closed: bool  # the stream is closed and this read reaches its final offset
    meta: StreamMeta


def _json_records(body: bytes, *, allow_empty: bool) -> bytes | None:
    """Validate a JSON body and flatten one array level into stored form.

    Stored form is the compact messages joined by commas (``{"a":1},[1,2]``),
    so a read is ``[`` + records joined by commas + ``]``. ``None`` means an
    empty array on create (no record).
    """

    try:
        value = json.loads(
            body.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(400, "Invalid JSON") from exc
    messages = value if isinstance(value, list) else [value]
    if not messages:
        if allow_empty:
            return None
        raise ProtocolError(400, "Empty arrays are not allowed")
    try:
        return b",".join(_dump(m) for m in messages)
    except (ValueError, RecursionError) as exc:  # nested too deep to write back
        raise ProtocolError(400, "Invalid JSON") from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    # 1e400 would parse as inf and be written back as Infinity, which is not JSON.
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} does not fit a double")
    return number


def _dump(value: Any) -> bytes:
    """Compact JSON as UTF-8; \\u escapes only for what UTF-8 cannot hold (lone surrogates)."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode()


def format_body(meta: StreamMeta, records: Sequence[Record]) -> bytes:
    """A read body: a JSON array for JSON streams, else the bytes concatenated."""
    if p.is_json(meta.content_type):
        return b"[" + b",".join(r.data for r in records) + b"]"
    return b"".join(r.data for r in records)


def sse_payload(meta: StreamMeta, records: Sequence[Record]) -> str:
    """The text of one SSE ``data`` event for ``records``."""
    body = format_body(meta, records)
    if p.sse_is_text(meta.content_type):
        return body.decode("utf-8", errors="replace")
    return base64.b64encode(body).decode("ascii")


class StreamCore:
    """The streams of one server and the rules of every operation on them."""

    def __init__(
        self,
        storage: Storage,
        clock: Callable[[], float],
        on_change: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._storage = storage
        self._clock = clock
        # on_change(path, appended): wakes live readers and subscriptions.
        self._on_change = on_change or (lambda path, appended: None)
        self._streams: dict[str, StreamMeta] = {m.path: m for m in storage.load()}
        self._touch_persisted: dict[str, float] = {}

    def set_listener(self, on_change: Callable[[str, bool], None]) -> None:
        self._on_change = on_change

    def close(self) -> None:
        self._storage.close()

    # ----------------------------------------------------------------- lookup

    def paths(self) -> list[str]:
        """Live (not expired, not soft-deleted) stream paths."""
        return [path for path in list(self._streams) if self.find(path) is not None]

    def find(self, path: str) -> StreamMeta | None:
        """The live stream at ``path`` or None; expired ones are retired here."""
        meta = self._lookup(path)
        return None if meta is None or meta.soft_deleted else meta

    def _lookup(self, path: str) -> StreamMeta | None:
        """Like find, but soft-deleted streams are returned (callers answer 410)."""
        meta = self._streams.get(path)
        if meta is None or meta.soft_deleted or not self._expired(meta):
            return meta
        self._retire(meta)
        return self._streams.get(path)

    def _get(self, path: str) -> StreamMeta:
        meta = self._lookup(path)
        if meta is None:
            raise ProtocolError(404, "Stream not found")
        if meta.soft_deleted:
            raise ProtocolError(410, "Stream is gone")
        return meta

    def _expired(self, meta: StreamMeta) -> bool:
        now = self._clock()
        if meta.expires_at_ts is not None and now >= meta.expires_at_ts:
            return True
        return meta.ttl_seconds is not None and now >= meta.last_access + meta.ttl_seconds

    def _retire(self, meta: StreamMeta) -> None:
        """Delete an expired or deleted stream: soft while forks still read it."""
        if meta.ref_count > 0:
            self._put(replace(meta, soft_deleted=True))
        else:
            self._drop(meta.path)
        self._on_change(meta.path, False)

    def _drop(self, path: str) -> None:
        """Remove a stream fully, then any soft-deleted sources it kept alive."""
        metas: list[StreamMeta] = []
        deleted = [path]
        source_path = self._streams[path].forked_from
        while source_path is not None and source_path in self._streams:
            source = self._streams[source_path]
            source = replace(source, ref_count=max(0, source.ref_count - 1))
            if source.ref_count == 0 and source.soft_deleted:
                deleted.append(source.path)
                source_path = source.forked_from
            else:
                metas.append(source)
                source_path = None
        self._storage.commit(metas=metas, deleted=deleted)
        for gone in deleted:
            del self._streams[gone]
            self._touch_persisted.pop(gone, None)
        for meta in metas:
            self._streams[meta.path] = meta

    def _put(self, meta: StreamMeta, records: Sequence[Record] = ()) -> None:
        self._storage.commit(metas=[meta], records=[(meta.path, r) for r in records])
        self._streams[meta.path] = meta
        self._touch_persisted[meta.path] = meta.last_access

    def sweep(self) -> int:
        """Retire every expired stream now (lookups also do it lazily); how many."""
        before = len(self._streams)
        self.paths()
        return before - len(self._streams)

    def touch(self, path: str) -> None:
        """Refresh a sliding TTL (reads and writes do; HEAD does not)."""
        meta = self._streams.get(path)
        if meta is None or meta.soft_deleted:
            return
        now = self._clock()
        meta.last_access = now
        if (
            meta.ttl_seconds is not None
            and now - self._touch_persisted.get(path, 0.0) >= TOUCH_PERSIST_SECONDS
        ):
            self._storage.commit(metas=[meta])
            self._touch_persisted[path] = now

    # ----------------------------------------------------------------- create

    def create(
        self,
        path: str,
        *,
        content_type: str | None,
        ttl_seconds: int | None,
        expires_at: str | None,
        expires_at_ts: float | None,
        closed: bool,
        body: bytes,
        forked_from: str | None = None,
        fork_offset: str | None = None,
        fork_sub_offset: int = 0,
    ) -> tuple[bool, StreamMeta]:
        """PUT: (created, stream). Same config again is 200; different is 409."""
        existing = self._lookup(path)
        if existing is not None:
            if existing.soft_deleted:
                raise ProtocolError(409, "Stream was deleted but still has forks")
            if not self._same_config(
                existing,
                content_type,
                ttl_seconds,
                expires_at,
                closed,
                forked_from,
                fork_offset,
                fork_sub_offset,
            ):
                raise ProtocolError(409, "Stream already exists with different configuration")
            return False, existing

        now = self._clock()
        meta = StreamMeta(
            path=path,
            uid=secrets.token_hex(8),
            content_type=content_type or p.DEFAULT_CONTENT_TYPE,
            tail=p.OFFSET_ZERO,
            created_at=now,
            last_access=now,
            ttl_seconds=ttl_seconds,
            expires_at=expires_at,
            expires_at_ts=expires_at_ts,
            closed=closed,
        )
        records: list[Record] = []
        source: StreamMeta | None = None
        if forked_from is not None:
            source, prefix = self._resolve_fork(
                meta, content_type, forked_from, fork_offset, fork_sub_offset
            )
            if prefix:
                records.append(Record(p.advance_offset(meta.tail, len(prefix)), prefix))
                meta.tail = records[-1].offset
        if body:
            data = _json_records(body, allow_empty=True) if p.is_json(meta.content_type) else body
            if data:
                records.append(Record(p.advance_offset(meta.tail, len(data)), data))
                meta.tail = records[-1].offset
        metas = [meta]
        if source is not None:
            metas.append(replace(source, ref_count=source.ref_count + 1))
        self._storage.commit(metas=metas, records=[(path, r) for r in records])
        for m in metas:
            self._streams[m.path] = m
        self._touch_persisted[path] = now
        if records:
            self._on_change(path, True)
        return True, meta

    @staticmethod
    def _same_config(
        existing: StreamMeta,
        content_type: str | None,
        ttl_seconds: int | None,
        expires_at: str | None,
        closed: bool,
        forked_from: str | None,
        fork_offset: str | None,
        fork_sub_offset: int,
    ) -> bool:
        """Idempotent PUT (section 5.1): type, expiry, closure and fork headers match.

        A fork re-PUT may omit what it inherited (content type, expiry).
        """
        inherits = forked_from is not None
        if content_type is None and not inherits:
            content_type = p.DEFAULT_CONTENT_TYPE
        if content_type is not None and p.media_type(content_type) != p.media_type(
            existing.content_type
        ):
            return False
        if not (inherits and ttl_seconds is None and expires_at is None) and (
            ttl_seconds != existing.ttl_seconds or expires_at != existing.expires_at
        ):
            return False
        return (
            closed == existing.closed
            and forked_from == existing.forked_from
            and (fork_offset is None or fork_offset == existing.fork_offset)
            and fork_sub_offset == existing.fork_sub_offset
        )

    def _resolve_fork(
        self,
        meta: StreamMeta,
        content_type: str | None,
        source_path: str,
        fork_offset: str | None,
        sub_offset: int,
    ) -> tuple[StreamMeta, bytes]:
        """Check a fork request; set the fork's offset, type and TTL on ``meta``."""
        source = self._lookup(source_path)
        if source is None:
            raise ProtocolError(404, "Source stream not found")
        if source.soft_deleted:
            raise ProtocolError(409, "Source stream was deleted but still has forks")
        if content_type is None:
            meta.content_type = source.content_type
        elif p.media_type(content_type) != p.media_type(source.content_type):
            raise ProtocolError(409, "Content-Type does not match the source stream")
        meta.forked_from = source_path
        meta.fork_sub_offset = sub_offset
        offset = source.tail if fork_offset is None else fork_offset
        if offset > source.tail:
            raise ProtocolError(400, "Fork offset beyond source stream length")
        meta.tail = offset
        meta.fork_offset = offset
        # Expiry inheritance (PROTOCOL.md 4.2): an explicit TTL or Expires-At
        # wins; otherwise the fork inherits whichever the source has.
        if meta.ttl_seconds is None and meta.expires_at is None:
            meta.ttl_seconds = source.ttl_seconds
            meta.expires_at = source.expires_at
            meta.expires_at_ts = source.expires_at_ts
        prefix = b""
        if sub_offset > 0:
            following = self._read_records(source, offset, max_bytes=1)
            if not following:
                raise ProtocolError(400, "Invalid fork sub-offset: no data past the fork offset")
            data = following[0].data
            if p.is_json(source.content_type):
                values = json.loads(b"[" + data + b"]")
                if sub_offset > len(values):
                    raise ProtocolError(400, "Invalid fork sub-offset: past the append's end")
                prefix = b",".join(_dump(v) for v in values[:sub_offset])
            else:
                if sub_offset > len(data):
                    raise ProtocolError(400, "Invalid fork sub-offset: past the append's end")
                prefix = data[:sub_offset]
        return source, prefix

    # ----------------------------------------------------------------- append

    def append(
        self,
        path: str,
        *,
        content_type: str | None,
        body: bytes,
        close: bool,
        stream_seq: str | None,
        producer: Producer | None,
    ) -> AppendResult:
        """POST: append ``body`` (and close if asked), or close only when empty."""
        meta = self._get(path)
        if not body and close:
            return self._close_only(meta, producer)
        if meta.closed:
            if producer is not None and meta.closed_by == (
                producer.id,
                producer.epoch,
                producer.seq,
            ):
                return self._duplicate(meta, producer, producer.seq, closed=True)
            raise ProtocolError(409, "Stream is closed", self._closed_headers(meta))
        if not body:
            raise ProtocolError(400, "Empty body")
        if not content_type:
            raise ProtocolError(400, "Content-Type header is required")
        if p.media_type(content_type) != p.media_type(meta.content_type):
            raise ProtocolError(409, "Content-Type does not match the stream")

        now = self._clock()
        producers = meta.producers
        if producer is not None:
            checked = self._check_producer(meta, producer, now)
            if checked is None:  # a retry of an accepted request
                state = meta.producers[producer.id]
                return self._duplicate(meta, producer, state.last_seq, closed=False)
            producers = checked
        if stream_seq is not None and meta.stream_seq is not None and stream_seq <= meta.stream_seq:
            raise ProtocolError(409, "Stream-Seq regression")

        data = _json_records(body, allow_empty=False) if p.is_json(meta.content_type) else body
        assert data is not None
        record = Record(p.advance_offset(meta.tail, len(data)), data)
        updated = replace(
            meta,
            tail=record.offset,
            last_access=now,
            producers=producers,
            stream_seq=stream_seq if stream_seq is not None else meta.stream_seq,
            closed=close,
            closed_by=(producer.id, producer.epoch, producer.seq) if close and producer else None,
        )
        self._put(updated, [record])
        self._on_change(path, True)
        headers = {p.STREAM_NEXT_OFFSET: record.offset}
        if close:
            headers[p.STREAM_CLOSED] = "true"
        if producer is None:
            return AppendResult(204, headers)
        headers[p.PRODUCER_EPOCH] = str(producer.epoch)
        headers[p.PRODUCER_SEQ] = str(producer.seq)
        return AppendResult(200, headers)

    def _check_producer(
        self, meta: StreamMeta, producer: Producer, now: float
    ) -> dict[str, ProducerState] | None:
        """Section 5.2.1 validation: the new producer map, or None for a duplicate."""
        producers = {
            pid: state
            for pid, state in meta.producers.items()
            if now - state.updated_at <= PRODUCER_STATE_TTL_SECONDS
        }
        state = producers.get(producer.id)
        if state is None or producer.epoch > state.epoch:
            if producer.seq != 0:
                if state is None:
                    raise ProtocolError(
                        409,
                        "Producer sequence gap",
                        {p.PRODUCER_EXPECTED_SEQ: "0", p.PRODUCER_RECEIVED_SEQ: str(producer.seq)},
                    )
                raise ProtocolError(400, "A new producer epoch must start at sequence 0")
        elif producer.epoch < state.epoch:
            raise ProtocolError(403, "Stale producer epoch", {p.PRODUCER_EPOCH: str(state.epoch)})
        elif producer.seq <= state.last_seq:
            return None
        elif producer.seq > state.last_seq + 1:
            raise ProtocolError(
                409,
                "Producer sequence gap",
                {
                    p.PRODUCER_EXPECTED_SEQ: str(state.last_seq + 1),
                    p.PRODUCER_RECEIVED_SEQ: str(producer.seq),
                },
            )
        producers[producer.id] = ProducerState(producer.epoch, producer.seq, now)
        return producers

    def _duplicate(
        self, meta: StreamMeta, producer: Producer, last_seq: int, *, closed: bool
    ) -> AppendResult:
        headers = {
            p.STREAM_NEXT_OFFSET: meta.tail,
            p.PRODUCER_EPOCH: str(producer.epoch),
            p.PRODUCER_SEQ: str(last_seq),
        }
        if closed or meta.closed:
            headers[p.STREAM_CLOSED] = "true"
        self.touch(meta.path)
        return AppendResult(204, headers)

    def _close_only(self, meta: StreamMeta, producer: Producer | None) -> AppendResult:
        """An empty POST with ``Stream-Closed: true`` (section 5.3); refreshes the TTL."""
        now = self._clock()
        if meta.closed:
            if producer is None or meta.closed_by == (producer.id, producer.epoch, producer.seq):
                self.touch(meta.path)
                headers = self._closed_headers(meta)
                if producer is not None:
                    headers[p.PRODUCER_EPOCH] = str(producer.epoch)
                    headers[p.PRODUCER_SEQ] = str(producer.seq)
                return AppendResult(204, headers)
            raise ProtocolError(409, "Stream is closed", self._closed_headers(meta))
        producers = meta.producers
        closed_by = None
        if producer is not None:
            checked = self._check_producer(meta, producer, now)
            if checked is None:
                return self._duplicate(
                    meta, producer, meta.producers[producer.id].last_seq, closed=False
                )
            producers = checked
            closed_by = (producer.id, producer.epoch, producer.seq)
        updated = replace(
            meta, closed=True, closed_by=closed_by, producers=producers, last_access=now
        )
        self._put(updated)
        self._on_change(meta.path, False)
        headers = self._closed_headers(updated)
        if producer is not None:
            headers[p.PRODUCER_EPOCH] = str(producer.epoch)
            headers[p.PRODUCER_SEQ] = str(producer.seq)
        return AppendResult(204, headers)

    @staticmethod
    def _closed_headers(meta: StreamMeta) -> dict[str, str]:
        return {p.STREAM_NEXT_OFFSET: meta.tail, p.STREAM_CLOSED: "true"}

    # ------------------------------------------------------------ head, delete

    def head(self, path: str) -> StreamMeta:
        """HEAD: metadata; deliberately does not refresh a sliding TTL."""
        return self._get(path)

    def delete(self, path: str) -> None:
        """DELETE: soft while forks reference the stream (410 afterwards), else gone."""
        meta = self._get(path)
        self._retire(meta)

    # ------------------------------------------------------------------- read

    def read(self, path: str, offset: str, *, max_bytes: int = READ_CHUNK_BYTES) -> ReadResult:
        """Records after ``offset`` (a real offset or ``-1``), up to about max_bytes."""
        meta = self._get(path)
        after = p.OFFSET_ZERO if offset == p.OFFSET_START else offset
        records = self._read_records(meta, after, max_bytes=max_bytes)
        # With nothing past the offset, echo it (section 5.6); -1 reads to the tail.
        next_offset = records[-1].offset if records else max(after, meta.tail)
        up_to_date = next_offset >= meta.tail
        return ReadResult(records, next_offset, up_to_date, meta.closed and up_to_date, meta)

    def _read_records(self, meta: StreamMeta, after: str, *, max_bytes: int) -> list[Record]:
        """Stitch a fork's inherited records (up to its fork offset) to its own."""
        records: list[Record] = []
        if (
            meta.forked_from is not None
            and meta.fork_offset is not None
            and after < meta.fork_offset
        ):
            source = self._streams.get(meta.forked_from)
            if source is not None:
                records = self._read_capped(source, after, meta.fork_offset, max_bytes)
            if records and sum(len(r.data) for r in records) >= max_bytes:
                return records
            after = meta.fork_offset
        return records + self._storage.read(meta.path, after, None, max_bytes)

    def _read_capped(self, meta: StreamMeta, after: str, cap: str, max_bytes: int) -> list[Record]:
        records: list[Record] = []
        if (
            meta.forked_from is not None
            and meta.fork_offset is not None
            and after < meta.fork_offset
        ):
            source = self._streams.get(meta.forked_from)
            if source is not None:
                records = self._read_capped(source, after, min(cap, meta.fork_offset), max_bytes)
            if records and sum(len(r.data) for r in records) >= max_bytes:
                return records
            after = max(after, meta.fork_offset)
        if after >= cap:
            return records
        return records + self._storage.read(meta.path, after, cap, max_bytes)
