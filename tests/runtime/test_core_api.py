"""The workflow API surface: registry, context argument checks, the deterministic scheduler."""

from __future__ import annotations

import types
from datetime import datetime, timedelta
from typing import Any

import pytest

import durable_workflows.core as core
from durable_workflows.core import (
    Context,
    InvalidPrimitive,
    Pending,
    StepErrored,
    StepTask,
    Workflow,
    WorkflowRegistry,
    workflow,
)
from durable_workflows.core.scheduler import Scheduler
from tests.runtime.test_core_driver import T0, Driver, events


def test_public_names_are_exported() -> None:
    for name in core.__all__:
        assert hasattr(core, name), name


def test_registry_from_module() -> None:
    module = types.ModuleType("flows")

    @workflow("one")
    async def one(ctx: Context, _: Any) -> Any:
        return 1

    module.one = one  # type: ignore[attr-defined]
    module.helper = lambda: None  # type: ignore[attr-defined]
    reg = WorkflowRegistry.from_module(module)
    assert reg.names() == ["one"] and reg.get("one") is one and list(reg) == [one]
    assert reg.get("two") is None


@pytest.mark.req("EVT-014")
def test_workflow_names_are_checked() -> None:
    async def fn(ctx: Context, _: Any) -> Any:
        return None

    with pytest.raises(InvalidPrimitive):
        Workflow("bad#name", fn)


@pytest.mark.req("EVT-060", "EVT-013")
def test_sleep_arguments() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        refused = []
        calls: tuple[Any, ...] = (
            lambda: ctx.sleep("s", timedelta(seconds=-1)),
            lambda: ctx.sleep("s", 5),  # type: ignore[arg-type]
            lambda: ctx.sleep_until("s", datetime(2026, 1, 1)),  # naive: no time zone
        )
        for call in calls:
            try:
                call()
            except InvalidPrimitive:
                refused.append(True)
        await ctx.sleep_until("past", T0 - timedelta(days=1))  # fires at once
        await ctx.sleep("tiny", timedelta(microseconds=1))  # rounded up to 1 ms
        return refused

    d = Driver(Workflow("w", wf)).run()
    assert d.run_value["output"] == [True, True, True]
    sleeps = [
        m["value"]
        for m in d.history
        if m["type"] == "sleep" and m["headers"]["operation"] == "insert"
    ]
    assert sleeps[0]["wake_at"] == "2026-11-23T10:00:00.000Z"  # earlier than scheduled_at
    assert sleeps[1]["duration_ms"] == 1


def test_scheduler_runs_tasks_fifo() -> None:
    order: list[str] = []
    gate: Pending[int] = Pending("gate")

    async def branch(name: str) -> str:
        order.append(f"{name}-start")
        await gate
        order.append(f"{name}-end")
        return name

    sched = Scheduler()
    a = sched.spawn(branch("a"))
    b = sched.spawn(branch("b"))
    sched.run_until_blocked()
    assert order == ["a-start", "b-start"] and not a.done
    gate.set_result(1)
    sched.run_until_blocked()
    assert order == ["a-start", "b-start", "a-end", "b-end"]
    assert a.result() == "a" and b.result() == "b"
    with pytest.raises(RuntimeError):
        gate.set_result(2)


def test_pending_without_outcome_refuses_result() -> None:
    p: Pending[int] = Pending("x")
    with pytest.raises(RuntimeError):
        p.result()
    assert "pending" in repr(p)


def test_step_errored_from_exception() -> None:
    err = StepErrored.from_exception(ValueError("bad input"))
    assert (err.type, err.message, err.details, err.retryable) == (
        "ValueError",
        "bad input",
        None,
        True,
    )
    fatal = StepErrored.from_exception(core.NonRetryableError("no", details={"x": {1, 2}}))
    assert (
        fatal.retryable is False and fatal.details is None
    )  # details that are not JSON are dropped


def test_step_task_call_binds_current_step() -> None:
    task = StepTask(
        run_id="r", key="k#2", name="k", seq=3, attempt=2, fn=lambda: core.current_step()
    )
    info = task.call()
    assert info == core.StepInfo("r", "k#2", "k", 2) and info.idempotency_key == "r/k#2"


def test_primitives_after_the_run_ended_record_nothing() -> None:
    leaked: list[Context] = []

    async def wf(ctx: Context, _: Any) -> Any:
        leaked.append(ctx)
        try:
            await ctx.request_input("never", schema=True)
        finally:
            # runs when the core closes the code after the cancel; it must record nothing
            ctx.step("cleanup", lambda: 1)
        return None

    from tests.runtime.test_core_driver import cancel

    d = Driver(Workflow("w", wf), inbox_script=[(T0 + timedelta(seconds=1), cancel("c"))]).run()
    assert "step-started" not in events(d.history)
    assert d.run_value["status"] == "cancelled"
