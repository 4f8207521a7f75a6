"""An httpx transport that hands requests to an ASGI app on another thread's event loop.

``dwf serve`` runs its stream server in uvicorn's loop and its worker in a thread of
its own. Over loopback HTTP every step costs a TCP round trip and an HTTP parse on
both sides; through this bridge the worker's requests reach the same app (routing,
credentials and all) as ASGI calls, and only workers in other processes use HTTP.

The request body is sent whole; the response streams back chunk by chunk (a long-poll
answers when it answers), and closing or cancelling the response on the worker's side
ends the call on the server's side, as a dropped connection would.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.types import ASGIApp, Message

__all__ = ["LoopBridge"]

_DONE = object()


class LoopBridge(httpx.AsyncBaseTransport):
    """Calls ``app`` on ``loop`` (set :attr:`loop` before the first request)."""

    def __init__(self, app: ASGIApp, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.app = app
        self.loop = loop

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.loop is None:
            raise httpx.ConnectError("the in-process server is not running", request=request)
        here = asyncio.get_running_loop()
        body = await request.aread()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        gone = asyncio.Event()  # on the server's loop, once created there

        def deliver(*items: Any) -> None:  # from the server's loop
            if not here.is_closed():
                here.call_soon_threadsafe(_put_all, queue, items)

        url = request.url
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?", 1)[0],
            "query_string": url.query,
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "client": ("127.0.0.1", 0),
            "server": (url.host, url.port or 80),
        }

        async def call() -> None:
            nonlocal gone
            gone = asyncio.Event()
            sent = False

            async def receive() -> Message:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                await gone.wait()
                return {"type": "http.disconnect"}

            # Messages go across in one hand-over per response where they can: each
            # hand-over wakes the other loop (a write to its self-pipe).
            held: list[Any] = []
            ended = False

            async def send(message: Message) -> None:
                nonlocal ended
                held.append(message)
                if message["type"] == "http.response.body":
                    ended = not message.get("more_body", False)
                    deliver(*held)
                    held.clear()

            try:
                await self.app(scope, receive, send)
            except BaseException as exc:
                deliver(*held, exc, _DONE)
                raise
            if not ended:
                deliver(*held, _DONE)

        future = asyncio.run_coroutine_threadsafe(call(), self.loop)

        def end_call() -> None:
            if not future.done():
                self.loop.call_soon_threadsafe(gone.set)  # type: ignore[union-attr]
                future.cancel()

        try:
            start = await queue.get()
        except BaseException:
            end_call()
            raise
        if not isinstance(start, dict) or start.get("type") != "http.response.start":
            end_call()
            raise httpx.RemoteProtocolError(
                f"the in-process server answered no response ({start!r})", request=request
            )
        return httpx.Response(
            start["status"],
            headers=[(bytes(k), bytes(v)) for k, v in start.get("headers", [])],
            stream=_Body(queue, end_call, future),
            request=request,
        )


def _put_all(queue: asyncio.Queue[Any], items: tuple[Any, ...]) -> None:
    for item in items:
        queue.put_nowait(item)


class _Body(httpx.AsyncByteStream):
    def __init__(
        self,
        queue: asyncio.Queue[Any],
        end_call: Any,
        future: concurrent.futures.Future[None],
    ) -> None:
        self._queue = queue
        self._end_call = end_call
        self._future = future
        self._complete = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._queue.get()
            if item is _DONE:
                self._complete = True
                return
            if isinstance(item, BaseException):
                raise httpx.ReadError(f"the in-process server failed: {item!r}")
            if item.get("type") == "http.response.body":
                chunk = item.get("body", b"")
                if chunk:
                    yield chunk
                if not item.get("more_body", False):
                    self._complete = True
                    return

    async def aclose(self) -> None:
        # A response read to its end leaves the call alone (the app may still tidy
        # up); one dropped half-way ends it, as a closed connection would.
        if not self._complete:
            self._end_call()
