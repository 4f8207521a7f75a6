"""Rules of spec/events.md that JSON Schema cannot express, checked by ``identify``."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from durable_workflows import _event_rules, schemas

EXAMPLES = schemas.schema_root() / "examples"

Mutation = Callable[[dict[str, Any]], None]


def _set(*path: str, to: Any) -> Mutation:
    def mutate(message: dict[str, Any]) -> None:
        node = message
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = to

    return mutate


# (requirement, event, valid example, mutation, path reported)
CASES: list[tuple[str, str, str, Mutation, str]] = [
    (
        "EVT-023",
        "run-started",
        "expense-approval",
        _set("key", to="exp-2026-0043"),
        "/value/run_id",
    ),
    (
        "EVT-025",
        "run-started",
        "expense-approval",
        _set("headers", "txid", to="r2"),
        "/headers/txid",
    ),
    ("EVT-026", "run-suspended", "expense-cool-off-sleep", _set("key", to="r2"), "/value/run_id"),
    ("EVT-029", "run-resumed", "crm-retry-due", _set("key", to="r2"), "/value/run_id"),
    ("EVT-031", "run-completed", "expense-paid", _set("key", to="r2"), "/value/run_id"),
    ("EVT-033", "run-failed", "step-failed-unhandled", _set("key", to="r2"), "/value/run_id"),
    ("EVT-036", "run-cancelled", "crm-no-reason", _set("key", to="r2"), "/value/run_id"),
    (
        "EVT-038",
        "run-cancelled",
        "crm-no-reason",
        _set("headers", "txid", to="c2"),
        "/headers/txid",
    ),
    ("EVT-015", "step-started", "crm-second-page", _set("key", to="fetch#2"), "/key"),
    ("EVT-015", "sleep-scheduled", "expense-cool-off", _set("key", to="cool-down"), "/key"),
    ("EVT-015", "step-completed", "expense-sum", _set("key", to="total"), "/key"),
    ("EVT-015", "step-failed", "expense-no-retries", _set("key", to="sum-2#2"), "/key"),
    ("EVT-015", "input-requested", "expense-manager-approval", _set("key", to="boss"), "/key"),
    ("EVT-015", "value-recorded", "random-jitter", _set("key", to="noise#2"), "/key"),
    (
        "EVT-045",
        "step-attempt-started",
        "expense-pay-second-attempt",
        _set("value", "attempt", to=4),
        "/value/attempt",
    ),
    (
        "EVT-047",
        "step-attempt-failed",
        "crm-step-timeout",
        _set("value", "attempt", to=5),
        "/value/attempt",
    ),
    (
        "EVT-059",
        "sleep-scheduled",
        "expense-cool-off",
        _set("value", "wake_at", to="2026-11-24T11:35:10.001Z"),
        "/value/wake_at",
    ),
    (
        "EVT-063",
        "sleep-completed",
        "onboarding-woken-late",
        _set("value", "fired_at", to="2026-11-23T07:59:59.999Z"),
        "/value/fired_at",
    ),
    (
        "EVT-075",
        "input-received",
        "expense-manager-approved",
        _set("headers", "txid", to="sub-other"),
        "/headers/txid",
    ),
    (
        "EVT-078",
        "input-expired",
        "expense-manager-silent",
        _set("value", "expired_at", to="2026-11-27T09:12:04.199Z"),
        "/value/expired_at",
    ),
    (
        "EVT-080",
        "input-rejected",
        "schema-invalid",
        _set("value", "submission_id", to="sub-other"),
        "/value/submission_id",
    ),
    (
        "EVT-082",
        "input-rejected",
        "schema-invalid",
        _set("headers", "txid", to="x"),
        "/headers/txid",
    ),
    ("EVT-088", "patch-recorded", "new-tax-api", _set("key", to="use-old-tax-api"), "/value/name"),
    (
        "EVT-090",
        "input-submitted",
        "manager-approves",
        _set("key", to="sub-other"),
        "/value/submission_id",
    ),
    ("EVT-093", "cancel-requested", "no-reason", _set("key", to="c2"), "/value/cancel_id"),
    ("EVT-095", "run-requested", "onboarding-wizard", _set("key", to="r2"), "/value/run_id"),
    ("MODEL-041", "run-status", "waiting-for-manager", _set("key", to="r2"), "/value/run_id"),
]


def _stream_of(event: str) -> str:
    return next(s for s, events in schemas.STREAM_EVENTS.items() if event in events)


@pytest.mark.parametrize(
    ("requirement", "event", "example", "mutate", "path"),
    CASES,
    ids=[f"{c[0]}-{c[1]}" for c in CASES],
)
def test_a_message_that_breaks_a_rule_is_not_identified(
    requirement: str, event: str, example: str, mutate: Mutation, path: str
) -> None:
    original = json.loads((EXAMPLES / event / "valid" / f"{example}.json").read_text())
    message = copy.deepcopy(original)
    mutate(message)
    assert schemas.violations(event, message) == (), "the schema alone accepts it"
    assert schemas.identify(original, _stream_of(event)) == event
    with pytest.raises(schemas.SchemaError) as caught:
        schemas.identify(message, _stream_of(event))
    assert caught.value.event == event
    assert (path, requirement) in {(v.path, v.requirement) for v in caught.value.violations}


def test_every_event_has_its_rules() -> None:
    assert set(_event_rules.RULES) == set(schemas.EVENTS)
    covered = {event for _, event, *_ in CASES}
    assert covered == {event for event, rules in _event_rules.RULES.items() if rules}


def test_timestamps_compare_as_instants() -> None:
    early = _event_rules._instant("2026-11-24T10:00:00.5Z")
    late = _event_rules._instant("2026-11-24T10:00:00.500000001Z")
    assert early is not None and late is not None and early == late
    assert _event_rules._instant("2026-12-31T23:59:60Z") is None


def test_a_sleep_for_an_absolute_time_has_no_duration_rule() -> None:
    message = json.loads(
        (EXAMPLES / "sleep-scheduled" / "valid" / "onboarding-until-monday.json").read_text()
    )
    message["value"]["wake_at"] = "2026-11-20T00:00:00.000Z"  # earlier than scheduled_at
    assert schemas.identify(message, "history") == "sleep-scheduled"


def test_dwf_validate_names_the_requirement(tmp_path: Any, capsys: Any) -> None:
    from durable_workflows.cli import main

    message = json.loads((EXAMPLES / "run-requested" / "valid" / "null-input.json").read_text())
    message["value"]["run_id"] = "r2"
    path = tmp_path / "start.json"
    path.write_text(json.dumps(message))
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "at /value/run_id: 'r2' must equal the message key 'r1'" in out
    assert "rule: EVT-095" in out
