"""Bounded cost per request (issue 12, item 1; SEC-034, SEC-035).

Whatever an inbox holds, a run records at most its rejection limit of ``input-rejected``
messages; a batch the stream server finds too large goes out as several appends; a single
message it refuses ends the run with ``MessageTooLarge`` instead of a retry loop; a run
whose activations keep failing is served again after pauses that grow.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from durable_workflows.core import Context, Limits, Workflow, WorkflowRegistry
from durable_workflows.engine import worker as worker_module
from durable_workflows.engine.namespace import Namespace, NamespaceIO
from durable_workflows.engine.runner import ActivationOutcome, Runner
from durable_workflows.engine.writer import FencedWriter, MessageTooLarge
from durable_workflows.schemas import identify
from durable_workflows.streams import AsyncStreamClient
from durable_workflows.streams.server import StreamsApp
from durable_workflows.streams.server.core import StreamCore
from durable_workflows.streams.server.storage import MemoryStorage
from tests.runtime.test_core_driver import T0, Driver, cancel, submission

APPROVAL = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


def ask() -> Workflow:
    async def wf(ctx: Context, _: Any) -> Any:
        answer = await ctx.request_input("approval", schema=APPROVAL)
        return {"answer": answer}

    return Workflow("w", wf)


def junk(n: int, start: int = 0) -> list[Any]:
    """Messages of every malformed kind, and submissions no request will ever take."""
    kinds: list[Callable[[int], Any]] = [
        lambda i: i,
        lambda i: f"text {i}",
        lambda i: [i],
        lambda i: {"type": "submission", "key": f"j{i}"},  # no value
        lambda i: submission(f"j{i}", "no-such-request", {"ok": True}),  # kept, never taken
        lambda i: submission(f"j{i}", "approval", {"ok": "yes"}),  # schema-invalid
        lambda i: cancel(f"j{i}") | {"value": {"cancel_id": "other"}},  # key != cancel_id
    ]
    return [kinds[i % len(kinds)](i) for i in range(start, start + n)]


def rejections(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in history if m["type"] == "submission"]


@pytest.mark.req("SEC-034")
@pytest.mark.parametrize("crashes", [frozenset(), frozenset(range(2, 40, 3))])
def test_a_run_records_at_most_its_rejection_limit_and_still_takes_a_valid_answer(
    crashes: frozenset[int],
) -> None:
    script = [(T0 + timedelta(seconds=1), m) for m in junk(40)]
    script.append((T0 + timedelta(seconds=2), submission("good", "approval", {"ok": True})))
    script += [(T0 + timedelta(seconds=3), m) for m in junk(20, start=40)]
    driver = Driver(
        ask(), inbox_script=script, limits=Limits(rejections_per_run=9), crash_points=crashes
    ).run()
    assert driver.closed
    assert driver.run_value["status"] == "completed", driver.run_value
    assert driver.run_value["output"] == {"answer": {"ok": True}}
    recorded = rejections(driver.history)
    # Exactly the limit, the first rejections in inbox order, whatever the crashes.
    assert len(recorded) == 9, [m["key"] for m in recorded]
    # (j4 names a request never made: kept, and at the end past the limit)
    assert [m["key"] for m in recorded] == [
        *("inbox-0", "inbox-1", "inbox-2", "j3", "j5", "j6"),
        *("inbox-7", "inbox-8", "inbox-9"),
    ]
    for message in driver.history:
        identify(message, "history")


@pytest.mark.req("SEC-034")
def test_the_rejections_of_the_ending_count_toward_the_limit() -> None:
    kept = [submission(f"k{i}", "later", {"ok": True}) for i in range(10)]
    script = [(T0 + timedelta(seconds=1), m) for m in [*junk(3), *kept]]
    script.append((T0 + timedelta(seconds=2), submission("good", "approval", {"ok": True})))
    driver = Driver(ask(), inbox_script=script, limits=Limits(rejections_per_run=7)).run()
    recorded = rejections(driver.history)
    assert len(recorded) == 7
    # three malformed ones while the run lives, then four of the kept ones at the end
    assert [m["value"]["reason"] for m in recorded] == ["malformed"] * 3 + ["run-finished"] * 4
    assert driver.history[-1]["type"] == "submission"  # the last append holds them


@pytest.mark.req("SEC-034")
def test_a_flood_of_junk_neither_fails_the_run_nor_grows_its_history_past_the_limit() -> None:
    # Malformed messages only: well-formed submissions past the submission count limit
    # are refused as too-large (INPUT-033), a valid answer among them too.
    flood = [
        m for m in junk(24_000) if not (isinstance(m, dict) and "request" in m.get("value", {}))
    ]
    script = [(T0 + timedelta(seconds=1), m) for m in flood]
    script.append((T0 + timedelta(seconds=2), submission("good", "approval", {"ok": True})))
    driver = Driver(ask(), inbox_script=script).run()  # the default limits
    assert driver.run_value["status"] == "completed", driver.run_value
    assert len(rejections(driver.history)) == Limits().rejections_per_run == 1_000
    assert len(driver.history) < 1_020


# ------------------------------------------------------------- appends over the limit


def small_server(limit: int) -> tuple[NamespaceIO, httpx.AsyncClient]:
    app = StreamsApp(StreamCore(MemoryStorage(), time.time), max_body_bytes=limit)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    ns = Namespace(f"http://test/v1/stream/ns-{uuid.uuid4().hex[:8]}")
    return NamespaceIO(ns, AsyncStreamClient(timeout=10, http=http)), http


def record(n: int, size: int) -> dict[str, Any]:
    return {
        "type": "record",
        "key": f"m{n}",
        "value": {"n": n, "pad": "x" * size},
        "headers": {"operation": "insert"},
    }


def test_a_batch_too_large_for_the_server_goes_out_in_order_as_several_appends() -> None:
    async def scenario() -> None:
        io, http = small_server(16_384)
        async with http:
            await io.create_history("r")
            writer = FencedWriter(io.history("r"), 0, worker="t")
            batch = [record(n, 1_000) for n in range(40)]  # about 44 KB
            await writer.append(batch, close=True)
            assert writer.appends > 2 and writer.position == 40 and writer.closed
            read = await io.read_history("r")
            assert read is not None and read.closed
            assert [m["key"] for m in read.items] == [f"m{n}" for n in range(40)]
            with pytest.raises(MessageTooLarge) as refused:
                other = FencedWriter(io.history("r2"), 0, worker="t")
                await io.create_history("r2")
                await other.append([record(0, 20_000)])
            assert refused.value.size > 20_000

    asyncio.run(scenario())


registry = WorkflowRegistry()


def big(n: int) -> str:
    return "y" * n


@registry.workflow("big-result")
async def big_result(ctx: Context, n: int) -> int:
    await ctx.request_input("go", schema=True)
    return len(await ctx.step("big", big, n))


async def request_run(io: NamespaceIO, run_id: str, workflow: str, value: Any) -> None:
    """Append the run's ``run-requested`` to the index, as a client does."""
    await io.ensure_index()
    await io.index().append_json(
        {
            "type": "start",
            "key": run_id,
            "value": {"run_id": run_id, "workflow": workflow, "input": value},
            "headers": {"operation": "insert"},
        }
    )


