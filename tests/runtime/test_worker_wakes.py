"""What wakes a run under the long-running worker (waking.md): deadlines on the
worker's clock (WAKE-009, INPUT-037), and causes that happened while no worker was up
(WAKE-001). A worker thread serves a namespace on our stream server (a subprocess);
the test acts as a client and stops and starts workers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from durable_workflows.core import Context, InputExpired, RetryPolicy, WorkflowRegistry
from durable_workflows.engine.app import WorkerThread
from tests.support.embedded_server import EmbeddedServer, embedded_server

from .engine_support import read_history, start, submission, to_inbox, unique, wait_until

#: How late after a deadline the worker may act, on a loaded two-core machine.
LATE = timedelta(seconds=1.5)

registry = WorkflowRegistry()
FAILS: dict[str, int] = {}


def fail_once(tag: str) -> str:
    FAILS[tag] = FAILS.get(tag, 0) + 1
    if FAILS[tag] == 1:
        raise ConnectionError("first attempt fails")
    return "ok"


@registry.workflow("deadlines")
async def deadlines(ctx: Context, tag: str) -> Any:
    await ctx.sleep("nap", timedelta(milliseconds=400))
    policy = RetryPolicy(max_attempts=2, initial_interval=timedelta(milliseconds=400))
    step = await ctx.step("flaky", fail_once, tag, retry=policy)
    try:
        answer = await ctx.request_input("q", schema=True, timeout=timedelta(milliseconds=400))
    except InputExpired:
        answer = "expired"
    return {"step": step, "answer": answer}


@registry.workflow("ask-then-nap")
async def ask_then_nap(ctx: Context, start: Any) -> Any:
    answer = await ctx.request_input("q", schema=True)
    await ctx.sleep("nap", timedelta(milliseconds=300))
    return answer


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedServer]:
    with embedded_server(long_poll_timeout=0.5) as running:
        yield running


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def status(ns: str, run_id: str) -> str | None:
    runs = [m["value"]["status"] for m in read_history(ns, run_id)[0] if m["type"] == "run"]
    return runs[-1] if runs else None


@pytest.mark.req("WAKE-009", "INPUT-037")
def test_deadlines_wake_the_run_on_time(server: EmbeddedServer) -> None:
    ns = f"{server.stream_base}/{unique('deadlines')}"
    worker = WorkerThread(ns, registry, "deadlines")
    worker.start()
    try:
        run_id = start(ns, "deadlines", unique("tag"))
        wait_until(lambda: read_history(ns, run_id)[1], 20, "the run ends")
    finally:
        worker.stop()
    items, _ = read_history(ns, run_id)
    run = [m for m in items if m["type"] == "run"][-1]["value"]
    assert run["status"] == "completed" and run["output"] == {"step": "ok", "answer": "expired"}
    values = {(m["type"], m["value"]["status"]): m["value"] for m in items if m["type"] != "run"}
    # A sleep's wake_at, a step's retry_at and an input's expires_at each woke the run,
    # no earlier than the deadline and promptly after it.
    sleep = values[("sleep", "completed")]
    lag = at(sleep["fired_at"]) - at(sleep["wake_at"])
    assert timedelta(0) <= lag <= LATE, f"the sleep fired {lag} after wake_at"
    retry_at = at(values[("step", "retrying")]["retry_at"])
    second = next(m["value"] for m in items if m["type"] == "step" and m["value"]["attempt"] == 2)
    lag = at(second["started_at"]) - retry_at
    assert timedelta(0) <= lag <= LATE, f"attempt 2 started {lag} after retry_at"
    expired = values[("input", "expired")]
    lag = at(expired["expired_at"]) - at(expired["expires_at"])
    assert timedelta(0) <= lag <= LATE, f"the request expired {lag} after expires_at"


@pytest.mark.req("WAKE-001")
def test_causes_missed_while_no_worker_ran_are_acted_on_at_start(server: EmbeddedServer) -> None:
    ns = f"{server.stream_base}/{unique('missed')}"
    # A run requested while no worker is up starts when one comes up.
    run_id = start(ns, "ask-then-nap", None)
    first = WorkerThread(ns, registry, "first")
    first.start()
    try:
        wait_until(lambda: status(ns, run_id) == "waiting", 20, "the run waits for q")
    finally:
        first.stop()
    # The answer arrives while no worker runs ...
    to_inbox(ns, run_id, submission("s-1", "q", 42))
    second = WorkerThread(ns, registry, "second")
    second.start()
    try:
        # ... and is taken once a worker runs again.
        wait_until(lambda: status(ns, run_id) == "sleeping", 20, "the answer is taken")
    finally:
        second.stop()
    # The sleep's deadline passes while no worker runs ...
    items, _ = read_history(ns, run_id)
    wake_at = at([m for m in items if m["type"] == "sleep"][-1]["value"]["wake_at"])
    wait_until(lambda: datetime.now(wake_at.tzinfo) > wake_at, 5, "the deadline passes")
    assert status(ns, run_id) == "sleeping"
    third = WorkerThread(ns, registry, "third")
    third.start()
    try:
        # ... and the run moves on once a worker runs again.
        wait_until(lambda: read_history(ns, run_id)[1], 20, "the run ends")
    finally:
        third.stop()
    items, _ = read_history(ns, run_id)
    run = [m for m in items if m["type"] == "run"][-1]["value"]
    assert run["status"] == "completed" and run["output"] == 42
