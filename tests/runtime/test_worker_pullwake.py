"""The worker's pull-wake mode (waking.md, pull-wake for worker pools): one
subscription over the index and the inboxes, one live read of the wake stream, a
claim per wake, heartbeats, acknowledgements and release; against our server and
the Node reference server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from durable_workflows.core import Context, WorkflowRegistry
from durable_workflows.engine.app import WorkerThread
from durable_workflows.engine.namespace import Namespace
from durable_workflows.engine.pullwake import PullWake
from durable_workflows.engine.worker import Worker
from durable_workflows.streams import AsyncStreamClient, StreamClient

from .engine_support import (
    SERVER_KINDS,
    Server,
    any_server,
    pending_inputs,
    read_history,
    run_status,
    start,
    submission,
    to_inbox,
    unique,
    wait_until,
)

pytestmark = pytest.mark.peers

registry = WorkflowRegistry()


@registry.workflow("ask")
async def ask(ctx: Context, start: Any) -> Any:
    answer = await ctx.request_input("q", schema={"type": "integer"})
    return answer * 10


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with any_server(request.param) as running:
        yield running


def _thread(ns: str, name: str, **options: Any) -> WorkerThread:
    thread = WorkerThread(ns, registry, name, **options)
    thread.start()
    assert thread.worker is not None
    wait_until(lambda: thread.worker is not None and thread.worker.ready.is_set(), 10, "ready")
    return thread


def _subscription(ns: str) -> dict[str, Any]:
    pull = PullWake(Namespace(ns), AsyncStreamClient(), worker="probe", lease_ttl_ms=10_000)
    with httpx.Client(timeout=10) as http:
        response = http.get(pull.url)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body


def _answer_all(ns: str, runs: list[str]) -> None:
    for i, run_id in enumerate(runs):
        wait_until(lambda r=run_id: "q" in pending_inputs(ns, r), 15, f"{run_id} waits")
        to_inbox(ns, run_id, submission(f"s-{i}", "q", i))
    for i, run_id in enumerate(runs):
        wait_until(lambda r=run_id: read_history(ns, r)[1], 15, f"{run_id} ends")
        items, _ = read_history(ns, run_id)
        assert [m for m in items if m["type"] == "run"][-1]["value"]["output"] == i * 10


@pytest.mark.req("WAKE-025", "WAKE-015", "WAKE-007", "WAKE-008")
def test_waiting_runs_hold_no_live_read_of_their_own(
    server: Server, request: pytest.FixtureRequest
) -> None:
    ns = f"{server.stream_base}/{unique('pw')}"
    thread = _thread(ns, "solo", wake="subscription")
    try:
        worker = thread.worker
        assert worker is not None and worker.subscribed
        runs = [start(ns, "ask", None) for _ in range(6)]
        wait_until(lambda: worker.snapshot()["suspended"] == 6, 15, "six suspended runs")
        assert worker.snapshot()["inbox_follows"] == 0
        relative = Namespace(ns).split_root()[1]
        inboxes = {f"{relative}/runs/{r}/inbox" for r in runs}

        def linked() -> dict[str, Any]:
            return {link["path"]: link for link in _subscription(ns)["streams"]}

        # WAKE-015: the subscription links the index and the inboxes (a pattern link
        # is made by a stream's first append, here an answer no request names yet),
        # never a history.
        for i, run_id in enumerate(runs):
            to_inbox(ns, run_id, submission(f"early-{i}", "later", i))
        wait_until(
            lambda: all(linked().get(i, {}).get("acked_offset", "-1") != "-1" for i in inboxes),
            15,
            "inboxes linked and acked",
        )
        paths = set(linked())
        assert f"{relative}/index" in paths and inboxes <= paths
        assert not any(p.endswith("/history") for p in paths)
        sent = time.monotonic()
        _answer_all(ns, runs)
        assert time.monotonic() - sent < 10
        if request.node.callspec.params["server"] == "embedded":
            # Ended, their inboxes closed and acked: the embedded server drops the links.
            wait_until(lambda: not inboxes & set(linked()), 5, "ended inboxes unlinked")
    finally:
        thread.stop()


def test_the_long_poll_mode_follows_each_inbox(server: Server) -> None:
    """The contrast: without the subscription, one live read per waiting run."""
    ns = f"{server.stream_base}/{unique('lp')}"
    thread = _thread(ns, "solo", wake="long-poll")
    try:
        worker = thread.worker
        assert worker is not None and not worker.subscribed
        runs = [start(ns, "ask", None) for _ in range(3)]
        wait_until(lambda: worker.snapshot()["inbox_follows"] == 3, 15, "three inbox reads")
        _answer_all(ns, runs)
    finally:
        thread.stop()


@pytest.mark.req("WAKE-010", "WAKE-021")
def test_a_pool_divides_the_wakes_and_never_races(server: Server) -> None:
    ns = f"{server.stream_base}/{unique('pool')}"
    first = _thread(ns, "first", wake="subscription")
    second = _thread(ns, "second", wake="subscription")
    try:
        runs = [start(ns, "ask", None) for _ in range(8)]
        _answer_all(ns, runs)
        workers = [t.worker for t in (first, second)]
        assert all(w is not None for w in workers)
        stats = [w.stats for w in workers if w is not None]
        # Each wake went to one claimer: no activation was fenced by the other worker,
        # and the runs took as many activations as one worker alone would need
        # (start, answer, and at most one more per run for a wake that raced its end).
        assert sum(s.fenced for s in stats) == 0
        assert sum(s.activations for s in stats) <= 3 * len(runs)
        assert sum(s.ended for s in stats) == len(runs)
    finally:
        first.stop()
        second.stop()


class _SlowHistoryAppends(httpx.AsyncBaseTransport):
    """Holds every history write of one run for ``seconds`` (a slow server): its
    creation, which holds the run's first append, and its appends."""

    def __init__(self, run_id: str, seconds: float) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.run_id = run_id
        self.seconds = seconds

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method in ("PUT", "POST") and request.url.path.endswith(
            f"/{self.run_id}/history"
        ):
            await asyncio.sleep(self.seconds)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.req("WAKE-022", "WAKE-018")
