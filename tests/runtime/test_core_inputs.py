"""Inputs and the inbox (inputs.md) in the core."""

from __future__ import annotations

import contextlib
import random
from datetime import timedelta
from typing import Any

import pytest

from durable_workflows.core import (
    Activation,
    Context,
    InputExpired,
    InvalidPrimitive,
    Limits,
    Workflow,
    replay_check,
)
from durable_workflows.core.timefmt import parse_ts
from durable_workflows.schemas import identify
from tests.runtime.test_core_driver import T0, Driver, events, submission

APPROVAL = {
    "type": "object",
    "properties": {"approved": {"type": "boolean"}, "comment": {"type": "string", "maxLength": 20}},
    "required": ["approved"],
}


def ask(
    timeout: timedelta | None = None, schema: Any = APPROVAL, name: str = "approval"
) -> Workflow:
    async def wf(ctx: Context, _: Any) -> Any:
        try:
            return await ctx.request_input(name, schema=schema, prompt="Approve?", timeout=timeout)
        except InputExpired as exc:
            return ["expired", exc.key]

    return Workflow("w", wf)


def start(wf: Workflow) -> tuple[Activation, list[dict[str, Any]]]:
    act = Activation(wf, [], request={"run_id": "r", "workflow": "w", "input": None})
    decision = act.advance(T0, [], random.Random(0))
    return act, list(decision.append)


