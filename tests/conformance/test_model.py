"""The suite's pure model on hand-written programs (spec: replay, inputs, retries)."""

from __future__ import annotations

from typing import Any

import pytest

from durable_workflows_conformance.model import delay, non_determinism, predict
from durable_workflows_conformance.scenario import Scenario, Submission

STEP_ONCE = {"retry": {"max_attempts": 1}}


def events(scenario: Scenario) -> list[tuple[str, str, str, Any]]:
    """(type, key, operation, status or reason) of each predicted message."""
    out = []
    for m in predict(scenario).history:
        value = m["value"]
        out.append((m["type"], m["key"], m["op"], value.get("status") or value.get("reason")))
    return out


@pytest.mark.req("REPLAY-006", "REPLAY-009", "EVT-015", "EVT-016")
def test_sequential_steps_take_positions_and_numbered_keys() -> None:
    program = {
        "ops": [
            {"op": "step", "name": "a", "result": 1, "as": "x", **STEP_ONCE},
            {"op": "sleep", "name": "a", "duration_ms": 5},
            {"op": "step", "name": "a", "result": 2, "as": "y", **STEP_ONCE},
        ]
    }
    prediction = predict(Scenario(program))
    inserts = [(m["type"], m["key"], m["value"]["seq"]) for m in prediction.history[1:]
               if m["op"] == "insert"]  # fmt: skip
    assert inserts == [("step", "a", 1), ("sleep", "a", 2), ("step", "a#2", 3)]
    assert prediction.status == "completed"
    assert prediction.output == {"x": 1, "y": 2}
    assert events(Scenario(program))[-1] == ("run", "<run>", "update", "completed")


def test_a_sleep_suspends_and_resumes_the_run() -> None:
    program = {"ops": [{"op": "sleep", "name": "nap", "duration_ms": 10}]}
    assert events(Scenario(program)) == [
        ("run", "<run>", "insert", "running"),
        ("sleep", "nap", "insert", "scheduled"),
        ("run", "<run>", "update", "sleeping"),
        ("sleep", "nap", "update", "completed"),
        ("run", "<run>", "update", "running"),
        ("run", "<run>", "update", "completed"),
    ]


@pytest.mark.req("RETRY-008", "RETRY-009", "RETRY-019")
def test_a_step_that_keeps_failing_retries_then_fails_the_run() -> None:
    op = {
        "op": "step",
        "name": "pay",
        "fail_attempts": 9,
        "error": {"type": "Down", "message": "service down"},
        "retry": {"max_attempts": 2, "initial_interval_ms": 10},
    }
    prediction = predict(Scenario({"ops": [op]}))
    steps = [(m["value"]["status"], m["value"]["attempt"]) for m in prediction.history
             if m["type"] == "step"]  # fmt: skip
    assert steps == [("running", 1), ("retrying", 1), ("running", 2), ("failed", 2)]
    assert prediction.status == "failed"
    assert prediction.error == {
        "type": "StepFailed",
        "details": {
            "step": "pay",
            "attempts": 2,
            "error": {"type": "Down", "message": "service down", "details": None},
        },
    }


@pytest.mark.req("RETRY-014")
def test_a_non_retryable_error_fails_the_step_at_once() -> None:
    op = {
        "op": "step",
        "name": "pay",
        "fail_attempts": 1,
        "error": {"type": "Fatal", "message": "no"},
        "retry": {"max_attempts": 3, "non_retryable": ["Fatal"]},
        "catch": True,
        "as": "r",
    }
    prediction = predict(Scenario({"ops": [op]}))
    assert prediction.output == {"r": {"failed": {"type": "Fatal", "message": "no"}}}
    assert [m["value"]["status"] for m in prediction.history if m["type"] == "step"] == [
        "running",
        "failed",
    ]


def test_backoff_follows_the_formula() -> None:
    policy = {"initial_interval_ms": 1000, "backoff_coefficient": 2.0, "max_interval_ms": 5000}
    assert [delay(a, policy) for a in (1, 2, 3, 4)] == [1000, 2000, 4000, 5000]


