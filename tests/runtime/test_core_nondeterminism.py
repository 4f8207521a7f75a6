"""Non-determinism found in generated programs after generated code changes (hypothesis).

A program (a sequence of steps, sleeps, inputs and records) runs to completion; its history
is cut at a random append boundary where the run is still live (a state the engine can
find). The program is then changed: one primitive renamed, two swapped, one removed, one
inserted, or a record's kind changed. Replaying the cut history against the changed program
must find non-determinism at the predicted position with the predicted sides, record
nothing but ``run-failed`` (REPLAY-018), and ``replay_check`` must report the same details
(REPLAY-030).
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from durable_workflows.core import Activation, replay_check
from durable_workflows.schemas import identify
from tests.runtime.test_core_driver import (
    T0,
    Driver,
    GatherOp,
    InputOp,
    Program,
    RecordOp,
    SleepOp,
    StepOp,
    examples,
    inbox_for,
    leaf_ops,
    make_program_workflow,
    programs,
)

KIND_OF_RECORD = {"now": "time", "random": "random", "uuid": "uuid"}


def describe(op: Any) -> dict[str, str]:
    """The ``{"kind", "name"}`` of the primitive an op issues."""
    if isinstance(op, StepOp):
        return {"kind": "step", "name": op.name}
    if isinstance(op, SleepOp):
        return {"kind": "sleep", "name": op.name}
    if isinstance(op, InputOp):
        return {"kind": "input", "name": op.name}
    assert isinstance(op, RecordOp)
    return {"kind": "record", "name": op.name}


def identity(op: Any) -> tuple[str, str, str | None]:
    d = describe(op)
    return d["kind"], d["name"], KIND_OF_RECORD[op.kind] if isinstance(op, RecordOp) else None


def live_cuts(driver: Driver) -> list[list[dict[str, Any]]]:
    """Histories at each append boundary where the run has not ended."""
    cuts = []
    history: list[dict[str, Any]] = []
    for batch in driver.appends:
        history = history + batch
        statuses = [m["value"]["status"] for m in history if m["type"] == "run"]
        if statuses[-1] in ("completed", "failed", "cancelled"):
            break
        cuts.append(history)
    return cuts


def positions(history: list[dict[str, Any]]) -> int:
    return sum(
        1
        for m in history
        if m["headers"]["operation"] == "insert"
        and m["type"] in ("step", "sleep", "input", "record")
    )


MUTATIONS = ("rename", "swap", "remove", "insert", "record-kind")

NEW_OP = StepOp("brand-new", ("ok",), 1)


@pytest.mark.req("REPLAY-010", "REPLAY-015", "REPLAY-017", "REPLAY-018", "REPLAY-030")
@settings(
    max_examples=examples(200),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    program=st.lists(leaf_ops(), min_size=2, max_size=7).map(tuple),
    mutation=st.sampled_from(MUTATIONS),
    data=st.data(),
)
def test_changed_code_is_detected_where_it_diverges(
    program: Program, mutation: str, data: st.DataObject
) -> None:
    original = Driver(make_program_workflow(program), inbox_script=inbox_for(program)).run()
    cuts = live_cuts(original)
    assume(cuts)
    history = data.draw(st.sampled_from(cuts), label="cut")
    recorded = positions(history)
    assume(recorded >= 1)
    i = data.draw(st.integers(0, recorded - 1), label="index")
    ops = list(program)
    requested: dict[str, str] | None
    if mutation == "rename":
        ops[i] = replace(ops[i], name="renamed")
        requested = describe(ops[i])
    elif mutation == "swap":
        assume(i + 1 < recorded and identity(ops[i]) != identity(ops[i + 1]))
        ops[i], ops[i + 1] = ops[i + 1], ops[i]
        requested = describe(ops[i])
    elif mutation == "remove":
        assume(i + 1 >= len(ops) or identity(ops[i]) != identity(ops[i + 1]))
        del ops[i]
        requested = describe(ops[i]) if i < len(ops) else None  # None: the code ends (case 2)
    elif mutation == "insert":
        ops.insert(i, NEW_OP)
        requested = describe(NEW_OP)
    else:
        assume(isinstance(ops[i], RecordOp))
        other = "random" if ops[i].kind != "random" else "uuid"
        ops[i] = replace(ops[i], kind=other)
        requested = describe(ops[i])
    expected = {"seq": i + 1, "recorded": describe(program[i]), "requested": requested}

    changed = make_program_workflow(tuple(ops))
    act = Activation(changed, history)
    decision = act.advance(T0 + timedelta(days=30), [], random.Random(0))
    assert [identify(m, "history") for m in decision.append] == ["run-failed"]
    assert decision.close_run and decision.steps == ()
    error = decision.append[0]["value"]["error"]
    assert error["type"] == "NonDeterminism"
    assert error["details"] == expected
    assert f"at seq {i + 1} history has" in error["message"]
    report = replay_check(changed, history)
    assert report.error is not None and report.error["details"] == expected


@pytest.mark.req("REPLAY-016", "REPLAY-002")
@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=st.lists(leaf_ops(), min_size=1, max_size=7).map(tuple))
def test_unchanged_code_replays_every_live_cut(program: Program) -> None:
    """The same code never diverges from any durable state of its own run."""
    wf = make_program_workflow(program)
    original = Driver(wf, inbox_script=inbox_for(program)).run()
    for history in live_cuts(original):
        decision = Activation(wf, history).advance(T0, [], random.Random(0))
        assert all(
            m["value"].get("error") is None or m["value"]["error"]["type"] != "NonDeterminism"
            for m in decision.append
            if m["type"] == "run"
        )
        assert replay_check(wf, history).ok


def mutations_of(program: Program) -> st.SearchStrategy[Program]:
    """Programs that differ from ``program`` by one change at any depth (gathers included)."""

    def change(ops: tuple[Any, ...], draw: Any) -> tuple[Any, ...]:
        items = list(ops)
        i = draw(st.integers(0, len(items) - 1))
        op = items[i]
        if isinstance(op, GatherOp) and draw(st.booleans()):
            b = draw(st.integers(0, len(op.branches) - 1))
            branches = list(op.branches)
            branches[b] = change(branches[b], draw)
            items[i] = GatherOp(tuple(branches))
            return tuple(items)
        how = draw(st.sampled_from(["remove", "insert", "rename", "swap"]))
        if how == "remove" and len(items) > 1:
            del items[i]
        elif how == "rename" and not isinstance(op, GatherOp):
            items[i] = replace(op, name="renamed")
        elif how == "swap" and i + 1 < len(items):
            items[i], items[i + 1] = items[i + 1], items[i]
        else:
            items.insert(i, NEW_OP)
        return tuple(items)

    @st.composite
    def build(draw: Any) -> Program:
        return change(program, draw)

    return build()


@pytest.mark.req("REPLAY-018", "REPLAY-030")
@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=programs(), data=st.data())
def test_engine_and_offline_check_agree_on_any_change(
    program: Program, data: st.DataObject
) -> None:
    """Whatever the change, the engine and ``replay_check`` report the same divergence."""
    original = Driver(make_program_workflow(program), inbox_script=inbox_for(program)).run()
    cuts = live_cuts(original)
    assume(cuts)
    history = data.draw(st.sampled_from(cuts), label="cut")
    changed = make_program_workflow(data.draw(mutations_of(program), label="changed"))
    decision = Activation(changed, history).advance(T0 + timedelta(days=30), [], random.Random(0))
    failures = [
        m["value"]["error"]
        for m in decision.append
        if m["type"] == "run" and m["value"]["status"] == "failed"
    ]
    report = replay_check(changed, history)
    if failures and failures[0]["type"] == "NonDeterminism":
        assert [identify(m, "history") for m in decision.append] == ["run-failed"]
        assert report.error is not None
        assert report.error["details"] == failures[0]["details"]
        assert report.error["message"] == failures[0]["message"]
    else:
        assert report.error is None, report.message
