"""One activation of one run, end to end (waking.md, the activation).

Read the history to its tail (FENCE-003), read the inbox, drive the core's
:class:`~durable_workflows.core.Activation`, append each decision through the
:class:`~.writer.FencedWriter` as ONE append (MODEL-029), run the step bodies it
asks for once that append is durable (MODEL-027), feed their outcomes back, and
return when the run suspends, ends or the activation is fenced. Shared by the
long-running worker and the request-driven handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from ..core import (
    Activation,
    HistoryError,
    Limits,
    StepErrored,
    StepOutcome,
    StepSucceeded,
    StepTask,
    StepTimedOut,
    WorkflowRegistry,
)
from ..core.status import StatusView
from ..streams import PayloadTooLarge, ReadResult, StreamConfigConflict
from .namespace import NamespaceIO, first_requests, untrusted_reason
from .status import StatusRows
from .writer import Fenced, FencedWriter, MessageTooLarge, WriterError, finish_run

__all__ = ["ActivationOutcome", "Runner", "run_step", "utc_now"]

log = logging.getLogger("durable_workflows.engine")

#: The engine limits of a run (security.md): one set for every run, or one per run id.
LimitsOption = Limits | Callable[[str], Limits] | None

OutcomeKind = Literal[
    "suspended", "ended", "fenced", "absent", "unknown-workflow", "untrusted", "refused", "error"
]

#: How many runs a runner remembers as checked (SEC-029); a forgotten one costs a read.
TRUSTED_MEMORY = 10_000
#: While step bodies run, the inbox is re-read at least this often (CANCEL-011), and
#: sooner when the wake path says something arrived.
INBOX_POLL_SECONDS = 0.5


#: How many suspended runs a runner keeps in memory, replayed, so that their next
#: activation reads only what was appended since (issue 15; like Temporal's sticky
#: workflows). A run it forgot, or whose history changed elsewhere, is replayed. The
#: environment variable DWF_STICKY_RUNS sets another number; 0 replays every activation.
STICKY_RUNS = 256


class _CodeChanged(Exception):
    """The registry now has other code for the run's workflow (a redeploy)."""


class _HistoryFound(Exception):
    """The history this activation was to create holding its first append does not
    hold it (it was there already, or had to be created empty): read it and replay
    (FENCE-001, FENCE-003)."""


@dataclass
class _Live:
    """A run between two reads: its replayed core, where its history and inbox reads
    ended, and its status row. Kept for the next activation of a suspended run."""

    act: Activation
    position: int  # history messages, for the next append's Stream-Seq
    history_offset: str | None  # where a tail read of the history starts; None: unknown
    inbox: list[Any]
    inbox_offset: str
    inbox_closed: bool
    view: StatusView
    #: The run's streams do not exist yet: its first append creates them (FENCE-001).
    uncreated: bool = False

    def took(self, read: ReadResult) -> None:
        """Add an inbox read that went on from :attr:`inbox_offset`."""
        self.inbox += read.items
        self.inbox_offset = read.next_offset
        self.inbox_closed = read.closed


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ActivationOutcome:
    """How an activation ended.

    ``suspended``: the run waits; ``wake_at`` is its next deadline (WAKE-009) and
    ``inbox_offset`` where the inbox read ended (follow it from there, WAKE-008).
    ``ended``: the history is closed. ``fenced``: another writer won (FENCE-011).
    ``absent``: no history and no ``run-requested``. ``unknown-workflow``: left for
    another worker (MODEL-018); ``status`` is None for a run not started yet.
    ``untrusted``: the history was not started from the run's request (SEC-029): left
    alone. ``refused``: the stream server refuses for good
    what the run must record (SEC-035); trying again changes nothing, so the run is left
    until something new arrives. ``error``: anything else went wrong; try again later.
    """

    run_id: str
    kind: OutcomeKind
    status: str | None = None
    wake_at: datetime | None = None
    waiting_for_inbox: bool = False
    inbox_offset: str = "-1"
    appends: int = 0
    error: str | None = None


