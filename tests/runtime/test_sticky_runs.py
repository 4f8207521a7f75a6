"""A runner keeps suspended runs replayed (issue 15): the next activation of a run it
served reads only the history's tail and the inbox's, and replays nothing. Whatever makes
the kept state stale (another writer's append, changed code, a full cache) falls back to
reading the whole history and replaying it, and every history is the one a runner that
keeps nothing writes."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

from durable_workflows.core import Context, Workflow, WorkflowRegistry
from durable_workflows.engine.runner import Runner

from .engine_support import unique
from .test_engine_requests import (
    Recorder,
    history_of,
    io_over,
    new_server,
    request_run,
    run_async,
)


def approvals() -> WorkflowRegistry:
    registry = WorkflowRegistry()

    @registry.workflow("approvals")
    async def approvals_wf(ctx: Context, start: Any) -> Any:
        first = await ctx.request_input("first", schema={"type": "boolean"})
        n = await ctx.step("count", lambda: 1)
        second = await ctx.request_input("second", schema={"type": "boolean"})
        await ctx.sleep("pause", timedelta(0))
        return {"first": first, "second": second, "n": n}

    return registry


def answer(key: str, request: str, value: Any) -> dict[str, Any]:
    return {
        "type": "submission",
        "key": key,
        "value": {"submission_id": key, "request": request, "value": value},
        "headers": {"operation": "insert"},
    }


def scrub(history: list[Any]) -> list[Any]:
    """The history without what differs between two runs of it: times and run ids."""

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: clean(v)
                for k, v in node.items()
                if not k.endswith("_at") and k not in ("run_id", "txid")
            }
        if isinstance(node, list):
            return [clean(v) for v in node]
        return node

    return [
        clean({k: v for k, v in m.items() if k != "key" or m["type"] != "run"}) for m in history
    ]


async def serve(
    recorder: Recorder, registry: WorkflowRegistry, sticky: int
) -> tuple[list[Any], Runner, list[str]]:
    io, http = io_over(recorder)
    async with http:
        run_id = unique("sticky")
        await request_run(io, run_id, "approvals")
        runner = Runner(io, registry, worker="t", rng=random.Random(1))
        runner.sticky_runs = sticky
        kinds = [(await runner.activate(run_id)).kind]
        await io.inbox(run_id).append_json(answer("a-1", "first", True))
        kinds.append((await runner.activate(run_id)).kind)
        await io.inbox(run_id).append_json(answer("a-2", "second", False))
        kinds.append((await runner.activate(run_id)).kind)
        runner.close()
        return await history_of(io, run_id), runner, kinds


def test_a_kept_run_resumes_from_the_tail_and_writes_the_same_history() -> None:
    recorder = new_server()
    history, runner, kinds = run_async(lambda: serve(recorder, approvals(), sticky=10))
    assert kinds == ["suspended", "suspended", "ended"]
    assert (runner.replays, runner.sticky_hits) == (1, 2)
    plain = new_server()
    reference, replayer, _ = run_async(lambda: serve(plain, approvals(), sticky=0))
    assert (replayer.replays, replayer.sticky_hits) == (3, 0)
    assert scrub(history) == scrub(reference)
    assert history[-1]["value"]["output"] == {"first": True, "second": False, "n": 1}


def test_another_writers_append_makes_the_runner_replay() -> None:
    registry = approvals()

    async def scenario() -> tuple[list[Any], Runner]:
        recorder = new_server()
        io, http = io_over(recorder)
        async with http:
            run_id = unique("sticky")
            await request_run(io, run_id, "approvals")
            mine = Runner(io, registry, worker="mine")
            other = Runner(io, registry, worker="other")
            assert (await mine.activate(run_id)).kind == "suspended"
            # Another worker serves the run meanwhile: it takes the first answer.
            await io.inbox(run_id).append_json(answer("a-1", "first", True))
            assert (await other.activate(run_id)).kind == "suspended"
            await io.inbox(run_id).append_json(answer("a-2", "second", True))
            # What `mine` kept is stale: it reads the history's tail, finds the other's
            # appends, and replays instead of writing at a position that is taken.
            assert (await mine.activate(run_id)).kind == "ended"
            mine.close()
            other.close()
            return await history_of(io, run_id), mine

    history, mine = run_async(scenario)
    assert (mine.replays, mine.sticky_hits) == (2, 0)
    assert history[-1]["value"]["status"] == "completed"
    assert [m["type"] for m in history].count("run") >= 4


def test_changed_code_is_replayed_not_resumed() -> None:
    registry = approvals()

    async def scenario() -> list[Any]:
        recorder = new_server()
        io, http = io_over(recorder)
        async with http:
            run_id = unique("sticky")
            await request_run(io, run_id, "approvals")
            runner = Runner(io, registry, worker="t")
            assert (await runner.activate(run_id)).kind == "suspended"

            async def renamed(ctx: Context, start: Any) -> Any:
                return await ctx.request_input("first-v2", schema=True)

            # A redeploy: the registry now holds other code under the same name.
            registry._by_name["approvals"] = Workflow("approvals", renamed)
            await io.inbox(run_id).append_json(answer("a-1", "first", True))
            assert (await runner.activate(run_id)).kind == "ended"
            assert runner.sticky_hits == 0
            runner.close()
            return await history_of(io, run_id)

    history = run_async(scenario)
    run = [m for m in history if m["type"] == "run"][-1]["value"]
    assert run["status"] == "failed" and run["error"]["type"] == "NonDeterminism"
    assert run["error"]["details"]["requested"] == {"kind": "input", "name": "first-v2"}


@pytest.mark.parametrize("kept", [0, 1])
def test_a_full_cache_forgets_the_oldest_run(kept: int) -> None:
    registry = approvals()

    async def scenario() -> Runner:
        recorder = new_server()
        io, http = io_over(recorder)
        async with http:
            runner = Runner(io, registry, worker="t")
            runner.sticky_runs = kept
            ids = [unique("sticky") for _ in range(2)]
            for run_id in ids:
                await request_run(io, run_id, "approvals")
                assert (await runner.activate(run_id)).kind == "suspended"
            for run_id in reversed(ids):  # the one kept last first
                await io.inbox(run_id).append_json(answer("a-1", "first", True))
                assert (await runner.activate(run_id)).kind == "suspended"
            runner.close()
            return runner

    runner = run_async(scenario)
    # With one place, the first run was forgotten when the second was kept.
    assert runner.sticky_hits == (0 if kept == 0 else 1)
    assert runner.replays == 4 - runner.sticky_hits


def test_the_kept_position_is_past_every_message_the_runner_appended() -> None:
    registry = approvals()

    async def scenario() -> tuple[int, int]:
        recorder = new_server()
        io, http = io_over(recorder)
        async with http:
            run_id = unique("sticky")
            await request_run(io, run_id, "approvals")
            runner = Runner(io, registry, worker="t")
            await runner.activate(run_id)
            kept = runner._sticky[run_id]
            runner.close()
            return kept.position, len(await history_of(io, run_id))

    position, length = run_async(scenario)
    assert position == length
