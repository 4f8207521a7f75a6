"""The engine's side of the run-status stream ``{ns}/status`` (MODEL-040 to MODEL-048).

:class:`StatusRows` appends a run's row when what a task list shows has changed since
this process last wrote it, and rebuilds the stream from the histories when it is
missing. A row is written only after the history appends it reflects were acknowledged
(MODEL-043): the caller feeds its :class:`StatusView` only with appended messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
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
#: Rows per append when the stream is rebuilt.
REBUILD_BATCH = 200
#: Histories read at once when the stream is rebuilt.
REBUILD_READS = 8


class StatusRows:
    """Writes the rows of one namespace's run-status stream."""

    def __init__(self, io: NamespaceIO, clock: Callable[[], datetime]) -> None:
        self.io = io
        self.clock = clock
        self._written: OrderedDict[str, dict[str, Any]] = OrderedDict()
        #: One rebuild at a time, however many activations find the stream missing.
        self._rebuild_lock = asyncio.Lock()

    async def publish(self, view: StatusView) -> None:
        """Append ``view``'s row unless this process already wrote the same one."""
        fields = view.fields()
        if fields is None or self._written.get(fields["run_id"]) == fields:
            return
        message = view.message(format_ts(self.clock()))
        assert message is not None
        try:
            await self.io.status().append_json_batch([message])
        except StreamNotFound:
            # MODEL-046: deleted under us. A rebuild may have read this run's history
            # before its latest append, so the row is appended again after it.
            log.error("the run-status stream is missing; rebuilding it")
            await self.ensure()
            await self.io.status().append_json_batch([message])
        self._remember(fields)

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
        for start in range(0, len(written), REBUILD_BATCH):
            batch = written[start : start + REBUILD_BATCH]
            await self.io.status().append_json_batch([m for _, m in batch])
            for view, _ in batch:
                fields = view.fields()
                assert fields is not None
                self._remember(fields)
        log.info("run-status stream rebuilt: %d rows", len(written))

    def _remember(self, fields: dict[str, Any]) -> None:
        run_id = fields["run_id"]
        self._written[run_id] = fields
        self._written.move_to_end(run_id)
        if len(self._written) > REMEMBERED_RUNS:
            self._written.popitem(last=False)
