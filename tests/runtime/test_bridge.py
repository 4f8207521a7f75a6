"""``dwf serve``'s engine on its own server's event loop (engine/bridge.py, app.py).

- :func:`asgi_call` answers as uvicorn would: status, headers, body; a caller that goes
  away is a dropped connection to the app (``http.disconnect``), never a cancellation in
  the middle of its work; an app that fails is a network error to the stream client.
- ``dwf serve``'s worker runs on the server's loop, and its requests reach the app
  without HTTP; a run goes from request to end that way.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from durable_workflows.core import Context, WorkflowRegistry
from durable_workflows.engine.app import LoopWorker, ServeApp
from durable_workflows.engine.bridge import BridgedStreamClient, asgi_call
from durable_workflows.engine.worker import Worker
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


@contextlib.contextmanager
def serving() -> Iterator[tuple[ServeApp, str]]:
    """``dwf serve``'s app behind uvicorn on a free port, in a thread named "serving"."""
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
        yield app, f"{base}/v1/stream/bridge"
    finally:
        server.should_exit = True
        thread.join(10)


def request_run(http: httpx.Client, ns: str, workflow: str) -> str:
    run_id = unique("run")
    start = {
        "type": "start",
        "key": run_id,
        "value": {"run_id": run_id, "workflow": workflow, "input": None},
        "headers": {"operation": "insert"},
    }
    assert http.post(f"{ns}/index", json=start).status_code in (200, 204)
    return run_id


def test_dwf_serve_runs_its_worker_on_the_server_loop_without_http() -> None:
    with serving() as (app, ns):
        deadline = time.monotonic() + 10
        assert isinstance(app.worker, LoopWorker)
        worker = app.worker.worker
        assert worker is not None
        with httpx.Client(timeout=10) as http:
            run_id = request_run(http, ns, "where")
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


def _history_of(http: httpx.Client, ns: str, run_id: str, deadline: float) -> list[Any]:
    """The run's history once it has ended."""
    history = f"{ns}/runs/{run_id}/history"
    while http.get(history).headers.get("stream-closed") != "true":
        assert time.monotonic() < deadline, f"{run_id} did not end"
        time.sleep(0.02)
    return list(http.get(history, params={"offset": "-1"}).json())


@registry.workflow("one-step")
async def one_step(ctx: Context, start: Any) -> int:
    return int(await ctx.step("one", lambda: 1))


def test_a_new_run_s_history_is_created_holding_its_first_append() -> None:
    """MODEL-016 and FENCE-001 over the in-process transport: the inbox is created,
    then the history, in one transaction holding run-started and the step's start (one
    request and one commit fewer than creating it empty and appending)."""
    with serving() as (app, ns):
        core = app.streams.core
        commits: list[tuple[list[str], list[str]]] = []  # (streams installed, records)
        real_commit = core.commit

        def recording(tx: Any) -> None:
            commits.append(([p for p, _ in tx.installs()], [p for p, _ in tx.writes()[1]]))
            real_commit(tx)

        core.commit = recording  # type: ignore[method-assign]
        with httpx.Client(timeout=10) as http:
            run_id = request_run(http, ns, "one-step")
            items = _history_of(http, ns, run_id, time.monotonic() + 20)
        assert [m["value"]["status"] for m in items if m["type"] == "run"][-1] == "completed"
        inbox, history = f"bridge/runs/{run_id}/inbox", f"bridge/runs/{run_id}/history"
        at = next(i for i, (paths, _) in enumerate(commits) if inbox in paths)
        made = next(i for i, (paths, _) in enumerate(commits) if history in paths)
        assert commits[at] == ([inbox], []) and made > at, commits
        assert commits[made][0] == [history] and set(commits[made][1]) == {history}, commits
        assert [m["type"] for m in items[:2]] == ["run", "step"], items
        assert items[0]["value"]["status"] == "running"


def test_dwf_serve_s_worker_claims_on_the_append_without_the_wake_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The in-process worker is told of each append and claims the wake at once; with
    every wake event ignored, new runs are still served."""
    monkeypatch.setattr(Worker, "_unclaimed", lambda self, pull, event: None)
    with serving() as (app, ns), httpx.Client(timeout=10) as http:
        assert isinstance(app.worker, LoopWorker) and app.worker.worker is not None
        wait = time.monotonic() + 10
        while app.worker.worker._pull is None:
            assert time.monotonic() < wait, "no subscription"
            time.sleep(0.02)
        for _ in range(3):
            run_id = request_run(http, ns, "one-step")
            items = _history_of(http, ns, run_id, time.monotonic() + 20)
            assert [m["value"]["output"] for m in items if m["type"] == "run"][-1] == 1


def test_the_worker_s_stream_requests_skip_the_router_and_nothing_else() -> None:
    """Requests under the stream root go straight to the stream app (the one the
    router's Mount would pick: same credentials, limits and answers); anything else,
    such as the wake route, still goes through the whole app."""
    app = ServeApp("http://127.0.0.1:1", registry, namespace="bridge")
    assert app.bridge is not None
    assert app.bridge.app_for("/v1/stream/bridge/runs/r/history") is app.streams
    assert app.bridge.app_for("/v1/stream/__ds/subscriptions/s/claim") is app.streams
    assert app.bridge.app_for("/wake") is app
    assert app.bridge.app_for("/v1/streamless") is app