def test_a_stopping_worker_releases_the_wake_it_holds(server: Server) -> None:
    ns = f"{server.stream_base}/{unique('rel')}"
    slow = unique("slow")
    thread = _thread(ns, "holder", wake="subscription", transport=_SlowHistoryAppends(slow, 4.0))
    try:
        wait_until(lambda: thread.worker is not None and thread.worker.subscribed, 5, "sub")
        start(ns, "ask", None, run_id=slow)
        # The run's first append takes 4 s, so the index wake is held that long.
        wait_until(lambda: _subscription(ns).get("streams") is not None, 5, "subscription")
        time.sleep(1.0)
    finally:
        thread.stop()
    # The held wake was released at shutdown: another worker claims it at once,
    # well before the 10 s lease would have run out; nothing was acknowledged.
    took = time.monotonic()

    async def claim() -> Any:
        async with AsyncStreamClient() as client:
            pull = PullWake(Namespace(ns), client, worker="next", lease_ttl_ms=10_000)
            got = await pull.claim()
            if got is not None:
                await pull.release(got)
            return got

    got = asyncio.run(claim())
    assert got is not None, "the stopped worker kept the wake"
    assert time.monotonic() - took < 2
    assert "index" in {p.path for p in got.pending}


@pytest.mark.req("WAKE-027", "WAKE-028")
def test_a_run_that_cannot_replay_does_not_hold_up_the_others(server: Server) -> None:
    ns = f"{server.stream_base}/{unique('bad')}"
    thread = _thread(ns, "solo", wake="subscription")
    try:
        broken = start(ns, "ask", None)
        wait_until(lambda: "q" in pending_inputs(ns, broken), 15, "broken run waits")
        with StreamClient(timeout=10) as client:  # a history no engine can replay
            history = client.stream(f"{ns}/runs/{broken}/history")
            history.append_json({"type": "nonsense", "key": "x", "value": {}})
        to_inbox(ns, broken, submission("lost-not", "q", 1))
        healthy = start(ns, "ask", None)
        wait_until(lambda: "q" in pending_inputs(ns, healthy), 15, "healthy run waits")
        sent = time.monotonic()
        to_inbox(ns, healthy, submission("fine", "q", 2))
        wait_until(lambda: run_status(ns, healthy) == "completed", 15, "healthy run ends")
        assert time.monotonic() - sent < 3.0
        # The broken run's answer is still in its inbox, and its history is unchanged.
        with StreamClient(timeout=10) as client:
            inbox = client.stream(f"{ns}/runs/{broken}/inbox").read().items
        assert [m["key"] for m in inbox] == ["lost-not"]
        assert read_history(ns, broken)[0][-1]["type"] == "nonsense"
        worker = thread.worker
        assert worker is not None and worker.stats.errors >= 1
    finally:
        thread.stop()


class _LateHeartbeats(httpx.AsyncBaseTransport):
    """For the first ``window`` seconds, holds each ack ``ack_delay`` s (past a 1 s
    lease) and each history append ``append_delay`` s; records every ack and the
    server's answer."""

    def __init__(self, ack_delay: float, append_delay: float, window: float) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.delays = {"/ack": ack_delay, "/history": append_delay}
        self.until = time.monotonic() + window
        self.acks: list[tuple[dict[str, Any], int]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        tail = "/" + request.url.path.rsplit("/", 1)[-1]
        if request.method == "POST" and time.monotonic() < self.until:
            await asyncio.sleep(self.delays.get(tail, 0.0))
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and tail == "/ack":
            await response.aread()
            self.acks.append((json.loads(request.content), response.status_code))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def settled(self) -> bool:
        return any(body.get("done") and status == 200 for body, status in self.acks)


@pytest.mark.req("WAKE-019", "WAKE-021")
def test_a_worker_whose_wake_was_fenced_does_no_more_for_it(server: Server) -> None:
    ns = f"{server.stream_base}/{unique('fence')}"
    run_id = unique("late")
    transport = _LateHeartbeats(ack_delay=1.2, append_delay=2.0, window=2.5)

    async def scenario() -> None:
        worker = Worker(
            ns, registry, name="late", wake="subscription", lease_ttl_ms=1000, transport=transport
        )
        stop = asyncio.Event()
        task = asyncio.ensure_future(worker.run(stop))
        try:
            await asyncio.wait_for(worker.ready.wait(), 10)
            await asyncio.to_thread(start, ns, "ask", None, run_id)
            # The run's first append takes 2 s and the first heartbeat arrives after
            # the 1 s lease ran out: the server refuses it (409 FENCED), and the worker
            # sends nothing more for that wake. Later wakes settle once acks are timely.
            for _ in range(200):
                if transport.settled():
                    break
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await task

    asyncio.run(scenario())
    refused = [body["wake_id"] for body, status in transport.acks if status == 409]
    assert refused, f"no heartbeat was fenced: {transport.acks}"
    for wake_id in refused:
        sent = [status for body, status in transport.acks if body["wake_id"] == wake_id]
        assert sent.index(409) == len(sent) - 1, f"the worker went on with {wake_id}: {sent}"
    assert all("generation" in body for body, _ in transport.acks)
    assert transport.settled(), f"no later wake was acknowledged: {transport.acks}"
    assert "q" in pending_inputs(ns, run_id)
