"""In-process transports from ``dwf serve``'s worker to its own stream server.

Over loopback HTTP every step costs a TCP round trip and an HTTP parse on both sides;
through these the worker's requests reach the same app (routing, credentials and all)
as ASGI calls, and only workers in other processes use HTTP.

- :class:`LoopBridge`, an httpx transport for what still takes httpx (pull-wake
  claims and acknowledgements).
- :class:`BridgedStreamClient`, a stream client that on the app's own loop skips httpx
  as well: the stream client's requests go into the app as they are.

Both run the app on the caller's loop (the server's: ``dwf serve`` runs its worker
there). A caller that goes away is a dropped connection to the app, as over HTTP.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from starlette.types import ASGIApp, Message

from ..access import BearerAuth
from ..streams import AsyncStream, AsyncStreamClient, CreateResult, StreamNetworkError
from ..streams.client._core import Request, Response
from ..streams.client._http import network_error
from ..streams.server.app import (
    BODY_IF_CREATED,
    REPORTS_CREATION,
    WRITE_METHODS,
    CreationChain,
    header_dict,
)

__all__ = ["BridgedStreamClient", "LoopBridge", "create_chained", "stream_client"]

T = TypeVar("T")

#: ASGI scope extensions for the in-process requests the current task sends.
_extensions: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "durable_workflows_scope_extensions", default=None
)


class LoopBridge(httpx.AsyncBaseTransport):
    """Calls ``app`` on its own loop (set :attr:`loop` before the first request), which
    must be the caller's: each request is one :func:`asgi_call`, its response read whole
    (a long-poll answers when it answers). ``mounts`` maps path prefixes to the apps
    ``app`` routes them to, so that those requests skip its routing."""

    def __init__(
        self,
        app: ASGIApp,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        mounts: Mapping[str, ASGIApp] | None = None,
    ) -> None:
        self.app = app
        self.loop = loop
        self.mounts = dict(mounts or {})

    def app_for(self, path: str) -> ASGIApp:
        """The app that serves ``path``: a mounted one, or :attr:`app`."""
        for prefix, mounted in self.mounts.items():
            if path.startswith(prefix):
                return mounted
        return self.app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.loop is not asyncio.get_running_loop():
            raise httpx.ConnectError(
                "the in-process server is not running on this loop", request=request
            )
        call = Request(request.method, str(request.url), content=await request.aread())
        headers = header_dict(request.headers.raw)
        try:
            answer = await asgi_call(self.app_for(request.url.path), call, headers)
        except StreamNetworkError as exc:
            raise httpx.ReadError(str(exc), request=request) from exc
        return httpx.Response(
            answer.status, headers=list(answer.headers.items()), content=answer.content
        )


class BridgedStreamClient(AsyncStreamClient):
    """A stream client whose requests, sent on ``bridge``'s loop, are ASGI calls of its
    app with no httpx in between (about a third of a step's own time); elsewhere, or
    for a response read as a stream, they take ``http`` (over the bridge) as usual.
    Requests sent together (tasks started one after the other in one turn of the loop)
    reach the app in the order they were sent, and their writes share a commit."""

    def __init__(
        self,
        bridge: LoopBridge,
        http: httpx.AsyncClient,
        *,
        headers: dict[str, str] | None,
        timeout: float,
        live_timeout: float,
    ) -> None:
        super().__init__(headers=headers, timeout=timeout, live_timeout=live_timeout, http=http)
        self.bridge = bridge
        auth = http.auth
        self._credential = auth.credential if isinstance(auth, BearerAuth) else None
        self._direct = auth is None or self._credential is not None

    def in_process(self) -> bool:
        """Whether requests sent now reach the app as ASGI calls (and may carry scope
        extensions, :func:`create_chained`)."""
        return self._direct and self.bridge.loop is asyncio.get_running_loop()

    async def _send(self, request: Request) -> Response:
        extensions = _extensions.get()
        if not self.in_process():
            if extensions is not None:
                # Over HTTP the extension would be lost, and the chained PUT stored
                # unconditionally: never sent that way.
                raise RuntimeError("scope extensions need the in-process transport")
            return await super()._send(request)
        headers = {**self._headers, **request.headers}
        if self._credential is not None and not any(k.lower() == "authorization" for k in headers):
            headers["Authorization"] = self._credential.header()
        limit = self._live_timeout.read if request.live else self._timeout.read
        try:
            async with asyncio.timeout(limit):
                app = self.bridge.app_for(urlsplit(request.url).path)
                return await asgi_call(app, request, headers, extensions)
        except TimeoutError as exc:
            raise network_error(request, exc) from exc


async def create_chained(
    client: AsyncStreamClient, first: AsyncStream, then: AsyncStream, messages: list[Any]
) -> tuple[CreateResult, CreateResult] | None:
    """Create ``first``, then ``then`` holding ``messages`` only if that creation made
    ``first`` (else ``then`` is created empty), both in one transaction of the stream
    server in this process. The answers are those of a ``PUT`` of each, one after the
    other, with ``messages`` sent only if the first answered 201. None when ``client``
    does not reach the server in-process (the caller sends them one by one). Raises
    what the first ``PUT`` raised, else what the second did."""
    if not isinstance(client, BridgedStreamClient) or not client.in_process():
        return None
    chain = CreationChain()
    made = await asyncio.gather(
        _with_extensions({REPORTS_CREATION: chain}, first.create_json()),
        _with_extensions({BODY_IF_CREATED: chain}, then.create_json(messages)),
        return_exceptions=True,
    )
    for result in made:
        if isinstance(result, BaseException):
            raise result
    inbox, history = made
    assert isinstance(inbox, CreateResult) and isinstance(history, CreateResult)
    return inbox, history


async def _with_extensions(extensions: dict[str, Any], call: Awaitable[T]) -> T:
    # Run as a task of its own (gather), so the setting is this request's alone.
    _extensions.set(extensions)
    return await call


async def asgi_call(
    app: ASGIApp,
    request: Request,
    headers: dict[str, str],
    extensions: dict[str, Any] | None = None,
) -> Response:
    """``request`` as one ASGI call of ``app`` on this loop, as uvicorn would make it
    (with ``extensions`` as its scope's ``extensions``).

    The app runs in a task of its own: a caller that goes away (cancelled, timed out)
    is a dropped connection to it, seen as ``http.disconnect``, never a cancellation in
    the middle of, say, a commit.
    """
    url = urlsplit(request.url)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": url.scheme,
        "path": url.path,
        "raw_path": url.path.encode(),
        "query_string": url.query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 0),
        "server": (url.hostname or "127.0.0.1", url.port or 80),
        "extensions": extensions or {},
    }
    gone = asyncio.Event()
    sent = False
    status = 0
    answer: dict[str, str] = {}
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            if request.method in WRITE_METHODS:
                # One turn of the loop, as a body arriving over a socket would take:
                # writes sent together have all arrived before the first is committed,
                # so they share one transaction (group commit), in the order sent.
                await asyncio.sleep(0)
            return {"type": "http.request", "body": request.content, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            answer.update(header_dict(message.get("headers", [])))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                gone.set()

    call = asyncio.ensure_future(app(scope, receive, send))
    call.add_done_callback(_retrieved)
    try:
        await asyncio.shield(call)
    except Exception as exc:
        raise network_error(request, exc) from exc
    finally:
        gone.set()
    if not status:
        raise network_error(request, RuntimeError("the in-process server sent no response"))
    return Response(status, answer, b"".join(chunks))


def _retrieved(task: asyncio.Future[Any]) -> None:
    # A call whose caller went away may fail unseen; that is no loop-level warning.
    if not task.cancelled():
        task.exception()


def stream_client(
    http: httpx.AsyncClient,
    transport: httpx.AsyncBaseTransport | None,
    *,
    headers: dict[str, str] | None,
    timeout: float = 30,
    live_timeout: float = 120,
) -> AsyncStreamClient:
    """The stream client over ``http``: a :class:`BridgedStreamClient` when ``http``
    carries a :class:`LoopBridge`, so requests on its loop skip httpx."""
    if isinstance(transport, LoopBridge):
        return BridgedStreamClient(
            transport, http, headers=headers, timeout=timeout, live_timeout=live_timeout
        )
    return AsyncStreamClient(headers=headers, timeout=timeout, live_timeout=live_timeout, http=http)
