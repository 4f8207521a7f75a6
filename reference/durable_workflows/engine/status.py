"""The engine's side of the run-status stream ``{ns}/status`` (MODEL-040 to MODEL-048).

:class:`StatusRows` appends a run's row when what a task list shows has changed since
this process last wrote it, and rebuilds the stream from the histories when it is
missing. A row is written only after the history appends it reflects were acknowledged
(MODEL-043): the caller feeds its :class:`StatusView` only with appended messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from ..core.status import StatusView
from ..core.timefmt import format_ts
from ..streams import StreamNotFound
from .namespace import NamespaceIO, first_requests

__all__ = ["StatusRows"]

log = logging.getLogger(__name__)

#: Runs whose last written row this process remembers; a run it forgot costs one more
#: row at its next activation (MODEL-045), nothing else.
REMEMBERED_RUNS = 10_000
#: How long a queued row waits before it is appended, unless flushed sooner.
ROW_DELAY_SECONDS = 0.003
#: Rows per append (queued rows, and when the stream is rebuilt).
ROWS_PER_APPEND = 200
#: Histories read at once when the stream is rebuilt.
REBUILD_READS = 8


class StatusRows:
    """Writes the rows of one namespace's run-status stream."""

    def __init__(self, io: NamespaceIO, clock: Callable[[], datetime]) -> None:
        self.io = io
        self.clock = clock
        #: Per run, a digest of the last row's fields written or queued (a digest, not
        #: the fields: 10,000 remembered runs cost about 1 MB instead of 8).
        self._written: dict[str, bytes] = {}
        self._queue: list[tuple[str, bytes, dict[str, Any], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._now = asyncio.Event()
        #: One rebuild at a time, however many activations find the stream missing.
        self._rebuild_lock = asyncio.Lock()

    def schedule(self, view: StatusView) -> asyncio.Future[None] | None:
        """Queue ``view``'s row unless this process already wrote or queued the same one;
        the future is done once the stream server acknowledged it.

        The row is taken now, from what ``view`` was fed (MODEL-043), and written by one
        task per namespace in order, rows that queue up together in one append: a step's
        next append need not wait for the row of the one before (MODEL-044 asks only
        that the row is written before the activation ends, which the caller awaits).
        """
        fields = view.fields()
        if fields is None:
            return None
        run_id, digest = fields["run_id"], _digest(fields)
        if self._written.get(run_id) == digest:
            return None
        message = view.message(format_ts(self.clock()))
        assert message is not None
        self._remember(run_id, digest)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.append((run_id, digest, message, done))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_queued())
        return done

    async def publish(self, view: StatusView) -> None:
        """Append ``view``'s row (see :meth:`schedule`) and wait until it is written."""
        done = self.schedule(view)
        if done is not None:
            self.flush()
            await done

    def flush(self) -> None:
        """Write the queued rows now (an activation that is about to end)."""
        self._now.set()

    async def _write_queued(self) -> None:
        # A moment's wait: the run's next append (its body's outcome, say) goes before
        # the row, which may lag the history (MODEL-044), unless someone waits for it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._now.wait(), ROW_DELAY_SECONDS)
        self._now.clear()
        while self._queue:
            batch, self._queue = self._queue[:ROWS_PER_APPEND], self._queue[ROWS_PER_APPEND:]
            messages = [message for _, _, message, _ in batch]
            try:
                try:
                    await self.io.status().append_json_batch(messages)
                except StreamNotFound:
                    # MODEL-046: deleted under us. A rebuild may have read these runs'
                    # histories before their latest appends, so the rows go again after.
                    log.error("the run-status stream is missing; rebuilding it")
                    await self.ensure()
                    await self.io.status().append_json_batch(messages)
            except BaseException as exc:
                for run_id, digest, _, done in batch:
                    if self._written.get(run_id) == digest:
                        del self._written[run_id]  # not written: write it again
                    if not done.done():
                        done.set_exception(exc)
                        done.exception()  # a caller that went away leaves no warning
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for _, _, _, done in batch:
                if not done.done():
                    done.set_result(None)

    async def ensure(self, index: Iterable[Any] | None = None) -> None:
        """MODEL-046/048: rebuild the stream if it does not exist; a caller that waited
        for another's rebuild finds the stream there and does nothing."""
        async with self._rebuild_lock:
            try:
                await self.io.status().head()
                return
            except StreamNotFound:
                pass
            await self._rebuild(index)

    async def _rebuild(self, index: Iterable[Any] | None) -> None:
        """Create the stream and write every run's row from its history (MODEL-046)."""
        await self.io.ensure_status()
        if index is None:
            index = (await self.io.read_index()).items
        run_ids = list(first_requests(list(index)))
        gate = asyncio.Semaphore(REBUILD_READS)

        async def view_of(run_id: str) -> StatusView | None:
            async with gate:
                history = await self.io.read_history(run_id)
            return None if history is None else StatusView(history.items)

        views = await asyncio.gather(*(view_of(run_id) for run_id in run_ids))
        now = format_ts(self.clock())
        rows = [(v, v.message(now)) for v in views if v is not None]
        written = [(v, m) for v, m in rows if m is not None]
        for start in range(0, len(written), ROWS_PER_APPEND):
            batch = written[start : start + ROWS_PER_APPEND]
            await self.io.status().append_json_batch([m for _, m in batch])
            for view, _ in batch:
                fields = view.fields()
                assert fields is not None
                self._remember(fields["run_id"], _digest(fields))
        log.info("run-status stream rebuilt: %d rows", len(written))

    def _remember(self, run_id: str, digest: bytes) -> None:
        self._written.pop(run_id, None)  # to the end: least recently written first
        self._written[run_id] = digest
        if len(self._written) > REMEMBERED_RUNS:
            del self._written[next(iter(self._written))]


def _digest(fields: dict[str, Any]) -> bytes:
    """Equal for equal rows, and (16 bytes of BLAKE2b) different for different ones."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=16).digest()
