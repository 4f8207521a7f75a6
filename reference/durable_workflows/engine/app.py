"""``dwf serve``: one port, one process, everything a small deployment needs.

- ``/v1/stream/...``: the embedded Durable Streams server (memory or SQLite);
- ``/wake`` (and ``/webhook``): the request-driven handler (:mod:`.handler`);
- the long-running worker (:mod:`.worker`) as a task on the server's own event loop
  (:class:`LoopWorker`): its requests reach the streams as calls on that loop, with
  the same routing and credential checks as HTTP, and sync step bodies run in a thread
  pool; workers in other processes use HTTP.

The namespace is ``http://HOST:PORT/v1/stream/workflows`` by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from starlette.routing import BaseRoute, Mount, Route, Router

from ..access import Credential, KeySet, Refusal
from ..access.guard import AccessGuard
from ..core import Limits, WorkflowRegistry
from ..streams.serve import NO_AUTH_WARNING, SetupError, graceful_server, setup_access
from ..streams.server import Cors, build_app
from ..streams.server.subscriptions import SubscriptionManager
from .bridge import LoopBridge
from .handler import WakeHandler
from .namespace import STREAM_ROOT_PATH
from .runner import LimitsOption
from .worker import WakeMode, Worker, load_registry

__all__ = [
    "DEFAULT_WORKFLOWS",
    "Harness",
    "HarnessFactory",
    "ServeApp",
    "WorkerHost",
    "WorkerThread",
    "run_serve",
]

log = logging.getLogger("durable_workflows.engine.app")

#: The example workflows ``dwf serve`` loads when no ``--workflows`` is given.
DEFAULT_WORKFLOWS = ("examples.expense_approval", "examples.agent_confirm", "examples.onboarding")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]


class WorkerHost:
    """A :class:`Worker` and the event loop it runs on: what :class:`WorkerThread` and
    :class:`LoopWorker` share (how the worker is made, how it is reached)."""

    def __init__(
        self,
        namespace_url: str,
        registry: WorkflowRegistry,
        name: str,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], datetime] | None = None,
        live_transport: httpx.AsyncBaseTransport | None = None,
        wake: WakeMode = "auto",
        worker_factory: Callable[..., Worker] | None = None,
        limits: LimitsOption = None,
        auth: httpx.Auth | None = None,
        unknown_grace: float | None = None,
    ) -> None:
        self.worker: Worker | None = None
        self._auth = auth
        self._unknown_grace = unknown_grace
        self._limits = limits
        self._factory: Callable[..., Worker] = worker_factory or Worker
        self._wake: WakeMode = wake
        self._args = (namespace_url, registry, name)
        self._transport = transport
        self._live_transport = live_transport
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def start(self) -> None:
        raise NotImplementedError

    async def astop(self) -> None:
        """Stop the worker and wait (a few seconds at most) for it to let go."""
        raise NotImplementedError

    def _make_worker(self) -> Worker:
        """The worker, on the running loop (which it will run on)."""
        url, registry, name = self._args
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        options: dict[str, Any] = {} if self._clock is None else {"clock": self._clock}
        if self._limits is not None:
            options["limits"] = self._limits
        if self._auth is not None:
            options["auth"] = self._auth
        if self._unknown_grace is not None:
            options["unknown_grace"] = self._unknown_grace
        if self._live_transport is not None:
            options["live_transport"] = self._live_transport
        self.worker = self._factory(
            url, registry, name=name, transport=self._transport, wake=self._wake, **options
        )
        return self.worker

    def clock_moved(self) -> None:
        """Tell the worker that its (virtual) clock jumped: re-check its timers now."""
        if self._loop is not None and self.worker is not None:
            self._loop.call_soon_threadsafe(self.worker.clock_moved)

    def call_soon(self, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback(*args)`` on the worker's event loop (from any thread)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback, *args)

    def wake(self, run_id: str) -> None:
        """``Worker.wake(run_id)`` on the worker's event loop (from any thread)."""
        if self.worker is not None:
            self.call_soon(self.worker.wake, run_id)


