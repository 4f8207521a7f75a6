"""Builders for every history event the core writes (events.md).

Each builder returns a complete State Protocol change message: every listed value field is
present (``null`` when it has no value, never omitted, EVT-008), updates repeat the
entity's full state, and ``headers.txid`` is set exactly where the spec says (run id on
``run-started``, submission or cancel id on the messages a submission or cancel caused).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "error_object",
    "input_expired",
    "input_received",
    "input_rejected",
    "input_requested",
    "patch_recorded",
    "run_started",
    "run_update",
    "sleep_completed",
    "sleep_scheduled",
    "step_started",
    "step_update",
    "value_recorded",
]


def _msg(
    entity: str, key: str, value: Mapping[str, Any], operation: str, txid: str | None = None
) -> dict[str, Any]:
    headers: dict[str, Any] = {"operation": operation}
    if txid is not None:
        headers["txid"] = txid
    return {"type": entity, "key": key, "value": dict(value), "headers": headers}


def error_object(
    type_: str, message: str, details: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """An error object (EVT-017): exactly ``type`` (1-256 chars), ``message``, ``details``."""
    type_ = (type_ or "Error")[:256]
    return {
        "type": type_,
        "message": message,
        "details": None if details is None else dict(details),
    }


# -- run ---------------------------------------------------------------------------------


def run_started(run_id: str, workflow: str, protocol: str, input_: Any, now: str) -> dict[str, Any]:
    """``run-started`` (MODEL-016..025): txid = run id."""
    value = {
        "run_id": run_id,
        "workflow": workflow,
        "protocol": protocol,
        "input": input_,
        "status": "running",
        "started_at": now,
        "waiting_for": None,
        "output": None,
        "error": None,
        "finished_at": None,
    }
    return _msg("run", run_id, value, "insert", run_id)


def run_update(run: Mapping[str, Any], txid: str | None = None, **changes: Any) -> dict[str, Any]:
    """A ``run`` update (suspended, resumed, completed, failed, cancelled) with the full value."""
    value = dict(run)
    value.update(changes)
    return _msg("run", str(value["run_id"]), value, "update", txid)


# -- step --------------------------------------------------------------------------------


def step_started(
    key: str, name: str, seq: int, max_attempts: int, timeout_ms: int | None, now: str
) -> dict[str, Any]:
    """``step-started``: attempt 1, status running."""
    value = {
        "name": name,
        "seq": seq,
        "status": "running",
        "attempt": 1,
        "max_attempts": max_attempts,
        "timeout_ms": timeout_ms,
        "started_at": now,
        "result": None,
        "error": None,
        "retry_at": None,
        "finished_at": None,
    }
    return _msg("step", key, value, "insert")


def step_update(key: str, step: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """A ``step`` update (attempt-started, attempt-failed, completed, failed), full value."""
    value = dict(step)
    value.update(changes)
    return _msg("step", key, value, "update")


# -- sleep -------------------------------------------------------------------------------


def sleep_scheduled(
    key: str, name: str, seq: int, duration_ms: int | None, now: str, wake_at: str
) -> dict[str, Any]:
    """``sleep-scheduled``."""
    value = {
        "name": name,
        "seq": seq,
        "status": "scheduled",
        "duration_ms": duration_ms,
        "scheduled_at": now,
        "wake_at": wake_at,
        "fired_at": None,
    }
    return _msg("sleep", key, value, "insert")


def sleep_completed(key: str, sleep: Mapping[str, Any], now: str) -> dict[str, Any]:
    """``sleep-completed``: fired_at = the clock reading (>= wake_at, EVT-064)."""
    value = dict(sleep)
    value.update(status="completed", fired_at=now)
    return _msg("sleep", key, value, "update")


# -- input -------------------------------------------------------------------------------


def input_requested(
    key: str,
    name: str,
    seq: int,
    prompt: str | None,
    schema: Any,
    now: str,
    expires_at: str | None,
) -> dict[str, Any]:
    """``input-requested`` (INPUT-004)."""
    value = {
        "name": name,
        "seq": seq,
        "status": "pending",
        "prompt": prompt,
        "schema": schema,
        "requested_at": now,
        "expires_at": expires_at,
        "value": None,
        "submission_id": None,
        "received_at": None,
        "expired_at": None,
    }
    return _msg("input", key, value, "insert")


def input_received(
    key: str, request: Mapping[str, Any], value: Any, submission_id: str, now: str
) -> dict[str, Any]:
    """``input-received`` (INPUT-019): txid = submission id."""
    new = dict(request)
    new.update(status="received", value=value, submission_id=submission_id, received_at=now)
    return _msg("input", key, new, "update", submission_id)


def input_expired(key: str, request: Mapping[str, Any], now: str) -> dict[str, Any]:
    """``input-expired`` (INPUT-036)."""
    new = dict(request)
    new.update(status="expired", expired_at=now)
    return _msg("input", key, new, "update")


def input_rejected(
    inbox_id: str, request: str | None, reason: str, message: str, now: str
) -> dict[str, Any]:
    """``input-rejected`` (INPUT-022): a ``submission`` insert keyed and txid'd by the inbox id."""
    value = {
        "submission_id": inbox_id,
        "request": request,
        "status": "rejected",
        "reason": reason,
        "message": message,
        "rejected_at": now,
    }
    return _msg("submission", inbox_id, value, "insert", inbox_id)


# -- records and patches -------------------------------------------------------------------


def value_recorded(
    key: str, name: str, seq: int, kind: str, value: Any, now: str
) -> dict[str, Any]:
    """``value-recorded``."""
    body = {"name": name, "seq": seq, "kind": kind, "value": value, "recorded_at": now}
    return _msg("record", key, body, "insert")


def patch_recorded(patch_id: str, seq: int, now: str) -> dict[str, Any]:
    """``patch-recorded``: key = patch id."""
    return _msg("patch", patch_id, {"name": patch_id, "seq": seq, "recorded_at": now}, "insert")
