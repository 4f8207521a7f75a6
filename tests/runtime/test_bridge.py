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
from durable_workflows.engine.bridge import (
    BridgedStreamClient,
    LoopBridge,
    asgi_call,
    create_chained,
    stream_client,
)
from durable_workflows.engine.worker import Worker
from durable_workflows.streams import (
    StreamConfigConflict,
    StreamError,
    StreamNetworkError,
    StreamNotFound,
)
from durable_workflows.streams.client._core import Request
from durable_workflows.streams.server import StreamsApp
from durable_workflows.streams.server.core import StreamCore
from durable_workflows.streams.server.storage import MemoryStorage
from tests.streams.test_server_core import FlakyStorage

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
        made = [c for c in commits if inbox in c[0] or history in c[0]]
        assert made[0] == ([inbox, history], [history]), commits
        assert [m["type"] for m in items[:2]] == ["run", "step"], items
        assert items[0]["value"]["status"] == "running"


def test_dwf_serve_s_worker_is_told_of_each_wake_and_never_reads_the_wake_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stream server tells its in-process worker of each wake it starts, and the
    worker claims it at once: it follows no wake stream (one live read and one answer
    fewer per wake), and new runs and answers are still served."""
    followed: list[Any] = []

    async def follow(self: Worker, pull: Any) -> None:
        followed.append(pull)

    monkeypatch.setattr(Worker, "_follow_wakes", follow)
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
        assert app.worker.worker.stats.ended >= 3
    assert followed == []


def test_dwf_serve_s_worker_claims_again_when_a_claim_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No wake event comes to the in-process worker, so a claim that fails (a storage
    error, say) is tried again by the worker itself, and the new run is still served."""
    from durable_workflows.engine import pullwake
    from durable_workflows.engine import worker as worker_module

    monkeypatch.setattr(worker_module, "RETRY_SECONDS", 0.2)
    real_claim = pullwake.PullWake.claim
    failed: list[int] = []

    async def claim_failing_once(self: Any) -> Any:
        if not failed:
            failed.append(1)
            raise StreamError("claim failed: storage error")
        return await real_claim(self)

    with serving() as (app, ns), httpx.Client(timeout=10) as http:
        assert isinstance(app.worker, LoopWorker) and app.worker.worker is not None
        wait = time.monotonic() + 10
        while not app.worker.worker.ready.is_set():
            assert time.monotonic() < wait, "the worker never started"
            time.sleep(0.02)
        time.sleep(0.2)  # the claim of the start-up has been made
        monkeypatch.setattr(pullwake.PullWake, "claim", claim_failing_once)
        run_id = request_run(http, ns, "one-step")
        items = _history_of(http, ns, run_id, time.monotonic() + 10)
        assert [m["value"]["output"] for m in items if m["type"] == "run"][-1] == 1
    assert failed == [1]


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


# ---------------------------------------------------------------------- chained creation


def _chained(storage: MemoryStorage, before: Any = None) -> tuple[Any, Any]:
    """``create_chained`` of ``a`` then ``b`` (body [1, 2]) on a server over ``storage``,
    after ``before(client)``; its answers (or the error it raised) and what ``b`` holds."""
    app = StreamsApp(StreamCore(storage, time.time))

    async def scenario() -> tuple[Any, Any]:
        bridge = LoopBridge(app, asyncio.get_running_loop())
        async with httpx.AsyncClient(transport=bridge, base_url="http://h") as http:
            client = stream_client(http, bridge, headers=None)
            a = client.stream("http://h/v1/stream/a", content_type="application/json")
            b = client.stream("http://h/v1/stream/b", content_type="application/json")
            if before is not None:
                await before(client)
            try:
                made: Any = await create_chained(client, a, b, [1, 2])
            except Exception as exc:
                made = exc
            try:
                held: Any = (await b.read()).items
            except Exception as exc:
                held = exc
            return made, held

    return asyncio.run(scenario())


def test_chained_creation_stores_the_body_when_the_first_is_new_in_one_commit() -> None:
    storage = MemoryStorage()
    made, held = _chained(storage)
    assert [m.created for m in made] == [True, True]
    assert held == [1, 2]
    assert storage.commits == 1


def test_chained_creation_stores_nothing_when_the_first_was_there() -> None:
    async def there(client: Any) -> None:
        a = client.stream("http://h/v1/stream/a", content_type="application/json")
        await a.create_json([{"kept": "cancel"}])

    made, held = _chained(MemoryStorage(), there)
    assert [m.created for m in made] == [False, True]
    assert held == []  # created, empty: the body was decided without what "a" holds


def test_chained_creation_creates_nothing_when_the_first_is_refused() -> None:
    async def other_kind(client: Any) -> None:
        await client.stream("http://h/v1/stream/a", content_type="text/plain").create()

    made, held = _chained(MemoryStorage(), other_kind)
    assert isinstance(made, StreamConfigConflict), made  # the first PUT's 409
    assert isinstance(held, StreamNotFound), held


def test_chained_creation_after_a_failed_group_commit_rests_on_the_retry() -> None:
    """The shared commit fails and each PUT is tried alone (run_batch): the chained one
    stores its body only if the first's own retry was committed."""
    made, held = _chained(FlakyStorage(lambda paths: "a" in paths))  # "a" never commits
    assert isinstance(made, Exception) and not isinstance(made, AssertionError), made
    assert isinstance(held, StreamNotFound), held

    calls: list[list[str]] = []

    def first_batch_only(paths: list[str]) -> bool:
        calls.append(paths)
        return len(calls) == 1

    made, held = _chained(FlakyStorage(first_batch_only))
    assert [m.created for m in made] == [True, True] and held == [1, 2]
    assert calls[0] == ["a", "b"] and len(calls) == 3, calls


def test_chained_creation_is_not_sent_over_http() -> None:
    async def scenario() -> Any:
        async with httpx.AsyncClient(base_url="http://127.0.0.1:9") as http:
            client = stream_client(http, None, headers=None)
            a = client.stream("http://127.0.0.1:9/v1/stream/a")
            return await create_chained(client, a, a, [1])

    assert asyncio.run(scenario()) is None
