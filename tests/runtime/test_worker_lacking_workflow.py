"""A worker that lacks a workflow leaves its runs to one that has it (issue 12, item 2;
MODEL-018, MODEL-038): in a pool where one worker, as in a rolling deploy, does not have
a workflow, every run of it is served by the worker that has it, in either wake mode, and
a run of a workflow no worker has still ends, visibly, once the grace period is over."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from durable_workflows.core import Context, WorkflowRegistry
from durable_workflows.engine.app import WorkerThread

from .engine_support import (
    Server,
    any_server,
    pending_inputs,
    read_history,
    start,
    submission,
    to_inbox,
    unique,
    wait_until,
)

pytestmark = pytest.mark.peers

full = WorkflowRegistry()
partial = WorkflowRegistry()


async def _ask(ctx: Context, start: Any) -> Any:
    answer = await ctx.request_input("q", schema={"type": "integer"})
    return answer * 10


async def _old(ctx: Context, start: Any) -> str:
    return "old"


full.workflow("ask")(_ask)
full.workflow("old")(_old)
partial.workflow("old")(_old)  # deployed before "ask" existed


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with any_server("embedded") as running:
        yield running


def _thread(ns: str, registry: WorkflowRegistry, name: str, **options: Any) -> WorkerThread:
    thread = WorkerThread(ns, registry, name, **options)
    thread.start()
    wait_until(lambda: thread.worker is not None and thread.worker.ready.is_set(), 10, "ready")
    return thread


def _last_run(ns: str, run_id: str) -> dict[str, Any]:
    items, _ = read_history(ns, run_id)
    runs: list[dict[str, Any]] = [m["value"] for m in items if m["type"] == "run"]
    return runs[-1]


@pytest.mark.req("MODEL-018", "MODEL-038")
@pytest.mark.parametrize("wake", ["subscription", "long-poll"])
def test_a_pool_member_lacking_a_workflow_leaves_its_runs_to_one_that_has_it(
    server: Server, wake: str
) -> None:
    ns = f"{server.stream_base}/{unique('lack')}"
    # The lacking worker starts first and alone, so it sees every request first.
    lacking = _thread(ns, partial, "old-build", wake=wake, unknown_grace=30.0)
    having: WorkerThread | None = None
    try:
        runs = [start(ns, "ask", None) for _ in range(10)]
        time.sleep(1.0)  # nothing can serve them yet: they must not fail meanwhile
        for run_id in runs:
            items, _ = read_history(ns, run_id)
            assert not items, items  # left, not started and failed
        having = _thread(ns, full, "new-build", wake=wake, unknown_grace=30.0)
        for i, run_id in enumerate(runs):
            wait_until(lambda r=run_id: "q" in pending_inputs(ns, r), 20, f"{run_id} waits")
            to_inbox(ns, run_id, submission(f"s-{i}", "q", i))
        for i, run_id in enumerate(runs):
            wait_until(lambda r=run_id: read_history(ns, r)[1], 20, f"{run_id} ends")
            run = _last_run(ns, run_id)
            assert run["status"] == "completed" and run["output"] == i * 10, run
        # The lacking worker still serves what it has.
        old = start(ns, "old", None)
        wait_until(lambda: read_history(ns, old)[1], 20, "the old workflow's run ends")
        assert _last_run(ns, old)["output"] == "old"
        assert lacking.worker is not None and lacking.worker.stats.errors == 0
    finally:
        lacking.stop()
        if having is not None:
            having.stop()


@pytest.mark.req("MODEL-019", "MODEL-038")
def test_a_run_of_a_workflow_no_worker_has_fails_after_the_grace_period(server: Server) -> None:
    ns = f"{server.stream_base}/{unique('none')}"
    thread = _thread(ns, partial, "only", wake="subscription", unknown_grace=1.0)
    try:
        requested = time.monotonic()
        run_id = start(ns, "ask", None)
        wait_until(lambda: read_history(ns, run_id)[1], 20, "the run ends")
        assert time.monotonic() - requested >= 1.0  # not before the grace period
        run = _last_run(ns, run_id)
        assert run["status"] == "failed", run
        assert run["error"]["type"] == "UnknownWorkflow"
        assert "It has: old." in run["error"]["message"]  # what exists instead
    finally:
        thread.stop()
