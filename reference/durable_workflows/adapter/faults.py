"""Fault injection for the conformance adapter (adapter.md, ADAPT-012, ADAPT-015/016).

A fault ends the activation at its point by raising :class:`ActivationStopped`, a
``BaseException`` that no engine code catches: the activation's task unwinds with no
further request to the run's streams (the runner cancels the bodies still running), its
in-memory state is dropped, and the adapter wakes the run again at once so that a fresh
activation replays the history with a new ``Producer-Id``. ``crash`` and ``restart`` end
the activation the same way: the reference worker's orderly stop also cancels its
activations where they stand.

Points: ``before-append``/``after-append`` are seen by :class:`FaultTransport`, the HTTP
transport of the worker's stream client; ``in-step-body``/``after-step-body`` by the
interpreter's step bodies. The ``always_replay`` option (ADAPT-013) uses the same stop
after every successful history append.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from .requestlog import RequestLog

if TYPE_CHECKING:
    from ..engine.app import WorkerThread

__all__ = ["KNOWN_HISTORY", "ActivationStopped", "FaultPlan", "FaultTransport"]

#: How many history messages the current activation has read or appended (the run
#: report's ``known_history``, ADAPT-018). Set by :class:`FaultTransport` in the
#: activation's task after each history read and append; a step body's task copies it
#: when the body is started, so the body sees what its own activation knew.
KNOWN_HISTORY: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "dwf_adapter_known_history", default=None
)

#: How long the replacement waits at most for the stopped activation to unwind.
REVIVE_WAIT_SECONDS = 0.8


_OUTCOMES = ("completed", "failed", "retrying")


class ActivationStopped(BaseException):
    """Raised at a fault's point: the activation ends there."""


@dataclass
class _RunFaults:
    faults: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    seen_posts: set[tuple[str, str, str]] = field(default_factory=set)
    fired: list[int] = field(default_factory=list)


class FaultPlan:
    """Armed faults and their counters, per run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, _RunFaults] = {}
        #: The workers that serve the runs: a fault wakes the run on them again.
        self.workers: list[WorkerThread] = []
        self._revivals: set[asyncio.Task[None]] = set()
        self._always_replay: set[str] = set()
        #: Per run: step attempts whose body began and whose outcome is not yet appended.
        self._outstanding: dict[str, set[tuple[str, int]]] = {}

    @property
    def worker(self) -> WorkerThread | None:
        """The first worker (the one that serves every run)."""
        return self.workers[0] if self.workers else None

    @worker.setter
    def worker(self, thread: WorkerThread | None) -> None:
        self.workers = [] if thread is None else [thread]

    def body_entered(self, run_id: str, key: str, attempt: int) -> None:
        with self._lock:
            self._outstanding.setdefault(run_id, set()).add((key, attempt))

    def arm(self, run_id: str, faults: list[dict[str, Any]], always_replay: bool = False) -> None:
        with self._lock:
            self._runs[run_id] = _RunFaults(faults=[dict(f) for f in faults])
            if always_replay:
                self._always_replay.add(run_id)
            else:
                self._always_replay.discard(run_id)

    def appended(self, run_id: str, messages: list[Any]) -> None:
        """ADAPT-013: in always-replay mode every append ends the activation; the next
        one reads the history from its beginning."""
        with self._lock:
            outstanding = self._outstanding.setdefault(run_id, set())
            for m in messages:
                if not isinstance(m, dict) or m.get("type") != "step":
                    continue
                value = m.get("value")
                if isinstance(value, dict) and value.get("status") in _OUTCOMES:
                    outstanding.discard((str(m.get("key")), int(value.get("attempt", 0))))
            if run_id not in self._always_replay or outstanding:
                # A parallel body began in this activation and its outcome is not durable
                # yet: ending the activation now would run that body again, which only a
                # fault may cause. The activation ends after the append that records it.
                return
        self._revive_later(run_id)
        raise ActivationStopped(f"always-replay: run {run_id} appended")

    def fired(self, run_id: str) -> list[int]:
        with self._lock:
            run = self._runs.get(run_id)
            return [] if run is None else list(run.fired)

    def occurred(self, run_id: str, point: str, post_key: tuple[str, str] | None = None) -> None:
        """Count one occurrence of ``point``; raise :class:`ActivationStopped` when a fault
        armed for it fires."""
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or not run.faults:
                return
            if post_key is not None:
                seen = (point, *post_key)
                if seen in run.seen_posts:
                    return  # a retry of the same request is not counted again
                run.seen_posts.add(seen)
            n = run.counts[point] = run.counts.get(point, 0) + 1
            hit = [
                i
                for i, f in enumerate(run.faults)
                if f["at"] == point and f["n"] == n and i not in run.fired
            ]
            if not hit:
                return
            run.fired.extend(hit)
        self._revive_later(run_id)
        raise ActivationStopped(f"fault {hit} at {point} #{n} of run {run_id}")

    def _revive_later(self, run_id: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - faults fire on the worker's loop
            return
        if loop.get_exception_handler() is not _quiet_stops:
            loop.set_exception_handler(_quiet_stops)
        task = loop.create_task(self._revive(run_id))
        self._revivals.add(task)
        task.add_done_callback(self._revivals.discard)

    def revive_later(self, run_id: str) -> None:
        """Wake ``run_id`` again once the activation that just ended has unwound (call
        on the event loop of the worker whose activation ended)."""
        self._revive_later(run_id)

    async def _revive(self, run_id: str) -> None:
        """ADAPT-016: a replacement activation within one second."""
        if not self.workers:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REVIVE_WAIT_SECONDS
        while loop.time() < deadline:
            if not any(self._busy(t, run_id) for t in self.workers):
                break
            await asyncio.sleep(0.005)
        # The first worker serves every run; it passes the wake on to the second one
        # for a run armed with two workers.
        self.workers[0].wake(run_id)

    @staticmethod
    def _busy(thread: WorkerThread, run_id: str) -> bool:
        worker = thread.worker
        entry = None if worker is None else worker.runs.get(run_id)
        return entry is not None and entry.busy


def _quiet_stops(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The activation task a fault ended is never awaited: do not report it as an error."""
    if isinstance(context.get("exception"), ActivationStopped):
        return
    loop.default_exception_handler(context)