ASK = {"op": "input", "name": "ok", "schema": {"type": "boolean"}, "as": "ok"}


@pytest.mark.req("INPUT-017", "INPUT-019", "INPUT-015")
def test_first_valid_submission_wins_and_duplicates_record_nothing() -> None:
    subs = (
        Submission("s1", "ok", "yes"),
        Submission("s2", "ok", True),
        Submission("s2", "ok", False),
        Submission("s3", "ok", False),
    )
    prediction = predict(Scenario({"ops": [ASK]}, None, subs))
    assert prediction.output == {"ok": True}
    rejected = {m["key"]: m["value"]["reason"] for m in prediction.history
                if m["type"] == "submission"}  # fmt: skip
    assert rejected == {"s1": "schema-invalid", "s3": "already-answered"}


@pytest.mark.req("INPUT-020", "INPUT-021")
def test_an_early_answer_is_kept_and_taken_without_suspending() -> None:
    prediction = predict(Scenario({"ops": [ASK]}, None, (Submission("s1", "ok", True, "early"),)))
    statuses = [m["value"]["status"] for m in prediction.history if m["type"] == "run"]
    assert statuses == ["running", "completed"]


@pytest.mark.req("INPUT-039")
def test_a_kept_submission_for_an_unmade_request_is_rejected_at_the_end() -> None:
    subs = (Submission("s1", "never", 1, "early"),)
    prediction = predict(Scenario({"ops": []}, None, subs))
    assert prediction.history[-1]["value"]["reason"] == "run-finished"
    assert prediction.history[-2]["value"]["status"] == "completed"


def test_an_answer_after_the_end_is_refused() -> None:
    subs = (Submission("s1", "ok", True), Submission("s2", "ok", True, "late"))
    prediction = predict(Scenario({"ops": [ASK]}, None, subs))
    assert prediction.refused == [1]


@pytest.mark.req("INPUT-006")
def test_an_expired_request_fails_the_run_unless_caught() -> None:
    timed = {**ASK, "timeout_ms": 100}
    assert predict(Scenario({"ops": [timed]})).error == {"type": "InputExpired"}
    caught = {**timed, "on_expired": {"default": False}}
    assert predict(Scenario({"ops": [caught]})).output == {"ok": False}


@pytest.mark.req("MODEL-023", "EVT-028", "MODEL-026")
def test_a_gather_resumes_and_suspends_again_on_each_outcome() -> None:
    program = {
        "ops": [
            {
                "op": "parallel",
                "ops": [
                    {"op": "input", "name": "x", "schema": True, "as": "x"},
                    {"op": "sleep", "name": "nap", "duration_ms": 50},
                ],
            }
        ]
    }
    prediction = predict(Scenario(program, None, (Submission("s1", "x", 1),)))
    waits = [m["value"]["waiting_for"] for m in prediction.history if m["type"] == "run"]
    assert waits[1] == {"inputs": ["x"], "until": True}
    assert waits[2] is None  # resumed on the answer
    assert waits[3] == {"inputs": [], "until": True}  # then sleeping on the nap alone
    assert prediction.output == {"x": 1}


@pytest.mark.req("VER-009", "EVT-006")
def test_a_patch_id_is_recorded_once() -> None:
    patch = {"op": "patch", "id": "p", "then": [], "else": []}
    prediction = predict(Scenario({"ops": [patch, patch, {"op": "sleep", "name": "s",
                                                          "duration_ms": 1}]}))  # fmt: skip
    patches = [m for m in prediction.history if m["type"] == "patch"]
    assert len(patches) == 1
    sleep = next(m for m in prediction.history if m["type"] == "sleep")
    assert sleep["value"]["seq"] == 2


def test_a_scenario_that_waits_forever_is_refused() -> None:
    with pytest.raises(RuntimeError, match="waiting forever"):
        predict(Scenario({"ops": [ASK]}))


def _history(*ops: dict[str, Any]) -> list[dict[str, Any]]:
    gate = {"op": "input", "name": "gate", "schema": True}
    return predict(Scenario({"ops": [*ops, gate]}, None, (Submission("g", "gate", 1),))).history


