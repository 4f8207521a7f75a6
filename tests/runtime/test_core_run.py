"""The run: start, status, batching, completion, failure, cancellation (model.md, retries.md)."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

import pytest

from durable_workflows.core import (
    Activation,
    Context,
    Limits,
    StepSucceeded,
    Workflow,
    WorkflowAwaitError,
    WorkflowRegistry,
    replay_check,
    workflow,
)
from durable_workflows.schemas import identify
from tests.runtime.test_core_driver import T0, Driver, cancel, events, submission

REQUEST = {"run_id": "exp-2041", "workflow": "w", "input": {"total": 1200}}


def sequential() -> Workflow:
    async def wf(ctx: Context, report: Any) -> Any:
        a = await ctx.step("a", lambda: 1)
        b = await ctx.step("b", lambda: 2)
        answer = await ctx.request_input("manager", schema={"type": "boolean"})
        c = await ctx.step("c", lambda: 3)
        return {"sum": a + b + c, "approved": answer, "total": report["total"]}

    return Workflow("w", wf)


@pytest.mark.req("MODEL-029", "MODEL-027", "MODEL-022", "MODEL-026", "MODEL-016", "EVT-025")
def test_one_durable_append_per_step() -> None:
    """The appends of model.md's example, one line per append."""
    d = Driver(
        sequential(),
        run_id="exp-2041",
        input={"total": 1200},
        inbox_script=[(T0 + timedelta(minutes=1), submission("s-1", "manager", True))],
    ).run()
    assert [events(batch) for batch in d.appends] == [
        ["run-started", "step-started"],
        ["step-completed", "step-started"],
        ["step-completed", "input-requested", "run-suspended"],
        ["input-received", "run-resumed", "step-started"],
        ["step-completed", "run-completed"],
    ]
    started = d.history[0]
    assert started["headers"] == {"operation": "insert", "txid": "exp-2041"}
    assert started["value"]["input"] == {"total": 1200} and started["value"]["protocol"] == "1.0"
    assert d.run_value["output"] == {"sum": 6, "approved": True, "total": 1200}
    assert d.run_value["finished_at"] is not None and d.run_value["waiting_for"] is None
    assert d.closed and replay_check(sequential(), d.history).ok


@pytest.mark.req("MODEL-027")
def test_decision_steps_come_with_their_start_in_the_same_append() -> None:
    act = Activation(sequential(), [], request=REQUEST)
    d = act.advance(T0, [], random.Random(0))
    assert [t.key for t in d.steps] == ["a"]
    assert d.append[-1]["key"] == "a" and identify(d.append[-1], "history") == "step-started"
    # the same decision is never handed out twice
    assert act.advance(T0, [], random.Random(0)).steps == ()


@pytest.mark.req("MODEL-026", "MODEL-024", "EVT-027", "EVT-028")
def test_sleep_suspends_and_resumes() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        await ctx.sleep("cool-off", timedelta(minutes=5))
        await ctx.sleep_until("later", T0 + timedelta(hours=1, microseconds=1))
        return "awake"

    d = Driver(Workflow("w", wf)).run()
    assert [events(batch) for batch in d.appends] == [
        ["run-started", "sleep-scheduled", "run-suspended"],
        ["sleep-completed", "run-resumed", "sleep-scheduled", "run-suspended"],
        ["sleep-completed", "run-resumed", "run-completed"],
    ]
    sleeps = [m["value"] for m in d.history if identify(m, "history") == "sleep-scheduled"]
    assert (
        sleeps[0]["duration_ms"] == 300_000 and sleeps[0]["wake_at"] == "2026-11-24T10:05:00.000Z"
    )
    # an absolute time is rounded up to the millisecond so the sleep never fires early
    assert sleeps[1]["duration_ms"] is None and sleeps[1]["wake_at"] == "2026-11-24T11:00:00.001Z"
    suspended = [m["value"] for m in d.history if identify(m, "history") == "run-suspended"]
    assert suspended[0]["status"] == "sleeping"
    assert suspended[0]["waiting_for"] == {"inputs": [], "until": "2026-11-24T10:05:00.000Z"}


