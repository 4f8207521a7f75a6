"""The suite's checks on an engine's request log (feature request-log, ADAPT-022) on
hand-made logs: each passes a log that keeps its rules and fails one that breaks them."""

from __future__ import annotations

from typing import Any

import pytest

from durable_workflows_conformance import checks


def _req(stream: str, method: str, messages: int = 0, **extra: Any) -> dict[str, Any]:
    headers = extra.pop("headers", {"Content-Type": "application/json"})
    entry = {"stream": stream, "method": method, "headers": headers, "messages": messages,
             "sent_ms": 0, "answered_ms": 0, "status": 200}  # fmt: skip
    entry.update(extra)
    return entry


def _append(producer: str, seq: int, sent: int, answered: int | None) -> dict[str, Any]:
    headers = {
        "Content-Type": "application/json",
        "Stream-Seq": f"{seq:016d}",
        "Producer-Id": producer,
        "Producer-Epoch": "0",
        "Producer-Seq": str(seq),
    }
    return _req("history", "POST", 2, headers=headers, sent_ms=sent, answered_ms=answered)


GOOD = [
    _req("inbox", "PUT"),
    _req("history", "PUT"),
    _append("a-1", 0, 10, 12),
    _append("a-1", 1, 12, 15),
    _append("a-2", 0, 40, 41),  # the next activation
    _req("inbox", "POST", headers={"Stream-Closed": "true"}),
    _req("history", "POST", headers={"Stream-Closed": "true"}),
]


def test_a_log_that_keeps_the_rules_passes() -> None:
    checks.streams_created_in_order(GOOD)
    # FENCE-001: the history created holding the run's first append; a later PUT with
    # messages that found it (200) stored nothing.
    created = [GOOD[0], _req("history", "PUT", 2, status=201), _append("a-1", 0, 10, 12)]
    checks.streams_created_in_order([*created, _req("history", "PUT", 2, status=200)])
    checks.appends_follow_the_producer_rules(GOOD)
    resent = [*GOOD[:3], _append("a-1", 0, 13, 14), _append("a-1", 1, 14, 16)]
    checks.appends_follow_the_producer_rules(resent)  # FENCE-014: a resend repeats its number


@pytest.mark.parametrize(
    ("log", "message"),
    [
        ([GOOD[1], GOOD[0], GOOD[2]], "before the inbox"),
        ([GOOD[0], GOOD[2], GOOD[1]], "before it created it"),
        ([GOOD[1], GOOD[2]], "never created the run's inbox"),
        (
            [GOOD[0], GOOD[1], GOOD[2], _req("history", "PUT", 1, status=201)],
            "creates the history with 1 message",
        ),
        ([*GOOD[:2], _req("history", "PATCH", 1)], "other than by an append"),
    ],
)
def test_streams_out_of_order_or_written_otherwise_fail(log: list[Any], message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        checks.streams_created_in_order(log)


def _without(header: str) -> dict[str, Any]:
    entry = _append("a-1", 0, 10, 12)
    entry["headers"] = {k: v for k, v in entry["headers"].items() if k != header}
    return entry


def _epoch(value: str) -> dict[str, Any]:
    entry = _append("a-1", 0, 10, 12)
    entry["headers"] = {**entry["headers"], "Producer-Epoch": value}
    return entry


@pytest.mark.parametrize(
    ("appends", "message"),
    [
        ([_without("Producer-Id")], "carries no Producer-Id"),
        ([_epoch("1")], "Producer-Epoch '1'"),
        ([_append("a-1", 1, 10, 12)], "with Producer-Seq 1, not 0"),
        ([_append("a-1", 0, 10, 12), _append("a-1", 2, 12, 14)], "from Producer-Seq 0 to 2"),
        ([_append("a-1", 0, 10, 12), _append("a-1", 1, 11, 14)], "one append in flight"),
        ([_append("a-1", 0, 10, None), _append("a-1", 1, 11, 14)], "one append in flight"),
        (
            [_append("a-1", 0, 10, 12), _append("a-1", 0, 12, 14) | {"messages": 3}],
            "reuses Producer-Seq 0",
        ),
    ],
)
def test_appends_that_break_the_producer_rules_fail(appends: list[Any], message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        checks.appends_follow_the_producer_rules([*GOOD[:2], *appends])
