"""Replay and non-determinism (replay.md) and patches (versioning.md) in the core."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

from durable_workflows.core import (
    Activation,
    Context,
    HistoryError,
    UnsupportedProtocol,
    Workflow,
    replay_check,
)
from durable_workflows.schemas import identify
from tests.runtime.test_core_driver import T0, Driver, events, submission


def ok(value: Any = None) -> Any:
    return value


def suspended_history(wf: Workflow, inbox: list[Any] | None = None) -> list[dict[str, Any]]:
    """Run ``wf`` until it waits for an inbox message that never comes; return its history."""
    d = Driver(wf, inbox_script=[(T0, m) for m in inbox or []]).run()
    return d.history


def finished_history(wf: Workflow, inbox: list[Any] | None = None) -> list[dict[str, Any]]:
    d = Driver(wf, inbox_script=[(T0, m) for m in inbox or []]).run()
    assert d.closed
    return d.history


def engine_failure(wf: Workflow, history: list[dict[str, Any]]) -> dict[str, Any]:
    """Advance a fresh activation of ``wf`` over ``history``; return the recorded error."""
    act = Activation(wf, history)
    decision = act.advance(T0 + timedelta(hours=1), [], random.Random(0))
    assert decision.close_run
    # REPLAY-018: the append holds run-failed and nothing from the divergent code.
    assert [identify(m, "history") for m in decision.append] == ["run-failed"]
    error: dict[str, Any] = decision.append[0]["value"]["error"]
    assert error["type"] == "NonDeterminism"
    # REPLAY-030: the offline check reports the same details.
    report = replay_check(wf, history)
    assert not report.ok
    assert report.error is not None
    assert report.error["details"] == error["details"]
    return error


def wait_forever(ctx: Context) -> Any:
    return ctx.request_input("hold", schema=True)


# --- the code at the time the runs were recorded -----------------------------------------


async def v1(ctx: Context, _: Any) -> Any:
    await ctx.step("a", ok, 1)
    await ctx.step("b", ok, 2)
    await ctx.sleep("cool-off", timedelta(seconds=1))
    await ctx.now("t")
    return await wait_forever(ctx)


V1 = Workflow("flow", v1)


def variant(*ops: tuple[str, str]) -> Workflow:
    async def fn(ctx: Context, _: Any) -> Any:
        for kind, name in ops:
            if kind == "step":
                await ctx.step(name, ok)
            elif kind == "sleep":
                await ctx.sleep(name, timedelta(seconds=1))
            elif kind == "time":
                await ctx.now(name)
            elif kind == "random":
                await ctx.random(name)
            elif kind == "input":
                await ctx.request_input(name, schema=True)
            elif kind == "end":
                return "done"
        return await wait_forever(ctx)

    return Workflow("flow", fn)


@pytest.fixture(scope="module")
def v1_history() -> list[dict[str, Any]]:
    history = suspended_history(V1)
    assert events(history)[-1] == "run-suspended"
    return history


@pytest.mark.req("REPLAY-002", "REPLAY-011", "REPLAY-016", "WAKE-002")
def test_same_code_replays_without_acting(v1_history: list[dict[str, Any]]) -> None:
    act = Activation(V1, v1_history)
    decision = act.advance(T0 + timedelta(hours=1), [], random.Random(0))
    assert decision.append == ()
    assert decision.steps == ()  # REPLAY-011: no body runs for a finished step
    assert decision.status == "waiting"
    assert replay_check(V1, v1_history).ok


@pytest.mark.req("REPLAY-010", "REPLAY-015", "REPLAY-017", "REPLAY-019")
@pytest.mark.parametrize(
    ("ops", "seq", "recorded", "requested", "words"),
    [
        pytest.param(
            [("step", "b"), ("step", "a")],
            1,
            {"kind": "step", "name": "a"},
            {"kind": "step", "name": "b"},
            'at seq 1 history has step "a" but the code asked for step "b"',
            id="reordered-steps",
        ),
        pytest.param(
            [("step", "a"), ("step", "b2")],
            2,
            {"kind": "step", "name": "b"},
            {"kind": "step", "name": "b2"},
            'at seq 2 history has step "b" but the code asked for step "b2"',
            id="renamed-step",
        ),
        pytest.param(
            [("step", "a"), ("sleep", "cool-off")],
            2,
            {"kind": "step", "name": "b"},
            {"kind": "sleep", "name": "cool-off"},
            'at seq 2 history has step "b" but the code asked for sleep "cool-off"',
            id="removed-step",
        ),
        pytest.param(
            [("step", "a"), ("step", "x"), ("step", "b")],
            2,
            {"kind": "step", "name": "b"},
            {"kind": "step", "name": "x"},
            'at seq 2 history has step "b" but the code asked for step "x"',
            id="added-before-recorded",
        ),
        pytest.param(
            [("step", "a"), ("step", "b"), ("step", "cool-off")],
            3,
            {"kind": "sleep", "name": "cool-off"},
            {"kind": "step", "name": "cool-off"},
            'at seq 3 history has sleep "cool-off" but the code asked for step "cool-off"',
            id="changed-entity-type",
        ),
        pytest.param(
            [("step", "a"), ("step", "b"), ("sleep", "cool-off"), ("random", "t")],
            4,
            {"kind": "record", "name": "t"},
            {"kind": "record", "name": "t"},
            'at seq 4 history has record "t" (kind time) '
            'but the code asked for record "t" (kind random)',
            id="changed-record-kind",
        ),
    ],
)
def test_case_1_mismatch_at_a_position(
    v1_history: list[dict[str, Any]],
    ops: list[tuple[str, str]],
    seq: int,
    recorded: dict[str, str],
    requested: dict[str, str],
    words: str,
) -> None:
    error = engine_failure(variant(*ops), v1_history)
    assert error["details"] == {"seq": seq, "recorded": recorded, "requested": requested}
    assert error["message"] == words


@pytest.mark.req("REPLAY-015", "REPLAY-017")
def test_case_2_code_ends_short_of_the_history(v1_history: list[dict[str, Any]]) -> None:
    error = engine_failure(variant(("step", "a"), ("end", "")), v1_history)
    assert error["details"] == {
        "seq": 2,
        "recorded": {"kind": "step", "name": "b"},
        "requested": None,
    }
    assert (
        error["message"] == 'at seq 2 history has step "b" but the code ended without reaching it'
    )


async def two_waits(ctx: Context, _: Any) -> Any:
    answer = ctx.request_input("approve", schema=True)
    nap = ctx.sleep("remind", timedelta(days=1))
    return await ctx.gather(answer, nap)


async def one_wait(ctx: Context, _: Any) -> Any:
    return await ctx.request_input("approve", schema=True)


@pytest.mark.req("REPLAY-015", "REPLAY-017")
def test_case_3_blocked_short_of_the_history() -> None:
    history = suspended_history(Workflow("w", two_waits))
    error = engine_failure(Workflow("w", one_wait), history)
    assert error["details"] == {
        "seq": 2,
        "recorded": {"kind": "sleep", "name": "remind"},
        "requested": None,
    }
    assert "blocked" in error["message"]


@pytest.mark.req("REPLAY-018")
def test_nothing_from_divergent_code_is_recorded(v1_history: list[dict[str, Any]]) -> None:
    """New code that would start a step and record values before diverging records none of it."""

    async def diverges_late(ctx: Context, _: Any) -> Any:
        await ctx.step("a", ok)
        extra = ctx.step("b", ok)  # matched, but then the code diverges at seq 3
        await ctx.step("not-cool-off", ok)
        return await extra

    act = Activation(Workflow("flow", diverges_late), v1_history)
    decision = act.advance(T0 + timedelta(hours=1), [submission("s1", "hold", 1)], random.Random(0))
    assert [identify(m, "history") for m in decision.append] == ["run-failed"]
    assert decision.steps == ()
    # The submission is not decided by the divergent activation: closing rejects it.
    rejections = act.closing([submission("s1", "hold", 1)], T0 + timedelta(hours=1))
    assert [r["value"]["reason"] for r in rejections] == ["run-finished"]


@pytest.mark.req("REPLAY-030", "REPLAY-017")
def test_finished_history_checked_offline_reports_recorded_null() -> None:
    async def short(ctx: Context, _: Any) -> Any:
        return await ctx.step("a", ok, 1)

    async def longer(ctx: Context, _: Any) -> Any:
        await ctx.step("a", ok, 1)
        return await ctx.step("more", ok, 2)

    history = finished_history(Workflow("w", short))
    report = replay_check(Workflow("w", longer), history)
    assert not report.ok and report.error is not None
    assert report.error["details"] == {
        "seq": 2,
        "recorded": None,
        "requested": {"kind": "step", "name": "more"},
    }


@pytest.mark.req("REPLAY-028", "REPLAY-029")
def test_replay_check_runs_no_bodies_and_reports_output_changes() -> None:
    calls: list[str] = []

    def body(x: int) -> int:
        calls.append("ran")
        return x

    async def v1_(ctx: Context, _: Any) -> Any:
        return await ctx.step("a", body, 1)

    async def v2_(ctx: Context, _: Any) -> Any:
        return (await ctx.step("a", body, 1)) + 1

    history = finished_history(Workflow("w", v1_))
    calls.clear()
    assert replay_check(Workflow("w", v1_), history).ok
    report = replay_check(Workflow("w", v2_), history)
    assert not report.ok and report.error is None
    assert "another output" in report.message
    assert calls == []


@pytest.mark.req("REPLAY-029")
def test_replay_check_stops_at_a_pending_step() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        return await ctx.step("a", ok, 1)

    d = Driver(Workflow("w", wf))
    d.advance()
    d.append(d.decisions[-1].append)  # step-started durable, body never ran
    report = replay_check(Workflow("w", wf), d.history)
    assert report.ok and report.stopped == "blocked"


@pytest.mark.req("REPLAY-006", "REPLAY-007")
def test_positions_follow_issue_order_not_await_order() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        a = ctx.step("a", ok, "A")
        b = ctx.step("b", ok, "B")
        first = await b
        return [first, await a]

    d = Driver(Workflow("w", wf)).run()
    seqs = {m["key"]: m["value"]["seq"] for m in d.history if m["type"] == "step"}
    assert seqs == {"a": 1, "b": 2}
    assert d.run_value["output"] == ["B", "A"]


@pytest.mark.req("REPLAY-013", "REPLAY-008")
def test_outcomes_are_given_in_history_order() -> None:
    """Which of two concurrent steps finished first is read from the history on replay."""

    async def branch(ctx: Context, name: str) -> Any:
        await ctx.step(name, ok, name)
        return (await ctx.now(f"after-{name}")).isoformat()

    async def wf(ctx: Context, _: Any) -> Any:
        return await ctx.gather(branch(ctx, "a"), branch(ctx, "b"))

    wfo = Workflow("w", wf)
    act = Activation(wfo, [], request={"run_id": "r", "workflow": "w", "input": None})
    history: list[dict[str, Any]] = []
    d1 = act.advance(T0, [], random.Random(0))
    history += d1.append
    tasks = {t.key: t for t in d1.steps}
    # b finishes first
    act.step_finished("b", 1, __import__("durable_workflows.core").core.StepSucceeded("b"), T0)
    d2 = act.advance(T0, [], random.Random(0))
    history += d2.append
    act.step_finished("a", 1, __import__("durable_workflows.core").core.StepSucceeded("a"), T0)
    d3 = act.advance(T0, [], random.Random(0))
    history += d3.append
    assert set(tasks) == {"a", "b"}
    records = {m["key"]: m["value"]["seq"] for m in history if m["type"] == "record"}
    assert records["after-b"] < records["after-a"]
    assert replay_check(wfo, history).ok
    # and replaying any prefix continues without divergence
    for cut in range(1, len(history) + 1):
        fresh = Activation(wfo, history[:cut])
        decision = fresh.advance(T0, [], random.Random(0))
        assert all(identify(m, "history") != "run-failed" for m in decision.append)


@pytest.mark.req("REPLAY-020", "REPLAY-021")
def test_records_are_replayed_not_redrawn() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        return [(await ctx.now()).isoformat(), await ctx.random(), await ctx.uuid()]

    wfo = Workflow("w", wf)
    act = Activation(wfo, [], request={"run_id": "r", "workflow": "w", "input": None})
    decision = act.advance(T0, [], random.Random(7))
    output = decision.append[-1]["value"]["output"]
    assert output[0] == "2026-11-24T10:00:00+00:00"
    assert 0.0 <= output[1] < 1.0
    assert output[2][14] == "4" and output[2][19] in "89ab"
    # a history with the records but not the ending replays to the same values, whatever the rng
    partial = list(decision.append[:-1])
    fresh = Activation(wfo, partial)
    later = fresh.advance(T0 + timedelta(days=3), [], random.Random(99))
    assert later.append[-1]["value"]["output"] == output


@pytest.mark.req("REPLAY-004")
def test_finished_run_code_is_not_run() -> None:
    runs: list[int] = []

    async def wf(ctx: Context, _: Any) -> Any:
        runs.append(1)
        return 1

    wfo = Workflow("w", wf)
    history = finished_history(wfo)
    runs.clear()
    decision = Activation(wfo, history).advance(T0, [], random.Random(0))
    assert decision.close_run and decision.append == () and runs == []


# --- patches (versioning.md) ---------------------------------------------------------


async def old_code(ctx: Context, _: Any) -> Any:
    await ctx.step("charge", ok, 1)
    return await wait_forever(ctx)


async def patched_code(ctx: Context, _: Any) -> Any:
    if await ctx.patched("fx-rounding"):
        await ctx.step("round", ok, 0)
    await ctx.step("charge", ok, 1)
    return await wait_forever(ctx)


@pytest.mark.req("VER-015")
def test_patch_recorded_on_live_execution() -> None:
    history = suspended_history(Workflow("w", patched_code))
    names = [(identify(m, "history"), m["key"]) for m in history if m["type"] in ("patch", "step")]
    assert names[0] == ("patch-recorded", "fx-rounding")
    assert history[1]["value"]["seq"] == 1
    assert ("step-started", "round") in names


@pytest.mark.req("VER-012", "REPLAY-006")
def test_patch_absent_from_old_history_takes_old_branch_without_a_position() -> None:
    history = suspended_history(Workflow("w", old_code))
    act = Activation(Workflow("w", patched_code), history)
    decision = act.advance(T0, [], random.Random(0))
    assert decision.append == ()  # nothing diverged, nothing recorded
    assert replay_check(Workflow("w", patched_code), history).ok


@pytest.mark.req("VER-010")
def test_patch_marker_matched_when_code_asks() -> None:
    history = suspended_history(Workflow("w", patched_code))
    assert replay_check(Workflow("w", patched_code), history).ok


@pytest.mark.req("VER-013")
def test_marker_the_code_no_longer_asks_for_is_skipped() -> None:
    async def retired(ctx: Context, _: Any) -> Any:
        await ctx.step("round", ok, 0)
        await ctx.step("charge", ok, 1)
        return await wait_forever(ctx)

    history = suspended_history(Workflow("w", patched_code))
    assert replay_check(Workflow("w", retired), history).ok
    decision = Activation(Workflow("w", retired), history).advance(T0, [], random.Random(0))
    assert decision.append == ()


@pytest.mark.req("VER-013")
def test_markers_at_the_end_are_skipped_when_the_code_ends() -> None:
    async def with_patch(ctx: Context, _: Any) -> Any:
        await ctx.step("a", ok)
        await ctx.patched("p")
        return await wait_forever(ctx)

    async def without(ctx: Context, _: Any) -> Any:
        await ctx.step("a", ok)
        return await wait_forever(ctx)

    history = suspended_history(Workflow("w", with_patch))
    assert replay_check(Workflow("w", without), history).ok


@pytest.mark.req("VER-009", "EVT-006")
def test_repeated_patch_check_answers_the_same_and_records_once() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        first = await ctx.patched("p")
        second = await ctx.patched("p")
        await ctx.step("a", ok)
        third = await ctx.patched("p")
        return [first, second, third]

    d = Driver(Workflow("w", wf)).run()
    assert d.run_value["output"] == [True, True, True]
    assert sum(1 for m in d.history if m["type"] == "patch") == 1
    assert [
        m["value"]["seq"]
        for m in d.history
        if m["headers"]["operation"] == "insert" and m["type"] != "run"
    ] == [1, 2]


@pytest.mark.req("VER-010", "VER-012")
def test_reordered_patch_checks_get_false_for_the_skipped_one() -> None:
    async def ab(ctx: Context, _: Any) -> Any:
        await ctx.patched("a")
        await ctx.patched("b")
        await ctx.step("s", ok)
        return await wait_forever(ctx)

    async def ba(ctx: Context, _: Any) -> Any:
        b = await ctx.patched("b")
        a = await ctx.patched("a")
        await ctx.step("s", ok, [a, b])
        return await wait_forever(ctx)

    history = suspended_history(Workflow("w", ab))
    act = Activation(Workflow("w", ba), history)
    decision = act.advance(T0, [], random.Random(0))
    assert decision.append == ()
    seen: list[Any] = []

    async def probe(ctx: Context, _: Any) -> Any:
        b = await ctx.patched("b")
        a = await ctx.patched("a")
        seen.append([a, b])
        await ctx.step("s", ok)
        return await wait_forever(ctx)

    assert replay_check(Workflow("w", probe), history).ok
    assert seen == [[False, True]]


# --- histories the core refuses ------------------------------------------------------


def _started(protocol: str = "1.0") -> dict[str, Any]:
    return {
        "type": "run",
        "key": "r",
        "value": {
            "run_id": "r",
            "workflow": "w",
            "protocol": protocol,
            "input": None,
            "status": "running",
            "started_at": "2026-11-24T10:00:00.000Z",
            "waiting_for": None,
            "output": None,
            "error": None,
            "finished_at": None,
        },
        "headers": {"operation": "insert", "txid": "r"},
    }


@pytest.mark.req("VER-003")
def test_unknown_major_is_refused() -> None:
    with pytest.raises(UnsupportedProtocol):
        Activation(V1, [_started("2.0")])


@pytest.mark.req("VER-005")
def test_later_minor_is_refused() -> None:
    with pytest.raises(UnsupportedProtocol):
        Activation(V1, [_started("1.1")])


@pytest.mark.req("VER-006")
def test_unclassifiable_message_is_refused() -> None:
    with pytest.raises(HistoryError):
        Activation(
            V1,
            [
                _started(),
                {"type": "mystery", "key": "x", "value": {}, "headers": {"operation": "insert"}},
            ],
        )


@pytest.mark.req("MODEL-016")
def test_history_must_start_with_run_started() -> None:
    with pytest.raises(HistoryError):
        Activation(V1, [{**_started(), "headers": {"operation": "update"}}])


@pytest.mark.req("EVT-016")
def test_gap_in_positions_is_refused() -> None:
    step = {
        "type": "step",
        "key": "a",
        "value": {
            "name": "a",
            "seq": 2,
            "status": "running",
            "attempt": 1,
            "max_attempts": 1,
            "timeout_ms": None,
            "started_at": "2026-11-24T10:00:00.000Z",
            "result": None,
            "error": None,
            "retry_at": None,
            "finished_at": None,
        },
        "headers": {"operation": "insert"},
    }
    with pytest.raises(HistoryError):
        Activation(V1, [_started(), step])


def test_unregistered_workflow_of_a_started_run_is_left_alone() -> None:
    from durable_workflows.core import WorkflowRegistry

    with pytest.raises(HistoryError):
        Activation(WorkflowRegistry(), [_started()])


@pytest.mark.req("REPLAY-029")
def test_replay_check_stops_where_the_code_goes_past_a_live_history() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        await ctx.step("a", ok)
        await ctx.now()
        await ctx.patched("p")
        return await ctx.step("b", ok)

    d = Driver(Workflow("w", wf))
    d.advance()
    d.append(d.decisions[-1].append)
    act = d.activation()
    act.step_finished("a", 1, __import__("durable_workflows.core").core.StepSucceeded(1), T0)
    history = [*d.history, *act.advance(T0, [], random.Random(0)).append]
    for cut in (history[:1], history[:2], history):
        report = replay_check(Workflow("w", wf), cut)
        assert report.ok and report.stopped == "blocked", report


@pytest.mark.req("VER-016", "EVT-006", "MODEL-026")
def test_skipped_marker_asked_for_past_the_history_gets_false_and_no_second_marker() -> None:
    async def ab(ctx: Context, _: Any) -> Any:
        hold = ctx.request_input(
            "hold", schema=True
        )  # issued first, so the markers end the history
        await ctx.patched("a")
        await ctx.patched("b")
        return await hold

    async def ba(ctx: Context, _: Any) -> Any:
        hold = ctx.request_input("hold", schema=True)
        b = await ctx.patched("b")  # VER-010: skips marker a, matches b
        a = await ctx.patched("a")  # nothing more recorded, but a was skipped: false
        await ctx.step("s", ok, [a, b])
        return await hold

    history = suspended_history(Workflow("w", ab))
    assert [m["key"] for m in history if m["type"] == "patch"] == ["a", "b"]
    assert events(history)[-1] == "run-suspended"
    act = Activation(Workflow("w", ba), history)
    decision = act.advance(T0, [], random.Random(0))
    assert events(decision.append) == ["run-resumed", "step-started"]
    assert decision.append[1]["value"]["seq"] == 4
    assert decision.steps[0].args == ([False, True],)


@pytest.mark.req("VER-009", "VER-012", "VER-015")
def test_patch_check_works_without_await() -> None:
    async def new(ctx: Context, _: Any) -> Any:
        if ctx.patched("fx"):
            return await ctx.step("convert", ok, "rounded")
        return await ctx.step("convert-v1", ok, "plain")

    async def old(ctx: Context, _: Any) -> Any:
        return await ctx.step("convert-v1", ok, "plain")

    assert Driver(Workflow("w", new)).run().run_value["output"] == "rounded"
    d = Driver(Workflow("w", old))
    d.advance()
    d.append(d.decisions[-1].append)  # the old code's step-started is durable
    act = Activation(Workflow("w", new), d.history)
    decision = act.advance(T0, [], random.Random(0))
    assert decision.append == () and [t.key for t in decision.steps] == ["convert-v1"]