@pytest.mark.req("EVT-064")
def test_sleep_never_fires_before_wake_at() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        await ctx.sleep("nap", timedelta(seconds=1))
        return 1

    act = Activation(Workflow("w", wf), [], request=REQUEST)
    act.advance(T0, [], random.Random(0))
    assert act.advance(T0 + timedelta(microseconds=999_999), [], random.Random(0)).append == ()
    fired = act.advance(T0 + timedelta(seconds=1), [], random.Random(0))
    assert events(fired.append)[0] == "sleep-completed"


def test_zero_sleep_fires_in_the_same_append() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        await ctx.sleep("nap", timedelta(0))
        return 1

    act = Activation(Workflow("w", wf), [], request=REQUEST)
    assert events(act.advance(T0, [], random.Random(0)).append) == [
        "run-started",
        "sleep-scheduled",
        "sleep-completed",
        "run-completed",
    ]


@pytest.mark.req("EVT-034", "RETRY-012", "EVT-018")
def test_uncaught_exception_fails_the_run_with_type_and_message() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        await ctx.step("a", lambda: 1)
        raise ValueError("total is negative")

    d = Driver(Workflow("w", wf)).run()
    assert d.run_value["status"] == "failed"
    assert d.run_value["error"] == {
        "type": "ValueError",
        "message": "total is negative",
        "details": None,
    }
    assert "Traceback" not in str(d.history)
    assert replay_check(Workflow("w", wf), d.history).ok


def test_output_that_is_not_json_fails_the_run() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        return {1, 2}

    d = Driver(Workflow("w", wf)).run()
    assert d.run_value["error"]["type"] == "TypeError"


@pytest.mark.req("INPUT-006")
def test_uncaught_input_expiry_fails_the_run() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        return await ctx.request_input("approval", schema=True, timeout=timedelta(seconds=1))

    d = Driver(Workflow("w", wf)).run()
    assert d.run_value["error"]["type"] == "InputExpired"
    assert d.run_value["error"]["details"] == {"input": "approval"}


@pytest.mark.req("MODEL-019")
def test_unknown_workflow_fails_a_new_run() -> None:
    act = Activation(
        WorkflowRegistry(), [], request={"run_id": "r", "workflow": "nope", "input": None}
    )
    d = act.advance(T0, [], random.Random(0))
    assert events(d.append) == ["run-started", "run-failed"]
    assert d.append[-1]["value"]["error"]["type"] == "UnknownWorkflow"
    assert d.close_run


EXPENSE_INPUT = {
    "type": "object",
    "required": ["report_id"],
    "properties": {"report_id": {"type": "string"}, "total": {"type": "integer", "minimum": 0}},
}


def typed_workflow(ran: list[Any]) -> WorkflowRegistry:
    reg = WorkflowRegistry()

    @reg.workflow("typed", input_schema=EXPENSE_INPUT)
    async def typed(ctx: Context, report: Any) -> Any:
        ran.append(report)
        return report["report_id"]

    return reg


@pytest.mark.req("MODEL-051")
@pytest.mark.parametrize(
    ("bad", "said"),
    [
        ({"total": 5}, "The run's input: property 'report_id' is required."),
        ({"report_id": 7}, "The run's input: 'report_id' must be of type string."),
        (
            {"report_id": "r", "total": -1},
            "The run's input: 'total' fails the schema's 'minimum' rule.",
        ),
        (None, "The run's input: the value must be of type object."),
    ],
)
def test_an_input_the_workflows_schema_refuses_fails_the_run_before_any_code(
    bad: Any, said: str
) -> None:
    ran: list[Any] = []
    request = {"run_id": "r", "workflow": "typed", "input": bad}
    d = Activation(typed_workflow(ran), [], request=request).advance(T0, [], random.Random(0))
    assert events(d.append) == ["run-started", "run-failed"] and d.close_run
    assert d.append[-1]["value"]["error"] == {
        "type": "InvalidInput",
        "message": said,
        "details": None,
    }
    assert ran == []
    for message in d.append:
        identify(message, "history")
    # Replaying that history (a redeploy, `dwf replay`) agrees with it.
    assert replay_check(typed_workflow(ran), d.append).ok
    assert ran == []


