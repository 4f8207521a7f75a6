"""Group commit: the writes that are ready together share one storage transaction.

Every PUT, POST and DELETE hands its operation to :class:`GroupCommit` and waits.
The first one to arrive schedules a commit for the end of the current turn of the
event loop; by then every request whose bytes came in with it (typically all that
arrived while the previous commit was syncing to disk, during which the loop was
blocked) has queued its operation too, and :meth:`StreamCore.run_batch` plans them
in arrival order into one transaction: one SQLite commit, one fsync. While other
write requests are still being received (headers read, body or dispatch pending),
the commit waits for them a few loop turns at most (:data:`MAX_WAIT_TURNS`); it
never waits for time, and a write with no other under way is committed at once.

Each operation keeps its own validation (producer epoch and sequence, Stream-Seq,
closure, content type) against what the operations before it in the batch wrote,
and is rolled back alone when refused. Every request is answered only after the
transaction is committed, so an acknowledged write is exactly as durable as before,
and live readers are woken only after the commit (:meth:`StreamCore.commit`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from .core import StreamCore, Tx

T = TypeVar("T")


#: How many turns of the event loop a commit waits, at most, for writes whose
#: requests are already being received (:meth:`GroupCommit.expect`).
MAX_WAIT_TURNS = 4


class GroupCommit:
    """Batches the writes of one event-loop turn into one :meth:`StreamCore.run_batch`."""

    def __init__(self, core: StreamCore, max_wait_turns: int = MAX_WAIT_TURNS) -> None:
        self.core = core
        self.max_wait_turns = max_wait_turns
        self._queue: list[tuple[Callable[[Tx], Any], asyncio.Future[Any]]] = []
        self._scheduled = False
        self._expected = 0
        self._waited = 0
        #: Transactions run and operations in them, for tests and benchmarks.
        self.batches = 0
        self.operations = 0

    def expect(self) -> None:
        """A write request has started arriving; :meth:`arrived` once it has queued
        its operation or ended otherwise."""
        self._expected += 1

    def arrived(self) -> None:
        self._expected -= 1

    async def run(self, op: Callable[[Tx], T]) -> T:
        """Plan ``op`` into the next batch; its value once that batch is committed."""
        if not self._scheduled and self._expected == 0:
            # Alone: no batch is pending and no other write is under way, so there is
            # nobody to wait for; committed at once, as without group commit.
            self.batches += 1
            self.operations += 1
            return self.core.run(op)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.append((op, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._commit)
        return await future

    def _commit(self) -> None:
        if self._expected > 0 and self._waited < self.max_wait_turns:
            # Requests under way reach the queue within a few turns (headers, body,
            # dispatch): one commit for them all instead of one each. Never a wait
            # for time, and none at all when no other write is under way.
            self._waited += 1
            asyncio.get_running_loop().call_soon(self._commit)
            return
        self._waited = 0
        self._scheduled = False
        batch, self._queue = self._queue, []
        self.batches += 1
        self.operations += len(batch)
        try:
            outcomes = self.core.run_batch([op for op, _ in batch])
        except BaseException as error:  # a bug: fail the batch's requests, never strand them
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            raise
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # the request was cancelled meanwhile
                continue
            if outcome.error is not None:
                future.set_exception(outcome.error)
            else:
                future.set_result(outcome.value)
