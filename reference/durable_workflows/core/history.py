"""Parse a run's history into what replay needs (replay.md).

- the run entity (latest value), whether it is terminal;
- the recorded primitives by position (``seq``), each with its latest value;
- the *outcome log*: the positions of finished steps, sleeps and inputs in the order their
  outcome messages appear, which is the order replay gives outcomes to the code
  (REPLAY-013);
- the inbox ids the history already decided (INPUT-016): ``input-received.submission_id``,
  ``input-rejected`` keys, ``run-cancelled`` txids.

A history this core must not append to raises :class:`HistoryError` (VER-003/005/006).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import HistoryError, UnsupportedProtocol

__all__ = [
    "FINISHED",
    "OUTCOME_EVENTS",
    "TERMINAL",
    "ParsedHistory",
    "Recorded",
    "check_protocol",
    "parse_history",
]

#: Run statuses that end a run.
TERMINAL = frozenset({"completed", "failed", "cancelled"})

#: Entity status values that are final, per entity type.
FINISHED: dict[str, frozenset[str]] = {
    "step": frozenset({"completed", "failed"}),
    "sleep": frozenset({"completed"}),
    "input": frozenset({"received", "expired"}),
}

#: Events whose message is an outcome the code receives.
OUTCOME_EVENTS = frozenset(
    {"step-completed", "step-failed", "sleep-completed", "input-received", "input-expired"}
)

_PRIMITIVES = frozenset({"step", "sleep", "input", "record", "patch"})
_VERSION = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$")


@dataclass
class Recorded:
    """A primitive as the history records it (latest value)."""

    seq: int
    entity: str
    key: str
    name: str
    kind: str | None
    value: dict[str, Any]

    @property
    def status(self) -> str | None:
        """The entity's status (records and patch markers have none: they are finished)."""
        status = self.value.get("status")
        return None if status is None else str(status)

    @property
    def finished(self) -> bool:
        """Finished per replay.md: a final status, or a record / patch marker."""
        if self.entity in ("record", "patch"):
            return True
        return self.status in FINISHED[self.entity]

    def describe(self) -> str:
        """``step "charge"`` or ``record "now" (kind time)``, for messages (REPLAY-019)."""
        text = f'{self.entity} "{self.name}"'
        return f"{text} (kind {self.kind})" if self.kind is not None else text


@dataclass
class ParsedHistory:
    """What replay needs from a history."""

    messages: list[dict[str, Any]]
    run: dict[str, Any] | None = None
    primitives: dict[int, Recorded] = field(default_factory=dict)
    by_key: dict[tuple[str, str], Recorded] = field(default_factory=dict)
    outcomes: list[int] = field(default_factory=list)
    decided: set[str] = field(default_factory=set)
    #: ``input-rejected`` messages recorded (SEC-034 bounds them).
    rejections: int = 0
    #: The highest recorded position (0 when none); positions are dense (EVT-016).
    max_seq: int = 0

    @property
    def terminal(self) -> bool:
        """Whether a terminal run event is recorded (REPLAY-004)."""
        return self.run is not None and self.run.get("status") in TERMINAL


def check_protocol(version: object, implemented: str) -> None:
    """Raise UnsupportedProtocol unless ``version`` is one this core may append to (VER-003/005)."""
    if not isinstance(version, str) or not _VERSION.match(version):
        raise UnsupportedProtocol(f"history records protocol {version!r}, not MAJOR.MINOR")
    major, minor = (int(p) for p in version.split("."))
    own_major, own_minor = (int(p) for p in implemented.split("."))
    if major != own_major:
        raise UnsupportedProtocol(
            f"history records protocol {version}; this engine implements major {own_major} only"
        )
    if minor > own_minor:
        raise UnsupportedProtocol(
            f"history records protocol {version}, "
            f"later than {implemented} that this engine implements"
        )


#: The event of an insert, by entity (discriminator only: for the core's own output).
_INSERTS = {
    ("run", "insert"): "run-started",
    ("step", "insert"): "step-started",
    ("sleep", "insert"): "sleep-scheduled",
    ("input", "insert"): "input-requested",
    ("submission", "insert"): "input-rejected",
    ("record", "insert"): "value-recorded",
    ("patch", "insert"): "patch-recorded",
}