async def run_step(task: StepTask, executor: ThreadPoolExecutor | None = None) -> StepOutcome:
    """Run one step body: async bodies awaited on the loop, sync bodies in a thread,
    bounded by ``timeout_ms`` per attempt (RETRY-015)."""

    async def body() -> Any:
        fn = task.fn
        while isinstance(fn, functools.partial):
            fn = fn.func
        if inspect.iscoroutinefunction(fn):
            # StepTask.call sets current_step(); the coroutine keeps that context.
            import contextvars

            ctx = contextvars.copy_context()
            coro = ctx.run(task.call)
            return await asyncio.get_running_loop().create_task(coro, context=ctx)
        result = await asyncio.get_running_loop().run_in_executor(executor, task.call)
        if inspect.isawaitable(result):
            result = await result
        return result

    timeout = None if task.timeout_ms is None else task.timeout_ms / 1000.0
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            value = await body()
    except TimeoutError as exc:
        if scope.expired():
            # A sync body keeps running in its thread; its result is discarded (RETRY-016).
            return StepTimedOut()
        return StepErrored.from_exception(exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return StepErrored.from_exception(exc)
    return StepSucceeded(value)


class Runner:
    """Runs activations of the runs of one namespace."""

    def __init__(
        self,
        io: NamespaceIO,
        registry: WorkflowRegistry,
        *,
        worker: str = "dwf",
        clock: Callable[[], datetime] = utc_now,
        rng: random.Random | None = None,
        start_unknown: bool = True,
        max_step_threads: int = 64,
        limits: LimitsOption = None,
    ) -> None:
        self.io = io
        #: The engine's limits (SEC-011): a :class:`Limits`, or ``limits(run_id)`` for
        #: limits set per run (the conformance adapter's ``limits`` option, ADAPT-021).
        self.limits = limits
        self.registry = registry
        self.worker = worker
        self.clock = clock
        self.rng = rng or random.Random()
        self.start_unknown = start_unknown
        self.executor = ThreadPoolExecutor(max_step_threads, thread_name_prefix="dwf-step")
        #: Runs whose history was checked against their request (SEC-029), so the
        #: check costs one index read per run and process, not one per activation.
        self._trusted: dict[str, None] = {}
        #: The namespace's run-status stream (MODEL-040).
        self.status = StatusRows(io, clock)
        #: Suspended runs kept replayed (:data:`STICKY_RUNS`), most recent last.
        self._sticky: OrderedDict[str, _Live] = OrderedDict()
        self.sticky_runs = int(os.environ.get("DWF_STICKY_RUNS", STICKY_RUNS))
        #: Activations that resumed a kept run, and those that replayed its history.
        self.sticky_hits = 0
        self.replays = 0

    def limits_for(self, run_id: str) -> Limits:
        """The limits that apply to ``run_id`` (the defaults of security.md if none set)."""
        if self.limits is None:
            return Limits()
        if isinstance(self.limits, Limits):
            return self.limits
        return self.limits(run_id)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def find_request(self, run_id: str) -> dict[str, Any] | None:
        """The first valid ``run-requested`` for ``run_id`` in the index (MODEL-014)."""
        await self.io.ensure_index()
        index = await self.io.read_index()
        return first_requests(index.items).get(run_id)

    async def activate(
        self,
        run_id: str,
        request: Mapping[str, Any] | None = None,
        progress: Callable[[str], None] | None = None,
        *,
        start_unknown: bool | None = None,
        inbox_news: Callable[[], bool] | None = None,
        fresh: bool = False,
    ) -> ActivationOutcome:
        """One activation of ``run_id``; ``request`` is its ``run-requested`` if known.

        ``progress(offset)`` is called each time every inbox message before
        ``offset`` has been decided and what it caused is durable (WAKE-018).
        ``inbox_news()`` says (and forgets) whether the caller's wake path saw the inbox
        grow: while bodies run, the inbox is read when it says so, and otherwise only
        every :data:`INBOX_POLL_SECONDS`, so that a step costs one request, its append.
        ``start_unknown`` overrides :attr:`start_unknown` for this activation: whether a
        new run of a workflow this engine lacks is started, and failed (MODEL-019), or
        left for another worker (MODEL-018). ``fresh`` says the run was requested after
        this worker started watching the index, so its history most likely does not
        exist: it is created at once, and read only if the create finds it there.
        """
        if start_unknown is None:
            start_unknown = self.start_unknown
        try:
            return await self._activate(
                run_id,
                request,
                progress or _ignore,
                start_unknown,
                inbox_news or _no_news,
                fresh and request is not None,
            )
        except Fenced as exc:
            log.info("run %s: fenced (%s)", run_id, exc)
            return ActivationOutcome(run_id, "fenced", error=str(exc))
        except MessageTooLarge as exc:
            return await self._unrecordable(run_id, exc)
        except (WriterError, HistoryError) as exc:
            log.warning("run %s: activation ended: %s", run_id, exc)
            return ActivationOutcome(run_id, "error", error=str(exc))

    async def _unrecordable(self, run_id: str, exc: MessageTooLarge) -> ActivationOutcome:
        """SEC-035: a message the run decided is too large for the stream server, so the
        run can never move past it; end it with ``MessageTooLarge`` instead of retrying."""
        text = (
            f"The stream server refused a history message of {exc.size} bytes as too large "
            "(413), so the run cannot record what it decided."
        )
        log.error("run %s: %s", run_id, text)
        try:
            history = await self.io.read_history(run_id)
            if history is None or not history.items or history.closed:
                # Nothing recorded yet (its run-started is the message refused), or
                # someone else ended it meanwhile: nothing can be appended here.
                return ActivationOutcome(run_id, "refused", error=text)
            act = Activation(self.registry, history.items, limits=self.limits_for(run_id))
            if act.finished:
                decision = None
            else:
                decision = act.fail(self.clock(), "MessageTooLarge", text, {"size": exc.size})
            writer = FencedWriter(self.io.history(run_id), len(history.items), worker=self.worker)
            view = StatusView(history.items)
            if decision is not None:
                await writer.append(decision.append)
                view.feed(decision.append)
            await self.status.publish(view)  # MODEL-044
            await finish_run(
                writer, self.io.inbox(run_id), lambda final: act.closing(final, self.clock())
            )
        except Fenced as fenced:
            return ActivationOutcome(run_id, "fenced", error=str(fenced))
        except (WriterError, HistoryError) as again:
            log.error("run %s: left alone: %s", run_id, again)
            return ActivationOutcome(run_id, "refused", error=f"{text} Then: {again}")
        return ActivationOutcome(run_id, "ended", status="failed", appends=writer.appends)

    async def _activate(
        self,
        run_id: str,
        request: Mapping[str, Any] | None,
        progress: Callable[[str], None],
        start_unknown: bool,
        inbox_news: Callable[[], bool],
        fresh: bool,
    ) -> ActivationOutcome:
        live: _Live | ActivationOutcome | None = None
        kept = self._sticky.pop(run_id, None)
        if kept is not None:
            live = await self._resume(run_id, kept, inbox_news)
        found = False
        while True:
            if live is None:
                live = await self._replay(run_id, request, start_unknown, inbox_news, fresh)
                fresh = False
            if isinstance(live, ActivationOutcome):
                return live
            if live.uncreated and found:
                raise WriterError(f"history of {run_id} vanished after creation")
            try:
                return await self._drive(run_id, live, progress, inbox_news)
            except _CodeChanged:
                # As a worker restart would: what runs is dropped, the history is read
                # again and replayed with the code now deployed.
                log.info("run %s: its workflow's code changed; replaying it", run_id)
                live = None
            except _HistoryFound:
                # Another creator's history: nothing of this activation was stored and
                # no body has run, so it is read and replayed as any other (FENCE-003).
                found, live = True, None

    async def _resume(
        self, run_id: str, kept: _Live, inbox_news: Callable[[], bool]
    ) -> _Live | ActivationOutcome | None:
        """A kept run, if its history is as this runner left it: one tail read of the
        history and one of the inbox, no replay. None: replay it (someone else wrote)."""
        if kept.history_offset is None:
            return None
        if self.registry.get(kept.act.workflow_name) is not kept.act.workflow:
            return None  # the code changed (a redeploy): replay it with the new code
        tail = await self.io.read_history(run_id, kept.history_offset)  # FENCE-003
        if tail is None or tail.items:
            return None
        if tail.closed:
            return ActivationOutcome(run_id, "ended")
        inbox_news()
        more = await self.io.read_inbox(run_id, kept.inbox_offset)
        if more is None:
            return None
        kept.took(more)
        kept.history_offset = tail.next_offset
        self.sticky_hits += 1
        return kept

    async def _replay(
        self,
        run_id: str,
        request: Mapping[str, Any] | None,
        start_unknown: bool,
        inbox_news: Callable[[], bool],
        fresh: bool = False,
    ) -> _Live | ActivationOutcome:
        """Read the whole history and the inbox and replay the run from the top; a run
        with no history (or a ``fresh`` one, not read first) is left for its first
        append to create its streams (:meth:`_create`)."""
        self.replays += 1
        history = None if fresh else await self.io.read_history(run_id)  # FENCE-003
        if history is None or (not history.items and not history.closed):
            if request is None:
                request = await self.find_request(run_id)
            if request is None:
                return ActivationOutcome(run_id, "absent")
            value = request.get("value", request)
            if value.get("workflow") not in self.registry and not start_unknown:
                return ActivationOutcome(run_id, "unknown-workflow")  # MODEL-018
            if history is None:
                # MODEL-016: its streams are created by its first append (:meth:`_create`).
                return _Live(
                    act=Activation(
                        self.registry, [], request=request, limits=self.limits_for(run_id)
                    ),
                    position=0,
                    history_offset=None,
                    inbox=[],
                    inbox_offset="-1",
                    inbox_closed=False,
                    view=StatusView([]),
                    uncreated=True,
                )
        if history.closed:
            return ActivationOutcome(run_id, "ended")
        if history.items and run_id not in self._trusted:
            if request is None:
                request = await self.find_request(run_id)
            problem = untrusted_reason(history.items[0], request)
            if problem is not None:
                # SEC-029/030: someone else wrote this history; never build on it.
                log.error("run %s: history not trusted, left alone: %s", run_id, problem)
                return ActivationOutcome(run_id, "untrusted", error=problem)
            self._trust(run_id)
        left = _unknown_and_live(history.items, self.registry)
        if left is not None:
            # MODEL-018: another worker started it and has its code; this one leaves it.
            return ActivationOutcome(run_id, "unknown-workflow", status=left)
        inbox_news()  # what it saw so far is in this read
        inbox_read = await self.io.read_inbox(run_id)
        act = Activation(
            self.registry,
            history.items,
            request=request if not history.items else None,
            limits=self.limits_for(run_id),
        )
        return _Live(
            act=act,
            position=len(history.items),
            history_offset=history.next_offset,
            inbox=list(inbox_read.items) if inbox_read else [],
            inbox_offset=inbox_read.next_offset if inbox_read else "-1",
            inbox_closed=inbox_read is not None and inbox_read.closed,
            # The run's row, fed only what the stream server acknowledged (MODEL-043).
            view=StatusView(history.items),
        )

    async def _drive(
        self,
        run_id: str,
        live: _Live,
        progress: Callable[[str], None],
        inbox_news: Callable[[], bool],
    ) -> ActivationOutcome:
        """Advance the core, append its decisions, run the bodies it asks for, until
        the run suspends or ends (or the activation is fenced)."""
        act, view = live.act, live.view
        inbox_read_at = time.monotonic()
        writer = FencedWriter(self.io.history(run_id), live.position, worker=self.worker)
        running: dict[asyncio.Task[StepOutcome], StepTask] = {}
        rows: list[asyncio.Future[None]] = []
        try:
            while True:
                if act.workflow is not None and self.registry.get(act.workflow_name) is not (
                    act.workflow
                ):
                    raise _CodeChanged
                decision = act.advance(
                    self.clock(), live.inbox, self.rng, inbox_closed=live.inbox_closed
                )
                if decision.append:
                    if live.uncreated:
                        await self._create(run_id, live, writer, decision.append)
                    else:
                        first = writer.position == 0
                        await writer.append(decision.append)
                        if first:
                            # Its run-started is ours, from the run's request, at position
                            # 0 (Stream-Seq): no later activation needs the index to trust it.
                            self._trust(run_id)
                    view.feed(decision.append)
                # The bodies the append made durable start before the row goes out
                # (MODEL-027; the row only follows the history, MODEL-044).
                for task in decision.steps:
                    running[asyncio.ensure_future(run_step(task, self.executor))] = task
                if decision.append:
                    # MODEL-044: written while the run goes on, awaited before it rests.
                    row = self.status.schedule(view)
                    if row is not None:
                        rows.append(row)
                if not decision.close_run:
                    progress(live.inbox_offset)
                if decision.close_run:
                    _cancel(running)
                    await _written(rows, self.status)
                    await self.status.publish(view)  # MODEL-045: a row lost in a crash
                    await finish_run(
                        writer,
                        self.io.inbox(run_id),
                        lambda final: act.closing(final, self.clock()),
                    )
                    return ActivationOutcome(
                        run_id, "ended", status=decision.status, appends=writer.appends
                    )
                if not running:
                    await _written(rows, self.status)
                    await self.status.publish(view)  # MODEL-045
                    live.position = writer.position
                    if writer.appends:
                        live.history_offset = writer.next_offset
                    self._keep(run_id, live)
                    return ActivationOutcome(
                        run_id,
                        "suspended",
                        status=decision.status,
                        wake_at=decision.wake_at,
                        waiting_for_inbox=decision.waiting_for_inbox,
                        inbox_offset=live.inbox_offset,
                        appends=writer.appends,
                    )
                timeout = max(0.0, INBOX_POLL_SECONDS - (time.monotonic() - inbox_read_at))
                if decision.wake_at is not None:
                    due = (decision.wake_at - self.clock()).total_seconds()
                    timeout = max(0.0, min(timeout, due))
                done, _ = await asyncio.wait(
                    running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                for finished in done:
                    task = running.pop(finished)
                    act.step_finished(task.key, task.attempt, finished.result(), self.clock())
                # CANCEL-011 / INPUT-018: read what arrived while bodies ran, when the wake
                # path saw the inbox grow or the last read is INBOX_POLL_SECONDS old; not
                # after every step, which would double the requests of a step.
                news = inbox_news()
                if news or time.monotonic() - inbox_read_at >= INBOX_POLL_SECONDS:
                    more = await self.io.read_inbox(run_id, live.inbox_offset)
                    inbox_read_at = time.monotonic()
                    if more is not None:
                        live.took(more)
        finally:
            _cancel(running)

    async def _create(
        self, run_id: str, live: _Live, writer: FencedWriter, first: Sequence[Any]
    ) -> None:
        """Start the run (MODEL-016): create its inbox, then its history holding its
        first append, ``first`` (FENCE-001): one request less than creating the history
        empty and appending. Raises :class:`_HistoryFound` when either stream was there
        already: ``first`` was decided without reading them, so nothing of it is stored
        (a history ``PUT`` that finds the stream stores nothing, FENCE-023), and the run
        is read and replayed instead."""
        try:
            inbox, history = await self.io.create_run(run_id, first)
        except PayloadTooLarge:
            # Too large for one request (SEC-035): created empty, then replayed, so
            # that the append goes out in parts.
            await self.io.create_history(run_id)
            raise _HistoryFound from None
        except StreamConfigConflict:
            # Another worker created the run's streams and has already ended the run:
            # a PUT of a closed stream is a 409.
            log.info("run %s: its streams were created and closed meanwhile", run_id)
            raise _HistoryFound from None
        if inbox is None or history is None:
            raise _HistoryFound
        writer.created(len(first), history.next_offset)
        live.uncreated = False
        live.inbox_offset = inbox.next_offset
        # Its run-started is ours, from the run's request: no later activation needs
        # the index to trust it.
        self._trust(run_id)

    def _trust(self, run_id: str) -> None:
        """SEC-029 holds for ``run_id``'s history (checked, or started by this runner)."""
        self._trusted[run_id] = None
        if len(self._trusted) > TRUSTED_MEMORY:
            del self._trusted[next(iter(self._trusted))]

    def _keep(self, run_id: str, live: _Live) -> None:
        if self.sticky_runs <= 0:
            return
        self._sticky[run_id] = live
        if len(self._sticky) > self.sticky_runs:
            self._sticky.popitem(last=False)


def _ignore(offset: str) -> None:
    pass


def _no_news() -> bool:
    return False


def _unknown_and_live(history: list[Any], registry: WorkflowRegistry) -> str | None:
    """The status of a run that has not ended and whose workflow ``registry`` lacks."""
    if not history or not isinstance(history[0], Mapping):
        return None
    workflow = (history[0].get("value") or {}).get("workflow")
    if workflow in registry:
        return None
    status = None
    for message in history:
        if isinstance(message, Mapping) and message.get("type") == "run":
            status = (message.get("value") or {}).get("status")
    if status in ("completed", "failed", "cancelled"):
        return None  # only the closing steps remain, which need no code (MODEL-035)
    return str(status)


async def _written(rows: list[asyncio.Future[None]], status: StatusRows) -> None:
    """Wait for the run's queued status rows (the first failure is raised)."""
    pending, rows[:] = list(rows), []
    if pending:
        status.flush()
    for row in pending:
        await asyncio.shield(row)


def _cancel(running: dict[asyncio.Task[StepOutcome], StepTask]) -> None:
    # FENCE-011 / CANCEL-007: results of bodies still running are discarded.
    for pending in running:
        pending.cancel()
        with contextlib.suppress(Exception):
            pending.exception() if pending.done() else None
    running.clear()
