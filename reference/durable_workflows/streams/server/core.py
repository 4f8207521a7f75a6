"""The protocol rules of a Durable Streams server, without HTTP or sockets.

:class:`StreamCore` owns every stream's metadata and decides each operation
(create, append, close, read, delete) exactly as PROTOCOL.md says, reporting
refusals as :class:`ProtocolError` (an HTTP status plus headers). It never
awaits: each call runs to completion, so on one event loop every validation
and its append happen atomically, which gives the per-(stream, producer)
serialisation of section 5.2.1 for free. Persistence goes through a
:class:`~.storage.Storage`; a call returns only after its change is committed
there, so an acknowledged write is as durable as the storage makes it.

Writes are planned into a :class:`Tx` and committed as one storage transaction;
:meth:`StreamCore.run_batch` plans several operations into one (group commit:
one fsync for all of them), each validated against the state the earlier ones
left and rolled back alone when it is refused. Readers see only committed state:
a transaction's streams are installed, and listeners told, after its commit.

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
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Generic, Protocol, TypeVar

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


@dataclass(slots=True)
class ProducerState:
    epoch: int
    last_seq: int
    updated_at: float


@dataclass(slots=True)
class StreamMeta:
    """Everything about a stream except its records; persisted as one row. (Slots: a
    server holds one per stream, tens of thousands with many runs.)"""

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
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["producers"] = {k: asdict(v) for k, v in self.producers.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StreamMeta:
        data = dict(data)
        data["content_type"] = sys.intern(data["content_type"])
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
    """Where metadata and records live. ``commit`` is atomic and durable on return;
    with ``sync=False`` it survives a crash of the process but may be undone by a
    power loss before the next synced commit.

    Failures are raised as :class:`StorageError`; the core changes its in-memory
    state only after a commit returned, so a failed commit changes nothing.
    """

    def load(self) -> list[StreamMeta]: ...

    def commit(
        self,
        metas: Sequence[StreamMeta] = (),
        records: Sequence[tuple[str, Record]] = (),
        deleted: Sequence[str] = (),
        *,
        sync: bool = True,
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


T = TypeVar("T")
_ABSENT: Any = object()  # "the transaction had not touched this path" in the undo log
Savepoint = tuple[int, int, int, int, int]


class Tx:
    """The writes of one storage transaction, as the operations planned into it see them.

    :meth:`get` answers from this transaction's own writes first, then from the
    committed streams, so an operation sees what the operations before it in the
    batch did. Nothing here is visible to readers until the transaction is
    committed and applied (:meth:`StreamCore.commit`). Every write is logged, so
    :meth:`rollback` to a :meth:`savepoint` undoes one refused operation alone.
    """

    def __init__(self, committed: Mapping[str, StreamMeta]) -> None:
        self._committed = committed
        self._metas: dict[str, StreamMeta | None] = {}  # None: dropped here
        self._undo: list[tuple[str, Any]] = []  # (path, its previous entry or _ABSENT)
        self._records: list[tuple[str, Record]] = []
        self._drops: list[tuple[str, int]] = []  # (path, len(_records) when dropped)
        self.changes: list[tuple[str, bool]] = []  # (path, appended) for the listener
        #: Paths retired here because they had expired (see :meth:`StreamCore.refuse`).
        self.expired: list[str] = []
        #: False: committed without an fsync (:class:`Storage`)
        self.sync = True

    def get(self, path: str) -> StreamMeta | None:
        if path in self._metas:
            return self._metas[path]
        return self._committed.get(path)

    def put(self, meta: StreamMeta, records: Sequence[Record] = ()) -> None:
        self._set(meta.path, meta)
        self._records.extend((meta.path, r) for r in records)

    def drop(self, path: str) -> None:
        """Delete the stream with every record it has, committed or written here."""
        self._set(path, None)
        self._drops.append((path, len(self._records)))

    def notify(self, path: str, appended: bool) -> None:
        self.changes.append((path, appended))

    def _set(self, path: str, meta: StreamMeta | None) -> None:
        self._undo.append((path, self._metas.get(path, _ABSENT)))
        self._metas[path] = meta

    def savepoint(self) -> Savepoint:
        return (
            len(self._undo),
            len(self._records),
            len(self._drops),
            len(self.changes),
            len(self.expired),
        )

    def rollback(self, savepoint: Savepoint) -> None:
        undo, records, drops, changes, expired = savepoint
        while len(self._undo) > undo:
            path, previous = self._undo.pop()
            if previous is _ABSENT:
                del self._metas[path]
            else:
                self._metas[path] = previous
        del self._records[records:], self._drops[drops:], self.changes[changes:]
        del self.expired[expired:]

    @property
    def empty(self) -> bool:
        return not self._metas

    def writes(self) -> tuple[list[StreamMeta], list[tuple[str, Record]], list[str]]:
        """(metas, records, deleted) for :meth:`Storage.commit`, which deletes first.

        A record written before its stream was dropped in this transaction is left
        out: the drop deletes it, and a re-created stream must not inherit it.
        """
        dropped_at = dict(self._drops)  # the last drop of each path wins
        records = [
            (path, record)
            for i, (path, record) in enumerate(self._records)
            if i >= dropped_at.get(path, 0)
        ]
        metas = [meta for meta in self._metas.values() if meta is not None]
        return metas, records, list(dropped_at)

    def installs(self) -> list[tuple[str, StreamMeta | None]]:
        return list(self._metas.items())

    def pending(self, path: str) -> list[Record]:
        """The records this transaction appends to ``path``, oldest first."""
        since = dict(self._drops).get(path, 0)
        return [record for at, record in self._records[since:] if at == path]


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What one operation of a batch came to: its value, or the error to raise."""

    value: T | None = None
    error: Exception | None = None

    def unwrap(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


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
    """The streams of one server and the rules of every operation on them.

    Each writing operation (create, append, delete, touch) takes an optional
    ``tx``: without one it is a transaction of its own, committed before the call
    returns; with one it is planned into ``tx`` and commits with it. Refusals are
    raised before anything is written, and :meth:`run` and :meth:`run_batch`
    discard whatever a refused operation planned.
    """

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

    # ----------------------------------------------------------- transactions

    def transaction(self) -> Tx:
        """An empty transaction over the committed streams."""
        return Tx(self._streams)

    def commit(self, tx: Tx) -> None:
        """Commit ``tx`` to storage, then show it to readers and tell the listener.

        Nothing changes when the storage raises; live readers and subscriptions
        learn of a change only once it is durable.
        """
        if not tx.empty:
            self._storage.commit(*tx.writes(), sync=tx.sync)
        for path, meta in tx.installs():
            if meta is None:
                self._streams.pop(path, None)
                self._touch_persisted.pop(path, None)
            else:
                self._streams[path] = meta
                self._touch_persisted[path] = meta.last_access
        for path, appended in tx.changes:
            self._on_change(path, appended)

    def run(self, op: Callable[[Tx], T], *, sync: bool = True) -> T:
        """``op`` as a transaction of its own, committed before this returns
        (``sync=False``: see :class:`Storage`)."""
        tx = self.transaction()
        tx.sync = sync
        mark = tx.savepoint()
        try:
            value = op(tx)
        except Exception:
            self.refuse(tx, mark)
            self.commit(tx)  # what is left: expired streams the operation found
            raise
        self.commit(tx)
        return value

    def refuse(self, tx: Tx, mark: Savepoint) -> None:
        """Undo a refused operation, except that the expired streams it found stay
        retired: finding one retires it, whatever the request then comes to."""
        expired = tx.expired[mark[4] :]
        tx.rollback(mark)
        for path in expired:
            self._lookup(path, tx)

    def run_batch(self, ops: Sequence[Callable[[Tx], Any]]) -> list[Outcome[Any]]:
        """Group commit: ``ops`` planned in order into one transaction, committed once.

        Each operation is validated against what the operations before it wrote (a
        producer's seq 1 after its seq 0, a close before an append); one that raises
        is rolled back alone and the others still commit. The outcomes hold only
        once this returns: a refusal may rest on an earlier write of the batch. If
        the shared commit fails, each operation is tried again in a transaction of
        its own, so a storage error that one of them causes fails only that one.
        """
        tx = self.transaction()
        outcomes: list[Outcome[Any]] = []
        for op in ops:
            mark = tx.savepoint()
            try:
                outcomes.append(Outcome(value=op(tx)))
            except Exception as error:  # isolated: the others in the batch go on
                self.refuse(tx, mark)
                outcomes.append(Outcome(error=error))
        try:
            self.commit(tx)
        except StorageError as error:
            if len(ops) == 1:
                return [Outcome(error=error)]
            return [self._attempt(op) for op in ops]
        return outcomes

    def _attempt(self, op: Callable[[Tx], Any]) -> Outcome[Any]:
        try:
            return Outcome(value=self.run(op))
        except Exception as error:
            return Outcome(error=error)

    def _within(self, tx: Tx | None, plan: Callable[[Tx], T]) -> T:
        return self.run(plan) if tx is None else plan(tx)

    # ----------------------------------------------------------------- lookup

    def paths(self) -> list[str]:
        """Live (not expired, not soft-deleted) stream paths."""
        return [path for path in list(self._streams) if self.find(path) is not None]

    def find(self, path: str, tx: Tx | None = None) -> StreamMeta | None:
        """The live stream at ``path`` or None; expired ones are retired here."""
        meta = self._lookup(path, tx)
        return None if meta is None or meta.soft_deleted else meta

    def _lookup(self, path: str, tx: Tx | None = None) -> StreamMeta | None:
        """Like find, but soft-deleted streams are returned (callers answer 410)."""
        meta = (self._streams if tx is None else tx).get(path)
        if meta is None or meta.soft_deleted or not self._expired(meta):
            return meta
        expired = meta

        def retire(tx: Tx) -> StreamMeta | None:
            tx.expired.append(path)
            self._retire(tx, expired)
            return tx.get(path)

        return self._within(tx, retire)

    def _get(self, path: str, tx: Tx | None = None) -> StreamMeta:
        meta = self._lookup(path, tx)
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

    def _retire(self, tx: Tx, meta: StreamMeta) -> None:
        """Delete an expired or deleted stream: soft while forks still read it."""
        if meta.ref_count > 0:
            tx.put(replace(meta, soft_deleted=True))
        else:
            self._drop(tx, meta)
        tx.notify(meta.path, False)

    def _drop(self, tx: Tx, meta: StreamMeta) -> None:
        """Remove a stream fully, then any soft-deleted sources it kept alive."""
        tx.drop(meta.path)
        source_path = meta.forked_from
        while source_path is not None:
            source = tx.get(source_path)
            if source is None:
                return
            source = replace(source, ref_count=max(0, source.ref_count - 1))
            if source.ref_count == 0 and source.soft_deleted:
                tx.drop(source.path)
                source_path = source.forked_from
            else:
                tx.put(source)
                source_path = None

    def sweep(self) -> int:
        """Retire every expired stream now (lookups also do it lazily); how many."""
        before = len(self._streams)
        self.paths()
        return before - len(self._streams)

    def touch(self, path: str, tx: Tx | None = None) -> None:
        """Refresh a sliding TTL (reads and writes do; HEAD does not)."""

        def plan(tx: Tx) -> None:
            meta = tx.get(path)
            if meta is None or meta.soft_deleted:
                return
            now = self._clock()
            meta.last_access = now
            if (
                meta.ttl_seconds is not None
                and now - self._touch_persisted.get(path, 0.0) >= TOUCH_PERSIST_SECONDS
            ):
                tx.put(meta)

        self._within(tx, plan)

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
        tx: Tx | None = None,
    ) -> tuple[bool, StreamMeta]:
        """PUT: (created, stream). Same config again is 200; different is 409."""

        def plan(tx: Tx) -> tuple[bool, StreamMeta]:
            existing = self._lookup(path, tx)
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
                # Interned: a server holds one per stream, nearly all the same few.
                content_type=sys.intern(content_type or p.DEFAULT_CONTENT_TYPE),
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
                    tx, meta, content_type, forked_from, fork_offset, fork_sub_offset
                )
                if prefix:
                    records.append(Record(p.advance_offset(meta.tail, len(prefix)), prefix))
                    meta.tail = records[-1].offset
            if body:
                data = (
                    _json_records(body, allow_empty=True) if p.is_json(meta.content_type) else body
                )
                if data:
                    records.append(Record(p.advance_offset(meta.tail, len(data)), data))
                    meta.tail = records[-1].offset
            tx.put(meta, records)
            if source is not None:
                tx.put(replace(source, ref_count=source.ref_count + 1))
            if records:
                tx.notify(path, True)
            return True, meta

        return self._within(tx, plan)

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
        tx: Tx,
        meta: StreamMeta,
        content_type: str | None,
        source_path: str,
        fork_offset: str | None,
        sub_offset: int,
    ) -> tuple[StreamMeta, bytes]:
        """Check a fork request; set the fork's offset, type and TTL on ``meta``."""
        source = self._lookup(source_path, tx)
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
            # The append after the fork offset may be one of this batch, not stored yet.
            following = self._read_records(source, offset, max_bytes=1) or [
                r for r in tx.pending(source.path) if r.offset > offset
            ]
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
        tx: Tx | None = None,
    ) -> AppendResult:
        """POST: append ``body`` (and close if asked), or close only when empty."""
        return self._within(
            tx, lambda tx: self._append(tx, path, content_type, body, close, stream_seq, producer)
        )

    def _append(
        self,
        tx: Tx,
        path: str,
        content_type: str | None,
        body: bytes,
        close: bool,
        stream_seq: str | None,
        producer: Producer | None,
    ) -> AppendResult:
        meta = self._get(path, tx)
        if not body and close:
            return self._close_only(tx, meta, producer)
        if meta.closed:
            if producer is not None and meta.closed_by == (
                producer.id,
                producer.epoch,
                producer.seq,
            ):
                return self._duplicate(tx, meta, producer, producer.seq, closed=True)
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
                return self._duplicate(tx, meta, producer, state.last_seq, closed=False)
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
        tx.put(updated, [record])
        tx.notify(path, True)
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
        self, tx: Tx, meta: StreamMeta, producer: Producer, last_seq: int, *, closed: bool
    ) -> AppendResult:
        headers = {
            p.STREAM_NEXT_OFFSET: meta.tail,
            p.PRODUCER_EPOCH: str(producer.epoch),
            p.PRODUCER_SEQ: str(last_seq),
        }
        if closed or meta.closed:
            headers[p.STREAM_CLOSED] = "true"
        self.touch(meta.path, tx)
        return AppendResult(204, headers)

    def _close_only(self, tx: Tx, meta: StreamMeta, producer: Producer | None) -> AppendResult:
        """An empty POST with ``Stream-Closed: true`` (section 5.3); refreshes the TTL."""
        now = self._clock()
        if meta.closed:
            if producer is None or meta.closed_by == (producer.id, producer.epoch, producer.seq):
                self.touch(meta.path, tx)
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
                    tx, meta, producer, meta.producers[producer.id].last_seq, closed=False
                )
            producers = checked
            closed_by = (producer.id, producer.epoch, producer.seq)
        updated = replace(
            meta, closed=True, closed_by=closed_by, producers=producers, last_access=now
        )
        tx.put(updated)
        tx.notify(meta.path, False)
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

    def delete(self, path: str, tx: Tx | None = None) -> None:
        """DELETE: soft while forks reference the stream (410 afterwards), else gone."""
        self._within(tx, lambda tx: self._retire(tx, self._get(path, tx)))

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
