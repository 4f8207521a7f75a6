"""The conformance adapter's HTTP interface (adapter.md), mounted by ``dwf serve --conformance``.

A test interface only (SEC-017/018): it lets a client register workflow code and read
what ran. ``dwf serve`` mounts it under ``/conformance/v1/`` only when asked.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx

from .. import PROTOCOL_VERSIONS, __version__
from ..core import Limits, WorkflowRegistry
from ..engine.namespace import Namespace, NamespaceIO, first_requests, is_run_id
from ..schemas import validator
from ..streams import AsyncStreamClient, StreamNotFound
from .clock import VirtualClock
from .faults import FaultPlan, FaultTransport
from .interpreter import BodyLog, ProgramRegistry
from .requestlog import RequestLog

if TYPE_CHECKING:
    from ..engine.app import Harness, WorkerThread
    from .workers import WorkerPool

__all__ = ["FEATURES", "PREFIX", "ConformanceAdapter", "conformance_harness"]

PREFIX = "/conformance/v1/"

#: The optional features this adapter offers (adapter.md, ADAPT-004/006).
FEATURES = (
    "always-replay",
    "cancellation",
    "concurrent-workers",
    "crash-injection",
    "limits",
    "parallel",
    "patches",
    "records",
    "request-log",
    "restart-injection",
    "step-timeouts",
    "virtual-clock",
)

#: A settled run is one whose history has not moved for this long (and meets the rest).
QUIET_SECONDS = 0.3
POLL_SECONDS = 0.05

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_TERMINAL = ("completed", "failed", "cancelled")
_STATUS = {
    "bad-request": 400,
    "not-found": 404,
    "unsupported": 501,
    "timeout": 504,
    "internal": 500,
}


class AdapterError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _problems(name: str, document: Any) -> list[str]:
    return [e.message for e in validator(f"conformance/{name}").iter_errors(document)]


def conformance_harness(
    namespace_url: str, registry: WorkflowRegistry, limits: Limits | None
) -> Harness:
    """The adapter as ``dwf serve --conformance`` mounts it (a test interface)."""
    from ..engine.app import Harness

    adapter = ConformanceAdapter(namespace_url, registry, limits=limits)
    return Harness(
        prefix="/conformance",
        app=adapter,
        registry=adapter.registry,
        clock=adapter.clock.now,
        limits=adapter.limits_for,  # ADAPT-021: set per run
        workers=adapter.worker_threads,
    )


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class ConformanceAdapter:
    """The adapter's ASGI app and the registry the engine serves the programs from.

    The engine's clock is :attr:`clock` (ADAPT-019): give ``clock.now`` to every
    worker, runner and handler that serves the namespace. :meth:`worker_threads`
    builds the adapter's two workers (ADAPT-014) with it.
    """

    def __init__(
        self, namespace_url: str, base: WorkflowRegistry, *, limits: Limits | None = None
    ) -> None:
        self.namespace_url = namespace_url
        #: The engine's limits for a run armed without ``limits`` (SEC-011).
        self.default_limits = limits or Limits()
        self._run_limits: dict[str, Limits] = {}
        self._limits_lock = threading.Lock()
        self.namespace = Namespace(namespace_url)
        self.clock = VirtualClock()
        self.faults = FaultPlan()
        self.log = BodyLog(self.faults)
        self.registry = ProgramRegistry(base, self.log, self._known_history)
        #: The engine's writes to each run's streams (ADAPT-022).
        self.requests = RequestLog()
        #: The first worker's HTTP transport: where the append faults fire.
        self.transport = FaultTransport(namespace_url, self.faults, self.requests)
        self._pool: WorkerPool | None = None
        self._ios: dict[int, NamespaceIO] = {}

    def worker_threads(self) -> list[WorkerThread]:
        """The adapter's worker threads (not started): the first serves every run, the
        second the runs armed with ``workers: 2``. Both read the virtual clock and
        count faults in the adapter's fault plan."""
        if self._pool is None:
            from .workers import WorkerPool

            self._pool = WorkerPool(
                self.namespace_url,
                self.registry,
                self.faults,
                self.clock,
                self.transport,
                limits=self.limits_for,
                requests=self.requests,
            )
            self.faults.workers = list(self._pool.threads)
        return list(self._pool.threads)

    def limits_for(self, run_id: str) -> Limits:
        """The limits of ``run_id``: those armed with its ``limits`` option (ADAPT-021),
        each member left out taking the engine's value. Give it as ``limits`` to every
        worker, runner and handler that serves the namespace."""
        with self._limits_lock:
            return self._run_limits.get(run_id, self.default_limits)

    def arm_limits(self, run_id: str, limits: dict[str, int] | None) -> None:
        """Arm (or, with None, clear) the limits of ``run_id``."""
        with self._limits_lock:
            if limits:
                self._run_limits[run_id] = replace(self.default_limits, **limits)
            else:
                self._run_limits.pop(run_id, None)

    def serve_with(self, worker: WorkerThread) -> None:
        """A worker that serves the runs (built elsewhere): a fault wakes it for a
        replacement activation. It must read :attr:`clock`."""
        if worker not in self.faults.workers:
            self.faults.workers.append(worker)

    def clock_moved(self) -> None:
        """After an advance: every worker re-checks its timers at once (ADAPT-019)."""
        for thread in self.faults.workers:
            thread.clock_moved()

    # ------------------------------------------------------------------ stream reads

    def _io(self) -> NamespaceIO:
        # One client per event loop: step bodies run on the worker's loop, the
        # HTTP handlers on the server's.
        loop = asyncio.get_running_loop()
        io = self._ios.get(id(loop))
        if io is None:
            client = AsyncStreamClient(timeout=30, http=httpx.AsyncClient())
            io = self._ios[id(loop)] = NamespaceIO(self.namespace, client)
        return io

    async def _known_history(self, run_id: str) -> int:
        read = await self._io().read_history(run_id)
        return 0 if read is None else len(read.items)

    async def _requested(self, run_id: str) -> bool:
        try:
            index = await self._io().read_index()
        except StreamNotFound:
            return False
        return run_id in first_requests(index.items)

    async def _state(self, run_id: str) -> tuple[str, bool, int]:
        """(``running``|``suspended``|``finished``, at rest, history length)."""
        io = self._io()
        history = await io.read_history(run_id)
        items = [] if history is None else history.items
        runs = [m for m in items if isinstance(m, dict) and m.get("type") == "run"]
        _, _, running = self.log.snapshot(run_id)
        if not runs:
            return "running", False, len(items)
        value = runs[-1]["value"]
        status = value.get("status")
        if status in _TERMINAL:
            inbox = await io.read_inbox(run_id)
            closed = history is not None and history.closed and (inbox is None or inbox.closed)
            return ("finished" if closed else "running"), closed, len(items)
        if status not in ("sleeping", "waiting") or running:
            return "running", False, len(items)
        until = (value.get("waiting_for") or {}).get("until")
        if until and _parse_time(until) <= self.clock.now():  # on the engine's clock
            return "suspended", False, len(items)
        inbox = await io.read_inbox(run_id)
        if inbox is not None and not self._inbox_decided(items, inbox.items, value):
            return "suspended", False, len(items)
        return "suspended", True, len(items)

    @staticmethod
    def _inbox_decided(history: list[Any], inbox: list[Any], run: dict[str, Any]) -> bool:
        """Whether every cancel and every submission for a pending request is decided."""
        decided: set[str] = set()
        for m in history:
            if not isinstance(m, dict):
                continue
            value = m.get("value") or {}
            if m.get("type") == "submission":
                decided.add(str(m.get("key")))
            elif m.get("type") == "input" and value.get("submission_id"):
                decided.add(str(value["submission_id"]))
        waiting = set((run.get("waiting_for") or {}).get("inputs") or ())
        seen: set[str] = set()
        for m in inbox:
            if not isinstance(m, dict):
                continue
            key = str(m.get("key"))
            if key in seen:
                continue  # a repeated id is a no-op the engine never records (INPUT-015)
            seen.add(key)
            if m.get("type") == "cancel" and m.get("key") not in decided:
                return False  # the run has not ended yet (and the cancel is not rejected)
            value = m.get("value") or {}
            if (
                m.get("type") == "submission"
                and m.get("key") not in decided
                and value.get("request") in waiting
            ):
                return False
        return True

    async def report(self, run_id: str) -> dict[str, Any]:
        state, _, _ = await self._state(run_id)
        return self._report(run_id, state)

    def _report(self, run_id: str, state: str) -> dict[str, Any]:
        bodies, activations, _ = self.log.snapshot(run_id)
        counts: dict[str, int] = {}
        for body in bodies:
            counts[body["step"]] = counts.get(body["step"], 0) + 1
        return {
            "run_id": run_id,
            "state": state,
            "step_runs": counts,
            "bodies": bodies,
            "activations": activations,
            "faults_fired": self.faults.fired(run_id),
        }

    async def settle(self, run_id: str, timeout_ms: int) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_ms / 1000
        if not await self._requested(run_id):
            raise AdapterError("not-found", f"run {run_id} was never requested")
        last = -1
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            state, rest, length = await self._state(run_id)
            if length != last:
                last, quiet_since = length, time.monotonic()
            if rest and (state == "finished" or time.monotonic() - quiet_since >= QUIET_SECONDS):
                return self._report(run_id, state)
            await asyncio.sleep(POLL_SECONDS)
        raise AdapterError("timeout", f"run {run_id} did not settle in {timeout_ms} ms")

    # ------------------------------------------------------------------ HTTP

    def info(self) -> dict[str, Any]:
        return {
            "adapter": {"name": "durable-workflows-reference-adapter", "version": __version__},
            "engine": {"name": "durable-workflows-reference", "version": __version__},
            "protocol_versions": list(PROTOCOL_VERSIONS),
            "features": sorted(FEATURES),
            "namespace": self.namespace.url,
        }

    async def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = path[len(PREFIX) :].split("/")
        if parts == ["info"] and method == "GET":
            return 200, self.info()
        if parts == ["clock"] and method == "GET":
            return 200, {"now": self.clock.text()}
        if parts == ["clock"] and method == "POST":
            problems = _problems("clock", body)
            if problems or not isinstance(body, dict) or "advance_ms" not in body:
                detail = "; ".join(problems[:3]) or 'expected {"advance_ms": N}'
                raise AdapterError("bad-request", detail)
            self.clock.advance(body["advance_ms"])
            self.clock_moved()
            return 200, {"now": self.clock.text()}
        if len(parts) == 2 and parts[0] == "workflows" and method == "PUT":
            problems = _problems("workflow", body)
            if problems:
                raise AdapterError("bad-request", "; ".join(problems[:3]))
            self.registry.set_program(parts[1], body["program"])
            return 204, None
        if len(parts) >= 2 and parts[0] == "runs" and is_run_id(parts[1]):
            run_id = parts[1]
            if len(parts) == 2 and method == "PUT":
                return await self._options(run_id, body)
            if len(parts) == 2 and method == "GET":
                if not await self._requested(run_id):
                    raise AdapterError("not-found", f"run {run_id} was never requested")
                return 200, await self.report(run_id)
            if parts[2:] == ["requests"] and method == "GET":
                if not await self._requested(run_id):
                    raise AdapterError("not-found", f"run {run_id} was never requested")
                return 200, {"run_id": run_id, "requests": self.requests.of(run_id)}
            if parts[2:] == ["settle"] and method == "POST":
                problems = _problems("settle", body)
                if problems:
                    raise AdapterError("bad-request", "; ".join(problems[:3]))
                return 200, await self.settle(run_id, body["timeout_ms"])
        raise AdapterError("not-found", f"no endpoint {method} {path}")

    async def _options(self, run_id: str, body: Any) -> tuple[int, Any]:
        problems = _problems("run-options", body)
        if problems:
            raise AdapterError("bad-request", "; ".join(problems[:3]))
        if await self._io().read_history(run_id) is not None:
            raise AdapterError("bad-request", f"run {run_id} already has a history (ADAPT-012)")
        workers = body.get("workers", 1)
        if workers != 1 and (self._pool is None or len(self._pool.threads) < workers):
            raise AdapterError("unsupported", f"this adapter runs no {workers} workers")
        self.faults.arm(run_id, body.get("faults") or [], bool(body.get("always_replay")))
        self.arm_limits(run_id, body.get("limits"))
        if self._pool is not None:
            self._pool.set_concurrent(run_id, workers == 2)
        return 204, None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        try:
            try:
                body = json.loads(raw) if raw else None
            except ValueError as exc:
                raise AdapterError("bad-request", f"the body is not JSON: {exc}") from None
            status, answer = await self.handle(scope["method"], scope["path"], body)
        except AdapterError as exc:
            status, answer = _STATUS[exc.code], {"error": {"code": exc.code, "message": str(exc)}}
        except Exception as exc:  # ADAPT-002: anything else is `internal`
            status, answer = 500, {"error": {"code": "internal", "message": repr(exc)}}
        data = b"" if answer is None else json.dumps(answer).encode()
        headers = [(b"content-type", b"application/json")]
        headers.append((b"content-length", str(len(data)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})