@pytest.mark.req("MODEL-051")
def test_an_input_the_workflows_schema_accepts_runs_as_usual() -> None:
    ran: list[Any] = []
    request = {"run_id": "r", "workflow": "typed", "input": {"report_id": "E-1", "total": 3}}
    d = Activation(typed_workflow(ran), [], request=request).advance(T0, [], random.Random(0))
    assert d.append[-1]["value"]["status"] == "completed" and ran == [request["input"]]


def test_a_workflow_input_schema_that_is_no_json_schema_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        Workflow("w", sequential().fn, input_schema={"type": "no-such-type"})
    with pytest.raises(ValueError, match="outside the schema"):
        Workflow("w", sequential().fn, input_schema={"$ref": "https://example.com/s.json"})


def test_registry_finds_workflows() -> None:
    reg = WorkflowRegistry()

    @reg.workflow("greet")
    async def greet(ctx: Context, name: Any) -> Any:
        return f"hello {name}"

    act = Activation(
        reg,
        [],
        request={
            "type": "start",
            "key": "r",
            "value": {"run_id": "r", "workflow": "greet", "input": "ada"},
            "headers": {"operation": "insert"},
        },
    )
    d = act.advance(T0, [], random.Random(0))
    assert d.append[-1]["value"]["output"] == "hello ada"
    assert reg.names() == ["greet"] and "greet" in reg and len(reg) == 1
    with pytest.raises(ValueError, match="already registered"):
        reg.add(workflow("greet")(greet.fn))


@pytest.mark.req("REPLAY-008")
def test_awaiting_something_else_fails_clearly() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        await asyncio.sleep(0)
        return 1

    d = Driver(Workflow("w", wf)).run()
    assert d.run_value["error"]["type"] == "WorkflowAwaitError"
    assert "step body" in d.run_value["error"]["message"]
    assert issubclass(WorkflowAwaitError, TypeError)


def test_non_async_workflow_fails_clearly() -> None:
    def wf(ctx: Context, _: Any) -> Any:
        return 1

    d = Driver(Workflow("w", wf)).run()
    assert d.run_value["error"]["type"] == "TypeError"


@pytest.mark.req("REPLAY-007", "REPLAY-008")
def test_gather_runs_branches_and_returns_results_in_argument_order() -> None:
    async def branch(ctx: Context, name: str, ms: int) -> str:
        await ctx.sleep(name, timedelta(milliseconds=ms))
        return await ctx.step(name, lambda: name)

    async def wf(ctx: Context, _: Any) -> Any:
        direct = ctx.step("direct", lambda: "d")
        return await ctx.gather(branch(ctx, "slow", 50), branch(ctx, "fast", 10), direct)

    d = Driver(Workflow("w", wf)).run()
    assert d.run_value["output"] == ["slow", "fast", "d"]
    inserts = [
        (m["type"], m["key"], m["value"]["seq"])
        for m in d.history
        if m["headers"]["operation"] == "insert" and m["type"] in ("step", "sleep")
    ]
    assert inserts[:3] == [("step", "direct", 1), ("sleep", "slow", 2), ("sleep", "fast", 3)]
    assert replay_check(Workflow("w", wf), d.history).ok


def test_gather_raises_the_first_error() -> None:
    async def boom() -> None:
        raise KeyError("x")

    async def wf(ctx: Context, _: Any) -> Any:
        try:
            await ctx.gather(ctx.step("fine", lambda: 1), boom())
        except KeyError:
            return "caught"
        return "no"

    assert Driver(Workflow("w", wf)).run().run_value["output"] == "caught"


