"""Where the server keeps streams: in memory, or in one SQLite file on disk.

Durability guarantee of :class:`SqliteStorage` (the default for ``--data DIR``):
every change the core makes for one request (the appended record, the new tail,
producer state, ``Stream-Seq``, closure, TTL settings, fork reference counts) is
part of one SQLite transaction, shared with the other requests committed in the
same group (:mod:`.group_commit`), and the server answers the client only after
that ``COMMIT`` returned. The database runs in WAL mode with ``synchronous=FULL``, so the WAL is
fsynced at every commit: an append acknowledged with a 2xx survives ``kill -9`` of
the server and a power loss (given a disk that honours fsync). ``NORMAL`` would
survive a process crash but may lose the last commits on power loss, which is not
the promise an acknowledged durable append makes.

Two exceptions, by design. A sliding TTL refreshed only by *reads* is written at
most once a second per stream (:data:`~.core.TOUCH_PERSIST_SECONDS`), so after a
crash such a stream may expire up to a second earlier than it would have. And a
subscription's acked offsets are written without an fsync (``SqliteStorage.write``):
they reach the disk with the next append's commit, and one lost to a power loss before
that means one more wake for work already done, never a missed one. The same holds
for the events of a pull-wake subscription's wake stream: a wake does not outlive a
restart (the server wakes pending work again at start-up), so neither need its event.
"""

from __future__ import annotations

import bisect
import itertools
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from .core import Record, StorageError, StreamMeta


def _take(records: Iterable[Record], max_bytes: int) -> list[Record]:
    """A prefix of ``records`` of about ``max_bytes`` (always at least one record)."""
    taken: list[Record] = []
    size = 0
    for record in records:
        if taken and size + len(record.data) > max_bytes:
            break
        taken.append(record)
        size += len(record.data)
    return taken


class MemoryStorage:
    """Records in process memory; metadata lives in the core. Lost on exit."""

    def __init__(self) -> None:
        self._records: dict[str, list[Record]] = {}
        self._offsets: dict[str, list[str]] = {}
        #: Transactions committed (group commit makes it fewer than the writes).
        self.commits = 0

    def load(self) -> list[StreamMeta]:
        return []

    def commit(
        self,
        metas: Sequence[StreamMeta] = (),
        records: Sequence[tuple[str, Record]] = (),
        deleted: Sequence[str] = (),
        *,
        sync: bool = True,
    ) -> None:
        for path in deleted:
            self._records.pop(path, None)
            self._offsets.pop(path, None)
        for path, record in records:
            self._records.setdefault(path, []).append(record)
            self._offsets.setdefault(path, []).append(record.offset)
        self.commits += 1

    def read(self, path: str, after: str, upto: str | None, max_bytes: int) -> list[Record]:
        offsets = self._offsets.get(path, [])
        start = bisect.bisect_right(offsets, after)
        end = len(offsets) if upto is None else bisect.bisect_right(offsets, upto)
        # islice, not a slice: paging through a long stream must not copy its tail.
        return _take(itertools.islice(self._records.get(path, []), start, end), max_bytes)

    def close(self) -> None:
        self._records.clear()
        self._offsets.clear()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (path TEXT PRIMARY KEY, meta TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    path TEXT NOT NULL,
    offset TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (path, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@contextmanager
def _storage_errors() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as error:
        raise StorageError(str(error)) from error


class SqliteStorage:
    """Streams in ``DIR/streams.sqlite3`` (WAL, synchronous=FULL); see the module doc."""

    FILENAME = "streams.sqlite3"

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        # Every run's input, value and the webhook signing key live here: owner only.
        directory.chmod(0o700)
        self.path = directory / self.FILENAME
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one per commit().
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        #: Transactions committed, each one fsync of the WAL (kv writes not counted).
        self.commits = 0

    def load(self) -> list[StreamMeta]:
        rows = self._db.execute("SELECT meta FROM streams").fetchall()
        return [StreamMeta.from_json(json.loads(row[0])) for row in rows]

    def commit(
        self,
        metas: Sequence[StreamMeta] = (),
        records: Sequence[tuple[str, Record]] = (),
        deleted: Sequence[str] = (),
        *,
        sync: bool = True,
    ) -> None:
        with _storage_errors(), self._synchronous(sync):
            self._commit(metas, records, deleted)
        self.commits += 1

    @contextmanager
    def _synchronous(self, sync: bool) -> Iterator[None]:
        """Transactions inside skip the fsync unless ``sync`` (module doc)."""
        if sync:
            yield
            return
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            self._db.execute("PRAGMA synchronous=FULL")

    def _commit(
        self,
        metas: Sequence[StreamMeta],
        records: Sequence[tuple[str, Record]],
        deleted: Sequence[str],
    ) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for path in deleted:
                db.execute("DELETE FROM streams WHERE path = ?", (path,))
                db.execute("DELETE FROM records WHERE path = ?", (path,))
            db.executemany(
                "INSERT INTO records (path, offset, data) VALUES (?, ?, ?)",
                [(path, r.offset, r.data) for path, r in records],
            )
            db.executemany(
                "INSERT OR REPLACE INTO streams (path, meta) VALUES (?, ?)",
                [(m.path, json.dumps(m.to_json())) for m in metas],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def read(self, path: str, after: str, upto: str | None, max_bytes: int) -> list[Record]:
        with _storage_errors():
            return self._read(path, after, upto, max_bytes)

    def _read(self, path: str, after: str, upto: str | None, max_bytes: int) -> list[Record]:
        query = "SELECT offset, data FROM records WHERE path = ? AND offset > ?"
        params: list[str] = [path, after]
        if upto is not None:
            query += " AND offset <= ?"
            params.append(upto)
        cursor = self._db.execute(query + " ORDER BY offset", params)
        taken: list[Record] = []
        size = 0
        for offset, data in cursor:
            if taken and size + len(data) > max_bytes:
                break
            taken.append(Record(offset, bytes(data)))
            size += len(data)
        cursor.close()
        return taken

    # Small settings (subscription state, signing keys).

    def get_value(self, key: str) -> str | None:
        with _storage_errors():
            row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def values_under(self, prefix: str) -> dict[str, str]:
        """Every setting whose key starts with ``prefix``."""
        with _storage_errors():
            rows = self._db.execute(
                "SELECT key, value FROM kv WHERE key >= ? AND key < ?",
                (prefix, prefix + "\U0010ffff"),
            ).fetchall()
        return {str(key): str(value) for key, value in rows}

    def set_value(self, key: str, value: str) -> None:
        self.write({key: value})

    def delete_value(self, key: str) -> None:
        self.write({key: None})

    def write(self, values: Mapping[str, str | None], *, sync: bool = True) -> None:
        """Set (or, for None, delete) ``values`` in one transaction. ``sync=False``
        skips the fsync: the write survives a crash of the process and reaches the
        disk with the next synced commit (any append), but a power loss before that
        may undo it. Only for state whose loss costs a repeat, never a loss."""
        db = self._db
        with _storage_errors(), self._synchronous(sync):
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
                    [(k, v) for k, v in values.items() if v is not None],
                )
                db.executemany(
                    "DELETE FROM kv WHERE key = ?", [(k,) for k, v in values.items() if v is None]
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self._db.close()