def _messages(request: httpx.Request) -> list[Any]:
    try:
        body = json.loads(request.content) if request.content else []
    except ValueError:
        return []
    return body if isinstance(body, list) else [body]


class FaultTransport(httpx.AsyncBaseTransport):
    """The worker's HTTP transport: sees every ``POST`` to a run's history, and every
    ``PUT`` that creates it holding messages (FENCE-001), which counts as an append."""

    def __init__(
        self, namespace_url: str, plan: FaultPlan, requests: RequestLog | None = None
    ) -> None:
        self._inner = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=32, keepalive_expiry=1.0)
        )
        self._root = urlsplit(namespace_url).path.rstrip("/") + "/runs/"
        self.plan = plan
        self.requests = requests

    def _run_stream(self, request: httpx.Request) -> tuple[str, str] | None:
        """``(run_id, stream)`` of a request to a run's inbox or history."""
        path = request.url.path
        if not path.startswith(self._root):
            return None
        rest = path[len(self._root) :].split("/")
        if len(rest) == 2 and rest[1] in ("inbox", "history"):
            return rest[0], rest[1]
        return None

    async def _logged(self, request: httpx.Request) -> httpx.Response:
        """Send a request, noting it in the request log (ADAPT-022) when it writes to a
        run's inbox or history."""
        target = None if request.method in ("GET", "HEAD") else self._run_stream(request)
        if self.requests is None or target is None:
            return await self._inner.handle_async_request(request)
        entry = self.requests.sent(target[0], target[1], request)
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException:
            self.requests.answered(entry, None)
            raise
        self.requests.answered(entry, response.status_code)
        return response

    def _history_run(self, request: httpx.Request, method: str = "POST") -> str | None:
        target = self._run_stream(request) if request.method == method else None
        return target[0] if target is not None and target[1] == "history" else None

    async def _read(self, request: httpx.Request) -> httpx.Response:
        """A history read: count what the activation now knows (KNOWN_HISTORY)."""
        response = await self._inner.handle_async_request(request)
        if response.status_code != 200:
            return response
        content = await response.aread()
        try:
            items = json.loads(content) if content else []
        except ValueError:
            return response
        if isinstance(items, list):
            offset = request.url.params.get("offset", "-1")
            before = 0 if offset == "-1" else (KNOWN_HISTORY.get() or 0)
            KNOWN_HISTORY.set(before + len(items))
        return response

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._history_run(request, "GET") is not None:
            return await self._read(request)
        run_id = self._history_run(request)
        creation = run_id is None and bool(request.content)
        if creation:
            run_id = self._history_run(request, "PUT")
        if run_id is None:
            return await self._logged(request)
        producer = request.headers.get("Producer-Id")
        seq = request.headers.get("Producer-Seq")
        key = (producer, seq) if producer and seq else ("request", str(id(request)))
        self.plan.occurred(run_id, "before-append", key)
        response = await self._logged(request)
        if 200 <= response.status_code < 300:
            seq = request.headers.get("Stream-Seq")
            stored = not creation or response.status_code == 201  # a 200 PUT stored nothing
            if creation and stored:
                KNOWN_HISTORY.set(len(_messages(request)))
            elif seq is not None and seq.isdigit():
                KNOWN_HISTORY.set(int(seq) + len(_messages(request)))
            try:
                self.plan.occurred(run_id, "after-append", key)
                if stored:
                    self.plan.appended(run_id, _messages(request))
            except ActivationStopped:
                await response.aclose()
                raise
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