def outcomes(history: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    """(event, key, reason-or-txid) of inbox outcomes, in history order."""
    out = []
    for m in history:
        name = identify(m, "history")
        if name == "input-received":
            out.append((name, m["key"], m["value"]["submission_id"]))
        elif name == "input-rejected":
            out.append((name, m["key"], m["value"]["reason"]))
    return out


@pytest.mark.req("INPUT-004", "MODEL-022", "MODEL-023", "MODEL-024", "EVT-027", "EVT-028")
def test_request_is_recorded_and_the_run_waits() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        b = ctx.request_input("b", schema=True, timeout=timedelta(hours=2))
        a = ctx.request_input(
            "a", schema={"type": "integer"}, prompt="n?", timeout=timedelta(hours=1)
        )
        nap = ctx.sleep("nap", timedelta(minutes=30))
        return await ctx.gather(a, b, nap)

    act = Activation(Workflow("w", wf), [], request={"run_id": "r", "workflow": "w", "input": None})
    d = act.advance(T0, [], random.Random(0))
    assert events(d.append) == [
        "run-started",
        "input-requested",
        "input-requested",
        "sleep-scheduled",
        "run-suspended",
    ]
    request = d.append[2]["value"]
    assert request["prompt"] == "n?" and request["schema"] == {"type": "integer"}
    assert parse_ts(request["expires_at"]) - parse_ts(request["requested_at"]) == timedelta(hours=1)
    run = d.append[-1]["value"]
    assert run["status"] == "waiting"
    assert run["waiting_for"] == {"inputs": ["b", "a"], "until": "2026-11-24T10:30:00.000Z"}
    assert d.waiting_for_inbox and d.wake_at == T0 + timedelta(minutes=30)


@pytest.mark.req("INPUT-019", "INPUT-017", "INPUT-005", "INPUT-022", "INPUT-025")
def test_first_valid_submission_wins_in_inbox_order() -> None:
    act, history = start(ask())
    inbox = [
        submission("s-bad", "approval", {"approved": "yes"}),
        submission("s-a", "approval", {"approved": True}),
        submission("s-b", "approval", {"approved": False}),
    ]
    d = act.advance(T0 + timedelta(seconds=5), inbox, random.Random(0))
    history += d.append
    assert outcomes(history) == [
        ("input-rejected", "s-bad", "schema-invalid"),
        ("input-received", "approval", "s-a"),
        ("input-rejected", "s-b", "already-answered"),
    ]
    received = next(m for m in history if identify(m, "history") == "input-received")
    assert received["headers"]["txid"] == "s-a"
    assert received["value"]["value"] == {"approved": True}
    rejected = [m for m in history if m["type"] == "submission"]
    assert all(m["headers"]["txid"] == m["key"] for m in rejected)
    assert "yes" not in rejected[0]["value"]["message"]  # INPUT-025: the value is not copied
    assert "approval" in rejected[0]["value"]["message"]
    assert d.close_run and d.append[-1]["value"]["output"] == {"approved": True}


@pytest.mark.req("INPUT-015", "INPUT-014")
def test_duplicates_are_no_ops() -> None:
    act, history = start(ask())
    inbox = [
        submission("s-bad", "approval", {"nope": 1}),
        submission("s-bad", "approval", {"approved": True}),  # same id: duplicate, even if valid
        submission("s-a", "approval", {"approved": True}),
        submission("s-a", "approval", {"approved": True}),
    ]
    d = act.advance(T0, inbox, random.Random(0))
    history += d.append
    history += act.closing(inbox, T0)
    assert outcomes(history) == [
        ("input-rejected", "s-bad", "schema-invalid"),
        ("input-received", "approval", "s-a"),
    ]


@pytest.mark.req("INPUT-016", "INPUT-010")
def test_rereading_the_inbox_is_idempotent() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        await ctx.request_input("a", schema=True)
        return await ctx.request_input("b", schema=True)

    act, history = start(Workflow("w", wf))
    inbox = [submission("s1", "a", 1), submission("junk-1", "zzz", 1)]
    d1 = act.advance(T0, inbox, random.Random(0))
    history += d1.append
    d2 = act.advance(T0, inbox, random.Random(0))
    assert d2.append == ()
    # A fresh activation over the same history and inbox decides nothing again.
    fresh = Activation(Workflow("w", wf), history)
    tampered = [
        {
            **m,
            "headers": {
                "operation": "insert",
                "txid": "other",
                "timestamp": "2020-01-01T00:00:00Z",
            },
        }
        for m in inbox
    ]
    assert fresh.advance(T0, tampered, random.Random(0)).append == ()


@pytest.mark.req("INPUT-020", "INPUT-021")
def test_early_submission_is_kept_until_the_request_is_reached() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        await ctx.step("prepare", lambda: 1)
        await ctx.sleep("wait", timedelta(seconds=10))
        return await ctx.request_input("approval", schema=APPROVAL)

    early = [(T0, submission("s-early", "approval", {"approved": True}))]
    d = Driver(Workflow("w", wf), inbox_script=early).run()
    assert d.run_value["output"] == {"approved": True}
    # accepted without the run ever waiting for input
    waits = [m["value"]["status"] for m in d.history if identify(m, "history") == "run-suspended"]
    assert waits == ["sleeping"]
    assert outcomes(d.history) == [("input-received", "approval", "s-early")]


@pytest.mark.req("INPUT-020", "INPUT-039")
def test_kept_submission_for_a_request_never_made_is_rejected_when_the_run_ends() -> None:
    d = Driver(
        ask(),
        inbox_script=[
            (T0, submission("s-typo", "aproval", {"approved": True})),
            (T0, submission("s-ok", "approval", {"approved": True})),
        ],
    ).run()
    assert outcomes(d.history) == [
        ("input-received", "approval", "s-ok"),
        ("input-rejected", "s-typo", "run-finished"),
    ]
    assert d.closed


@pytest.mark.req("INPUT-017", "INPUT-024", "INPUT-014", "SEC-005")
@pytest.mark.parametrize(
    ("message", "inbox_id", "named"),
    [
        ("a bare string", "inbox-0", None),
        (
            {
                "type": "submission",
                "key": "s1",
                "value": {"submission_id": "s2", "request": "approval", "value": 1},
                "headers": {"operation": "insert"},
            },
            "s1",
            "approval",
        ),
        (
            {
                "type": "submission",
                "key": "s1",
                "value": {"submission_id": "s1", "request": "approval"},
                "headers": {"operation": "insert"},
            },
            "s1",
            "approval",
        ),
        (
            {
                "type": "submission",
                "key": "bad key!",
                "value": {},
                "headers": {"operation": "insert"},
            },
            "inbox-0",
            None,
        ),
        (
            {
                "type": "submission",
                "key": "s1",
                "value": {"submission_id": "s1", "request": "a#b#c", "value": 1},
                "headers": {"operation": "update"},
            },
            "s1",
            None,
        ),
        (
            {
                "type": "cancel",
                "key": "c1",
                "value": {"cancel_id": "c2", "reason": None},
                "headers": {"operation": "insert"},
            },
            "c1",
            None,
        ),
    ],
    ids=["bare-string", "key-differs", "no-value", "bad-key", "update", "cancel-key-differs"],
)
def test_malformed_messages_are_rejected(message: Any, inbox_id: str, named: str | None) -> None:
    act, _ = start(ask())
    d = act.advance(T0, [message], random.Random(0))
    assert events(d.append) == ["input-rejected"]
    value = d.append[0]["value"]
    assert (d.append[0]["key"], value["reason"], value["request"]) == (inbox_id, "malformed", named)
    assert d.status == "waiting"


@pytest.mark.req("INPUT-031", "INPUT-032")
def test_too_large_value_is_rejected() -> None:
    big = "x" * 100
    assert Limits().submission_bytes == 65_536 and Limits().submissions_per_run == 1_000

    act2 = Activation(
        ask(schema=True),
        [],
        request={"run_id": "r", "workflow": "w", "input": None},
        limits=Limits(submission_bytes=50),
    )
    inbox = [submission("s-big", "approval", big), submission("s-ok", "approval", "ok")]
    d2 = act2.advance(T0, inbox, random.Random(0))
    assert outcomes(list(d2.append)) == [
        ("input-rejected", "s-big", "too-large"),
        ("input-received", "approval", "s-ok"),
    ]


@pytest.mark.req("INPUT-033")
def test_submissions_beyond_the_count_limit_are_rejected() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        return [await ctx.request_input(f"q{i}", schema=True) for i in range(4)]

    inbox = [
        "junk",  # fails check 2: not counted
        submission("s0", "q0", 0),
        submission("s0", "q0", 0),  # duplicate: not counted
        submission("s1", "q1", 1),
        submission("s2", "q2", 2),
        submission("s3", "q3", 3),
    ]
    d = Driver(
        Workflow("w", wf),
        inbox_script=[(T0, m) for m in inbox],
        limits=Limits(submissions_per_run=3),
    ).run()
    assert outcomes(d.history) == [
        ("input-rejected", "inbox-0", "malformed"),
        ("input-received", "q0", "s0"),
        ("input-rejected", "s3", "too-large"),  # decided at once; the kept ones when reached
        ("input-received", "q1", "s1"),
        ("input-received", "q2", "s2"),
    ]


@pytest.mark.req("INPUT-034", "INPUT-036", "INPUT-006")
def test_request_expires_at_its_deadline_never_before() -> None:
    act, history = start(ask(timeout=timedelta(minutes=5)))
    early = act.advance(T0 + timedelta(minutes=5) - timedelta(milliseconds=1), [], random.Random(0))
    assert early.append == () and early.wake_at == T0 + timedelta(minutes=5)
    d = act.advance(T0 + timedelta(minutes=5, milliseconds=412), [], random.Random(0))
    history += d.append
    expired = next(m["value"] for m in d.append if identify(m, "history") == "input-expired")
    assert expired["expired_at"] == "2026-11-24T10:05:00.412Z"
    assert d.append[-1]["value"]["output"] == ["expired", "approval"]


@pytest.mark.req("INPUT-035")
def test_the_person_wins_the_race_with_the_deadline() -> None:
    act, _ = start(ask(timeout=timedelta(minutes=5)))
    late_read = [submission("s-last-second", "approval", {"approved": True})]
    d = act.advance(T0 + timedelta(minutes=6), late_read, random.Random(0))
    assert outcomes(list(d.append)) == [("input-received", "approval", "s-last-second")]
    assert "input-expired" not in events(d.append)


@pytest.mark.req("INPUT-035")
def test_no_expiry_unless_the_inbox_was_read_to_its_tail() -> None:
    act, _ = start(ask(timeout=timedelta(minutes=5)))
    d = act.advance(T0 + timedelta(minutes=6), [], random.Random(0), inbox_at_tail=False)
    assert d.append == ()
    d2 = act.advance(T0 + timedelta(minutes=6), [], random.Random(0), inbox_at_tail=True)
    assert "input-expired" in events(d2.append)


@pytest.mark.req("INPUT-017", "INPUT-003")
def test_submission_after_expiry_is_rejected_expired() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        with contextlib.suppress(InputExpired):
            await ctx.request_input("approval", schema=True, timeout=timedelta(seconds=1))
        return await ctx.request_input("other", schema=True)

    act = Activation(Workflow("w", wf), [], request={"run_id": "r", "workflow": "w", "input": None})
    act.advance(T0, [], random.Random(0))
    act.advance(T0 + timedelta(seconds=2), [], random.Random(0))
    d = act.advance(
        T0 + timedelta(seconds=3), [submission("s-late", "approval", True)], random.Random(0)
    )
    assert outcomes(list(d.append)) == [("input-rejected", "s-late", "expired")]


@pytest.mark.req("INPUT-026")
def test_submissions_are_validated_against_the_recorded_schema() -> None:
    _, history = start(ask(schema={"type": "integer"}))
    loose = ask(schema=True)  # new code passes another schema: the recorded one counts
    fresh = Activation(loose, history)
    d = fresh.advance(
        T0,
        [submission("s1", "approval", "text"), submission("s2", "approval", 7)],
        random.Random(0),
    )
    assert outcomes(list(d.append)) == [
        ("input-rejected", "s1", "schema-invalid"),
        ("input-received", "approval", "s2"),
    ]


@pytest.mark.req("INPUT-027")
def test_format_is_an_annotation_only() -> None:
    act, _ = start(ask(schema={"type": "string", "format": "email"}))
    d = act.advance(T0, [submission("s1", "approval", "not an email")], random.Random(0))
    assert outcomes(list(d.append)) == [("input-received", "approval", "s1")]


@pytest.mark.req("INPUT-029", "INPUT-028")
@pytest.mark.parametrize(
    "schema",
    [
        {"type": "nonsense"},
        {"$ref": "https://example.com/schema.json"},
        {"properties": {"a": {"$ref": "other.json#/x"}}},
        {"$ref": "#/$defs/missing"},
        "a string",
        {"minimum": float("nan")},
    ],
    ids=["invalid", "remote-ref", "relative-ref", "dangling-local-ref", "not-a-schema", "not-json"],
)
def test_bad_schemas_raise_before_anything_is_recorded(schema: Any) -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        try:
            ctx.request_input("approval", schema=schema)
        except InvalidPrimitive:
            return "refused"
        return "accepted"

    d = Driver(Workflow("w", wf)).run()
    assert d.run_value["output"] == "refused"
    assert events(d.history) == ["run-started", "run-completed"]


def test_local_refs_are_allowed() -> None:
    schema = {"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n"}
    act, _ = start(ask(schema=schema))
    d = act.advance(
        T0, [submission("s1", "approval", "x"), submission("s2", "approval", 3)], random.Random(0)
    )
    assert outcomes(list(d.append)) == [
        ("input-rejected", "s1", "schema-invalid"),
        ("input-received", "approval", "s2"),
    ]


@pytest.mark.req("INPUT-039", "MODEL-033", "MODEL-037")
def test_closing_rejects_undecided_messages_in_inbox_order() -> None:
    act, _ = start(ask())
    first = [submission("s-a", "approval", {"approved": True})]
    d = act.advance(T0, first, random.Random(0))
    assert d.close_run
    final = [
        *first,
        submission("s-b", "approval", {"approved": False}),
        "junk",
        submission("s-b", "approval", {"approved": False}),
        {
            "type": "cancel",
            "key": "c1",
            "value": {"cancel_id": "c1", "reason": None},
            "headers": {"operation": "insert"},
        },
        submission("s-huge", "approval", "x" * 70_000),
    ]
    rejections = act.closing(final, T0)
    assert [(m["key"], m["value"]["reason"]) for m in rejections] == [
        ("s-b", "run-finished"),
        ("inbox-2", "malformed"),
        ("c1", "run-finished"),
        ("s-huge", "too-large"),
    ]
    for m in rejections:
        assert identify(m, "history") == "input-rejected"
    assert act.closing(final, T0) == []  # deciding again records nothing


@pytest.mark.req("INPUT-038")
def test_two_tabs_converge() -> None:
    d = Driver(
        ask(),
        inbox_script=[
            (T0 + timedelta(seconds=1), submission("s-tab-a", "approval", {"approved": True})),
            (
                T0 + timedelta(seconds=1),
                submission("s-tab-b", "approval", {"approved": False, "comment": "no"}),
            ),
        ],
    ).run()
    by_txid = {m["headers"].get("txid"): identify(m, "history") for m in d.history}
    assert by_txid["s-tab-a"] == "input-received"
    assert by_txid["s-tab-b"] == "input-rejected"
    assert replay_check(ask(), d.history).ok


@pytest.mark.req("INPUT-018")
def test_answers_are_decided_before_the_code_continues() -> None:
    """Every message read is decided before a new step body is dispatched."""

    async def wf(ctx: Context, _: Any) -> Any:
        a = await ctx.request_input("a", schema=True)
        await ctx.step("after-a", lambda: 1)
        return [a, await ctx.request_input("b", schema=True)]

    act, _ = start(Workflow("w", wf))
    d = act.advance(
        T0,
        [submission("s-a", "a", 1), submission("s-b", "b", 2), submission("s-a2", "a", 3)],
        random.Random(0),
    )
    names = events(d.append)
    assert names.index("input-rejected") < names.index("step-started")
    assert [t.key for t in d.steps] == ["after-a"]


@pytest.mark.req("SEC-028")
def test_a_closed_inbox_on_a_live_run_is_decided_then_fails_the_run() -> None:
    act, _ = start(ask())
    answer = submission("s-1", "approval", {"approved": True})
    d = act.advance(T0 + timedelta(seconds=1), [answer], random.Random(0), inbox_closed=True)
    assert [identify(m, "history") for m in d.append] == ["input-received", "run-failed"]
    assert d.close_run
    error = d.append[-1]["value"]["error"]
    assert error["type"] == "InboxClosed" and d.append[-1]["value"]["status"] == "failed"
    # A cancel in a closed inbox still wins: the run is cancelled, not failed.
    act, _ = start(ask())
    cancel = {
        "type": "cancel",
        "key": "c-1",
        "value": {"cancel_id": "c-1", "reason": None},
        "headers": {"operation": "insert"},
    }
    d = act.advance(T0 + timedelta(seconds=1), [cancel], random.Random(0), inbox_closed=True)
    assert d.append[-1]["value"]["status"] == "cancelled"


@pytest.mark.req("SEC-005")
def test_messages_that_cannot_be_recorded_are_malformed_not_fatal() -> None:
    act, _ = start(ask())
    surrogate = submission("s-1", "approval", {"approved": True, "comment": "\ud800"})
    deep: Any = True
    for _ in range(1000):
        deep = [deep]
    nested = submission("s-2", "approval", {"approved": True, "x": deep})
    good = submission("s-3", "approval", {"approved": True})
    d = act.advance(T0 + timedelta(seconds=1), [surrogate, nested, good], random.Random(0))
    assert outcomes(list(d.append)) == [
        ("input-rejected", "s-1", "malformed"),
        ("input-rejected", "s-2", "malformed"),
        ("input-received", "approval", "s-3"),
    ]