def test_running_step_keeps_the_run_running_while_another_branch_waits() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        return await ctx.gather(ctx.request_input("a", schema=True), ctx.step("s", lambda: 1))

    act = Activation(Workflow("w", wf), [], request=REQUEST)
    d = act.advance(T0, [], random.Random(0))
    assert d.status == "running" and "run-suspended" not in events(d.append)
    act.step_finished("s", 1, StepSucceeded(1), T0)
    d2 = act.advance(T0, [], random.Random(0))
    assert events(d2.append) == ["step-completed", "run-suspended"]
    assert d2.status == "waiting"


@pytest.mark.req("SEC-010")
def test_history_too_large_fails_the_run() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        for i in range(10):
            await ctx.step(f"s{i}", lambda: 1)
        return "done"

    d = Driver(Workflow("w", wf), limits=Limits(history_messages=6)).run()
    assert d.run_value["error"]["type"] == "HistoryTooLarge"
    assert len(d.history) <= 7  # the terminal event is exempt from the limit
    assert d.closed


@pytest.mark.req("SEC-010")
def test_terminal_event_is_exempt_from_the_history_limit() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        return await ctx.step("s", lambda: 1)

    # run-started, step-started, step-completed fill the limit; run-completed still fits
    d = Driver(Workflow("w", wf), limits=Limits(history_messages=3)).run()
    assert d.run_value["status"] == "completed"
    assert len(d.history) == 4


# --- cancellation (retries.md) -------------------------------------------------------


@pytest.mark.req("CANCEL-003", "EVT-036", "EVT-037", "CANCEL-005", "MODEL-021")
def test_cancel_ends_the_run_before_the_next_step_body() -> None:
    act = Activation(sequential(), [], request=REQUEST)
    d = act.advance(T0, [], random.Random(0))
    assert [t.key for t in d.steps] == ["a"]
    act.step_finished("a", 1, StepSucceeded(1), T0)
    d2 = act.advance(T0, [cancel("c-1", "Customer withdrew the order.")], random.Random(0))
    assert events(d2.append) == ["run-cancelled"]
    assert d2.steps == () and d2.close_run
    run = d2.append[0]
    assert run["headers"]["txid"] == "c-1"
    assert run["value"]["error"] == {
        "type": "Cancelled",
        "message": "Customer withdrew the order.",
        "details": {"cancel_id": "c-1"},
    }
    assert run["value"]["output"] is None and run["value"]["waiting_for"] is None
    # a late body result is ignored (MODEL-021, RETRY-016)
    act.step_finished("a", 1, StepSucceeded(1), T0)
    assert act.advance(T0, [], random.Random(0)).append == ()


@pytest.mark.req("EVT-036", "EVT-037")
def test_cancel_reason_is_cut_and_defaulted() -> None:
    act = Activation(sequential(), [], request=REQUEST)
    d = act.advance(T0, [cancel("c-1", "é" * 2000)], random.Random(0))
    assert d.append[-1]["value"]["error"]["message"] == "é" * 1024
    act2 = Activation(sequential(), [], request=REQUEST)
    d2 = act2.advance(T0, [cancel("c-1")], random.Random(0))
    assert d2.append[-1]["value"]["error"]["message"] == "Run cancelled."


@pytest.mark.req("CANCEL-012")
def test_first_activation_with_a_cancel_runs_nothing() -> None:
    act = Activation(sequential(), [], request=REQUEST)
    d = act.advance(T0, [cancel("c-1")], random.Random(0))
    assert events(d.append) == ["run-started", "run-cancelled"]
    assert d.steps == ()


@pytest.mark.req("CANCEL-005", "RETRY-011")
def test_cancel_forbids_rerunning_an_interrupted_attempt() -> None:
    act = Activation(sequential(), [], request=REQUEST)
    history = list(act.advance(T0, [], random.Random(0)).append)
    fresh = Activation(sequential(), history)
    d = fresh.advance(T0, [cancel("c-1")], random.Random(0))
    assert events(d.append) == ["run-cancelled"] and d.steps == ()