class WorkerThread(WorkerHost):
    """A :class:`Worker` on its own thread and event loop (the conformance adapter's
    workers: each has a clock and transport of its own)."""

    thread: threading.Thread | None = None

    def start(self) -> None:
        started = threading.Event()
        self.thread = threading.Thread(
            target=self._main, args=(started,), name="dwf-worker", daemon=True
        )
        self.thread.start()
        started.wait(10)

    def _main(self, started: threading.Event) -> None:
        async def main() -> None:
            worker = self._make_worker()
            assert self._stop is not None
            started.set()
            await worker.run(self._stop)

        try:
            asyncio.run(main())
        except Exception:
            log.exception("the worker stopped")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker and wait for its thread (a second call only waits)."""
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: already stopped
                self._loop.call_soon_threadsafe(self._stop.set)
        if self.thread is not None and self.thread.is_alive():
            self.thread.join(timeout)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)


class LoopWorker(WorkerHost):
    """``dwf serve``'s own worker: a task on the server's event loop, not a thread.

    Its requests reach the stream server as calls on that loop (:mod:`.bridge`), with no
    hand-over between threads. Sync step bodies still run in the runner's thread pool;
    workflow code and async bodies share the loop with the server, as in any ASGI app.
    """

    _task: asyncio.Future[None] | None = None

    def start(self) -> None:
        """Start on the running loop (the server's lifespan calls this)."""
        worker = self._make_worker()
        worker.wakes_in_process = True  # the server tells it of wakes (woken)
        assert self._stop is not None
        self._task = asyncio.ensure_future(worker.run(self._stop))

    async def astop(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=5.0)

    def woken(self, subscription_id: str, generation: int) -> None:
        """Told by the stream server of each wake it starts (``Worker.woken``)."""
        if self.worker is not None:
            self.worker.woken(subscription_id, generation)


class _Lifespan:
    """Drives another ASGI app's lifespan protocol by hand."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.inbox: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        self.task: asyncio.Future[None] | None = None

    async def _event(self, event: str) -> None:
        await self.inbox.put({"type": f"lifespan.{event}"})
        reply = await self.outbox.get()
        if not reply["type"].endswith(".complete"):
            raise RuntimeError(f"lifespan {event} failed: {reply}")

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
        self.task = asyncio.ensure_future(self.app(scope, self.inbox.get, self.outbox.put))
        await self._event("startup")

    async def shutdown(self) -> None:
        await self._event("shutdown")
        if self.task is not None:
            await self.task


@dataclass
class Harness:
    """A test interface that the command asking for it mounts on ``dwf serve`` (the
    conformance adapter, SEC-017): the product app never imports one. It brings its
    ASGI app, the registry and clock the engine serves with, its per-run limits and
    its own worker threads."""

    prefix: str
    app: ASGIApp
    registry: WorkflowRegistry
    clock: Callable[[], datetime]
    limits: LimitsOption
    workers: Callable[[], list[WorkerThread]]


#: Builds a harness for (namespace URL, the workflows served, the engine's limits).
HarnessFactory = Callable[[str, WorkflowRegistry, Limits | None], Harness]


class ServeApp:
    """The composed ASGI app of ``dwf serve``: the streams server under ``/v1/stream``,
    a test harness under its prefix when one is given, and the wake handler for the
    rest (``/wake``, ``/webhook``)."""

    def __init__(
        self,
        base_url: str,
        registry: WorkflowRegistry,
        *,
        data_dir: Path | None = None,
        namespace: str = "workflows",
        worker: bool = True,
        long_poll_timeout: float = 30.0,
        subscription: str | None = None,
        limits: Limits | None = None,
        keys: KeySet | None = None,
        cors: Cors | None = None,
        harness: HarnessFactory | None = None,
        unknown_grace: float | None = None,
        ui: Path | None = None,
    ) -> None:
        self.streams = build_app(
            data_dir, long_poll_timeout=long_poll_timeout, keys=keys, cors=cors
        )
        self.base_url = base_url
        self.namespace_url = f"{base_url}{STREAM_ROOT_PATH}/{namespace}"
        # The in-process engine presents an engine credential minted from the server's
        # own keys, like any other worker would (security.md).
        auth = None if keys is None else Credential.engine(keys, namespace).auth()
        #: The engine's clock when a harness brings one (the adapter's virtual clock).
        self.clock: Callable[[], datetime] | None = None
        self.worker: WorkerHost | None = None
        #: Further worker threads (the conformance adapter's second worker).
        self.more_workers: list[WorkerThread] = []
        #: The in-process transport of the worker; its loop is the server's, known once
        #: the server runs.
        self.bridge: LoopBridge | None = None
        run_limits: LimitsOption = limits
        routes: list[BaseRoute] = [Mount(STREAM_ROOT_PATH, app=self.streams)]
        self.harness: Harness | None = None
        if harness is not None:
            self.harness = mounted = harness(self.namespace_url, registry, limits)
            registry, self.clock, run_limits = mounted.registry, mounted.clock, mounted.limits
            if worker:
                self.worker, *self.more_workers = mounted.workers()
            routes.append(Mount(mounted.prefix, app=mounted.app))
        else:
            # The engine reaches this very app in-process: no loopback HTTP.
            # Stream requests go straight to the stream app, as its Mount would route them.
            self.bridge = LoopBridge(self, mounts={f"{STREAM_ROOT_PATH}/": self.streams})
        if harness is None and worker:
            self.worker = loop_worker = LoopWorker(
                self.namespace_url,
                registry,
                "worker",
                limits=limits,
                auth=auth,
                unknown_grace=unknown_grace,
                transport=self.bridge,
                live_transport=self.bridge,
            )
            assert isinstance(self.streams.subscriptions, SubscriptionManager)
            self.streams.subscriptions.wake_observers.append(loop_worker.woken)
        self.handler = WakeHandler(
            self.namespace_url,
            registry,
            name="handler",
            subscription_id=subscription,
            limits=run_limits,
            auth=auth,
            wake_gate=None if keys is None else _wake_gate(AccessGuard(keys), namespace),
            transport=self.bridge,
        )
        if ui is None:
            routes.append(Mount("", app=self.handler))
        else:
            from .ui import session_maker, ui_routes

            routes += [Route("/wake", self.handler), Route("/webhook", self.handler)]
            session = session_maker(f"{STREAM_ROOT_PATH}/{namespace}", namespace, registry, keys)
            routes += ui_routes(ui, session)
        self._router = Router(routes=routes, redirect_slashes=False)
        self._subscribing: asyncio.Future[None] | None = None
        self._streams_lifespan = _Lifespan(self.streams)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._router(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._streams_lifespan.startup()
                if self.bridge is not None:
                    self.bridge.loop = asyncio.get_running_loop()
                self._create_index()
                await self.handler.start()
                if self.clock is not None and self.handler.runner is not None:
                    self.handler.runner.clock = self.clock
                for thread in self._worker_threads():
                    thread.start()
                if self.handler.subscription_id is not None:
                    # After start-up: the server must be serving to answer the PUT.
                    self._subscribing = asyncio.ensure_future(self._subscribe())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._subscribing is not None:
                    self._subscribing.cancel()
                await self._stop_workers()
                await self.handler.stop()
                await self._streams_lifespan.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _create_index(self) -> None:
        """MODEL-011, before the first request is served: clients may not create the
        index (security.md), so it must exist as soon as they can reach the server."""
        path = self.namespace_url.split(STREAM_ROOT_PATH + "/", 1)[1] + "/index"
        if self.streams.core.find(path) is None:
            self.streams.core.create(
                path,
                content_type="application/json",
                ttl_seconds=None,
                expires_at=None,
                expires_at_ts=None,
                closed=False,
                body=b"",
            )

    async def before_shutdown(self) -> None:
        """While the server still serves: stop the in-process workers (so their last
        appends and claim releases get answers), then end every live read."""
        await self._stop_workers()
        self.streams.end_live_reads()

    async def _stop_workers(self) -> None:
        for host in self._worker_threads():
            await host.astop()

    def _worker_threads(self) -> list[WorkerHost]:
        return ([] if self.worker is None else [self.worker]) + self.more_workers

    async def _subscribe(self) -> None:
        for _ in range(50):
            try:
                await self.handler.subscribe(f"{self.base_url}/webhook")
                return
            except Exception as exc:
                log.warning("cannot create the subscription yet: %r", exc)
                await asyncio.sleep(0.2)


def _ui_problem(directory: Path, host: str, auth: bool) -> str | None:
    """Why ``--ui DIR`` cannot be served, or None."""
    from ..streams.serve import is_loopback

    if not (directory / "index.html").is_file():
        return f"--ui {directory}: no index.html there (build the app first: make ui)"
    if auth and not is_loopback(host):
        return (
            "--ui hands every visitor a client token (/ui/session.json), so it is for "
            "loopback addresses only; behind a proxy, mint tokens in your own backend"
        )
    return None


def _wake_gate(guard: AccessGuard, namespace: str) -> Callable[[str | None, str | None], None]:
    """SEC-015: a plain wake needs the engine's credential, or a client's that may read
    the run (its answer tells the run's status); ``run_id`` None checks the credential."""

    def check(authorization: str | None, run_id: str | None) -> None:
        grant = guard.grant(authorization)
        if grant is None:
            raise Refusal(401, "unauthorized", "a wake needs a credential: Authorization: Bearer")
        if not grant.covers_namespace(namespace) or not grant.may("read"):
            raise Refusal(403, "forbidden", "the credential may not wake runs here")
        if run_id is not None and not grant.covers_run(run_id):
            raise Refusal(403, "forbidden", f"the credential does not name run {run_id!r}")

    return check


def run_serve(
    host: str,
    port: int,
    data_dir: str | Path | None,
    workflows: list[str] | None,
    namespace: str = "workflows",
    worker: bool = True,
    long_poll_timeout: float = 30.0,
    subscription: str | None = None,
    harness: HarnessFactory | None = None,
    limits: Limits | None = None,
    key_file: str | Path | None = None,
    insecure_no_auth: bool = False,
    cors_origins: Sequence[str] = (),
    unknown_grace: float | None = None,
    ui: str | Path | None = None,
) -> int:
    """``dwf serve`` until SIGINT/SIGTERM. Prints ``ready <base-url> ...`` once listening.

    Requests to the streams need a credential unless ``insecure_no_auth``, or unless
    a test ``harness`` is mounted (the conformance adapter lets anyone run code anyway)."""
    conformance = harness is not None
    import uvicorn

    try:
        access = setup_access(
            host, data_dir, key_file, insecure_no_auth or conformance, cors_origins
        )
    except SetupError as exc:
        print(f"dwf serve: {exc}", file=sys.stderr)
        return 2
    if ui is not None:
        problem = _ui_problem(Path(ui), host, access.keys is not None)
        if problem is not None:
            print(f"dwf serve: {problem}", file=sys.stderr)
            return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    modules = list(DEFAULT_WORKFLOWS) if workflows is None else workflows
    try:
        registry = load_registry(modules, skip_missing=workflows is None)
    except ImportError as exc:
        print(f"dwf serve: cannot import workflows: {exc}", file=sys.stderr)
        return 2
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        print(f"dwf serve: cannot listen on {host}:{port}: {error}", file=sys.stderr)
        return 1
    sock.listen(1024)
    shown = f"[{host}]" if ":" in host else host
    base_url = f"http://{shown}:{sock.getsockname()[1]}"
    app = ServeApp(
        base_url,
        registry,
        data_dir=None if data_dir is None else Path(data_dir),
        namespace=namespace,
        worker=worker,
        long_poll_timeout=long_poll_timeout,
        subscription=subscription,
        harness=harness,
        limits=limits,
        keys=access.keys,
        cors=access.cors,
        unknown_grace=unknown_grace,
        ui=None if ui is None else Path(ui),
    )
    if access.keys is None and not conformance:
        print(NO_AUTH_WARNING.format(url=base_url), file=sys.stderr, flush=True)
    if conformance:
        print(
            "WARNING: dwf serve --conformance exposes the conformance adapter under "
            f"{base_url}/conformance/v1/: anyone who reaches it can register and run code "
            "paths of their choosing. It is a test interface and must NEVER be reachable "
            "in production.",
            file=sys.stderr,
            flush=True,
        )
    storage = "memory" if data_dir is None else f"sqlite in {data_dir}"
    names = ", ".join(registry.names()) or "none"
    print(
        f"ready {base_url} namespace {app.namespace_url} ({storage}; workflows: {names}) "
        + access.ready_suffix(),
        flush=True,
    )
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
    graceful_server(config, app.before_shutdown).run(sockets=[sock])
    return 0