A = {"op": "step", "name": "a", "result": 1}
B = {"op": "step", "name": "b", "result": 2}


@pytest.mark.req("REPLAY-015", "REPLAY-017")
def test_non_determinism_case_1_a_different_primitive_at_a_position() -> None:
    history = _history(A, B)
    assert non_determinism(history, {"ops": [A, {**B, "name": "c"}]}, None) == {
        "seq": 2,
        "recorded": {"kind": "step", "name": "b"},
        "requested": {"kind": "step", "name": "c"},
    }
    sleep = {"op": "sleep", "name": "b", "duration_ms": 1}
    assert non_determinism(history, {"ops": [A, sleep]}, None)["requested"] == {  # type: ignore[index]
        "kind": "sleep",
        "name": "b",
    }


@pytest.mark.req("REPLAY-015", "REPLAY-017")
def test_non_determinism_case_2_the_code_ends_early() -> None:
    history = _history(A, B)
    assert non_determinism(history, {"ops": [A]}, None) == {
        "seq": 2,
        "recorded": {"kind": "step", "name": "b"},
        "requested": None,
    }


def _msg(kind: str, key: str, op: str, **value: Any) -> dict[str, Any]:
    return {"type": kind, "key": key, "op": op, "txid": None, "value": {"name": key, **value}}


@pytest.mark.req("REPLAY-015", "REPLAY-017")
def test_non_determinism_case_3_blocked_with_history_left() -> None:
    # The old code issued gate and z concurrently; the new code waits on gate alone.
    history = [
        _msg("step", "a", "insert", seq=1, status="running"),
        _msg("step", "a", "update", seq=1, status="completed", result=1),
        _msg("input", "gate", "insert", seq=2, status="pending"),
        _msg("step", "z", "insert", seq=3, status="running"),
    ]
    gate = {"op": "input", "name": "gate", "schema": True}
    assert non_determinism(history, {"ops": [A, gate]}, None) == {
        "seq": 3,
        "recorded": {"kind": "step", "name": "z"},
        "requested": None,
    }


def test_same_code_is_deterministic_and_new_primitives_at_the_end_are_not_divergence() -> None:
    history = _history(A, B)
    gate = {"op": "input", "name": "gate", "schema": True}
    assert non_determinism(history, {"ops": [A, B, gate]}, None) is None
    assert non_determinism(history, {"ops": [A, B, gate, A]}, None) is None


# -- cancellation -------------------------------------------------------------------------


def _cancel(cancel_id: str, when: str = "early", at: int = 0, **extra: Any) -> Submission:
    return Submission(cancel_id, "", None, when=when, kind="cancel", at=at, **extra)  # type: ignore[arg-type]


@pytest.mark.req("CANCEL-012", "EVT-037", "EVT-038")
def test_a_cancel_before_the_run_starts_ends_it_before_any_step() -> None:
    step = {"op": "step", "name": "a", "result": 1}
    subs = (Submission("s1", "ok", True, "early"), _cancel("c1"))
    prediction = predict(Scenario({"ops": [step, ASK]}, None, subs))
    assert events(Scenario({"ops": [step, ASK]}, None, subs)) == [
        ("run", "<run>", "insert", "running"),
        ("run", "<run>", "update", "cancelled"),
        ("submission", "s1", "insert", "rejected"),
    ]
    assert prediction.history[-1]["value"]["reason"] == "run-finished"
    assert prediction.status == "cancelled"
    assert prediction.error == {
        "type": "Cancelled",
        "message": "Run cancelled.",
        "details": {"cancel_id": "c1"},
    }
    assert prediction.history[1]["txid"] == "c1"


