"""What the engine sends to the stream server, request by request.

The runner, the fenced writer and the request-driven handler talk to an in-process
stream server (our ``StreamsApp`` on memory storage) through a transport that records
every request, can slow answers down and can fail them. The tests read the requests
off that record: how streams are created (FENCE-001, MODEL-003, MODEL-004, MODEL-011),
how appends are sent (FENCE-007, FENCE-008, FENCE-015), what the engine stamps on
messages (EVT-044), how running bodies are stopped (RETRY-017, CANCEL-007, CANCEL-011)
and what a plain wake answers (WAKE-011, WAKE-014).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest

from durable_workflows.core import Context, StepFailed, WorkflowRegistry
from durable_workflows.engine import runner as runner_module
from durable_workflows.engine.bridge import LoopBridge, stream_client
from durable_workflows.engine.handler import WakeHandler
from durable_workflows.engine.namespace import Namespace, NamespaceIO
from durable_workflows.engine.runner import ActivationOutcome, Runner
from durable_workflows.engine.writer import Fenced, FencedWriter
from durable_workflows.schemas import identify
from durable_workflows.streams import AsyncStreamClient
from durable_workflows.streams.server import StreamsApp
from durable_workflows.streams.server.core import StreamCore
from durable_workflows.streams.server.storage import MemoryStorage

from .engine_support import cancel, unique

T = TypeVar("T")

NS_URL = "http://streams.test/v1/stream/requests"
#: Creation headers of Durable Streams other than Content-Type (PROTOCOL.md 5.1).
CREATION_HEADERS = ("stream-ttl", "stream-expires-at", "stream-closed", "stream-forked-from")


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None
    started: float = 0.0
    answered: float | None = None


@dataclass
class Recorder(httpx.AsyncBaseTransport):
    """Records every request to an in-process stream server; ``delay`` slows down
    history appends, ``fail_history_posts`` answers them with a connection error."""

    app: StreamsApp
    delay: float = 0.0
    fail_history_posts: bool = False
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    def __post_init__(self) -> None:
        self.inner = httpx.ASGITransport(app=self.app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        seen = Seen(
            request.method,
            request.url.path,
            {k.lower(): v for k, v in request.headers.items()},
            body,
            started=time.monotonic(),
        )
        self.seen.append(seen)
        history_post = request.method == "POST" and request.url.path.endswith("/history")
        if history_post:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if history_post and self.delay:
                await asyncio.sleep(self.delay)
            if history_post and self.fail_history_posts:
                raise httpx.ConnectError("the stream server is unreachable", request=request)
            response = await self.inner.handle_async_request(request)
            seen.status = response.status_code
            return response
        finally:
            seen.answered = time.monotonic()
            if history_post:
                self.in_flight -= 1

    def to(self, suffix: str, method: str | None = None) -> list[Seen]:
        return [
            s
            for s in self.seen
            if s.path.endswith(suffix) and (method is None or s.method == method)
        ]


def new_server() -> Recorder:
    return Recorder(StreamsApp(StreamCore(MemoryStorage(), time.time)))


def io_over(recorder: Recorder) -> tuple[NamespaceIO, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=recorder)
    return NamespaceIO(Namespace(f"{NS_URL}-{uuid.uuid4().hex[:8]}"), AsyncStreamClient(
        timeout=10, http=http
    )), http  # fmt: skip


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(make())  # type: ignore[arg-type]


def request_message(run_id: str, workflow: str, value: Any = None) -> dict[str, Any]:
    return {
        "type": "start",
        "key": run_id,
        "value": {"run_id": run_id, "workflow": workflow, "input": value},
        "headers": {"operation": "insert"},
    }


async def request_run(io: NamespaceIO, run_id: str, workflow: str, value: Any = None) -> None:
    await io.ensure_index()
    await io.index().append_json(request_message(run_id, workflow, value))


async def history_of(io: NamespaceIO, run_id: str) -> list[Any]:
    read = await io.read_history(run_id)
    return [] if read is None else list(read.items)


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# ---------------------------------------------------------------------- workflows

registry = WorkflowRegistry()
STOPPED: dict[str, str] = {}
BEGAN: dict[str, asyncio.Event] = {}


def plus_one(x: int) -> int:
    return x + 1


@registry.workflow("two-steps")
async def two_steps(ctx: Context, start: Any) -> int:
    a = await ctx.step("a", plus_one, 1)
    await ctx.sleep("pause", timedelta(minutes=1))
    return await ctx.step("b", plus_one, a)


@registry.workflow("ask")
async def ask(ctx: Context, start: Any) -> Any:
    return await ctx.request_input("q", schema=True)


async def hang(tag: str) -> str:
    if tag in BEGAN:
        BEGAN[tag].set()
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        STOPPED[tag] = "cancelled"
        raise
    STOPPED[tag] = "finished"
    return "done"


@registry.workflow("hang-with-timeout")
async def hang_with_timeout(ctx: Context, tag: str) -> str:
    try:
        return await ctx.step("hang", hang, tag, retry=1, timeout=timedelta(milliseconds=100))
    except StepFailed as exc:
        return exc.error_type


@registry.workflow("hang-then-step")
async def hang_then_step(ctx: Context, tag: str) -> str:
    await ctx.step("hang", hang, tag, retry=1)
    return await ctx.step("after", plus_one, 1)


# ---------------------------------------------------------------------- creation


@pytest.mark.req("FENCE-001", "MODEL-003", "MODEL-004", "MODEL-016")
def test_streams_are_created_by_a_bare_put_and_history_only_grows_by_fenced_appends() -> None:
    recorder = new_server()

    async def scenario() -> list[Any]:
        io, http = io_over(recorder)
        async with http:
            run_id = unique("run")
            await request_run(io, run_id, "two-steps")
            runner = Runner(io, registry, worker="t")
            first = await runner.activate(run_id)
            assert first.kind == "suspended", first
            runner.clock = lambda: datetime.now(UTC) + timedelta(minutes=2)
            second = await runner.activate(run_id)
            assert second.kind == "ended", second
            runner.close()
            for stream in (io.index(), io.inbox(run_id), io.history(run_id)):
                info = await stream.head()
                assert (info.content_type or "").startswith("application/json"), info
                assert info.ttl is None and info.expires_at is None, info
            return await history_of(io, run_id)

    history = run_async(scenario)
    # MODEL-003: every message of the history is a change message of a history event.
    for message in history:
        identify(message, "history")
    # MODEL-004: every creation is PUT, application/json, no other creation header, no
    # body but the history's, which is the run's first append (FENCE-001).
    puts = [s for s in recorder.seen if s.method == "PUT"]
    # (the run-status stream too: MODEL-040, created when the first row finds it missing)
    assert {p.path.rsplit("/", 1)[-1] for p in puts} == {"index", "inbox", "history", "status"}
    for put in puts:
        assert put.headers.get("content-type", "").startswith("application/json"), put
        assert put.body == b"" or put.path.endswith("/history"), put
        assert not [h for h in CREATION_HEADERS if h in put.headers], put
    # FENCE-001: the history is created holding the run's first append, run-started first
    # (MODEL-016), and grows only by appends whose Stream-Seq is its message count, or by
    # a close-only POST.
    history_requests = [s for s in recorder.seen if s.path.endswith("/history")]
    writes = [s for s in history_requests if s.method in ("PUT", "POST")]
    assert (writes[0].method, writes[0].status) == ("PUT", 201), writes[0]
    first = json.loads(writes[0].body)
    assert first == history[: len(first)] and first[0]["type"] == "run", first
    assert "stream-seq" not in writes[0].headers and "producer-id" not in writes[0].headers
    count = len(first)
    for post in [s for s in writes[1:] if s.method == "POST"]:
        if post.body:
            assert post.headers.get("stream-seq") == f"{count:016d}", post
            count += len(json.loads(post.body))
        else:
            assert post.headers.get("stream-closed") == "true", post
            assert "stream-seq" not in post.headers and "producer-id" not in post.headers
    assert [s.method for s in writes[1:]].count("PUT") == 0, "the history is created once"
    assert count == len(history)


@pytest.mark.req("MODEL-011")
def test_the_index_is_created_before_the_engine_reads_it() -> None:
    recorder = new_server()

    async def scenario() -> ActivationOutcome:
        io, http = io_over(recorder)
        async with http:
            runner = Runner(io, registry, worker="t")
            outcome = await runner.activate(unique("nobody"))
            runner.close()
            info = await io.index().head()
            assert (info.content_type or "").startswith("application/json")
            return outcome

    assert run_async(scenario).kind == "absent"
    index = recorder.to("/index")
    assert [s.method for s in index[:2]] == ["PUT", "GET"], [s.method for s in index]


@pytest.mark.req("MODEL-004", "WAKE-014")
def test_a_conflicting_creation_is_reported_not_taken_for_a_fence() -> None:
    recorder = new_server()

    async def scenario() -> tuple[int, dict[str, Any], list[Any]]:
        io, http = io_over(recorder)
        async with http:
            run_id = unique("run")
            await request_run(io, run_id, "ask")
            # Someone created the inbox with another configuration: the engine's PUT is 409.
            response = await http.put(
                io.namespace.inbox_url(run_id), headers={"Content-Type": "text/plain"}
            )
            assert response.status_code == 201
            handler = await started_handler(io)
            try:
                status, body = await handler.wake_request(json.dumps({"run_id": run_id}).encode())
            finally:
                await handler.stop()
            return status, body, await history_of(io, run_id)

    status, body, history = run_async(scenario)
    assert status >= 500, (status, body)
    assert history == [], "the engine went no further than the refused creation"
    inbox_puts = [s for s in recorder.to("/inbox", "PUT")]
    assert inbox_puts[-1].status == 409


# ---------------------------------------------------------------------- appends


def _msg(n: int) -> dict[str, Any]:
    return {"type": "record", "key": f"m{n}", "value": {"n": n}, "headers": {"operation": "insert"}}


@pytest.mark.req("FENCE-008")
def test_an_activation_has_at_most_one_append_in_flight() -> None:
    recorder = new_server()
    recorder.delay = 0.05

    async def scenario() -> list[Any]:
        io, http = io_over(recorder)
        async with http:
            await io.create_history("r1")
            writer = FencedWriter(io.history("r1"), 0, worker="t")
            await asyncio.gather(*(writer.append([_msg(i)]) for i in range(4)))
            return await history_of(io, "r1")

    history = run_async(scenario)
    assert len(history) == 4
    assert recorder.most_in_flight == 1, f"{recorder.most_in_flight} appends were in flight"
    posts = recorder.to("/history", "POST")
    for earlier, later in itertools.pairwise(posts):
        assert earlier.answered is not None and later.started >= earlier.answered


@pytest.mark.req("FENCE-007")
def test_each_activation_has_its_own_random_producer_id() -> None:
    recorder = new_server()

    async def scenario() -> list[str]:
        io, http = io_over(recorder)
        async with http:
            await io.create_history("r1")
            ids = []
            for position in range(3):
                writer = FencedWriter(io.history("r1"), position, worker="reader-name")
                await writer.append([_msg(position)])
                ids.append(writer.producer_id)
            return ids

    ids = run_async(scenario)
    assert len(set(ids)) == 3
    for producer_id in ids:
        prefix, _, rest = producer_id.partition("-")
        assert prefix == "reader" and uuid.UUID(rest.split("-", 1)[1]).version == 4, producer_id
    sent = [s.headers.get("producer-id") for s in recorder.to("/history", "POST")]
    assert sent == ids


@pytest.mark.req("FENCE-015")
def test_giving_up_on_an_unknown_outcome_ends_the_activation_as_fenced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = new_server()
    quick = functools.partial(FencedWriter, max_attempts=3, retry_delay=0.001)
    monkeypatch.setattr(runner_module, "FencedWriter", quick)

    async def scenario() -> tuple[ActivationOutcome, int, Fenced | None, int]:
        io, http = io_over(recorder)
        async with http:
            run_id = unique("run")
            await request_run(io, run_id, "two-steps")
            recorder.fail_history_posts = True
            runner = Runner(io, registry, worker="t")
            outcome = await runner.activate(run_id)
            runner.close()
            sent = len(recorder.seen)
            # A writer that gave up refuses everything after, sending nothing.
            await io.create_history("other")
            refused: Fenced | None = None
            lost = quick(io.history("other"), 0, worker="t")
            try:
                await lost.append([_msg(1)])
            except Fenced as exc:
                refused = exc
            tried = len(recorder.to("/other/history", "POST"))
            with pytest.raises(Fenced):
                await lost.append([_msg(2)])
            return outcome, sent, refused, tried

    outcome, sent, refused, tried = run_async(scenario)
    assert outcome.kind == "fenced", outcome
    last_post = max(i for i, s in enumerate(recorder.seen[:sent]) if s.method == "POST")
    assert last_post == sent - 1, "the activation sent nothing after it gave up"
    assert refused is not None
    assert len(recorder.to("/other/history", "POST")) == tried, "nothing sent once given up"


# ---------------------------------------------------------------------- timestamps


@pytest.mark.req("EVT-044")
def test_step_started_at_is_the_clock_reading_when_it_is_recorded() -> None:
    recorder = new_server()
    t0 = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)
    t1 = t0 + timedelta(minutes=1, seconds=7)

    async def scenario() -> list[Any]:
        io, http = io_over(recorder)
        async with http:
            run_id = unique("run")
            await request_run(io, run_id, "two-steps")
            now = [t0]
            runner = Runner(io, registry, worker="t", clock=lambda: now[0])
            assert (await runner.activate(run_id)).kind == "suspended"
            now[0] = t1
            assert (await runner.activate(run_id)).kind == "ended"
            runner.close()
            return await history_of(io, run_id)

    history = run_async(scenario)
    started = {
        m["key"]: parse(m["value"]["started_at"])
        for m in history
        if m["type"] == "step" and m["headers"]["operation"] == "insert"
    }
    assert started == {"a": t0, "b": t1}


# ---------------------------------------------------------------------- stopping bodies


@pytest.mark.req("RETRY-017")
def test_a_timed_out_async_body_is_cancelled() -> None:
    recorder = new_server()
    tag = unique("timeout")

    async def scenario() -> list[Any]:
        io, http = io_over(recorder)
        async with http:
            run_id = unique("run")
            await request_run(io, run_id, "hang-with-timeout", tag)
            runner = Runner(io, registry, worker="t")
            assert (await runner.activate(run_id)).kind == "ended"
            runner.close()
            return await history_of(io, run_id)

    history = run_async(scenario)
    run = [m for m in history if m["type"] == "run"][-1]["value"]
    assert run["output"] == "StepTimeout"
    assert STOPPED.get(tag) == "cancelled", "the body was asked to stop when its attempt timed out"


@pytest.mark.req("CANCEL-007", "CANCEL-011")
def test_a_cancel_stops_a_running_body_before_the_next_step() -> None:
    recorder = new_server()
    tag = unique("cancel")

    async def scenario() -> tuple[list[Any], float]:
        io, http = io_over(recorder)
        async with http:
            run_id = unique("run")
            await request_run(io, run_id, "hang-then-step", tag)
            runner = Runner(io, registry, worker="t")
            began = time.monotonic()
            BEGAN[tag] = asyncio.Event()
            activation = asyncio.ensure_future(runner.activate(run_id))
            await asyncio.wait_for(BEGAN[tag].wait(), 10)  # the body of "hang" runs now
            await io.inbox(run_id).append_json(cancel("c-1", "stop"))
            outcome = await asyncio.wait_for(activation, 10)
            took = time.monotonic() - began
            runner.close()
            assert outcome.kind == "ended", outcome
            return await history_of(io, run_id), took

    history, took = run_async(scenario)
    run = [m for m in history if m["type"] == "run"][-1]["value"]
    assert run["status"] == "cancelled"
    # The cancel was read while the body ran (the body alone would take 30 s) ...
    assert took < 5, f"the cancel took {took:.1f} s to act"
    # ... no step body started after it, and the running body was asked to stop.
    assert "after" not in {m["key"] for m in history if m["type"] == "step"}
    assert STOPPED.get(tag) == "cancelled"


# ---------------------------------------------------------------------- plain wakes


async def started_handler(io: NamespaceIO) -> WakeHandler:
    handler = WakeHandler(io.namespace.url, registry, name="h")
    await handler.start()
    handler.io = io
    handler.runner = Runner(io, registry, worker="h")
    return handler


@pytest.mark.req("WAKE-011", "WAKE-014")
def test_a_plain_wake_answers_after_every_append_is_acknowledged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    quick = functools.partial(FencedWriter, max_attempts=3, retry_delay=0.001)
    monkeypatch.setattr(runner_module, "FencedWriter", quick)
    recorder = new_server()
    recorder.delay = 0.02

    async def scenario() -> None:
        io, http = io_over(recorder)
        async with http:
            handler = await started_handler(io)
            try:
                for body in (b"not json", b"[1]", b'{"run": "x"}', b'{"run_id": 5}'):
                    status, _ = await handler.wake_request(body)
                    assert status == 400, body
                status, _ = await handler.wake_request(b'{"run_id": "never-requested"}')
                assert status == 404
                run_id = unique("run")
                await request_run(io, run_id, "two-steps")
                status, answer = await handler.wake_request(json.dumps({"run_id": run_id}).encode())
                assert status == 200, answer
                # Every append the activation sent has been answered with a success, and
                # the history holds what it appended.
                posts = recorder.to(f"/{run_id}/history", "POST")
                assert posts and recorder.in_flight == 0
                assert all(p.status is not None and 200 <= p.status < 300 for p in posts)
                history = await history_of(io, run_id)
                assert history[-1]["value"]["status"] == "sleeping", history[-1]
                # An activation whose appends fail is not a success: the waker wakes again.
                other = unique("run")
                await request_run(io, other, "two-steps")
                recorder.fail_history_posts = True
                status, answer = await handler.wake_request(json.dumps({"run_id": other}).encode())
                assert status >= 500, (status, answer)
            finally:
                await handler.stop()

    run_async(scenario)


# ---------------------------------------------------------------------- new runs


@pytest.mark.req("FENCE-001", "FENCE-003", "MODEL-016")
def test_a_fresh_run_is_created_without_a_read_and_a_wrong_hint_still_replays() -> None:
    """``fresh``: the worker saw the request arrive, so the streams are created first,
    the history holding the run's first append (no read that finds nothing); when they
    existed after all, the engine reads the history and builds on what is there, as
    without the hint."""
    recorder = new_server()

    async def scenario() -> tuple[list[Any], list[Seen]]:
        io, http = io_over(recorder)
        async with http:
            run_id = unique("run")
            await request_run(io, run_id, "ask")
            request = request_message(run_id, "ask")
            first = Runner(io, registry, worker="first")
            assert (await first.activate(run_id, request, fresh=True)).kind == "suspended"
            first.close()
            mark = len(recorder.seen)
            # A second worker told the same (its hint is wrong now): it must not start the
            # run again.
            second = Runner(io, registry, worker="second")
            assert (await second.activate(run_id, request, fresh=True)).kind == "suspended"
            second.close()
            return await history_of(io, run_id), recorder.seen[mark:]

    history, later = run_async(scenario)
    first_history = recorder.to("/history")[0]
    assert (first_history.method, first_history.status) == ("PUT", 201), first_history
    inbox_put = recorder.to("/inbox", "PUT")[0]
    assert recorder.seen.index(inbox_put) < recorder.seen.index(first_history)  # MODEL-016
    again = [s for s in later if s.path.endswith("/history")]
    assert [(s.method, s.status) for s in again[:2]] == [("PUT", 200), ("GET", 200)], again
    # Its inbox PUT found the inbox (200), so its history PUT carried nothing (FENCE-001).
    assert next((s.method, s.status) for s in later if s.path.endswith("/inbox")) == ("PUT", 200)
    assert again[0].body == b"", again[0]
    starts = [m for m in history if m["type"] == "run" and m["headers"]["operation"] == "insert"]
    assert len(starts) == 1, history
    assert not [s for s in later if s.method == "POST" and s.path.endswith("/history")]


@pytest.mark.req("MODEL-016", "MODEL-017", "FENCE-023", "SEC-029", "SEC-030")
def test_in_process_a_forged_history_is_left_though_the_run_is_new() -> None:
    """Over the in-process transport, told a run is new when a forged history is there
    already (no ``Stream-Seq`` of its own): the runner's PUT, which carries its
    run-started, stores nothing (200); it reads the history, finds it untrusted and
    appends nothing."""
    app = StreamsApp(StreamCore(MemoryStorage(), time.time))

    async def scenario() -> tuple[str, list[Any], list[Any]]:
        bridge = LoopBridge(app, asyncio.get_running_loop())
        async with httpx.AsyncClient(transport=bridge) as http:
            client = stream_client(http, bridge, headers=None)
            io = NamespaceIO(Namespace(f"{NS_URL}-{uuid.uuid4().hex[:8]}"), client)
            runner = Runner(io, registry, worker="first")
            forged_id = unique("run")
            forged = request_message(forged_id, "ask", "not what was asked")
            await io.history(forged_id).create_json()
            await io.history(forged_id).append_json(
                {**forged, "type": "run", "value": {**forged["value"], "status": "running"}}
            )
            await request_run(io, forged_id, "ask")
            outcome = await runner.activate(
                forged_id, request_message(forged_id, "ask"), fresh=True
            )
            runner.close()
            inbox = await io.read_inbox(forged_id)
            return outcome.kind, await history_of(io, forged_id), inbox.items if inbox else []

    kind, forged_history, inbox = run_async(scenario)
    assert kind == "untrusted"
    assert len(forged_history) == 1, forged_history  # nothing stored in it
    assert inbox == []


@pytest.mark.req("MODEL-016", "FENCE-001", "CANCEL-012", "INPUT-021")
@pytest.mark.parametrize("kept", ["cancel", "submission"])
def test_an_inbox_there_before_the_run_is_read_before_the_first_append(kept: str) -> None:
    """A worker stopped between creating a run's inbox and its history, and a client
    appended to the inbox meanwhile. The next worker's first append was decided
    without that inbox, so its history is created empty instead of holding it; the run
    is read and replayed, and decides what the inbox holds first: a kept cancel ends
    it with no step body run (CANCEL-012), a kept answer is taken without the run
    suspending (INPUT-021)."""
    recorder = new_server()

    async def scenario() -> tuple[ActivationOutcome, list[Any]]:
        io, http = io_over(recorder)
        async with http:
            run_id = unique("run")
            await request_run(io, run_id, "two-steps" if kept == "cancel" else "ask")
            await io.ensure_inbox(run_id)  # the worker that stopped
            await io.inbox(run_id).append_json(_kept(kept))
            runner = Runner(io, registry, worker="next")
            name = "two-steps" if kept == "cancel" else "ask"
            outcome = await runner.activate(run_id, request_message(run_id, name), fresh=True)
            runner.close()
            return outcome, await history_of(io, run_id)

    outcome, history = run_async(scenario)
    puts = [s for s in recorder.seen if s.method == "PUT" and s.path.endswith("/history")]
    assert [(p.status, p.body) for p in puts] == [(201, b"")], puts
    _decided_what_the_inbox_held(kept, outcome, history)


@pytest.mark.req("MODEL-016", "FENCE-001", "CANCEL-012", "INPUT-021")
@pytest.mark.parametrize("kept", ["cancel", "submission"])
def test_in_process_an_inbox_there_before_the_run_is_read_before_the_first_append(
    kept: str,
) -> None:
    """The same over the in-process transport, where the inbox and the history are
    created in one transaction: the history holds the first append only if that
    transaction made the inbox, so here it is created empty and the run replayed."""
    app = StreamsApp(StreamCore(MemoryStorage(), time.time))

    async def scenario() -> tuple[ActivationOutcome, list[Any]]:
        bridge = LoopBridge(app, asyncio.get_running_loop())
        async with httpx.AsyncClient(transport=bridge) as http:
            client = stream_client(http, bridge, headers=None)
            io = NamespaceIO(Namespace(f"{NS_URL}-{uuid.uuid4().hex[:8]}"), client)
            run_id = unique("run")
            name = "two-steps" if kept == "cancel" else "ask"
            await request_run(io, run_id, name)
            await io.ensure_inbox(run_id)  # the worker that stopped
            await io.inbox(run_id).append_json(_kept(kept))
            runner = Runner(io, registry, worker="next")
            outcome = await runner.activate(run_id, request_message(run_id, name), fresh=True)
            runner.close()
            return outcome, await history_of(io, run_id)

    _decided_what_the_inbox_held(kept, *run_async(scenario))


def _kept(kept: str) -> dict[str, Any]:
    if kept == "cancel":
        return cancel("c-1")
    return {
        "type": "submission",
        "key": "s-1",
        "value": {"submission_id": "s-1", "request": "q", "value": 7},
        "headers": {"operation": "insert"},
    }


def _decided_what_the_inbox_held(kept: str, outcome: ActivationOutcome, history: list[Any]) -> None:
    events = [(m["type"], m["value"].get("status")) for m in history]
    assert outcome.kind == "ended", outcome
    if kept == "cancel":
        assert events == [("run", "running"), ("run", "cancelled")], events
    else:
        assert ("run", "waiting") not in events and events[-1] == ("run", "completed"), events


# ---------------------------------------------------------------------- status rows


def _view(run_id: str, status: str) -> Any:
    from durable_workflows.core.status import StatusView

    run = {
        "run_id": run_id,
        "workflow": "ask",
        "protocol": "1.0",
        "input": None,
        "status": status,
        "started_at": "2026-12-04T00:00:00.000Z",
        "waiting_for": None,
        "output": None,
        "error": None,
        "finished_at": None,
    }
    return StatusView([{"type": "run", "key": run_id, "value": run, "headers": {}}])


@pytest.mark.req("MODEL-043", "MODEL-044")
def test_status_rows_queued_together_share_an_append_and_a_lost_one_is_written_again() -> None:
    from durable_workflows.engine.status import StatusRows
    from durable_workflows.streams import StreamNetworkError

    recorder = new_server()

    async def scenario() -> list[list[Any]]:
        io, http = io_over(recorder)
        async with http:
            rows = StatusRows(io, lambda: datetime.now(UTC))
            await rows.ensure([])
            a, b = unique("a"), unique("b")
            queued = [rows.schedule(_view(a, "running")), rows.schedule(_view(b, "running"))]
            assert rows.schedule(_view(a, "running")) is None, "the same row is not queued twice"
            await asyncio.gather(*[q for q in queued if q is not None])
            # The next append fails: its row is not taken as written, so it goes again.
            real = io.status

            def failing() -> Any:
                stream = real()

                async def refuse(*_: Any, **__: Any) -> Any:
                    raise StreamNetworkError("gone", method="POST", url=stream.url)

                stream.append_json_batch = refuse  # type: ignore[method-assign]
                return stream

            io.status = failing  # type: ignore[method-assign]
            lost = rows.schedule(_view(a, "waiting"))
            assert lost is not None
            with pytest.raises(StreamNetworkError):
                await lost
            io.status = real  # type: ignore[method-assign]
            await rows.publish(_view(a, "waiting"))
            read = await io.status().read()
            return [
                [m["key"] for m in json.loads(p.body)] for p in recorder.to("/status", "POST")
            ] + [[(m["key"], m["value"]["status"]) for m in read.items]]

    *posts, rows_read = run_async(scenario)
    assert len(posts) == 2 and len(posts[0]) == 2, posts  # one append held both rows
    assert [status for _, status in rows_read] == ["running", "running", "waiting"], rows_read


@pytest.mark.req("SEC-029")
def test_a_run_this_runner_started_is_trusted_without_reading_the_index_again() -> None:
    """The history's run-started is the runner's own append at position 0, from the run's
    request; replaying the run later (nothing kept) must not read the whole index to
    check it, which costs time in proportion to the number of runs."""
    recorder = new_server()

    async def scenario() -> tuple[int, str]:
        io, http = io_over(recorder)
        async with http:
            run_id = unique("run")
            await request_run(io, run_id, "ask")
            runner = Runner(io, registry, worker="t")
            runner.sticky_runs = 0
            request = request_message(run_id, "ask")
            assert (await runner.activate(run_id, request, fresh=True)).kind == "suspended"
            mark = len(recorder.seen)
            answer = {
                "type": "submission",
                "key": "s1",
                "value": {"submission_id": "s1", "request": "q", "value": 3},
                "headers": {"operation": "insert"},
            }
            await io.inbox(run_id).append_json(answer)
            outcome = await runner.activate(run_id)  # no request: the worker let it go
            runner.close()
            index_reads = [s for s in recorder.seen[mark:] if s.path.endswith("/index")]
            return len(index_reads), outcome.kind

    index_reads, kind = run_async(scenario)
    assert kind == "ended"
    assert index_reads == 0
