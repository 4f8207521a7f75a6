"""``dwf serve``'s engine on its own server's event loop (engine/bridge.py, app.py).

- :func:`asgi_call` answers as uvicorn would: status, headers, body; a caller that goes
  away is a dropped connection to the app (``http.disconnect``), never a cancellation in
  the middle of its work; an app that fails is a network error to the stream client.
- ``dwf serve``'s worker runs on the server's loop, and its requests reach the app
  without HTTP; a run goes from request to end that way.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import httpx
import pytest
import uvicorn

from durable_workflows.core import Context, WorkflowRegistry
from durable_workflows.engine.app import LoopWorker, ServeApp
from durable_workflows.engine.bridge import BridgedStreamClient, asgi_call
from durable_workflows.streams import StreamNetworkError
from durable_workflows.streams.client._core import Request

from .engine_support import unique


def test_an_asgi_call_returns_status_headers_and_body() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        assert scope["path"] == "/v1/stream/x" and scope["query_string"] == b"offset=-1"
        assert dict(scope["headers"])[b"producer-id"] == b"p"
        await send(
            {
                "type": "http.response.start",
                "status": 201,
                "headers": [(b"Stream-Next-Offset", b"7"), (b"Vary", b"a"), (b"Vary", b"b")],
            }
        )
        await send({"type": "http.response.body", "body": message["body"], "more_body": True})
        await send({"type": "http.response.body", "body": b"!"})

    request = Request("POST", "http://h/v1/stream/x?offset=-1", content=b"[1]")
    response = asyncio.run(asgi_call(app, request, {"Producer-Id": "p"}))
    assert response.status == 201
    assert response.headers == {"stream-next-offset": "7", "vary": "a, b"}
    assert response.content == b"[1]!"


def test_a_caller_that_goes_away_disconnects_the_app_and_does_not_cancel_it() -> None:
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        try:
            await asyncio.sleep(0.05)  # a commit under way, say
            seen.append("finished its work")
            assert (await receive())["type"] == "http.disconnect"
            seen.append("saw the disconnect")
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def scenario() -> None:
        call = asyncio.ensure_future(asgi_call(app, Request("GET", "http://h/x"), {}))
        await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.sleep(0.1)

    asyncio.run(scenario())
    assert seen == ["finished its work", "saw the disconnect"]


def test_an_app_that_fails_or_answers_nothing_is_a_network_error() -> None:
    async def broken(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    async def silent(scope: dict[str, Any], receive: Any, send: Any) -> None:
        return None

    for app in (broken, silent):
        with pytest.raises(StreamNetworkError):
            asyncio.run(asgi_call(app, Request("GET", "http://h/x"), {}))


registry = WorkflowRegistry()


async def where(_: int) -> str:
    return threading.current_thread().name


@registry.workflow("where")
async def where_flow(ctx: Context, start: Any) -> dict[str, Any]:
    name = await ctx.step("where", where, 1)
    answer = await ctx.request_input("go", schema={"type": "integer"})
    return {"thread": name, "answer": answer}


def test_dwf_serve_runs_its_worker_on_the_server_loop_without_http() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = ServeApp(base, registry, namespace="bridge")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="serving")
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert isinstance(app.worker, LoopWorker)
        worker = app.worker.worker
        assert worker is not None
        ns = f"{base}/v1/stream/bridge"
        run_id = unique("run")
        with httpx.Client(timeout=10) as http:
            start = {
                "type": "start",
                "key": run_id,
                "value": {"run_id": run_id, "workflow": "where", "input": None},
                "headers": {"operation": "insert"},
            }
            assert http.post(f"{ns}/index", json=start).status_code in (200, 204)
            history = f"{ns}/runs/{run_id}/history"

            def messages() -> list[Any]:
                reply = http.get(history, params={"offset": "-1"})
                return list(reply.json()) if reply.status_code == 200 else []

            while not any(m["type"] == "input" for m in messages()):
                assert time.monotonic() < deadline + 10, messages()
                time.sleep(0.02)
            answer = {
                "type": "submission",
                "key": "s1",
                "value": {"submission_id": "s1", "request": "go", "value": 5},
                "headers": {"operation": "insert"},
            }
            assert http.post(f"{ns}/runs/{run_id}/inbox", json=answer).status_code in (200, 204)
            while http.get(history).headers.get("stream-closed") != "true":
                assert time.monotonic() < deadline + 20, messages()
                time.sleep(0.02)
            run = [m for m in messages() if m["type"] == "run"][-1]["value"]
        # An async body runs on the loop that serves HTTP: one loop, no worker thread.
        assert run["status"] == "completed", run
        assert run["output"] == {"thread": "serving", "answer": 5}
        assert isinstance(worker.io.client, BridgedStreamClient)
    finally:
        server.should_exit = True
        thread.join(10)
