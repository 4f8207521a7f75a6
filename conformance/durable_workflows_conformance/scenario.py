"""Scenarios: a program, the run's input, a schedule of submissions and faults.

A scenario is data. The same delivery policy (:func:`due`) decides, for the pure
model and for a real engine alike, which scheduled submissions are appended to the
inbox at each point where the run is at rest:

- ``early`` submissions are appended before the run is requested;
- ``waiting`` ones when the run is suspended waiting for their request;
- ``at-deadline`` ones likewise, but the driver then moves the clock to the run's
  ``until`` at once, without letting the run settle in between, so that the engine
  finds the answer and the deadline together (INPUT-035);
- ``late`` ones once their request has been decided (received or expired);
- ``suspended`` ones (cancels) once the run has suspended ``at`` times, at the first
  point where it is at rest and suspended;
- everything still undelivered after the run has finished (the inbox is then
  closed, so the stream server refuses them with ``409``).

All submissions due at one point travel in one inbox append per client; when two
clients have submissions due at the same point, their appends are sent at once.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

When = Literal["early", "waiting", "late", "suspended", "at-deadline"]
Kind = Literal["submission", "cancel"]

TERMINAL = frozenset({"completed", "failed", "cancelled"})
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
KEY_PATTERN = re.compile(r"^[^#\u0000-\u001f]{1,128}(#[1-9][0-9]*)?$")


@dataclass(frozen=True)
class Submission:
    """One scheduled inbox message: an ``input-submitted`` or, with ``kind`` ``cancel``,
    a ``cancel-requested`` (whose ``request`` and ``value`` are unused).

    ``malformed`` sends a ``value.submission_id`` (``value.cancel_id``) that differs from
    the key (check 2 of INPUT-017); ``client`` (0 or 1) says which of two clients sends
    it; ``reason`` is a cancel's reason; ``at`` is, for ``when`` ``suspended``, the
    number of suspensions after which it is delivered. ``headers`` are members added to
    the message's ``headers`` (a ``txid``, a ``timestamp``, or the ``offset`` a reader
    must remove, EVT-097); ``raw``, when set, is the whole message sent instead, for a
    message that breaks the inbox schema (the engine must reject it as ``malformed``).
    """

    id: str
    request: str
    value: Any
    when: When = "waiting"
    client: int = 0
    malformed: bool = False
    kind: Kind = "submission"
    reason: str | None = None
    at: int = 0
    headers: Mapping[str, Any] | None = None
    raw: Mapping[str, Any] | None = None

    @property
    def cancel(self) -> bool:
        return self.kind == "cancel"

    @property
    def broken(self) -> bool:
        """Whether check 2 of INPUT-017 rejects the message as ``malformed``."""
        return self.malformed or self.raw is not None

    def message(self) -> dict[str, Any]:
        if self.raw is not None:
            return copy.deepcopy(dict(self.raw))
        inbox_id = self.id + "-other" if self.malformed else self.id
        headers = {"operation": "insert", **(self.headers or {})}
        if self.cancel:
            return {
                "type": "cancel",
                "key": self.id,
                "value": {"cancel_id": inbox_id, "reason": self.reason},
                "headers": headers,
            }
        return {
            "type": "submission",
            "key": self.id,
            "value": {"submission_id": inbox_id, "request": self.request, "value": self.value},
            "headers": headers,
        }

    def to_json(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "request": self.request,
            "value": self.value,
            "when": self.when,
            "client": self.client,
            "malformed": self.malformed,
        }
        if self.cancel:
            out = {"id": self.id, "kind": "cancel", "reason": self.reason, "when": self.when}
            out.update(client=self.client, malformed=self.malformed, at=self.at)
        if self.headers:
            out["headers"] = dict(self.headers)
        if self.raw is not None:
            out["raw"] = dict(self.raw)
        return out


@dataclass(frozen=True)
class Scenario:
    program: Mapping[str, Any]
    input: Any = None
    submissions: tuple[Submission, ...] = ()
    faults: tuple[Mapping[str, Any], ...] = ()
    always_replay: bool = False
    workers: int = 1
    #: the adapter's ``limits`` run option (ADAPT-021): engine limits for this run
    limits: Mapping[str, int] | None = None

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.faults:
            out["faults"] = [dict(f) for f in self.faults]
        if self.always_replay:
            out["always_replay"] = True
        if self.workers != 1:
            out["workers"] = self.workers
        if self.limits:
            out["limits"] = dict(self.limits)
        return out

    def without_faults(self) -> Scenario:
        return Scenario(self.program, self.input, self.submissions, limits=self.limits)

    def to_json(self) -> dict[str, Any]:
        return {
            "program": self.program,
            "input": self.input,
            "submissions": [s.to_json() for s in self.submissions],
            "options": self.options(),
        }


@dataclass
class RunState:
    """What the delivery policy needs to know about a run at rest, read from its
    (scrubbed) history."""

    status: str | None = None
    waiting: list[str] = field(default_factory=list)
    until: bool = False
    decided: set[str] = field(default_factory=set)
    #: how many times the run has suspended (``run-suspended`` messages)
    suspensions: int = 0

    @property
    def suspended(self) -> bool:
        return self.status in ("sleeping", "waiting")

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


def state_of(scrubbed: Sequence[Mapping[str, Any]]) -> RunState:
    state = RunState()
    for message in scrubbed:
        value = message.get("value")
        if not isinstance(value, Mapping):
            continue
        if message.get("type") == "run":
            state.status = value.get("status")
            if state.suspended:
                state.suspensions += 1
            waiting = value.get("waiting_for")
            if isinstance(waiting, Mapping):
                state.waiting = list(waiting.get("inputs") or [])
                state.until = bool(waiting.get("until"))
            else:
                state.waiting, state.until = [], False
        elif message.get("type") == "input" and value.get("status") in ("received", "expired"):
            state.decided.add(str(message.get("key")))
    return state


def early(submissions: Sequence[Submission]) -> list[int]:
    return [i for i, s in enumerate(submissions) if s.when == "early"]


def due(submissions: Sequence[Submission], delivered: set[int], state: RunState) -> list[int]:
    """Indexes of the submissions to append now (see the module docstring)."""
    out: list[int] = []
    for index, sub in enumerate(submissions):
        if index in delivered or sub.when == "early":
            continue
        if (
            state.finished
            or (sub.when in ("waiting", "at-deadline") and sub.request in state.waiting)
            or (sub.when == "late" and sub.request in state.decided)
            or (sub.when == "suspended" and state.suspended and state.suspensions >= sub.at)
        ):
            out.append(index)
    return out