@pytest.mark.req("CANCEL-003", "CANCEL-005", "MODEL-020")
def test_a_cancel_at_a_wait_takes_the_answers_before_it_and_no_step_after() -> None:
    step = {"op": "step", "name": "after", "result": 1}
    answer = Submission("s1", "ok", True)
    cancel = _cancel("c1", "suspended", 1, reason="stop")
    before = predict(Scenario({"ops": [ASK, step]}, None, (answer, cancel))).history
    assert [(m["type"], m["value"].get("status")) for m in before[1:]] == [
        ("input", "pending"),
        ("run", "waiting"),
        ("input", "received"),
        ("run", "cancelled"),  # straight from waiting: no run-resumed, no step
    ]
    assert before[-1]["value"]["error"]["message"] == "stop"
    after = predict(Scenario({"ops": [ASK, step]}, None, (cancel, answer))).history
    tail = [(m["type"], m["value"].get("reason") or m["value"]["status"]) for m in after[3:]]
    assert tail == [("run", "cancelled"), ("submission", "run-finished")]


@pytest.mark.req("CANCEL-009", "INPUT-015")
def test_a_second_cancel_is_rejected_and_a_repeated_id_records_nothing() -> None:
    subs = (_cancel("c1"), _cancel("c2"), _cancel("c1"))
    history = predict(Scenario({"ops": [ASK]}, None, subs)).history
    rejected = [m for m in history if m["type"] == "submission"]
    assert [(m["key"], m["value"]["request"], m["value"]["reason"]) for m in rejected] == [
        ("c2", None, "run-finished")
    ]
    assert history[1]["txid"] == "c1"


def test_a_cancel_sent_after_the_end_is_refused_and_a_long_reason_is_cut() -> None:
    subs = (Submission("s1", "ok", True), _cancel("c1", "suspended", 10_000))
    assert predict(Scenario({"ops": [ASK]}, None, subs)).refused == [1]
    long = _cancel("c1", reason="x" * 2000)
    assert len(predict(Scenario({"ops": [ASK]}, None, (long,))).error["message"]) == 1024


def test_a_malformed_cancel_is_rejected_and_the_run_goes_on() -> None:
    subs = (_cancel("c1", malformed=True), Submission("s1", "ok", True))
    prediction = predict(Scenario({"ops": [ASK]}, None, subs))
    assert prediction.status == "completed"
    rejected = [m["value"] for m in prediction.history if m["type"] == "submission"]
    assert rejected == [
        {"submission_id": "c1", "request": None, "status": "rejected", "reason": "malformed"}
    ]


# -- step timeouts ------------------------------------------------------------------------


@pytest.mark.req("RETRY-015", "RETRY-003")
def test_hanging_attempts_time_out_and_retry() -> None:
    op = {
        "op": "step",
        "name": "slow",
        "result": 7,
        "timeout_ms": 500,
        "hang_attempts": [1],
        "retry": {"max_attempts": 2, "initial_interval_ms": 300},
        "as": "r",
    }
    prediction = predict(Scenario({"ops": [op]}))
    steps = [m["value"] for m in prediction.history if m["type"] == "step"]
    assert [(v["status"], v["attempt"], v["timeout_ms"]) for v in steps] == [
        ("running", 1, 500),
        ("retrying", 1, 500),
        ("running", 2, 500),
        ("completed", 2, 500),
    ]
    assert steps[1]["error"] == {
        "type": "StepTimeout",
        "message": None,
        "details": {"timeout_ms": 500},
    }
    assert prediction.output == {"r": 7}
    fatal = {**op, "retry": {"max_attempts": 3, "non_retryable": ["StepTimeout"]}}
    assert predict(Scenario({"ops": [fatal]})).error["details"]["attempts"] == 1


def test_a_step_timeout_message_is_scrubbed() -> None:
    from durable_workflows_conformance.scrub import scrub_error

    error = {"type": "StepTimeout", "message": "Attempt 1 exceeded 5 ms.", "details": {}}
    assert scrub_error(error)["message"] is None
    assert scrub_error({**error, "type": "Other"})["message"] == "Attempt 1 exceeded 5 ms."


# -- non-determinism with parallel groups and patches ------------------------------------------


def _patch(patch_id: str, then: list[Any], otherwise: list[Any] | None = None) -> dict[str, Any]:
    return {"op": "patch", "id": patch_id, "then": then, "else": otherwise or []}