@pytest.mark.req("SEC-035")
def test_a_message_the_server_refuses_as_too_large_ends_the_run_visibly() -> None:
    async def scenario() -> tuple[ActivationOutcome, list[Any], bool]:
        io, http = small_server(16_384)
        async with http:
            run_id = "big-1"
            await request_run(io, run_id, "big-result", 40_000)
            runner = Runner(io, registry, worker="t")
            try:
                first = await runner.activate(run_id)
                assert first.kind == "suspended", first
                go = submission("go-1", "go", 1)
                await io.inbox(run_id).append_json(go)
                # The step's 40 KB result is under the engine's result limit but over
                # the server's body limit: the run fails, once, instead of looping.
                outcome = await runner.activate(run_id)
            finally:
                runner.close()
            read = await io.read_history(run_id)
            assert read is not None
            return outcome, list(read.items), read.closed

    outcome, history, closed = asyncio.run(scenario())
    assert outcome.kind == "ended" and outcome.status == "failed", outcome
    assert closed
    run = [m["value"] for m in history if m["type"] == "run"][-1]
    assert run["error"]["type"] == "MessageTooLarge", run
    assert run["error"]["details"]["size"] > 40_000
    assert "413" in run["error"]["message"]
    for message in history:
        identify(message, "history")


@registry.workflow("wide-start")
async def wide_start(ctx: Context, n: int) -> int:
    done = await ctx.gather(*[ctx.step(f"step-{i}", lambda: 1) for i in range(n)])
    return len(done)


@pytest.mark.req("FENCE-001", "SEC-035")
def test_a_first_append_too_large_to_create_the_history_with_is_appended_in_parts() -> None:
    """The history's PUT with the run's first append (run-started and 150 step starts,
    over 16 KB) is refused as too large (413): the history is created empty instead and
    the append goes out in parts, in order, run-started first."""

    async def scenario() -> tuple[ActivationOutcome, list[Any]]:
        io, http = small_server(16_384)
        async with http:
            run_id = "wide-1"
            await request_run(io, run_id, "wide-start", 150)
            runner = Runner(io, registry, worker="t")
            try:
                outcome = await runner.activate(run_id)
            finally:
                runner.close()
            read = await io.read_history(run_id)
            assert read is not None
            return outcome, list(read.items)

    outcome, history = asyncio.run(scenario())
    assert outcome.kind == "ended" and outcome.status == "completed", outcome
    assert outcome.appends > 3, outcome  # the first append alone took two or more
    assert history[0]["type"] == "run" and history[0]["value"]["status"] == "running"
    assert [m["value"]["status"] for m in history if m["type"] == "run"][-1] == "completed"
    assert sum(1 for m in history if m["type"] == "run") == 2


def test_a_run_whose_activations_keep_failing_is_served_again_after_growing_pauses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> list[float]:
        pauses: list[float] = []
        loop = asyncio.get_running_loop()

        def call_later(delay: float, *args: Any) -> Any:
            pauses.append(delay)

        monkeypatch.setattr(loop, "call_later", call_later)
        w = worker_module.Worker("http://test/v1/stream/ns", WorkflowRegistry())
        entry = worker_module.RunEntry("r")
        for _ in range(12):
            w._record(entry, ActivationOutcome("r", "error", error="boom"))
        w._record(entry, ActivationOutcome("r", "ended"))
        w._record(entry, ActivationOutcome("r", "error", error="boom"))
        return pauses

    pauses = asyncio.run(scenario())
    base, cap = worker_module.RETRY_SECONDS, worker_module.MAX_RETRY_SECONDS
    assert pauses[:4] == [base, 2 * base, 4 * base, 8 * base]
    assert pauses[11] == cap and max(pauses) == cap
    assert pauses[12] == base  # a settled activation starts the count again