@pytest.mark.req("CANCEL-008", "INPUT-017")
def test_answer_before_the_cancel_counts_and_after_it_is_rejected() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        a = ctx.request_input("a", schema=True)
        b = ctx.request_input("b", schema=True)
        return await ctx.gather(a, b)

    act = Activation(Workflow("w", wf), [], request=REQUEST)
    act.advance(T0, [], random.Random(0))
    inbox = [submission("s-a", "a", 1), cancel("c-1"), submission("s-b", "b", 2), cancel("c-2")]
    d = act.advance(T0, inbox, random.Random(0))
    assert events(d.append) == ["input-received", "run-cancelled"]
    rejections = act.closing(inbox, T0)
    assert [(m["key"], m["value"]["reason"], m["value"]["request"]) for m in rejections] == [
        ("s-b", "run-finished", "b"),
        ("c-2", "run-finished", None),
    ]


@pytest.mark.req("CANCEL-009", "INPUT-015")
def test_cancel_of_an_ended_run_and_duplicate_cancels() -> None:
    d = Driver(
        sequential(),
        input={"total": 1},
        inbox_script=[(T0, submission("s-1", "manager", True))],
    ).run()
    assert d.run_value["status"] == "completed"
    act = Activation(sequential(), d.history)
    assert act.finished
    rejections = act.closing([submission("s-1", "manager", True), cancel("c-9"), cancel("c-9")], T0)
    assert [(m["key"], m["value"]["reason"]) for m in rejections] == [("c-9", "run-finished")]


@pytest.mark.req("CANCEL-003", "INPUT-015")
def test_cancel_while_suspended_and_replayed() -> None:
    d = Driver(
        sequential(),
        input={"total": 1},
        inbox_script=[
            (T0 + timedelta(hours=1), cancel("c-1", "stop")),
            (T0 + timedelta(hours=1), cancel("c-1", "stop")),
        ],
    ).run()
    assert d.run_value["status"] == "cancelled"
    assert events(d.appends[-1]) == ["run-cancelled"]
    assert d.closed
    # the pending input stays pending: a reader treats it as abandoned (CANCEL-008)
    assert [m["value"]["status"] for m in d.history if m["type"] == "input"] == ["pending"]


@pytest.mark.req("MODEL-023", "MODEL-024", "MODEL-026", "EVT-027", "EVT-028")
def test_waiting_for_lists_only_what_the_code_awaits() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        answer = ctx.request_input(
            "later", schema=True, timeout=timedelta(days=9)
        )  # not awaited yet
        await ctx.sleep("nap", timedelta(minutes=1))
        return await answer

    act = Activation(Workflow("w", wf), [], request=REQUEST)
    d1 = act.advance(T0, [], random.Random(0))
    suspended = d1.append[-1]["value"]
    assert suspended["status"] == "sleeping"
    assert suspended["waiting_for"] == {"inputs": [], "until": "2026-11-24T10:01:00.000Z"}
    assert d1.waiting_for_inbox  # an answer is still taken when it comes
    # the answer comes while the code sleeps: recorded, but the run does not move on
    d2 = act.advance(
        T0 + timedelta(seconds=5), [submission("s-1", "later", "yes")], random.Random(0)
    )
    assert events(d2.append) == ["input-received"]
    assert d2.status == "sleeping"
    d3 = act.advance(
        T0 + timedelta(minutes=1), [submission("s-1", "later", "yes")], random.Random(0)
    )
    assert events(d3.append) == ["sleep-completed", "run-resumed", "run-completed"]
    assert d3.append[-1]["value"]["output"] == "yes"
    history = [*d1.append, *d2.append, *d3.append]
    assert replay_check(Workflow("w", wf), history).ok


@pytest.mark.req("SEC-006")
@pytest.mark.parametrize("run_id", ["", "../x", "a/b", "-lead", "x" * 129, 7])
def test_a_run_id_that_cannot_name_a_stream_is_refused(run_id: Any) -> None:
    from durable_workflows.core import HistoryError

    with pytest.raises(HistoryError):
        Activation(sequential(), [], request={"run_id": run_id, "workflow": "w", "input": None})
