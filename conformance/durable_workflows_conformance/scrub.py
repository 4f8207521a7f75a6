"""Scrubbing: reduce history messages to what the specification makes predictable.

Two histories of the same program and submissions differ in timestamps, run ids,
recorded random values and the wording of engine-written messages. Everything else
is fixed by the specification, so after :func:`scrub` two conforming histories are
equal, and the pure model (:mod:`.model`) produces scrubbed messages directly.

What is kept of each entity (what is dropped is listed beside it):

- ``run``: protocol, input, status, ``waiting_for`` (``until`` reduced to whether it is
  set), output, error (see :func:`scrub_run_error`); drops run id, workflow name,
  ``started_at``, ``finished_at``.
- ``step``: name, seq, status, attempt, max_attempts, timeout_ms, result, error (a
  ``StepTimeout``'s message is dropped: the engine words it; of an ``InvalidResult`` or
  ``ResultTooLarge`` only the type is kept); drops ``started_at``,
  ``retry_at``, ``finished_at``.
- ``sleep``: name, seq, status, duration_ms; drops the three timestamps.
- ``input``: name, seq, status, prompt, schema, whether ``expires_at`` is set, value,
  submission_id; drops the timestamps.
- ``submission`` (``input-rejected``): submission_id, request, status, reason; drops
  the human-readable ``message`` and ``rejected_at``.
- ``record``: name, seq, kind; drops the value and ``recorded_at``.
- ``patch``: name, seq; drops ``recorded_at``.

Headers keep ``operation`` and ``txid`` (the run id as ``<run>``); ``timestamp`` goes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

RUN = "<run>"

#: Run error types whose ``message`` the engine words itself, so it is not compared
#: (the error table of events.md, EVT-099, REPLAY-032).
ENGINE_WORDED = frozenset(
    {
        "StepFailed",
        "InputExpired",
        "NonDeterminism",
        "StepTimeout",
        "InvalidPrimitive",
        "InvalidResult",
        "UnknownWorkflow",
        "InvalidInput",
        "ResultTooLarge",
        "HistoryTooLarge",
        "InboxClosed",
        "MessageTooLarge",
    }
)


def scrub_error(error: Any) -> Any:
    """A step's recorded error: type, message and details, all predictable except the
    message of a ``StepTimeout``, which the engine words (it becomes ``None``)."""
    if not isinstance(error, Mapping):
        return error
    kind = error.get("type")
    if kind in ("InvalidResult", "ResultTooLarge"):
        # EVT-052, SEC-009: the engine words the message and chooses the details.
        return {"type": kind, "message": None, "details": None}
    return {
        "type": kind,
        "message": None if kind == "StepTimeout" else error.get("message"),
        "details": error.get("details"),
    }


def scrub_run_error(error: Any) -> Any:
    """A run's error: the type always; the message unless the engine words it; details
    for ``StepFailed``, ``NonDeterminism`` and ``Cancelled``."""
    if not isinstance(error, Mapping):
        return error
    kind = error.get("type")
    out: dict[str, Any] = {"type": kind}
    if kind not in ENGINE_WORDED:
        out["message"] = error.get("message")
    if kind in ("StepFailed", "NonDeterminism", "Cancelled"):
        details = error.get("details")
        if kind == "StepFailed" and isinstance(details, Mapping):
            details = {**details, "error": scrub_error(details.get("error"))}
        out["details"] = details
    return out


def _waiting(waiting_for: Any) -> Any:
    if not isinstance(waiting_for, Mapping):
        return waiting_for
    return {
        "inputs": list(waiting_for.get("inputs") or []),
        "until": bool(waiting_for.get("until")),
    }


def _pick(value: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    return {name: value.get(name) for name in names}


def scrub_value(entity: str, value: Any) -> Any:
    """The predictable part of an entity value (see the module docstring)."""
    if not isinstance(value, Mapping):
        return value
    if entity == "run":
        out = _pick(value, ("protocol", "input", "status", "output"))
        out["waiting_for"] = _waiting(value.get("waiting_for"))
        out["error"] = scrub_run_error(value.get("error"))
        return out
    if entity == "step":
        out = _pick(value, ("name", "seq", "status", "attempt", "max_attempts", "timeout_ms"))
        out["result"] = value.get("result")
        out["error"] = scrub_error(value.get("error"))
        return out
    if entity == "sleep":
        return _pick(value, ("name", "seq", "status", "duration_ms"))
    if entity == "input":
        out = _pick(value, ("name", "seq", "status", "prompt", "schema", "value", "submission_id"))
        out["expires"] = value.get("expires_at") is not None
        return out
    if entity == "submission":
        return _pick(value, ("submission_id", "request", "status", "reason"))
    if entity == "record":
        return _pick(value, ("name", "seq", "kind"))
    if entity == "patch":
        return _pick(value, ("name", "seq"))
    return dict(value)


def scrub(message: Any, run_id: str | None = None) -> Any:
    """One history message, scrubbed: ``{type, key, op, txid, value}``."""
    if not isinstance(message, Mapping):
        return message
    entity = message.get("type")
    headers = message.get("headers") if isinstance(message.get("headers"), Mapping) else {}
    assert isinstance(headers, Mapping)
    txid = headers.get("txid")
    key = message.get("key")
    if entity == "run":
        key = RUN
        if txid is not None and txid == run_id:
            txid = RUN
    return {
        "type": entity,
        "key": key,
        "op": headers.get("operation"),
        "txid": txid,
        "value": scrub_value(str(entity), message.get("value")),
    }


def scrub_all(messages: Sequence[Any], run_id: str | None = None) -> list[Any]:
    return [scrub(m, run_id) for m in messages]


def entity_projection(scrubbed: Sequence[Any]) -> dict[str, list[Any]]:
    """Per entity (``type/key``), the sequence of its messages."""
    out: dict[str, list[Any]] = {}
    for message in scrubbed:
        out.setdefault(f"{message['type']}/{message['key']}", []).append(message)
    return out


def insert_order(scrubbed: Sequence[Any]) -> list[str]:
    """The order of primitive inserts (``step``, ``sleep``, ``input``, ``record``,
    ``patch``), which [REPLAY-009] fixes to position order."""
    return [
        f"{m['type']}/{m['key']}"
        for m in scrubbed
        if m["op"] == "insert" and m["type"] in ("step", "sleep", "input", "record", "patch")
    ]


def differences(expected: Sequence[Any], actual: Sequence[Any], *, exact: bool) -> list[str]:
    """Readable differences between two scrubbed histories; empty when they agree.

    Without ``exact`` the comparison is the one the specification supports when
    things happen concurrently: each entity's own messages in order, the inserts of
    primitives in order, and the run entity's messages in order (the run entity is an
    entity too, so it is covered by the projection). With ``exact`` the whole sequence
    must match.
    """
    problems: list[str] = []
    if exact:
        for index in range(max(len(expected), len(actual))):
            e = expected[index] if index < len(expected) else None
            a = actual[index] if index < len(actual) else None
            if e != a:
                problems.append(f"message {index}: expected {e!r}, got {a!r}")
                break
        return problems
    exp, act = entity_projection(expected), entity_projection(actual)
    for entity in sorted(set(exp) | set(act)):
        if exp.get(entity) != act.get(entity):
            problems.append(
                f"{entity}: expected {exp.get(entity, [])!r}, got {act.get(entity, [])!r}"
            )
    if insert_order(expected) != insert_order(actual):
        problems.append(
            f"insert order: expected {insert_order(expected)}, got {insert_order(actual)}"
        )
    return problems
