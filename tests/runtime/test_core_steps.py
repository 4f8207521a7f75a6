"""Steps: attempts, retries with backoff, timeouts and failures (retries.md) in the core."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

import pytest

from durable_workflows.core import (
    Activation,
    Context,
    InvalidPrimitive,
    Limits,
    NonRetryableError,
    RetryPolicy,
    StepErrored,
    StepFailed,
    StepSucceeded,
    StepTimedOut,
    Workflow,
    current_step,
    replay_check,
)
from durable_workflows.core.timefmt import ceil_ms, parse_ts
from durable_workflows.schemas import identify
from tests.runtime.test_core_driver import T0, Driver, TimedOut, events


class Flaky:
    """A body that fails ``failures`` times (with ``exc``), then returns ``value``."""

    def __init__(
        self, failures: int, exc: type[Exception] = ConnectionError, value: Any = "ok"
    ) -> None:
        self.failures = failures
        self.exc = exc
        self.value = value
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc(f"failure {self.calls}")
        return self.value


def one_step(body: Any, **options: Any) -> Workflow:
    async def wf(ctx: Context, _: Any) -> Any:
        return await ctx.step("charge", body, **options)

    return Workflow("w", wf)


def step_messages(history: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(identify(m, "history"), m["value"]["attempt"]) for m in history if m["type"] == "step"]


@pytest.mark.req("RETRY-021", "RETRY-004", "RETRY-006", "RETRY-007", "RETRY-008", "RETRY-010")
def test_retries_with_exponential_backoff_then_success() -> None:
    body = Flaky(2)
    policy = RetryPolicy(max_attempts=3, jitter=0.0)
    d = Driver(one_step(body, retry=policy)).run()
    assert step_messages(d.history) == [
        ("step-started", 1),
        ("step-attempt-failed", 1),
        ("step-attempt-started", 2),
        ("step-attempt-failed", 2),
        ("step-attempt-started", 3),
        ("step-completed", 3),
    ]
    failed = [m["value"] for m in d.history if identify(m, "history") == "step-attempt-failed"]
    # delay(1) = 1000 ms, delay(2) = 2000 ms, from the failure decision
    assert parse_ts(failed[0]["retry_at"]) - T0 == timedelta(seconds=1)
    assert parse_ts(failed[1]["retry_at"]) - T0 == timedelta(seconds=3)
    assert failed[0]["error"] == {
        "type": "ConnectionError",
        "message": "failure 1",
        "details": None,
    }
    # while only a retry is pending the run sleeps until retry_at (retries.md)
    suspends = [m["value"] for m in d.history if identify(m, "history") == "run-suspended"]
    assert suspends[0]["status"] == "sleeping"
    assert suspends[0]["waiting_for"] == {"inputs": [], "until": failed[0]["retry_at"]}
    assert d.run_value["output"] == "ok"


@pytest.mark.req("RETRY-004", "RETRY-005")
def test_jitter_is_drawn_from_the_rng_and_recorded() -> None:
    policy = RetryPolicy(max_attempts=2, initial_interval=timedelta(seconds=10))
    wf = one_step(Flaky(1), retry=policy)
    act = Activation(wf, [], request={"run_id": "r", "workflow": "w", "input": None})
    d1 = act.advance(T0, [], random.Random(0))
    task = d1.steps[0]
    act.step_finished(task.key, 1, StepErrored("E", "boom"), T0)
    d2 = act.advance(T0, [], random.Random(42))
    retry_at = parse_ts(d2.append[0]["value"]["retry_at"])
    expected_jitter = random.Random(42).random() * 0.2 * 10_000
    assert retry_at == ceil_ms(T0 + timedelta(milliseconds=10_000 + expected_jitter))
    assert timedelta(seconds=10) <= retry_at - T0 <= timedelta(seconds=12)
    assert d2.wake_at == retry_at


def test_backoff_is_capped_by_max_interval() -> None:
    policy = RetryPolicy(
        max_attempts=5,
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=10,
        max_interval=timedelta(seconds=30),
        jitter=0,
    )
    assert [policy.delay_ms(a) for a in (1, 2, 3, 4)] == [1000, 10000, 30000, 30000]


@pytest.mark.req("RETRY-009", "RETRY-018", "RETRY-019")
def test_final_failure_reaches_the_code_and_fails_the_run() -> None:
    body = Flaky(5)
    d = Driver(one_step(body, retry=RetryPolicy(max_attempts=2, jitter=0))).run()
    assert step_messages(d.history)[-1] == ("step-failed", 2)
    final = next(m["value"] for m in d.history if identify(m, "history") == "step-failed")
    assert final["retry_at"] is None and final["finished_at"] is not None
    error = d.run_value["error"]
    assert d.run_value["status"] == "failed"
    assert error["type"] == "StepFailed"
    assert error["details"] == {
        "step": "charge",
        "attempts": 2,
        "error": {"type": "ConnectionError", "message": "failure 2", "details": None},
    }
    assert "charge" in error["message"]
    assert body.calls == 2
    assert replay_check(one_step(body, retry=2), d.history).ok


@pytest.mark.req("RETRY-018")
def test_caught_failure_is_the_same_on_replay() -> None:
    seen: list[Any] = []

    async def wf(ctx: Context, _: Any) -> Any:
        try:
            await ctx.step("charge", Flaky(9, ValueError), retry=1)
        except StepFailed as exc:
            seen.append((exc.key, exc.attempts, exc.error, exc.error_type))
            return await ctx.step("refund", lambda: "refunded")
        return None

    d = Driver(Workflow("w", wf)).run()
    assert d.run_value["output"] == "refunded"
    first = list(seen)
    seen.clear()
    assert replay_check(Workflow("w", wf), d.history).ok
    assert (
        seen
        == first
        == [
            (
                "charge",
                1,
                {"type": "ValueError", "message": "failure 1", "details": None},
                "ValueError",
            )
        ]
    )


@pytest.mark.req("RETRY-014")
def test_non_retryable_errors_end_the_step_at_once() -> None:
    class CardDeclined(NonRetryableError):
        pass

    def declined() -> Any:
        raise CardDeclined("card declined", details={"code": "51"})

    d = Driver(one_step(declined, retry=5)).run()
    assert step_messages(d.history) == [("step-started", 1), ("step-failed", 1)]
    assert d.run_value["error"]["details"]["error"] == {
        "type": "CardDeclined",
        "message": "card declined",
        "details": {"code": "51"},
    }

    d2 = Driver(
        one_step(Flaky(9, KeyError), retry=RetryPolicy(max_attempts=5, non_retryable=("KeyError",)))
    ).run()
    assert step_messages(d2.history) == [("step-started", 1), ("step-failed", 1)]


@pytest.mark.req("RETRY-015")
def test_timeout_fails_the_attempt_with_step_timeout() -> None:
    calls = [0]

    def slow() -> Any:
        calls[0] += 1
        if calls[0] == 1:
            raise TimedOut()  # the driver reports StepTimedOut, as a shell does after timeout_ms
        return "fast enough"

    d = Driver(
        one_step(slow, retry=RetryPolicy(max_attempts=2, jitter=0), timeout=timedelta(seconds=5))
    ).run()
    failed = next(m["value"] for m in d.history if identify(m, "history") == "step-attempt-failed")
    assert failed["timeout_ms"] == 5000
    assert failed["error"] == {
        "type": "StepTimeout",
        "message": "Attempt 1 of step 'charge' exceeded 5000 ms.",
        "details": {"timeout_ms": 5000},
    }
    assert d.run_value["output"] == "fast enough"


@pytest.mark.req("RETRY-015")
def test_step_timeout_can_be_non_retryable() -> None:
    def slow() -> Any:
        raise TimedOut()

    policy = RetryPolicy(max_attempts=3, non_retryable=("StepTimeout",))
    d = Driver(one_step(slow, retry=policy, timeout=timedelta(milliseconds=10))).run()
    assert step_messages(d.history) == [("step-started", 1), ("step-failed", 1)]


@pytest.mark.req("EVT-052")
def test_result_that_is_not_json_fails_without_retry() -> None:
    d = Driver(one_step(lambda: {1, 2}, retry=3)).run()
    assert step_messages(d.history) == [("step-started", 1), ("step-failed", 1)]
    assert d.run_value["error"]["details"]["error"]["type"] == "InvalidResult"


@pytest.mark.req("SEC-009")
def test_result_too_large_fails_without_retry() -> None:
    d = Driver(one_step(lambda: "x" * 100, retry=3), limits=Limits(result_bytes=50)).run()
    assert step_messages(d.history) == [("step-started", 1), ("step-failed", 1)]
    assert d.run_value["error"]["details"]["error"]["type"] == "ResultTooLarge"


@pytest.mark.req("REPLAY-014")
def test_results_come_back_decoded_from_json() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        value: Any = await ctx.step("pair", lambda: (1, 2))
        assert value == [1, 2]
        return value

    assert Driver(Workflow("w", wf)).run().run_value["output"] == [1, 2]


@pytest.mark.req("RETRY-003")
def test_recorded_max_attempts_and_timeout_govern_later_attempts() -> None:
    async def v1(ctx: Context, _: Any) -> Any:
        return await ctx.step(
            "charge",
            Flaky(9),
            retry=RetryPolicy(max_attempts=2, jitter=0),
            timeout=timedelta(seconds=3),
        )

    async def v2(ctx: Context, _: Any) -> Any:
        return await ctx.step(
            "charge",
            Flaky(9),
            retry=RetryPolicy(max_attempts=9, jitter=0),
            timeout=timedelta(seconds=30),
        )

    act = Activation(Workflow("w", v1), [], request={"run_id": "r", "workflow": "w", "input": None})
    d1 = act.advance(T0, [], random.Random(0))
    history = list(d1.append)
    # new code deployed: the recorded values apply
    act2 = Activation(Workflow("w", v2), history)
    d2 = act2.advance(T0, [], random.Random(0))
    assert d2.steps[0].timeout_ms == 3000
    act2.step_finished("charge", 1, StepErrored("E", "x"), T0)
    d3 = act2.advance(T0, [], random.Random(0))
    history += d2.append + d3.append
    assert identify(d3.append[0], "history") == "step-attempt-failed"
    d4 = act2.advance(T0 + timedelta(seconds=2), [], random.Random(0))
    act2.step_finished("charge", 2, StepErrored("E", "y"), T0 + timedelta(seconds=2))
    d5 = act2.advance(T0 + timedelta(seconds=2), [], random.Random(0))
    assert identify(d5.append[0], "history") == "step-failed"
    assert d5.append[0]["value"]["max_attempts"] == 2
    del d4


@pytest.mark.req("RETRY-011", "REPLAY-012")
def test_interrupted_attempt_runs_again_as_the_same_attempt() -> None:
    wf = one_step(Flaky(0))
    act = Activation(wf, [], request={"run_id": "r", "workflow": "w", "input": None})
    d1 = act.advance(T0, [], random.Random(0))
    history = list(d1.append)
    # the worker dies while the body runs; a new activation continues the same attempt
    act2 = Activation(wf, history)
    d2 = act2.advance(T0 + timedelta(minutes=1), [], random.Random(0))
    assert d2.append == ()
    assert [(t.key, t.attempt) for t in d2.steps] == [("charge", 1)]


@pytest.mark.req("RETRY-006", "REPLAY-012", "WAKE-003")
def test_retrying_step_waits_for_recorded_retry_at_after_a_restart() -> None:
    wf = one_step(Flaky(1), retry=RetryPolicy(max_attempts=2, jitter=0))
    act = Activation(wf, [], request={"run_id": "r", "workflow": "w", "input": None})
    history = list(act.advance(T0, [], random.Random(0)).append)
    act.step_finished("charge", 1, StepErrored("E", "x"), T0)
    history += act.advance(T0, [], random.Random(0)).append
    fresh = Activation(wf, history)
    early = fresh.advance(T0 + timedelta(milliseconds=999), [], random.Random(0))
    assert early.steps == () and early.append == ()
    assert early.wake_at == T0 + timedelta(seconds=1)
    due = fresh.advance(T0 + timedelta(seconds=1), [], random.Random(0))
    assert events(due.append) == ["step-attempt-started", "run-resumed"]
    assert [(t.key, t.attempt) for t in due.steps] == [("charge", 2)]


@pytest.mark.req("RETRY-016")
def test_outcome_of_an_attempt_already_decided_is_ignored() -> None:
    wf = one_step(Flaky(0))
    act = Activation(wf, [], request={"run_id": "r", "workflow": "w", "input": None})
    act.advance(T0, [], random.Random(0))
    act.step_finished("charge", 1, StepTimedOut(), T0)
    act.step_finished("charge", 1, StepSucceeded("late"), T0)  # the timed-out body ends anyway
    act.step_finished("nope", 1, StepSucceeded("x"), T0)
    d = act.advance(T0, [], random.Random(0))
    assert events(d.append)[0] == "step-attempt-failed"
    assert d.append[0]["value"]["result"] is None


@pytest.mark.req("REPLAY-024")
def test_body_learns_run_id_key_and_attempt() -> None:
    seen: list[Any] = []

    def body() -> str:
        info = current_step()
        assert info is not None
        seen.append((info.run_id, info.key, info.attempt, info.idempotency_key))
        if info.attempt == 1:
            raise ConnectionError("again")
        return info.idempotency_key

    async def wf(ctx: Context, _: Any) -> Any:
        await ctx.step("charge", lambda: "first")
        return await ctx.step("charge", body, retry=RetryPolicy(max_attempts=2, jitter=0))

    Driver(Workflow("w", wf), run_id="exp-2041").run()
    assert seen == [
        ("exp-2041", "charge#2", 1, "exp-2041/charge#2"),
        ("exp-2041", "charge#2", 2, "exp-2041/charge#2"),
    ]
    assert current_step() is None


@pytest.mark.req("REPLAY-024")
def test_async_bodies_are_handed_to_the_shell() -> None:
    async def body(x: int) -> Any:
        info = current_step()
        assert info is not None
        return [x * 2, info.key]

    async def wf(ctx: Context, _: Any) -> Any:
        return await ctx.step("double", body, 21)

    act = Activation(Workflow("w", wf), [], request={"run_id": "r", "workflow": "w", "input": None})
    d = act.advance(T0, [], random.Random(0))
    coro = d.steps[0].call()
    assert current_step() is None  # set only while the body runs
    result = asyncio.run(coro)
    act.step_finished("double", 1, StepSucceeded(result), T0)
    assert act.advance(T0, [], random.Random(0)).append[-1]["value"]["output"] == [42, "double"]


@pytest.mark.req("RETRY-002", "REPLAY-005")
@pytest.mark.parametrize(
    "options",
    [
        {"retry": 0},
        {"retry": RetryPolicy},
        {"timeout": timedelta(0)},
        {"timeout": timedelta(seconds=-1)},
    ],
    ids=["zero-attempts", "bad-retry-type", "zero-timeout", "negative-timeout"],
)
def test_invalid_policy_raises_before_anything_is_recorded(options: dict[str, Any]) -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        try:
            ctx.step("s", lambda: 1, **options)
        except InvalidPrimitive as exc:
            return ["invalid", str(exc)]
        return "accepted"

    d = Driver(Workflow("w", wf)).run()
    assert d.run_value["output"][0] == "invalid"
    assert events(d.history) == ["run-started", "run-completed"]


@pytest.mark.req("RETRY-002")
@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": True},
        {"initial_interval": timedelta(0)},
        {"backoff_coefficient": 0.5},
        {"backoff_coefficient": float("nan")},
        {"max_interval": timedelta(milliseconds=10)},
        {"non_retryable": "KeyError"},
        {"jitter": 0.5},
    ],
)
def test_retry_policy_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidPrimitive):
        RetryPolicy(**kwargs)


@pytest.mark.req("REPLAY-005", "EVT-014")
@pytest.mark.parametrize("name", ["", "a#b", "tab\there", "x" * 129, 5])
def test_bad_names_raise_in_the_code(name: Any) -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        try:
            ctx.step(name, lambda: 1)
        except InvalidPrimitive:
            return "refused"
        return "accepted"

    d = Driver(Workflow("w", wf)).run()
    assert d.run_value["output"] == "refused"
    assert events(d.history) == ["run-started", "run-completed"]


@pytest.mark.req("EVT-015")
def test_keys_count_occurrences_per_entity_type() -> None:
    async def wf(ctx: Context, _: Any) -> Any:
        for _ in range(3):
            await ctx.step("fetch", lambda: 1)
        await ctx.sleep("fetch", timedelta(0))
        return None

    d = Driver(Workflow("w", wf)).run()
    keys = [
        (m["type"], m["key"])
        for m in d.history
        if m["headers"]["operation"] == "insert" and m["type"] != "run"
    ]
    assert keys == [("step", "fetch"), ("step", "fetch#2"), ("step", "fetch#3"), ("sleep", "fetch")]
