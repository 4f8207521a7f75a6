"""REPLAY-032: two errors are equal by type and by what the error table fixes: the
message of an error raised by code; the fixed details of a protocol-defined type,
whose message the engine words (EVT-099)."""

from __future__ import annotations

import pytest

from durable_workflows.core.errors import FIXED_DETAILS, FREE_MESSAGE, same_error


def err(type_: str, message: str = "m", details: object = None) -> dict[str, object]:
    return {"type": type_, "message": message, "details": details}


@pytest.mark.req("REPLAY-032")
def test_code_errors_compare_by_type_and_message_not_details() -> None:
    assert same_error(err("ValueError", "bad", {"a": 1}), err("ValueError", "bad", None))
    assert not same_error(err("ValueError", "bad"), err("ValueError", "worse"))
    assert not same_error(err("ValueError"), err("TypeError"))


@pytest.mark.req("REPLAY-032", "EVT-099")
def test_protocol_errors_compare_by_their_fixed_parts() -> None:
    failed = {"step": "pay", "attempts": 3, "error": err("Flaky")}
    assert same_error(
        err("StepFailed", "one wording", failed), err("StepFailed", "another", failed)
    )
    assert not same_error(
        err("StepFailed", "same", failed), err("StepFailed", "same", {**failed, "attempts": 2})
    )
    assert same_error(err("InputExpired", "a", {"input": "x"}), err("InputExpired", "b", None))
    cancel = {"cancel_id": "c-1"}
    assert not same_error(
        err("Cancelled", "Run cancelled.", cancel), err("Cancelled", "no", cancel)
    )
    assert {"Cancelled"} == FIXED_DETAILS - FREE_MESSAGE