@pytest.mark.req("VER-010", "VER-012", "VER-013")
def test_patch_checks_against_recorded_markers() -> None:
    history = _history(_patch("p", [A]), B)
    gate = {"op": "input", "name": "gate", "schema": True}
    # The same code, and code that retired the check keeping its new branch: no divergence.
    assert non_determinism(history, {"ops": [_patch("p", [A]), B, gate]}, None) is None
    assert non_determinism(history, {"ops": [A, B, gate]}, None) is None
    # A new check before recorded primitives returns false and takes no position.
    assert non_determinism(history, {"ops": [_patch("q", [B]), _patch("p", [A]), B, gate]},
                           None) is None  # fmt: skip
    # Its old branch, or a renamed check's old branch, meets the recorded step a.
    assert non_determinism(history, {"ops": [_patch("p2", [A], [B]), B, gate]}, None) == {
        "seq": 2,
        "recorded": {"kind": "step", "name": "a"},
        "requested": {"kind": "step", "name": "b"},
    }


@pytest.mark.req("VER-016")
def test_a_skipped_marker_is_not_recorded_again() -> None:
    history = _history(_patch("p", []), A)
    gate = {"op": "input", "name": "gate", "schema": True}
    # p's marker is skipped before a; a later patched("p") past the history is false.
    program = {"ops": [A, gate, _patch("p", [B], [])]}
    assert non_determinism(history, program, None) is None


def test_parallel_groups_are_matched_member_by_member() -> None:
    group = {"op": "parallel", "ops": [A, B]}
    history = _history(group)
    gate = {"op": "input", "name": "gate", "schema": True}
    assert non_determinism(history, {"ops": [A, B, gate]}, None) is None  # flattened
    swapped = {"op": "parallel", "ops": [B, A]}
    assert non_determinism(history, {"ops": [swapped, gate]}, None) == {
        "seq": 1,
        "recorded": {"kind": "step", "name": "a"},
        "requested": {"kind": "step", "name": "b"},
    }
    shorter = {"op": "parallel", "ops": [A]}
    assert non_determinism(history, {"ops": [shorter, gate]}, None) == {
        "seq": 2,
        "recorded": {"kind": "step", "name": "b"},
        "requested": {"kind": "input", "name": "gate"},
    }


@pytest.mark.req("REPLAY-013", "REPLAY-015")
def test_an_outcome_order_the_changed_code_cannot_follow_is_case_3() -> None:
    from durable_workflows_conformance.model import non_determinism_readings

    b = {"op": "step", "name": "b", "result": 0}
    gate = {"op": "input", "name": "gate", "schema": True}
    history = [
        _msg("step", "b", "insert", seq=1, status="running"),
        _msg("step", "b", "update", seq=1, status="completed", result=2),
        _msg("step", "b#2", "insert", seq=2, status="running"),
        _msg("step", "b#3", "insert", seq=3, status="running"),
        _msg("step", "b#3", "update", seq=3, status="completed", result=0),
        _msg("step", "b#2", "update", seq=2, status="completed", result=0),
        _msg("input", "gate", "insert", seq=4, status="pending"),
    ]
    for entry in history:
        entry["value"]["name"] = entry["key"].split("#")[0]
    changed = {"ops": [{"op": "parallel", "ops": [b, b]}, gate]}
    recorded = {"kind": "step", "name": "b"}
    # replay.md, case 3: b#3's outcome holds back b#2's, so the code is blocked.
    assert non_determinism_readings(history, changed, None) == [
        {"seq": 3, "recorded": recorded, "requested": None},
    ]
    # The reading the specification rules out would report the gate instead.
    assert non_determinism(history, changed, None, strict_order=False) == {
        "seq": 3,
        "recorded": recorded,
        "requested": {"kind": "input", "name": "gate"},
    }
    # Code that follows the recorded order has one reading.
    same = {"ops": [b, {"op": "parallel", "ops": [b, b]}, gate]}
    assert non_determinism_readings(history, same, None) == [None]