#: The event of an update, by entity and status (discriminator only, as above).
_UPDATES = {
    "run": {
        "sleeping": "run-suspended",
        "waiting": "run-suspended",
        "running": "run-resumed",
        "completed": "run-completed",
        "failed": "run-failed",
        "cancelled": "run-cancelled",
    },
    "step": {
        "running": "step-attempt-started",
        "retrying": "step-attempt-failed",
        "completed": "step-completed",
        "failed": "step-failed",
    },
    "sleep": {"completed": "sleep-completed"},
    "input": {"received": "input-received", "expired": "input-expired"},
}


def _trusted_event(message: Mapping[str, Any]) -> str:
    """The event of a message the core wrote itself: classified by discriminator only."""
    entity = message["type"]
    event = _INSERTS.get((entity, message["headers"]["operation"]))
    if event is not None:
        return event
    return _UPDATES[entity][message["value"].get("status")]


def parse_history(
    messages: Sequence[Mapping[str, Any]], *, protocol: str, check: bool = True
) -> ParsedHistory:
    """Parse ``messages`` (a history read from offset -1)."""
    parsed = ParsedHistory(messages=[dict(m) for m in messages])
    if check:
        # Imported on use as before, but once per parse rather than once per message.
        from ..schemas import SchemaError
        from ._memo import classify_message
    for index, message in enumerate(parsed.messages):
        if not check:
            event = _trusted_event(message)
        else:
            try:
                event = classify_message(message, "history")
            except SchemaError as exc:
                raise HistoryError(
                    f"history holds a message that is not a protocol event: {exc}"
                ) from exc
        value = message["value"]
        entity = message["type"]
        key = message["key"]
        if index == 0:
            if event != "run-started":
                raise HistoryError(f"history starts with {event}, not run-started (MODEL-016)")
            check_protocol(value.get("protocol"), protocol)
        elif event == "run-started":
            raise HistoryError("history holds a second run-started")
        if parsed.terminal and event != "input-rejected":
            raise HistoryError(f"history holds {event} after the run's terminal event (MODEL-021)")
        if entity == "run":
            if parsed.run is not None and key != parsed.run["run_id"]:
                raise HistoryError(f"history holds run {key!r} besides {parsed.run['run_id']!r}")
            parsed.run = dict(value)
            if event == "run-cancelled":
                txid = message["headers"].get("txid")
                if isinstance(txid, str):
                    parsed.decided.add(txid)
        elif entity == "submission":
            parsed.decided.add(str(key))
            parsed.rejections += 1
        elif entity in _PRIMITIVES:
            _primitive(parsed, event, entity, str(key), value)
    return parsed


def _primitive(
    parsed: ParsedHistory, event: str, entity: str, key: str, value: Mapping[str, Any]
) -> None:
    operation_insert = event in (
        "step-started",
        "sleep-scheduled",
        "input-requested",
        "value-recorded",
        "patch-recorded",
    )
    if operation_insert:
        seq = value["seq"]
        # EVT-016: positions 1, 2, 3, ... in the order of the primitives' first messages.
        if seq != parsed.max_seq + 1:
            raise HistoryError(f"{event} {key!r} has seq {seq}, expected {parsed.max_seq + 1}")
        if (entity, key) in parsed.by_key:
            raise HistoryError(f"history inserts {entity} {key!r} twice")
        kind = value.get("kind") if entity == "record" else None
        rec = Recorded(seq, entity, key, str(value["name"]), kind, dict(value))
        parsed.primitives[seq] = rec
        parsed.by_key[(entity, key)] = rec
        parsed.max_seq = seq
        return
    rec_or_none = parsed.by_key.get((entity, key))
    if rec_or_none is None:
        raise HistoryError(f"{event} for {entity} {key!r} before its insert")
    if rec_or_none.finished:
        raise HistoryError(f"{event} for {entity} {key!r} after its final status")
    rec_or_none.value = dict(value)
    if event in OUTCOME_EVENTS:
        parsed.outcomes.append(rec_or_none.seq)
        if event == "input-received":
            parsed.decided.add(str(value["submission_id"]))
