"""Per-message constraints of spec/events.md that JSON Schema cannot express.

The schemas check each field on its own; these rules relate two fields of one message
(a value id equal to the key, a ``txid`` equal to an id, an attempt below its limit,
one timestamp not before another). They run only on a message that already validates
against its event's schema, so every field has its schema's type. Rules that need
more than one message (an entity's *fixed* fields, ``seq`` without gaps) belong to
history checks, not here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["Broken", "check"]

_TIMESTAMP = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?Z$")


@dataclass(frozen=True)
class Broken:
    """One rule a message breaks: where, which requirement, and why."""

    path: str
    requirement: str
    message: str


def _instant(text: str) -> datetime | None:
    """A schema-valid timestamp as an aware datetime (to the microsecond), or None
    for the rare value Python cannot represent (a leap second)."""
    match = _TIMESTAMP.match(text)
    if match is None:
        return None
    fraction = (match.group(2) or "").ljust(6, "0")[:6]
    try:
        whole = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    return whole.replace(tzinfo=UTC, microsecond=int(fraction))


Rule = Callable[[Mapping[str, Any]], Iterator[Broken]]


def _equals_key(field: str, requirement: str) -> Rule:
    def rule(message: Mapping[str, Any]) -> Iterator[Broken]:
        if message["value"][field] != message["key"]:
            yield Broken(
                f"/value/{field}",
                requirement,
                f"{message['value'][field]!r} must equal the message key {message['key']!r}",
            )

    return rule


def _key_from_name(requirement: str) -> Rule:
    def rule(message: Mapping[str, Any]) -> Iterator[Broken]:
        key, name = message["key"], message["value"]["name"]
        base, _, _ = key.partition("#")
        if base != name:
            yield Broken(
                "/key",
                requirement,
                f"key {key!r} must be the name {name!r}, or {name!r} followed by #N",
            )

    return rule


def _txid_equals(pointer: tuple[str, ...], requirement: str) -> Rule:
    def rule(message: Mapping[str, Any]) -> Iterator[Broken]:
        expected: Any = message
        for part in pointer:
            expected = expected[part]
        txid = message["headers"].get("txid")
        if txid != expected:
            where = "/" + "/".join(pointer)
            yield Broken(
                "/headers/txid", requirement, f"{txid!r} must equal {where} ({expected!r})"
            )

    return rule


def _not_before(later: str, earlier: str, requirement: str) -> Rule:
    def rule(message: Mapping[str, Any]) -> Iterator[Broken]:
        value = message["value"]
        first, second = _instant(value[earlier]), _instant(value[later])
        if first is not None and second is not None and second < first:
            yield Broken(
                f"/value/{later}",
                requirement,
                f"{value[later]} is before {earlier} {value[earlier]}",
            )

    return rule


def _attempt_within_limit(strict: bool, requirement: str) -> Rule:
    def rule(message: Mapping[str, Any]) -> Iterator[Broken]:
        attempt, limit = message["value"]["attempt"], message["value"]["max_attempts"]
        if attempt > limit or (strict and attempt == limit):
            relation = "less than" if strict else "at most"
            yield Broken(
                "/value/attempt",
                requirement,
                f"attempt {attempt} must be {relation} max_attempts {limit}",
            )

    return rule


def _wake_after_duration(message: Mapping[str, Any]) -> Iterator[Broken]:
    value = message["value"]
    if value["duration_ms"] is None:
        return
    scheduled, wake = _instant(value["scheduled_at"]), _instant(value["wake_at"])
    if scheduled is None or wake is None:
        return
    if wake != scheduled + timedelta(milliseconds=value["duration_ms"]):
        yield Broken(
            "/value/wake_at",
            "EVT-059",
            f"{value['wake_at']} must be scheduled_at {value['scheduled_at']}"
            f" plus duration_ms {value['duration_ms']}",
        )


_KEY_FROM_NAME = _key_from_name("EVT-015")

RULES: Mapping[str, tuple[Rule, ...]] = {
    "run-started": (_equals_key("run_id", "EVT-023"), _txid_equals(("value", "run_id"), "EVT-025")),
    "run-suspended": (_equals_key("run_id", "EVT-026"),),
    "run-resumed": (_equals_key("run_id", "EVT-029"),),
    "run-completed": (_equals_key("run_id", "EVT-031"),),
    "run-failed": (_equals_key("run_id", "EVT-033"),),
    "run-cancelled": (
        _equals_key("run_id", "EVT-036"),
        _txid_equals(("value", "error", "details", "cancel_id"), "EVT-038"),
    ),
    "step-started": (_KEY_FROM_NAME,),
    "step-attempt-started": (_KEY_FROM_NAME, _attempt_within_limit(False, "EVT-045")),
    "step-attempt-failed": (_KEY_FROM_NAME, _attempt_within_limit(True, "EVT-047")),
    "step-completed": (_KEY_FROM_NAME,),
    "step-failed": (_KEY_FROM_NAME,),
    "sleep-scheduled": (_KEY_FROM_NAME, _wake_after_duration),
    "sleep-completed": (
        _KEY_FROM_NAME,
        _wake_after_duration,
        _not_before("fired_at", "wake_at", "EVT-063"),
    ),
    "input-requested": (_KEY_FROM_NAME,),
    "input-received": (_KEY_FROM_NAME, _txid_equals(("value", "submission_id"), "EVT-075")),
    "input-expired": (_KEY_FROM_NAME, _not_before("expired_at", "expires_at", "EVT-078")),
    "input-rejected": (
        _equals_key("submission_id", "EVT-080"),
        _txid_equals(("key",), "EVT-082"),
    ),
    "value-recorded": (_KEY_FROM_NAME,),
    "patch-recorded": (_equals_key("name", "EVT-088"),),
    "input-submitted": (_equals_key("submission_id", "EVT-090"),),
    "cancel-requested": (_equals_key("cancel_id", "EVT-093"),),
    "run-requested": (_equals_key("run_id", "EVT-095"),),
    "run-status": (_equals_key("run_id", "MODEL-041"),),
}


def check(event: str, message: Mapping[str, Any]) -> list[Broken]:
    """Every rule of ``event`` that a schema-valid ``message`` breaks."""
    return [broken for rule in RULES[event] for broken in rule(message)]
