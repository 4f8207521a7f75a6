"""(e) Core scenarios through the shell, against our embedded server and the Node
reference server: a worker (in this process, on its own thread) serves a namespace
and the test acts as a client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from durable_workflows.core import (
    Context,
    RetryPolicy,
    StepFailed,
    WorkflowRegistry,
)
from durable_workflows.engine.app import WorkerThread
from durable_workflows.schemas import identify
from durable_workflows.streams import StreamClient

from .engine_support import (
    SERVER_KINDS,
    any_server,
    cancel,
    pending_inputs,
    read_history,
    start,
    submission,
    to_inbox,
    unique,
    wait_until,
)

pytestmark = pytest.mark.peers

ATTEMPTS: dict[str, int] = {}


def add(a: int, b: int) -> int:
    return a + b


async def double(x: int) -> int:
    await asyncio.sleep(0.001)
    return 2 * x


def flaky(tag: str) -> str:
    ATTEMPTS[tag] = ATTEMPTS.get(tag, 0) + 1
    if ATTEMPTS[tag] < 3:
        raise ConnectionError(f"attempt {ATTEMPTS[tag]} failed")
    return "ok"


def slow() -> str:
    time.sleep(1.0)
    return "late"


registry = WorkflowRegistry()


@registry.workflow("steps")
async def steps(ctx: Context, start: dict[str, Any]) -> int:
    a = await ctx.step("add", add, start["a"], 1)
    return await ctx.step("double", double, a)


@registry.workflow("ask")
async def ask(ctx: Context, start: Any) -> Any:
    answer = await ctx.request_input("q", schema={"type": "integer"}, prompt="A number?")
    return answer * 10


@registry.workflow("nap")
async def nap(ctx: Context, start: Any) -> str:
    await ctx.sleep("nap", timedelta(milliseconds=300))
    return "rested"


@registry.workflow("retry")
async def retry(ctx: Context, tag: str) -> str:
    policy = RetryPolicy(max_attempts=4, initial_interval=timedelta(milliseconds=50))
    return await ctx.step("flaky", flaky, tag, retry=policy)


@registry.workflow("timeout")
async def timeout(ctx: Context, start: Any) -> str:
    try:
        return await ctx.step("slow", slow, retry=1, timeout=timedelta(milliseconds=100))
    except StepFailed as exc:
        return exc.error_type


@pytest.fixture(
    scope="module",
    params=[(kind, wake) for kind in SERVER_KINDS for wake in ("subscription", "long-poll")],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def served(request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace on a running server, served by a worker thread that learns of
    wakes from a pull-wake subscription or from one long-poll per inbox."""
    kind, wake = request.param
    with any_server(kind) as server:
        ns = f"{server.stream_base}/{unique('scen')}"
        thread = WorkerThread(ns, registry, "scenarios", wake=wake)
        thread.start()
        try:
            yield ns
        finally:
            thread.stop()


def final(ns: str, run_id: str, seconds: float = 15) -> tuple[dict[str, Any], list[Any]]:
    wait_until(lambda: read_history(ns, run_id)[1], seconds, f"{run_id} closed")
    items, _ = read_history(ns, run_id)
    events = [identify(m, "history") for m in items]
    run = [m for m in items if m["type"] == "run"][-1]["value"]
    return run, events


@pytest.mark.req("EVT-097")
def test_steps_complete_with_one_append_per_step(served: str) -> None:
    run_id = start(served, "steps", {"a": 20})
    run, events = final(served, run_id)
    assert run["status"] == "completed" and run["output"] == 42
    assert events == [
        "run-started",
        "step-started",
        "step-completed",
        "step-started",
        "step-completed",
        "run-completed",
    ]


@pytest.mark.req("INPUT-019", "WAKE-008")
def test_input_resumes_the_run_within_milliseconds(served: str) -> None:
    run_id = start(served, "ask", None)
    wait_until(lambda: "q" in pending_inputs(served, run_id), 10, "pending input")
    sent = time.monotonic()
    to_inbox(served, run_id, submission("s-1", "q", 4))
    wait_until(lambda: not pending_inputs(served, run_id), 10, "input received")
    latency = time.monotonic() - sent
    run, events = final(served, run_id)
    assert run["output"] == 40
    assert "run-suspended" in events and "run-resumed" in events
    assert latency < 1.0, f"resumed after {latency:.3f} s"


def test_early_submission_is_kept_until_the_request(served: str) -> None:
    run_id = unique("ask")
    to_inbox(served, run_id, submission("early", "q", 7))  # before the run exists
    start(served, "ask", None, run_id)
    run, events = final(served, run_id)
    assert run["output"] == 70
    assert "run-suspended" not in events  # INPUT-021: accepted without suspending


def test_sleep_fires_at_its_time(served: str) -> None:
    run_id = start(served, "nap", None)
    run, _ = final(served, run_id)
    assert run["output"] == "rested"
    items, _ = read_history(served, run_id)
    done = [m for m in items if m["type"] == "sleep" and m["value"]["status"] == "completed"]
    assert done and done[0]["value"]["fired_at"] >= done[0]["value"]["wake_at"]


def test_failed_attempts_are_retried(served: str) -> None:
    tag = unique("t")
    run_id = start(served, "retry", tag)
    run, events = final(served, run_id)
    assert run["output"] == "ok"
    assert events.count("step-attempt-failed") == 2 and events.count("step-attempt-started") == 2


def test_step_timeout_fails_the_attempt(served: str) -> None:
    run_id = start(served, "timeout", None)
    run, events = final(served, run_id)
    assert run["output"] == "StepTimeout"
    assert "step-failed" in events


def test_cancel_of_a_waiting_run(served: str) -> None:
    run_id = start(served, "ask", None)
    wait_until(lambda: "q" in pending_inputs(served, run_id), 10, "pending input")
    to_inbox(served, run_id, cancel("c-1", "no longer needed"))
    run, events = final(served, run_id)
    assert run["status"] == "cancelled" and events[-1] == "run-cancelled"


def test_unknown_workflow_fails_the_run(served: str) -> None:
    run_id = start(served, "no-such-workflow", None)
    run, events = final(served, run_id, 30)  # after the 10 s grace (MODEL-039)
    assert events == ["run-started", "run-failed"]
    assert run["error"]["type"] == "UnknownWorkflow"


def test_submission_after_the_end_is_rejected_in_the_last_append(served: str) -> None:
    run_id = start(served, "ask", None)
    wait_until(lambda: "q" in pending_inputs(served, run_id), 10, "pending input")
    with StreamClient(timeout=10) as client:  # two answers in one append: both land
        inbox = client.stream(f"{served}/runs/{run_id}/inbox", content_type="application/json")
        inbox.append_json_batch([submission("a", "q", 1), submission("b", "q", 2)])
    run, _ = final(served, run_id)
    assert run["output"] == 10
    items, _ = read_history(served, run_id)
    rejected = {m["key"]: m["value"]["reason"] for m in items if m["type"] == "submission"}
    assert rejected == {"b": "already-answered"}
