"""The long-running worker (waking.md, long-running worker).

- Start-up (WAKE-006): read the run index from its start and serve every requested
  run once; runs whose history is closed are dropped after one read.
- New runs, inputs and cancels reach it one of two ways (``wake``):
  - ``subscription``: one pull-wake subscription links the index and every inbox
    (WAKE-015); the worker follows the namespace's wake stream with ONE live read,
    and the worker of a pool whose claim succeeds serves the wake (WAKE-010, 021).
    It is created before the start-up scan (WAKE-016). A waiting run then costs no
    live read at all (WAKE-025).
  - ``long-poll``: the index (WAKE-007) and the inbox of every served run (WAKE-008)
    are followed with one long-poll each; for servers without subscriptions.
  ``auto`` (the default) takes the subscription when the server offers it.
- Time (WAKE-009): one heap of deadlines for every suspended run; one task sleeps
  until the earliest.
- A suspended run's replayed state is dropped, so the next activation replays from
  a fresh read (FENCE-003).
- Activations of one run never overlap here: a wake during an activation runs it
  once more afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import importlib
import logging
import os
import random
import signal
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from types import ModuleType
from typing import Any, Literal

import httpx

from ..core import Limits, WorkflowRegistry
from ..streams import AsyncStreamClient, StreamClosed, StreamError, StreamNotFound
from .bridge import stream_client
from .defaults import UNKNOWN_GRACE_SECONDS
from .namespace import Namespace, NamespaceIO, first_requests, is_run_id
from .pullwake import LEASE_TTL_MS, Claim, PullWake, Unsupported, WakeFenced
from .runner import ActivationOutcome, LimitsOption, Runner, utc_now

__all__ = ["Worker", "load_registry", "run_worker"]

log = logging.getLogger("durable_workflows.engine.worker")

#: Pause before a fenced or failed run is served again (FENCE-012).
RETRY_SECONDS = 1.0
#: A run whose activations keep failing is served again after a pause that doubles with
#: each failure in a row, up to this: a broken run costs little, a healed one resumes.
MAX_RETRY_SECONDS = 300.0
#: The longest a claimed wake waits for a run that does not settle (a run whose
#: activations keep failing); its stream stays unacknowledged and wakes again.
MAX_WAKE_HOLD_SECONDS = 5.0

#: How long a served wake waits before its acknowledgement: the runs it woke take
#: their next steps first (an ack and the wake it may start cost the server's loop
#: about half a millisecond, right when a new run's first step would be recorded).
#: Work that arrives meanwhile waits for the ack's ``next_wake``, at most this long.
ACK_DELAY_SECONDS = 0.003

#: The generation assumed for a wake event that names none: newer than any claimed.
UNKNOWN_GENERATION = 2**62

#: How many ended run ids the worker remembers.
ENDED_MEMORY = 100_000

WakeMode = Literal["auto", "subscription", "long-poll"]


class _Left(Exception):
    """A claimed stream belongs to runs this worker left (MODEL-038): not acknowledged."""


@dataclass(slots=True)
class RunEntry:
    run_id: str
    request: dict[str, Any] | None = None
    busy: bool = False
    again: bool = False
    wake_at: datetime | None = None
    inbox_offset: str = "-1"
    follower: asyncio.Task[None] | None = None
    activations: int = 0
    last: ActivationOutcome | None = None
    #: inbox offset up to which every message is decided and durable (WAKE-018)
    processed: str = ""
    progressed: int = 0
    failures: int = 0
    failed_in_row: int = 0
    #: left for a worker that has the workflow (MODEL-018): its streams are not
    #: acknowledged (MODEL-038); ``left_at`` is when it was first left (loop time)
    left: bool = False
    left_at: float | None = None
    finished: bool = False
    watchers: list[asyncio.Future[None]] | None = None
    #: a wake came while an activation ran: its inbox may have grown (CANCEL-011)
    news: bool = False
    #: requested after start-up and not activated yet (Runner.activate's ``fresh``)
    new: bool = False

    def take_new(self) -> bool:
        new, self.new = self.new, False
        return new

    def take_news(self) -> bool:
        news, self.news = self.news, False
        return news

    def notify(self) -> None:
        watchers, self.watchers = self.watchers, None
        for future in watchers or ():
            if not future.done():
                future.set_result(None)

    async def changed(self) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.watchers = [*(self.watchers or ()), future]
        await future


@dataclass
class WorkerStats:
    activations: int = 0
    fenced: int = 0
    ended: int = 0
    errors: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


class Worker:
    """Serves every run of one namespace until stopped."""

    def __init__(
        self,
        namespace_url: str,
        registry: WorkflowRegistry,
        *,
        name: str = "worker",
        concurrency: int = 16,
        clock: Callable[[], datetime] = utc_now,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        live_transport: httpx.AsyncBaseTransport | None = None,
        wake: WakeMode = "auto",
        lease_ttl_ms: int = LEASE_TTL_MS,
        limits: LimitsOption = None,
        auth: httpx.Auth | None = None,
        unknown_grace: float = UNKNOWN_GRACE_SECONDS,
    ) -> None:
        self.namespace = Namespace(namespace_url)
        #: MODEL-038: how long a new run of a workflow this worker lacks is left for
        #: another worker before this one records UnknownWorkflow (0: at once).
        self.unknown_grace = unknown_grace
        self._left_in_claim = False
        #: The engine's credential on every request (SEC-002 servers refuse others).
        self._auth = auth
        self.limits = limits
        self.wake_mode: WakeMode = wake
        self._lease_ttl_ms = lease_ttl_ms
        self._pull: PullWake | None = None
        self._claim: Claim | None = None
        #: claims are being served; ``_claim_more``: the latest wake event read meanwhile
        self._claiming = False
        self._claim_more = 0
        self._stopping = False
        #: the latest generation this worker claimed (its wake events need no claim)
        self._claimed_generation = 0
        #: Told of each wake by the stream server in its process (:meth:`woken`), so
        #: it does not follow the wake stream (``dwf serve``).
        self.wakes_in_process = False
        self._transport = transport
        #: For the live reads too (an in-process server); None: HTTP connections.
        self._live_transport = live_transport
        self.registry = registry
        self.name = name
        self.clock = clock
        self._headers = headers
        self._concurrency = concurrency
        self.runs: dict[str, RunEntry] = {}
        #: recently ended runs, oldest first, so repeated requests and late wakes for
        #: them cost nothing; bounded, since a forgotten one costs only one read
        self.ended: dict[str, None] = {}
        self.stats = WorkerStats()
        self._heap: list[tuple[datetime, str]] = []
        self._timer_changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.ready = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        # Idle connections are dropped after 1 s, well before a server's keep-alive
        # timeout (uvicorn: 5 s), so a request never races the server's close.
        limits = httpx.Limits(max_connections=32, keepalive_expiry=1.0)
        async with httpx.AsyncClient(
            limits=limits, transport=self._transport, auth=self._auth
        ) as http:
            client = stream_client(http, self._transport, headers=self._headers)
            self._live = LivePool(self._headers, auth=self._auth, transport=self._live_transport)
            self.io = NamespaceIO(self.namespace, client)
            self._sem = asyncio.Semaphore(self._concurrency)
            self.runner = Runner(
                self.io, self.registry, worker=self.name, clock=self.clock, limits=self.limits
            )
            background: list[asyncio.Task[None]] = []
            try:
                # Raced with stop: a worker whose server is unreachable still stops.
                starting = asyncio.ensure_future(self._startup())
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if not starting.done():
                    starting.cancel()
                    return
                offset = starting.result()
                self.ready.set()
                background.append(asyncio.ensure_future(self._timers()))
                if self._pull is not None and self.wakes_in_process:
                    self._spawn(self._claim_now(self._pull))  # work pending at start-up
                elif self._pull is not None:
                    background.append(asyncio.ensure_future(self._follow_wakes(self._pull)))
                else:
                    background.append(asyncio.ensure_future(self._follow_index(offset)))
                await stop.wait()
            finally:
                self._stopping = True  # no claim on an append from now on
                if self._pull is not None and self._claim is not None:
                    with contextlib.suppress(Exception):  # WAKE-022
                        await self._pull.release(self._claim)
                for task in [*self._tasks, *background]:
                    task.cancel()
                for entry in self.runs.values():
                    if entry.follower is not None:
                        entry.follower.cancel()
                await asyncio.sleep(0)
                self.runner.close()
                await self._live.aclose()

    async def _startup(self) -> str:
        """WAKE-006: serve every requested run that has not ended; with a
        subscription, create it first so nothing between the scan and it is lost
        (WAKE-016)."""
        while True:
            try:
                await self.io.ensure_index()  # MODEL-011
                if self.wake_mode != "long-poll" and self._pull is None:
                    self._pull = await self._subscribe()
                index = await self.io.read_index()
                await self.runner.status.ensure(index.items)  # MODEL-046/048
                break
            except (StreamError, httpx.HTTPError) as exc:
                log.warning("cannot read the run index yet: %s", exc)
                await asyncio.sleep(RETRY_SECONDS)
        for run_id, request in first_requests(index.items).items():
            self._add(run_id, request)
        return index.next_offset

    async def _subscribe(self) -> PullWake | None:
        pull = PullWake(
            self.namespace, self.io.client, worker=self.name, lease_ttl_ms=self._lease_ttl_ms
        )
        try:
            await pull.create()
        except Unsupported as exc:
            if self.wake_mode == "subscription":
                raise RuntimeError(f"wake=subscription: {exc}") from exc
            log.info("no pull-wake subscription (%s); following every inbox instead", exc)
            return None
        return pull

    def _add(
        self, run_id: str, request: dict[str, Any] | None, new: bool = False
    ) -> RunEntry | None:
        """Serve ``run_id``; ``new``: its request was appended after start-up, so its
        streams most likely do not exist yet (the first activation creates them first)."""
        if run_id in self.ended or not is_run_id(run_id):
            return None
        entry = self.runs.get(run_id)
        if entry is None:
            entry = self.runs[run_id] = RunEntry(run_id, request, new=new)
            self.wake(run_id)
        return entry

    async def _follow_index(self, offset: str) -> None:
        """WAKE-007: new run requests, by long-poll."""
        seen: set[str] = set()
        while True:
            try:
                async for batch in self.io.index().follow(offset, live="long-poll"):
                    offset = batch.next_offset
                    for run_id, request in first_requests(batch.items).items():
                        if run_id not in seen:
                            seen.add(run_id)
                            self._add(run_id, request, new=True)
                # SEC-033: only someone else closes the index; no run can be requested now.
                log.error("the run index %s is closed: no new run can start", self.io.index().url)
                return
            except StreamNotFound:
                # SEC-033: deleted under us. MODEL-011: create it again, read it anew.
                log.error("the run index was deleted; creating it again")
                offset = "-1"
                with contextlib.suppress(StreamError):
                    await self.io.ensure_index()
                await asyncio.sleep(RETRY_SECONDS)
            except StreamError as exc:
                log.warning("index follow failed, retrying: %s", exc)
                await asyncio.sleep(RETRY_SECONDS)

    # ------------------------------------------------------------------ wakes

    def wake(self, run_id: str) -> None:
        """Start an activation of ``run_id`` now (or right after the current one)."""
        entry = self.runs.get(run_id)
        if entry is None:
            return
        if entry.busy:
            entry.again = True
            entry.news = True
            return
        entry.busy = True
        self._spawn(self._serve(entry))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, entry: RunEntry) -> None:
        def progress(offset: str) -> None:
            self._progress(entry, offset)

        try:
            while True:
                entry.again = False
                async with self._sem:
                    try:
                        outcome = await self.runner.activate(
                            entry.run_id,
                            entry.request,
                            progress,
                            start_unknown=self._grace_over(entry),
                            inbox_news=entry.take_news,
                            fresh=entry.take_new(),
                        )
                    except Exception as exc:  # network trouble: try again later
                        log.warning("run %s: activation failed: %r", entry.run_id, exc)
                        outcome = ActivationOutcome(entry.run_id, "error", error=str(exc))
                self._record(entry, outcome)
                if not entry.again or entry.run_id not in self.runs:
                    return
        finally:
            entry.busy = False

    def _grace_over(self, entry: RunEntry) -> bool:
        """Whether a new run of a workflow this worker lacks is now its to fail."""
        if self.unknown_grace <= 0:
            return True
        now = asyncio.get_running_loop().time()
        return entry.left_at is not None and now - entry.left_at >= self.unknown_grace

    def _leave(self, entry: RunEntry, outcome: ActivationOutcome) -> None:
        """MODEL-018/038: leave the run to a worker that has its workflow."""
        entry.left = True
        if outcome.status is not None:
            # Started by a worker that has the code: nothing here will ever serve it.
            log.info("run %s: workflow not here; left to the worker serving it", entry.run_id)
            self._forget(entry)
            return
        loop = asyncio.get_running_loop()
        if entry.left_at is None:
            entry.left_at = loop.time()
            workflow = (entry.request or {}).get("value", entry.request or {}).get("workflow")
            log.warning(
                "run %s: this worker lacks workflow %r; leaving it %g s for one that has it",
                entry.run_id,
                workflow,
                self.unknown_grace,
            )
        entry.notify()
        remaining = entry.left_at + self.unknown_grace - loop.time()
        loop.call_later(max(0.0, remaining) + 0.01, self.wake, entry.run_id)

    def _record(self, entry: RunEntry, outcome: ActivationOutcome) -> None:
        self.stats.activations += 1
        self.stats.outcomes[outcome.kind] = self.stats.outcomes.get(outcome.kind, 0) + 1
        entry.activations += 1
        entry.last = outcome
        if outcome.kind not in ("error", "fenced"):
            entry.failed_in_row = 0
        if outcome.kind == "unknown-workflow":
            self._leave(entry, outcome)
            return
        entry.left = False
        if outcome.kind == "suspended":
            entry.request = None  # the history's run-started holds it now
            entry.inbox_offset = outcome.inbox_offset
            self._schedule(entry, outcome.wake_at)
            if entry.follower is None and self._pull is None:
                entry.follower = asyncio.ensure_future(self._follow_inbox(entry))
        elif outcome.kind in ("ended", "absent", "untrusted", "refused"):
            self._forget(entry)
            if outcome.kind == "ended":
                self.stats.ended += 1
                self.ended[entry.run_id] = None
                if len(self.ended) > ENDED_MEMORY:
                    del self.ended[next(iter(self.ended))]
        else:  # fenced or error: serve again a little later (FENCE-012)
            self.stats.fenced += outcome.kind == "fenced"
            self.stats.errors += outcome.kind == "error"
            # A fence is usually settled by the next activation; one that repeats (a
            # credential refused with 403) backs off like an error.
            entry.failed_in_row += 1
            pause = min(MAX_RETRY_SECONDS, RETRY_SECONDS * 2 ** (entry.failed_in_row - 1))
            if outcome.kind == "error":
                entry.failures += 1  # the retry is ours now (WAKE-018)
                entry.notify()
            # Real time, not the engine's clock: a virtual clock (the conformance
            # adapter's) may not move until the run settles.
            asyncio.get_running_loop().call_later(pause, self.wake, entry.run_id)

    @property
    def subscribed(self) -> bool:
        """Whether wakes come from the pull-wake subscription."""
        return self._pull is not None

    def snapshot(self) -> dict[str, int]:
        """Counts for operators and benchmarks."""
        suspended = sum(
            1 for e in self.runs.values() if not e.busy and e.last and e.last.kind == "suspended"
        )
        return {
            "runs": len(self.runs),
            "suspended": suspended,
            "busy": sum(1 for e in self.runs.values() if e.busy),
            "inbox_follows": sum(1 for e in self.runs.values() if e.follower is not None),
            "timers": len(self._heap),
            "ended": len(self.ended),
            "activations": self.stats.activations,
            "fenced": self.stats.fenced,
            "errors": self.stats.errors,
        }

    def _progress(self, entry: RunEntry, offset: str) -> None:
        entry.processed = max(entry.processed, offset)
        entry.progressed += 1
        entry.notify()

    def _forget(self, entry: RunEntry) -> None:
        entry.finished = True
        entry.notify()
        self.runs.pop(entry.run_id, None)
        if entry.follower is not None and entry.follower is not asyncio.current_task():
            entry.follower.cancel()
        entry.follower = None

    # ------------------------------------------------------------------ timers

    def _schedule(self, entry: RunEntry, when: datetime | None) -> None:
        entry.wake_at = when
        if when is None:
            return
        heapq.heappush(self._heap, (when, entry.run_id))
        if self._heap[0][1] == entry.run_id and self._heap[0][0] == when:
            self._timer_changed.set()

    def clock_moved(self) -> None:
        """The clock jumped (a virtual clock in tests): re-check the timers now."""
        self._timer_changed.set()

    async def _timers(self) -> None:
        """WAKE-009: one heap, one task. Stale entries are skipped lazily."""
        while True:
            self._timer_changed.clear()
            now = self.clock()
            while self._heap and self._heap[0][0] <= now:
                when, run_id = heapq.heappop(self._heap)
                entry = self.runs.get(run_id)
                if entry is not None and entry.wake_at == when:
                    entry.wake_at = None
                    self.wake(run_id)
            delay = None
            if self._heap:
                # A little late rather than early: an early wake finds nothing due (WAKE-003).
                delay = max(0.0, (self._heap[0][0] - now).total_seconds()) + 0.002
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_changed.wait(), delay)

    # ------------------------------------------------------------------ pull-wake

    async def _follow_wakes(self, pull: PullWake) -> None:
        """One live read of the wake stream; each wake event of ours is a claim attempt."""
        stream = self.io.client.stream(pull.wake_stream_url, content_type="application/json")
        offset: str | None = None
        while True:
            try:
                if offset is None:
                    # The tail first, then the claim: a wake written after the
                    # claim attempt is still read below.
                    offset = (await stream.head()).next_offset
                    await self._serve_claims(pull)
                async for batch in stream.follow(offset, live="long-poll"):
                    offset = batch.next_offset
                    unclaimed = [
                        g for e in batch.items if (g := self._unclaimed(pull, e)) is not None
                    ]
                    if unclaimed:
                        await self._serve_claims(pull, max(unclaimed))
                # SEC-032/033: closed by someone else; no wake will come through it again.
                log.error("the wake stream %s is closed; following every inbox instead", stream.url)
                self._without_wake_stream()
                return
            except StreamNotFound:
                # SEC-032/033: deleted under us; create it (and the subscription) again.
                log.error("the wake stream %s was deleted; creating it again", stream.url)
                offset = None
                with contextlib.suppress(Unsupported, StreamError, httpx.HTTPError):
                    await pull.create()
                await asyncio.sleep(RETRY_SECONDS)
            except (StreamError, httpx.HTTPError) as exc:
                log.warning("wake stream follow failed, retrying: %s", exc)
                await asyncio.sleep(RETRY_SECONDS)

    def _without_wake_stream(self) -> None:
        """Wake runs as a worker without a subscription does: follow the index and one
        inbox per waiting run (WAKE-007/008), and serve every run once now."""
        self._pull = None
        self._spawn(self._follow_index("-1"))
        for entry in list(self.runs.values()):
            if entry.follower is None and not entry.finished:
                entry.follower = asyncio.ensure_future(self._follow_inbox(entry))
            self.wake(entry.run_id)

    def _unclaimed(self, pull: PullWake, event: Any) -> int | None:
        """The generation of a wake event of ours for a wake this worker has not
        claimed already; None for any other event."""
        if not pull.is_ours(event):
            return None
        generation = event.get("generation")
        if not isinstance(generation, int):
            return UNKNOWN_GENERATION
        return generation if generation > self._claimed_generation else None

    def woken(self, subscription_id: str, generation: int) -> None:
        """The stream server in this process started a wake (``dwf serve``): claim it
        now, as a worker following the wake stream would once it read the wake's event.
        The event is still written, for the other workers of a pool."""
        pull = self._pull
        if (
            pull is not None
            and subscription_id == pull.id
            and self.ready.is_set()
            and not self._stopping
            and generation > self._claimed_generation
        ):
            self._spawn(self._claim_now(pull, generation))

    async def _claim_now(self, pull: PullWake, generation: int | None = None) -> None:
        try:
            await self._serve_claims(pull, generation)
        except (StreamError, httpx.HTTPError) as exc:
            # No wake event will come to this worker: it tries again itself.
            log.warning("claim failed, trying again in %g s: %s", RETRY_SECONDS, exc)
            await asyncio.sleep(RETRY_SECONDS)
            if not self._stopping:
                self._spawn(self._claim_now(pull))

    async def _serve_claims(self, pull: PullWake, generation: int | None = None) -> None:
        """Claim and serve wakes until none is left. One caller at a time: a wake event
        read meanwhile (its ``generation``) makes the running call claim again before it
        returns, unless that wake was the one it claimed. A call on an append needs
        nothing more: a wake started meanwhile is the ack's ``next_wake``."""
        if self._claiming:
            if generation is not None:
                self._claim_more = max(self._claim_more, generation)
            return
        self._claiming = True
        try:
            while True:
                self._claim_more = 0
                await self._serve_claimed(pull)
                if self._claim_more <= self._claimed_generation:
                    return
        finally:
            self._claiming = False

    async def _serve_claimed(self, pull: PullWake) -> None:
        while (claim := await pull.claim()) is not None:
            self._claim = claim
            self._claimed_generation = max(self._claimed_generation, claim.generation)
            try:
                again = await self._serve_claim(pull, claim)
            finally:
                self._claim = None
            if self._left_in_claim:
                # Streams were left for a worker that has the workflow: give it the
                # next claim instead of taking it straight back.
                self._left_in_claim = False
                await asyncio.sleep(random.uniform(0.2, 0.6))
            if not again:
                return

    async def _serve_claim(self, pull: PullWake, claim: Claim) -> bool:
        """Serve one wake; acknowledge each stream once it is settled (WAKE-017/018).
        Returns whether the server has the next wake ready."""
        jobs: dict[str, asyncio.Task[None]] = {}
        tails: dict[str, str] = {}
        for pending in claim.pending:
            tails[pending.path] = pending.tail_offset
            if pending.path == "index":
                jobs[pending.path] = asyncio.ensure_future(self._settle_index(pending.acked_offset))
            elif (run_id := self.namespace.run_id_of_inbox(pending.path)) is not None:
                jobs[pending.path] = asyncio.ensure_future(
                    self._settle_inbox(run_id, pending.tail_offset)
                )
        beat = asyncio.ensure_future(self._heartbeat(pull, claim))
        try:
            waiting: set[asyncio.Future[Any]] = {*jobs.values(), beat}
            deadline = asyncio.get_running_loop().time() + MAX_WAKE_HOLD_SECONDS
            while len(waiting) > 1 and not beat.done():
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                _, waiting = await asyncio.wait(
                    waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            beat.cancel()
            for job in jobs.values():
                job.cancel()  # a no-op for the settled ones
        if beat.done() and not beat.cancelled() and beat.exception() is not None:
            log.info("wake %s fenced: %s", claim.wake_id, beat.exception())
            return False  # start nothing more for this wake (WAKE-019)
        for path, job in jobs.items():
            if not (job.done() and not job.cancelled() and job.exception() is None):
                del tails[path]  # not settled: it stays pending and wakes again
                if job.done() and not job.cancelled() and isinstance(job.exception(), _Left):
                    self._left_in_claim = True
        try:
            await asyncio.sleep(ACK_DELAY_SECONDS)
            return await pull.ack(claim, tails)
        except WakeFenced as exc:
            log.info("wake %s fenced: %s", claim.wake_id, exc)
            return False

    async def _heartbeat(self, pull: PullWake, claim: Claim) -> None:
        """WAKE-021: extend the lease while the wake is being served."""
        while True:
            await asyncio.sleep(claim.lease_ttl_ms / 3000)
            await pull.ack(claim)

    async def _settle_inbox(self, run_id: str, tail: str) -> None:
        known = run_id in self.runs
        entry = self._add(run_id, None)  # a run started by another worker of the pool
        if entry is None:
            return  # ended: nothing to do for it
        if known:
            self.wake(run_id)
        failures = entry.failures
        while (
            not entry.finished
            and not entry.left
            and entry.processed < tail
            and entry.failures == failures
        ):
            await entry.changed()
        if entry.left:
            raise _Left(run_id)  # MODEL-038: not acknowledged, so it wakes another worker

    async def _settle_index(self, acked_offset: str) -> None:
        """Every run requested past the cursor has its run-started durable (WAKE-017)."""
        index = await self.io.read_index(acked_offset)
        entries = [self._add(r, q, new=True) for r, q in first_requests(index.items).items()]
        for entry in entries:
            while entry is not None and not (
                entry.finished or entry.progressed or entry.failures or entry.left
            ):
                await entry.changed()
        left = [e.run_id for e in entries if e is not None and e.left]
        if left:
            raise _Left(*left)  # MODEL-038: the index stays pending for another worker

    # ------------------------------------------------------------------ inboxes

    async def _follow_inbox(self, entry: RunEntry) -> None:
        """WAKE-008: one long-poll per served run; stops at Stream-Closed."""
        shard = self._live.acquire()
        try:
            await self._follow_with(shard.client, entry)
        finally:
            self._live.release(shard)

    async def _follow_with(self, client: AsyncStreamClient, entry: RunEntry) -> None:
        stream = client.stream(
            self.namespace.inbox_url(entry.run_id), content_type="application/json"
        )
        offset = entry.inbox_offset
        while entry.run_id in self.runs:
            try:
                async for batch in stream.follow(offset, live="long-poll"):
                    offset = batch.next_offset
                    if batch.items or batch.closed:  # contents are re-read by the activation
                        self.wake(entry.run_id)
                    if batch.closed:
                        return
                return
            except (StreamNotFound, StreamClosed):
                return
            except StreamError as exc:
                log.debug("inbox follow of %s failed, retrying: %s", entry.run_id, exc)
                await asyncio.sleep(RETRY_SECONDS)


@dataclass
class _Shard:
    client: AsyncStreamClient
    http: httpx.AsyncClient
    users: int = 0


class LivePool:
    """HTTP clients for live reads, at most ``per_client`` long-polls each.

    Every waiting long-poll holds a connection, and httpcore scans a client's whole
    pool on each request, so one client with thousands of connections costs O(n)
    per re-poll; small shards keep that bounded.
    """

    def __init__(
        self,
        headers: dict[str, str] | None,
        per_client: int = 64,
        auth: httpx.Auth | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.headers = headers
        self.auth = auth
        self.transport = transport
        self.per_client = per_client
        self.shards: list[_Shard] = []

    def acquire(self) -> _Shard:
        shard = min(self.shards, key=lambda s: s.users, default=None)
        if shard is None or shard.users >= self.per_client:
            limits = httpx.Limits(
                max_connections=None, max_keepalive_connections=None, keepalive_expiry=1.0
            )
            http = httpx.AsyncClient(limits=limits, auth=self.auth, transport=self.transport)
            client = stream_client(
                http, self.transport, headers=self.headers, timeout=30, live_timeout=300
            )
            shard = _Shard(client, http)
            self.shards.append(shard)
        shard.users += 1
        return shard

    def release(self, shard: _Shard) -> None:
        shard.users -= 1

    async def aclose(self) -> None:
        for shard in self.shards:
            await shard.http.aclose()


# ---------------------------------------------------------------------- entry point


def load_registry(modules: Iterable[str], *, skip_missing: bool = False) -> WorkflowRegistry:
    """A registry of the workflows defined at the top level of ``modules``: dotted
    module names, or paths of ``.py`` files (``app/flows.py`` is ``app.flows``).

    The current directory is importable, as with ``python -m``. With
    ``skip_missing``, a module that does not exist is left out with a warning.
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    loaded: list[ModuleType] = []
    for given in modules:
        name = _module_name(given)
        try:
            loaded.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if not skip_missing or exc.name is None or not name.startswith(exc.name):
                raise
            print(f"warning: no module {name} here; its workflows are not served", file=sys.stderr)
    return WorkflowRegistry.from_module(*loaded)


def _module_name(given: str) -> str:
    """``app/flows.py`` (relative to the current directory) -> ``app.flows``."""
    if not given.endswith(".py"):
        return given
    path = os.path.relpath(os.path.abspath(given))
    if path.startswith(".."):
        raise ImportError(f"{given}: a workflow file must be below the current directory")
    return path[: -len(".py")].replace(os.sep, ".")


def run_worker(
    url: str | None,
    workflows: list[str],
    name: str = "worker",
    stats_every: float = 0.0,
    wake: WakeMode = "auto",
    limits: Limits | None = None,
    token: str | None = None,
    keys: str | None = None,
    unknown_grace: float = UNKNOWN_GRACE_SECONDS,
) -> int:
    """``dwf worker``: serve a namespace until SIGINT/SIGTERM.

    With ``stats_every`` > 0 it prints ``stats {json}`` lines that often. The engine's
    credential is ``token`` (or ``$DWF_TOKEN``), else minted from the key file ``keys``
    (or ``$DWF_KEYS``, or ``.dwf/keys.json``).
    """
    from ..access import resolve_credential
    from .commands import namespace_from

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    namespace = namespace_from(url)
    try:
        registry = load_registry(workflows)
    except ImportError as exc:  # ModuleNotFoundError too
        print(f"dwf worker: cannot import workflows: {exc}", file=sys.stderr)
        return 2
    credential = resolve_credential(namespace.url, token=token, keys=keys)
    auth = None if credential is None else credential.auth()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        worker = Worker(
            namespace.url,
            registry,
            name=name,
            wake=wake,
            limits=limits,
            auth=auth,
            unknown_grace=unknown_grace,
        )
        task = asyncio.ensure_future(worker.run(stop))
        ready = asyncio.ensure_future(worker.ready.wait())
        await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
        if worker.ready.is_set():
            mode = "pull-wake subscription" if worker.subscribed else "long-poll per inbox"
            print(f"ready {namespace.url} ({len(registry)} workflows; {mode})", flush=True)
        ready.cancel()
        reporter = None
        if stats_every > 0:

            async def report() -> None:
                import json

                while True:
                    await asyncio.sleep(stats_every)
                    print("stats " + json.dumps(worker.snapshot()), flush=True)

            reporter = asyncio.ensure_future(report())
        await task
        if reporter is not None:
            reporter.cancel()
        stats = worker.stats
        print(
            f"stopped activations={stats.activations} fenced={stats.fenced} "
            f"ended={stats.ended} errors={stats.errors}",
            flush=True,
        )

    asyncio.run(main())
    return 0
