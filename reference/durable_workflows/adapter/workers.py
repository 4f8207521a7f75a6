"""The adapter's workers (adapter.md, ADAPT-014 and ADAPT-016).

The adapter runs two long-running workers of the reference engine, each on its own
thread and event loop, with its own HTTP client (and so its own ``Producer-Id`` per
activation). They share nothing but the stream server, the fault plan (faults count
across every worker of a run) and the virtual clock.

- The first worker serves every run.
- The second serves only the runs armed with ``workers: 2``; for those, every wake of
  either worker (new run, inbox message, timer, fault replacement) starts an
  activation on both, so that they race for each append of the run's history and the
  fencing of FENCE-004/005 decides. The second worker follows the index and the inboxes
  by long-poll, so that it never takes a shared wake away from the first.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any

from ..core import Limits, WorkflowRegistry
from ..engine.app import WorkerThread
from ..engine.worker import Worker
from .clock import VirtualClock
from .faults import FaultPlan, FaultTransport
from .requestlog import RequestLog

__all__ = ["AdapterWorker", "WorkerPool"]

#: How many workers the adapter runs (the most a run can ask for, ADAPT-014).
MAX_WORKERS = 2

_WORKER_OPTIONS = inspect.signature(Worker.__init__).parameters


class AdapterWorker(Worker):
    """A reference :class:`Worker` whose wakes the pool can share with its peer."""

    def __init__(self, *args: Any, pool: WorkerPool, index: int, **kwargs: Any) -> None:
        if index > 0 and "wake" in _WORKER_OPTIONS:
            kwargs["wake"] = "long-poll"
        super().__init__(*args, **kwargs)
        self.pool = pool
        self.index = index

    def wake(self, run_id: str) -> None:
        """Every wake of this worker; shared with the peer for a two-worker run."""
        concurrent = self.pool.is_concurrent(run_id)
        if self.index > 0 and not concurrent:
            return  # the first worker alone serves this run
        super().wake(run_id)
        if concurrent:
            self.pool.forward(self.index, run_id)

    def wake_here(self, run_id: str) -> None:
        """A wake the peer passed on: start an activation here, pass nothing back."""
        if self.index == 0 or self.pool.is_concurrent(run_id):
            super().wake(run_id)


class WorkerPool:
    """The adapter's worker threads and the runs armed with ``workers: 2``."""

    def __init__(
        self,
        namespace_url: str,
        registry: WorkflowRegistry,
        plan: FaultPlan,
        clock: VirtualClock | None,
        first_transport: FaultTransport | None = None,
        limits: Callable[[str], Limits] | None = None,
        requests: RequestLog | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._concurrent: set[str] = set()
        self.threads: list[WorkerThread] = []
        for index in range(MAX_WORKERS):
            transport = first_transport if index == 0 and first_transport else None
            transport = transport or FaultTransport(namespace_url, plan, requests)
            self.threads.append(
                WorkerThread(
                    namespace_url,
                    registry,
                    "worker" if index == 0 else f"worker-{index + 1}",
                    transport,
                    clock=None if clock is None else clock.now,
                    worker_factory=self._factory(index),
                    limits=limits,
                )
            )

    def _factory(self, index: int) -> Callable[..., Worker]:
        def make(*args: Any, **kwargs: Any) -> Worker:
            return AdapterWorker(*args, pool=self, index=index, **kwargs)

        return make

    def set_concurrent(self, run_id: str, concurrent: bool) -> None:
        with self._lock:
            if concurrent:
                self._concurrent.add(run_id)
            else:
                self._concurrent.discard(run_id)

    def is_concurrent(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._concurrent

    def forward(self, source: int, run_id: str) -> None:
        """Pass a wake of worker ``source`` on to every other worker, on its own loop."""
        for index, thread in enumerate(self.threads):
            if index != source:
                thread.call_soon(self._wake_here, thread, run_id)

    @staticmethod
    def _wake_here(thread: WorkerThread, run_id: str) -> None:
        worker = thread.worker
        if isinstance(worker, AdapterWorker):
            worker.wake_here(run_id)

    def clock_moved(self) -> None:
        for thread in self.threads:
            thread.clock_moved()
