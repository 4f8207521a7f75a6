"""The suite's per-message history rules (checks.history_rules) on hand-made histories:
each passes a history that keeps its rule and fails one that breaks it, naming what
is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from durable_workflows_conformance import checks
from durable_workflows_conformance.driver import Observation
from durable_workflows_conformance.scenario import Scenario

RUN = "run-1"
T0 = "2026-01-01T00:00:00.000Z"


def _run(status: str, *, until: str | None = None, txid: str | None = None) -> dict[str, Any]:
    waiting = {"inputs": [], "until": until} if status in ("sleeping", "waiting") else None
    headers: dict[str, Any] = {"operation": "update"}
    if txid is not None:
        headers["txid"] = txid
    return {"type": "run", "key": RUN, "value": {"status": status, "waiting_for": waiting},
            "headers": headers}  # fmt: skip


def _started() -> dict[str, Any]:
    return {"type": "run", "key": RUN, "value": {"status": "running", "waiting_for": None},
            "headers": {"operation": "insert", "txid": RUN}}  # fmt: skip


def _sleep(status: str, wake_at: str) -> dict[str, Any]:
    op = "insert" if status == "scheduled" else "update"
    return {"type": "sleep", "key": "nap", "value": {"status": status, "wake_at": wake_at},
            "headers": {"operation": op}}  # fmt: skip


def _obs(history: list[Any], inbox: list[Any] | None = None, program: Any = None) -> Observation:
    scenario = Scenario(program or {"ops": []})
    return Observation(scenario, RUN, "wf", history, True, inbox or [], {})


def _rejection(key: str, message: str = "The run has finished.") -> dict[str, Any]:
    value = {"submission_id": key, "status": "rejected", "reason": "run-finished",
             "message": message}  # fmt: skip
    return {"type": "submission", "key": key, "value": value,
            "headers": {"operation": "insert", "txid": key}}  # fmt: skip


def _submitted(key: str) -> dict[str, Any]:
    return {"type": "submission", "key": key,
            "value": {"submission_id": key, "request": "r", "value": 1},
            "headers": {"operation": "insert"}}  # fmt: skip


GOOD = [
    _started(),
    _sleep("scheduled", "2026-01-01T00:00:01.000Z"),
    _run("sleeping", until="2026-01-01T00:00:01.000Z"),
    _sleep("completed", "2026-01-01T00:00:01.000Z"),
    _run("running"),
    _run("completed"),
    _rejection("s-b"),
    _rejection("s-a"),
]


def test_a_history_that_keeps_every_rule_passes() -> None:
    checks.history_rules(_obs(GOOD, inbox=[_submitted("s-b"), _submitted("s-a")]))


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ('Traceback (most recent call last):\n  File "/srv/app/x.py", line 3', "Traceback"),
        ("failed at handler (/opt/engine/index.js:10:5)", "at handler"),
        ("error in worker.py:88", ".py:88"),
        ("cannot open /home/deploy/secrets.json", "/home/"),
        ("cannot open C:\\engine\\run.log", "C:\\"),
    ],
)
def test_host_diagnostics_in_an_error_fail_evt_018(text: str, found: str) -> None:
    history = [*GOOD[:5], _run("completed"), _rejection("s-b", text)]
    with pytest.raises(AssertionError, match="host diagnostics") as info:
        checks.errors_carry_no_diagnostics(_obs(history))
    assert found in str(info.value)


def test_a_scripted_message_is_the_programs_own() -> None:
    program = {"ops": [{"op": "raise", "error": {"type": "E", "message": "see /home/x"}}]}
    failed = dict(_run("failed"))
    failed["value"] = {"status": "failed", "error": {"type": "E", "message": "see /home/x",
                                                      "details": None}}  # fmt: skip
    checks.errors_carry_no_diagnostics(_obs([_started(), failed], program=program))


def test_txid_on_another_event_fails_evt_019() -> None:
    history = [*GOOD[:2], _run("sleeping", until="2026-01-01T00:00:01.000Z", txid="t-1")]
    with pytest.raises(AssertionError, match=r"carries headers\.txid 't-1'"):
        checks.txids_where_specified(_obs(history))


def test_resume_without_a_cause_fails_evt_030() -> None:
    history = [*GOOD[:3], _run("running")]
    with pytest.raises(AssertionError, match="nothing recorded since let it proceed"):
        checks.resumed_after_its_cause(_obs(history))


def test_until_later_than_the_earliest_deadline_fails_model_024() -> None:
    history = [*GOOD[:2], _run("sleeping", until="2026-01-01T00:00:02.000Z")]
    with pytest.raises(AssertionError, match="expected the earliest pending deadline"):
        checks.until_is_the_earliest_deadline(_obs(history))
    no_deadline = [_started(), _run("waiting", until=T0)]
    with pytest.raises(AssertionError, match="expected null"):
        checks.until_is_the_earliest_deadline(_obs(no_deadline))


def test_final_rejections_out_of_inbox_order_fail_model_037() -> None:
    with pytest.raises(AssertionError, match="not in inbox order"):
        checks.final_rejections_in_inbox_order(
            _obs(GOOD, inbox=[_submitted("s-a"), _submitted("s-b")])
        )
    assert checks.final_rejections(_obs(GOOD)) == ["s-b", "s-a"]


def test_an_invalid_recorded_schema_fails_evt_068() -> None:
    request = {"type": "input", "key": "n", "value": {"status": "pending", "schema": {"type": 5}},
               "headers": {"operation": "insert"}}  # fmt: skip
    with pytest.raises(AssertionError, match="not valid 2020-12"):
        checks.recorded_schemas_are_valid(_obs([_started(), request]))
