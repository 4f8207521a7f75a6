"""The pure model: what a conforming engine records for a scenario.

Written from the specification (replay.md, inputs.md, retries.md, model.md,
versioning.md, adapter.md), not from any engine. Given a :class:`~.scenario.Scenario`
it predicts the run's scrubbed history (:mod:`.scrub`), its final status, output or
error, and, for a changed program, the non-determinism the engine must report. It
does no I/O and reads no clock: time is a counter of milliseconds that moves only to
the next deadline, as the suite's driver moves a virtual clock.

Cancels and answers reach the inbox only where the run is at rest (the delivery
policy of :mod:`.scenario`), so a cancel always finds the run suspended (or not yet
started) and no step body running: the model ends the run there (CANCEL-003/005/012).
A step attempt listed in ``hang_attempts`` fails with ``StepTimeout`` (RETRY-015).

Where the specification leaves the order of messages of *different* entities open
(outcomes of concurrent primitives, a rejection beside a resume), the suite compares
per-entity sequences (:func:`.scrub.differences`), so the model's choice of order
there does not matter.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .json_schema_rules import accepts, schema_refused
from .scenario import ID_PATTERN, KEY_PATTERN, Scenario, Submission, due, early, state_of
from .scrub import RUN

PROTOCOL = "1.0"


class _Ended(Exception):
    """The workflow function ended by raising ``error`` (a run error object)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("type"))
        self.error = error


class _Cancelled(Exception):
    """The engine processed a cancel: the run ends at once (CANCEL-003)."""

    def __init__(self, cancel: Submission) -> None:
        super().__init__(cancel.id)
        self.cancel = cancel


#: EVT-037: the message of ``run-cancelled`` without a reason, and the longest reason.
NO_REASON = "Run cancelled."
REASON_LIMIT = 1024


@dataclass
class Prediction:
    history: list[dict[str, Any]]
    status: str
    output: Any
    error: Any
    #: indexes of submissions the stream server refuses because the inbox is closed
    refused: list[int] = field(default_factory=list)
    #: per delivery point, the submission indexes appended there (early ones first)
    batches: list[list[int]] = field(default_factory=list)


@dataclass
class _Input:
    key: str
    schema: Any
    status: str = "pending"
    value: Any = None
    deadline: int | None = None


@dataclass
class _Pending:
    """A primitive the code waits on: an input, a sleep or a step's next attempt."""

    kind: str  # "input" | "sleep" | "retry"
    key: str
    deadline: int | None
    done: bool = False
    #: For a retry: the step's value, whose next attempt starts when it fires.
    step: dict[str, Any] | None = None


def _equal_json(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _lookup(variables: Mapping[str, Any], var: str, path: Sequence[str]) -> Any:
    value = variables.get(var)
    for member in path:
        value = value.get(member) if isinstance(value, Mapping) else None
    return value


def attempt_error(op: Mapping[str, Any], attempt: int) -> dict[str, Any] | None:
    """The error attempt ``attempt`` of a step operation records (scrubbed), or None when
    its body returns. A hanging attempt times out (RETRY-015: ``StepTimeout`` with
    details ``{"timeout_ms": N}``; the engine words the message, so it is not predicted);
    otherwise attempts up to ``fail_attempts`` raise the program's error (ADAPT-010)."""
    timeout = op.get("timeout_ms")
    if timeout is not None and attempt in (op.get("hang_attempts") or ()):
        return {"type": "StepTimeout", "message": None, "details": {"timeout_ms": timeout}}
    if attempt <= int(op.get("fail_attempts", 0)):
        error = op.get("error") or {"type": "ScriptedError", "message": "scripted failure"}
        return {"type": error["type"], "message": error["message"], "details": None}
    return None


NAME_PATTERN = re.compile(r"^[^#\u0000-\u001f]{1,128}$")


def inbox_id(sub: Submission, position: int) -> str:
    """INPUT-014: the message's key when it is a valid id, else ``inbox-{position}``
    (0-based among all messages of the inbox)."""
    key = sub.raw.get("key") if sub.raw is not None else sub.id
    if isinstance(key, str) and ID_PATTERN.match(key):
        return key
    return f"inbox-{position}"


def _int_at_least(value: Any, least: float) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def refused_call(op: Mapping[str, Any]) -> bool:
    """Whether the engine refuses the primitive call of ``op`` before recording anything:
    a name that breaks the name pattern (REPLAY-005), a retry policy or timeout outside
    the valid values of retries.md (RETRY-002), or an input schema that is not valid
    2020-12 or refers outside itself (INPUT-029)."""
    if not NAME_PATTERN.match(str(op.get("name", ""))):
        return True
    if op["op"] == "step":
        retry = op.get("retry") or {}
        initial = retry.get("initial_interval_ms", 1000)
        coefficient = retry.get("backoff_coefficient", 2.0)
        timeout = op.get("timeout_ms")
        return not (
            _int_at_least(retry.get("max_attempts", 3), 1)
            and _int_at_least(initial, 1)
            and isinstance(coefficient, int | float)
            and coefficient >= 1
            and _int_at_least(retry.get("max_interval_ms", max(60_000, initial)), initial)
            and (timeout is None or _int_at_least(timeout, 1))
        )
    if op["op"] == "input":
        return schema_refused(op.get("schema", True))  # no schema: `true` (INPUT-043)
    return False


#: The engine limits of security.md (a scenario's ``limits`` replace them, ADAPT-021).
DEFAULT_LIMITS = {
    "submission_bytes": 65_536,
    "submissions_per_run": 1_000,
    "result_bytes": 1_048_576,
    "history_messages": 50_000,
    "rejections_per_run": 1_000,
}
#: Errors of a returned result, never retried (EVT-052, SEC-009).
RESULT_ERRORS = frozenset({"InvalidResult", "ResultTooLarge"})


def compact_bytes(value: Any) -> int:
    """UTF-8 bytes of ``value`` as JSON without insignificant whitespace."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


MAX_EXACT_INT = 2**53 - 1


def i_json(value: Any) -> bool:
    """Whether ``value`` is I-JSON as EVT-100 requires: every integer within 2^53 - 1
    (the suite's programs hold no NaN, infinity or lone surrogate)."""
    if isinstance(value, bool) or not isinstance(value, int | dict | list):
        return True
    if isinstance(value, int):
        return -MAX_EXACT_INT <= value <= MAX_EXACT_INT
    children = value.values() if isinstance(value, dict) else value
    return all(i_json(child) for child in children)


def result_error(op: Mapping[str, Any], limits: Mapping[str, int]) -> dict[str, Any] | None:
    """The error of an attempt whose body returns (scrubbed: the engine words the
    message and chooses the details), or None when its result is recorded: a value with
    no JSON encoding, or not I-JSON, fails with ``InvalidResult`` (EVT-052, EVT-100), a
    result longer than the result size limit with ``ResultTooLarge`` (SEC-009)."""
    if op.get("unencodable") or not i_json(op.get("result")):
        return {"type": "InvalidResult", "message": None, "details": None}
    if compact_bytes(op.get("result")) > limits["result_bytes"]:
        return {"type": "ResultTooLarge", "message": None, "details": None}
    return None


def final_attempt(op: Mapping[str, Any]) -> tuple[int, dict[str, Any] | None]:
    """The last attempt a step operation makes and its error (None: it completes)."""
    retry = op.get("retry") or {}
    non_retryable = set(retry.get("non_retryable") or [])
    max_attempts = int(retry.get("max_attempts", 3))
    attempt = 1
    while True:
        error = attempt_error(op, attempt)
        if error is None or attempt >= max_attempts or error["type"] in non_retryable:
            return attempt, error
        attempt += 1


def delay(attempt: int, retry: Mapping[str, Any]) -> int:
    """RETRY backoff without jitter: ``min(initial * coeff ** (a - 1), max)``."""
    initial = int(retry.get("initial_interval_ms", 1000))
    coefficient = float(retry.get("backoff_coefficient", 2.0))
    maximum = int(retry.get("max_interval_ms", 60000))
    return int(min(initial * coefficient ** (attempt - 1), maximum))


class _Model:
    def __init__(
        self,
        scenario: Scenario,
        observed: Sequence[Sequence[int]] | None,
        after_end: frozenset[int] = frozenset(),
    ) -> None:
        self.scenario = scenario
        self.after_end = after_end
        self.observed = list(observed or [])
        self.now = 0
        self.seq = 0
        self.counts: dict[tuple[str, str], int] = {}
        self.history: list[dict[str, Any]] = []
        self.inbox: list[Submission] = []
        self.decided: set[int] = set()  # inbox positions decided (or duplicates)
        self.counted: set[int] = set()  # submissions past checks 1 and 2 (INPUT-033)
        self.limits = {**DEFAULT_LIMITS, **(scenario.limits or {})}
        self.inputs: dict[str, _Input] = {}
        self.variables: dict[str, Any] = {"input": copy.deepcopy(scenario.input)}
        self.delivered: set[int] = set()
        self.patches: set[str] = set()
        self.batches: list[list[int]] = []
        self.run: dict[str, Any] = {
            "protocol": PROTOCOL,
            "input": scenario.input,
            "status": "running",
            "output": None,
            "waiting_for": None,
            "error": None,
        }

    # -- recording ---------------------------------------------------------------

    def emit(
        self, entity: str, key: str, op: str, value: dict[str, Any], txid: str | None = None
    ) -> None:
        self.history.append(
            {"type": entity, "key": key, "op": op, "txid": txid, "value": copy.deepcopy(value)}
        )

    def emit_run(self, txid: str | None = None, op: str = "update") -> None:
        self.emit("run", RUN, op, self.run, txid)

    def key(self, entity: str, name: str) -> str:
        n = self.counts.get((entity, name), 0) + 1
        self.counts[(entity, name)] = n
        return name if n == 1 else f"{name}#{n}"

    def position(self) -> int:
        self.seq += 1
        return self.seq

    # -- the inbox -----------------------------------------------------------------

    def append(self, indexes: Sequence[int]) -> None:
        for index in indexes:
            self.delivered.add(index)
            self.inbox.append(self.scenario.submissions[index])
        self.batches.append(list(indexes))

    def reject(self, sub: Submission, reason: str, position: int) -> None:
        """Record a rejection, or nothing once the run holds its limit of them (SEC-034)."""
        recorded = sum(1 for m in self.history if m["type"] == "submission")
        if recorded >= self.limits["rejections_per_run"]:
            return
        request = None if sub.cancel or not KEY_PATTERN.match(sub.request) else sub.request
        iid = inbox_id(sub, position)
        value = {
            "submission_id": iid,
            "request": request,
            "status": "rejected",
            "reason": reason,
        }
        self.emit("submission", iid, "insert", value, iid)

    def process_inbox(self, *, ending: bool = False) -> bool:
        """Decide every undecided inbox message, in inbox order (INPUT-017).

        Returns whether an input got an outcome; raises :class:`_Cancelled` at a cancel
        of a run that has not ended (what precedes it is decided first)."""
        progressed = False
        seen: set[str] = set()
        for position, sub in enumerate(self.inbox):
            duplicate = inbox_id(sub, position) in seen
            seen.add(inbox_id(sub, position))
            if position in self.decided:
                continue
            if duplicate:
                self.decided.add(position)
                continue
            if sub.broken:
                self.decided.add(position)
                self.reject(sub, "malformed", position)
                continue
            if sub.cancel:
                self.decided.add(position)
                if ending:  # CANCEL-009
                    self.reject(sub, "run-finished", position)
                    continue
                raise _Cancelled(sub)
            self.counted.add(position)
            if self.too_large(sub, position):  # check 4
                self.decided.add(position)
                self.reject(sub, "too-large", position)
                continue
            if ending:
                self.decided.add(position)
                self.reject(sub, "run-finished", position)
                continue
            request = self.inputs.get(sub.request)
            if request is None:
                continue  # kept until the request is recorded (INPUT-020)
            self.decided.add(position)
            if request.status == "received":
                self.reject(sub, "already-answered", position)
            elif request.status == "expired":
                self.reject(sub, "expired", position)
            elif not accepts(request.schema, sub.value):
                self.reject(sub, "schema-invalid", position)
            else:
                request.status = "received"
                request.value = copy.deepcopy(sub.value)
                self.emit("input", request.key, "update", self.input_value(request, sub.id), sub.id)
                progressed = True
        return progressed

    def too_large(self, sub: Submission, position: int) -> bool:
        """Check 4 of INPUT-017: the value is longer than the submission size limit
        (INPUT-031), or the submission is beyond the run's submission count limit,
        counting in inbox order the submissions that passed checks 1 and 2 (INPUT-033)."""
        number = sum(1 for p in self.counted if p <= position)
        return (
            number > self.limits["submissions_per_run"]
            or compact_bytes(sub.value) > self.limits["submission_bytes"]
        )

    def input_value(self, request: _Input, submission_id: str | None) -> dict[str, Any]:
        value = dict(self.input_values[request.key])
        value["status"] = request.status
        value["value"] = request.value if request.status == "received" else None
        value["submission_id"] = submission_id
        return value

    input_values: dict[str, dict[str, Any]]

    # -- blocking ------------------------------------------------------------------

    def deliver_due(self) -> bool:
        indexes = [
            i
            for i in due(self.scenario.submissions, self.delivered, state_of(self.history))
            if i not in self.after_end
        ]
        if not indexes:
            return False
        batch_number = len(self.batches)
        if batch_number < len(self.observed) and sorted(self.observed[batch_number]) == sorted(
            indexes
        ):
            indexes = list(self.observed[batch_number])
        self.append(indexes)
        return True

    def suspend(self, waits: Sequence[_Pending]) -> None:
        inputs = [w.key for w in waits if w.kind == "input" and not w.done]
        deadlines = [w.deadline for w in waits if not w.done and w.deadline is not None]
        self.run["status"] = "waiting" if inputs else "sleeping"
        self.run["waiting_for"] = {"inputs": inputs, "until": bool(deadlines)}
        self.emit_run()

    def resume(self) -> None:
        self.run["status"] = "running"
        self.run["waiting_for"] = None
        self.emit_run()

    def block(self, waits: list[_Pending]) -> None:
        """Wait until every primitive in ``waits`` has an outcome (a gather).

        Each time something the code waits on gets an outcome the run resumes
        (MODEL-026); if the code still waits, it suspends again. A sleep already due
        when it is scheduled (an absolute time in the past) does not block the code
        (events.md, sleep-completed)."""
        self.refresh(waits)
        self.fire(waits)
        while not all(w.done for w in waits):
            self.suspend(waits)
            while not self.wait_once(waits):
                pass
            self.resume()

    def wait_once(self, waits: Sequence[_Pending]) -> bool:
        """One turn of the driver at a run at rest: deliver what is due, else move the
        clock to the earliest deadline. Returns whether a waited-on primitive got an
        outcome."""
        if self.deliver_due():
            self.process_inbox()
            return self.refresh(waits)
        pending = [w.deadline for w in waits if not w.done and w.deadline is not None]
        if not pending:
            raise RuntimeError(
                "the scenario leaves the run waiting forever: no submission is due for "
                + ", ".join(w.key for w in waits if not w.done)
            )
        self.now = min(pending)
        self.fire(waits)
        return True

    def refresh(self, waits: Sequence[_Pending]) -> bool:
        changed = False
        for w in waits:
            if w.kind == "input" and not w.done and self.inputs[w.key].status != "pending":
                w.done = changed = True
        return changed

    def fire(self, waits: Sequence[_Pending]) -> None:
        for w in waits:
            if w.done or w.deadline is None or w.deadline > self.now:
                continue
            w.done = True
            if w.kind == "sleep":
                value = dict(self.sleep_values[w.key], status="completed")
                self.emit("sleep", w.key, "update", value)
            elif w.kind == "input":
                request = self.inputs[w.key]
                request.status = "expired"
                self.emit("input", w.key, "update", self.input_value(request, None))
            elif w.step is not None:  # RETRY-007; before run-resumed (EVT-030)
                w.step.update(status="running", attempt=w.step["attempt"] + 1, error=None)
                self.emit("step", w.key, "update", w.step)

    sleep_values: dict[str, dict[str, Any]]

    # -- primitives ----------------------------------------------------------------

    def step_value(self, key: str, op: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
        retry = op.get("retry") or {}
        value: dict[str, Any] = {
            "name": op["name"],
            "seq": fields.pop("seq"),
            "status": "running",
            "attempt": 1,
            "max_attempts": int(retry.get("max_attempts", 3)),
            "timeout_ms": op.get("timeout_ms"),
            "result": None,
            "error": None,
        }
        value.update(fields)
        return value

    def issue(self, op: Mapping[str, Any]) -> Any:
        """Issue a primitive: record its insert; return a handle for :meth:`finish`.

        A call the protocol forbids records nothing and takes no position: the workflow
        code gets ``InvalidPrimitive`` (REPLAY-005, RETRY-002, INPUT-029, REPLAY-031)."""
        kind = op["op"]
        if refused_call(op):
            raise _Ended({"type": "InvalidPrimitive"})
        seq = self.position()
        if kind == "step":
            key = self.key("step", op["name"])
            value = self.step_value(key, op, seq=seq)
            self.emit("step", key, "insert", value)
            return ("step", key, value)
        if kind == "sleep":
            key = self.key("sleep", op["name"])
            # A sleep until an absolute time records no duration (EVT-060); the suite's
            # cases only give times already passed, so it is due at once.
            duration = op.get("duration_ms")
            value = {"name": op["name"], "seq": seq, "status": "scheduled", "duration_ms": duration}
            self.sleep_values[key] = value
            self.emit("sleep", key, "insert", value)
            return ("sleep", key, _Pending("sleep", key, self.now + int(duration or 0)))
        if kind == "input":
            key = self.key("input", op["name"])
            timeout = op.get("timeout_ms")
            value = {
                "name": op["name"],
                "seq": seq,
                "status": "pending",
                "prompt": op.get("prompt"),
                "schema": op.get("schema", True),  # INPUT-043
                "value": None,
                "submission_id": None,
                "expires": timeout is not None,
            }
            self.input_values[key] = value
            deadline = None if timeout is None else self.now + int(timeout)
            self.inputs[key] = _Input(key, op.get("schema", True), deadline=deadline)
            self.emit("input", key, "insert", value)
            return ("input", key, _Pending("input", key, deadline))
        if kind == "record":
            key = self.key("record", op["name"])
            self.emit("record", key, "insert", {"name": op["name"], "seq": seq, "kind": op["kind"]})
            return ("record", key, None)
        raise ValueError(f"not a primitive: {kind}")

    def run_step(self, key: str, op: Mapping[str, Any], value: dict[str, Any]) -> Any:
        """Run the attempts of a step whose ``step-started`` is recorded."""
        retry = op.get("retry") or {}
        non_retryable = set(retry.get("non_retryable") or []) | RESULT_ERRORS
        attempt = 1
        while True:
            recorded = attempt_error(op, attempt)
            if recorded is None:
                recorded = result_error(op, self.limits)
            if recorded is None:
                value.update(status="completed", attempt=attempt, result=op.get("result"))
                value["error"] = None
                self.emit("step", key, "update", value)
                return op.get("result")
            error = recorded
            if error["type"] == "StepTimeout":
                self.now += int(op["timeout_ms"])  # the attempt hung until its timeout
            if attempt < value["max_attempts"] and error["type"] not in non_retryable:
                value.update(status="retrying", error=recorded)
                self.emit("step", key, "update", value)
                wait = _Pending("retry", key, self.now + delay(attempt, retry), step=value)
                self.block([wait])  # fire() records the next attempt's start
                attempt += 1
                continue
            value.update(status="failed", error=recorded)
            self.emit("step", key, "update", value)
            if op.get("catch"):
                return {"failed": {"type": error["type"], "message": error["message"]}}
            raise _Ended(
                {
                    "type": "StepFailed",
                    "details": {"step": key, "attempts": attempt, "error": recorded},
                }
            )

    def outcome(self, handle: Any, op: Mapping[str, Any]) -> Any:
        kind, key, _ = handle
        if kind == "input":
            request = self.inputs[key]
            if request.status == "received":
                return request.value
            if "on_expired" in op:
                return copy.deepcopy(op["on_expired"]["default"])
            raise _Ended({"type": "InputExpired"})
        return None

    def bind(self, op: Mapping[str, Any], value: Any) -> None:
        if op.get("as"):
            self.variables[op["as"]] = value

    def primitive(self, op: Mapping[str, Any]) -> None:
        handle = self.issue(op)
        kind, key, extra = handle
        if kind == "step":
            self.bind(op, self.run_step(key, op, extra))
            return
        if kind == "record":
            return
        if kind == "input":
            self.process_inbox()  # kept submissions first (INPUT-021)
        self.block([extra])
        self.bind(op, self.outcome(handle, op))

    def parallel(self, ops: Sequence[Mapping[str, Any]]) -> None:
        handles = [self.issue(op) for op in ops]
        results: dict[int, Any] = {}
        failure: _Ended | None = None
        for index, (op, handle) in enumerate(zip(ops, handles, strict=True)):
            if handle[0] == "step":
                try:
                    results[index] = self.run_step(handle[1], op, handle[2])
                except _Ended as ended:
                    failure = failure or ended
        if any(h[0] == "input" for h in handles):
            self.process_inbox()
        waits = [h[2] for h in handles if h[0] in ("sleep", "input")]
        if waits:
            self.block(waits)
        if failure is not None:
            raise failure
        for index, (op, handle) in enumerate(zip(ops, handles, strict=True)):
            if handle[0] == "step":
                self.bind(op, results[index])
            elif handle[0] == "input":
                self.bind(op, self.outcome(handle, op))

    def execute(self, ops: Sequence[Mapping[str, Any]]) -> None:
        for op in ops:
            kind = op["op"]
            if kind in ("step", "sleep", "input", "record"):
                self.primitive(op)
            elif kind == "parallel":
                self.parallel(op["ops"])
            elif kind == "patch":
                # A new run: patched(id) is true; the first check records the marker,
                # later checks of the same id record nothing and take no position
                # (VER-009, VER-015, EVT-006).
                if op["id"] not in self.patches:
                    self.patches.add(op["id"])
                    seq = self.position()
                    self.emit("patch", op["id"], "insert", {"name": op["id"], "seq": seq})
                self.execute(op.get("then") or [])
            elif kind == "branch":
                subject = _lookup(self.variables, op["var"], op.get("path") or [])
                for case in op["cases"]:
                    if _equal_json(case["equals"], subject):
                        self.execute(case["ops"])
                        break
                else:
                    self.execute(op.get("else") or [])
            elif kind == "raise":
                error = op["error"]
                raise _Ended({"type": error["type"], "message": error["message"]})
            else:
                raise ValueError(f"unknown op {kind!r}")

    # -- the run -------------------------------------------------------------------

    def predict(self) -> Prediction:
        self.input_values = {}
        self.sleep_values = {}
        first = early(self.scenario.submissions)
        if first:
            self.append(first)
        self.emit_run(txid=RUN, op="insert")
        txid: str | None = None
        try:
            self.process_inbox()  # early malformed messages and cancels are decided at once
            self.execute(self.scenario.program.get("ops", []))
        except _Ended as ended:
            self.run.update(status="failed", error=ended.error)
        except _Cancelled as cancelled:
            # A suspended run goes straight to cancelled (model.md transitions); what
            # it waited on stays as last recorded (CANCEL-008).
            cancel = cancelled.cancel
            reason = NO_REASON if cancel.reason is None else cancel.reason[:REASON_LIMIT]
            error = {"type": "Cancelled", "message": reason, "details": {"cancel_id": cancel.id}}
            self.run.update(status="cancelled", output=None, error=error)
            txid = cancel.id  # EVT-038
        else:
            output = {k: v for k, v in self.variables.items() if k != "input"}
            self.run.update(status="completed", output=output)
        self.run["waiting_for"] = None
        self.emit_run(txid=txid)
        self.process_inbox(ending=True)
        refused = [
            i
            for i in range(len(self.scenario.submissions))
            if i not in self.delivered and self.scenario.submissions[i].when != "early"
        ]
        return Prediction(
            history=self.history,
            status=self.run["status"],
            output=self.run["output"],
            error=self.run["error"],
            refused=refused,
            batches=self.batches,
        )


def predict(
    scenario: Scenario,
    observed_batches: Sequence[Sequence[int]] | None = None,
    after_end: frozenset[int] = frozenset(),
) -> Prediction:
    """The scrubbed history a conforming engine records for ``scenario``.

    ``observed_batches`` gives, per delivery point, the order in which the stream
    server actually placed that point's submissions (it matters only when two clients
    sent at once); without it the schedule's order is used. ``after_end`` names
    submissions that were appended only after the run ended (on a real clock a deadline
    can end a run before the point the schedule meant).
    """
    return _Model(scenario, observed_batches, after_end).predict()


# -- non-determinism ---------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    seq: int
    kind: str
    name: str
    record_kind: str | None
    finished: bool
    value: Any  # step result / input value, when finished
    failed: bool  # step failed or input expired
    #: the index in the history of its outcome message (steps, sleeps, inputs)
    outcome_at: int | None = None


def recorded_primitives(scrubbed: Sequence[Mapping[str, Any]]) -> list[Recorded]:
    """The primitives of a scrubbed history by position, with their last state."""
    latest: dict[tuple[str, str], Mapping[str, Any]] = {}
    order: list[tuple[str, str]] = []
    outcomes: dict[tuple[str, str], int] = {}
    for index, message in enumerate(scrubbed):
        kind = str(message["type"])
        if kind not in ("step", "sleep", "input", "record", "patch"):
            continue
        ident = (kind, str(message["key"]))
        if ident not in latest:
            order.append(ident)
        latest[ident] = message["value"]
        if message["value"].get("status") in ("completed", "failed", "received", "expired"):
            outcomes[ident] = index
    out: list[Recorded] = []
    for kind, _key in order:
        value = latest[(kind, _key)]
        status = value.get("status")
        finished = kind in ("record", "patch") or status in (
            "completed",
            "failed",
            "received",
            "expired",
        )
        out.append(
            Recorded(
                seq=int(value["seq"]),
                kind=kind,
                name=str(value["name"]),
                record_kind=value.get("kind"),
                finished=finished,
                value=value.get("result") if kind == "step" else value.get("value"),
                failed=status in ("failed", "expired"),
                outcome_at=outcomes.get((kind, _key)),
            )
        )
    return sorted(out, key=lambda r: r.seq)


class _Diverged(Exception):
    def __init__(self, details: dict[str, Any]) -> None:
        super().__init__(details)
        self.details = details


class _Stop(Exception):
    """The code ended or blocked during replay."""


def non_determinism_readings(
    scrubbed: Sequence[Mapping[str, Any]], program: Mapping[str, Any], run_input: Any
) -> list[dict[str, Any] | None]:
    """Every outcome of :func:`non_determinism` the specification allows. Case 3 of
    replay.md gives outcomes strictly in history order (``strict_order``), so there is
    one; the list shape keeps room for a rule that allows more."""
    return [non_determinism(scrubbed, program, run_input, strict_order=True)]


def non_determinism(
    scrubbed: Sequence[Mapping[str, Any]],
    program: Mapping[str, Any],
    run_input: Any,
    *,
    strict_order: bool = True,
) -> dict[str, Any] | None:
    """The ``details`` of the NonDeterminism a conforming engine reports when it replays
    ``scrubbed`` with ``program``, or None.

    Cases 1-3 of replay.md (REPLAY-010, REPLAY-015, REPLAY-017); ``parallel`` groups
    issue every member before awaiting any (ADAPT-009); patch checks and recorded patch
    markers follow versioning.md (VER-009, VER-010, VER-012, VER-013, VER-015, VER-016).

    ``strict_order`` (the specification's reading, case 3 of replay.md) gives recorded
    outcomes to the code strictly in history order, across primitives the changed code
    has not issued: code that waits for an outcome recorded after the outcome of a
    primitive it has not reached is blocked (case 3). ``strict_order=False`` is the
    other reading, which the specification rules out: such code gets its outcomes and
    goes on.
    """
    recorded = recorded_primitives(scrubbed)
    by_outcome = sorted((r.outcome_at, r.seq) for r in recorded if r.outcome_at is not None)
    given: set[int] = set()  # seqs whose outcome the code got (strict order only)
    variables: dict[str, Any] = {"input": run_input}
    position = 0  # index of the next recorded primitive (neither matched nor skipped)
    answers: dict[str, bool] = {}  # patch id -> what patched(id) returned
    skipped: set[str] = set()  # patch markers that replay skipped

    def side(r: Recorded | None) -> dict[str, str] | None:
        return None if r is None else {"kind": r.kind, "name": r.name}

    def skip_block() -> None:
        """VER-013: before a primitive, an end or a block, skip the marker block."""
        nonlocal position
        while position < len(recorded) and recorded[position].kind == "patch":
            skipped.add(recorded[position].name)
            position += 1

    def unreached() -> None:
        skip_block()
        if position < len(recorded):
            r = recorded[position]
            raise _Diverged({"seq": r.seq, "recorded": side(r), "requested": None})

    def blocked() -> None:
        """Every branch waits on a primitive with no outcome: case 3, or replay ends."""
        unreached()
        raise _Stop

    def await_outcomes(awaited: Sequence[Recorded]) -> None:
        if not all(r.finished for r in awaited):
            blocked()
        if not strict_order:
            return
        issued = {r.seq for r in recorded[:position]}
        for _, seq in by_outcome:
            if all(r.seq in given or r.outcome_at is None for r in awaited):
                return
            if seq in given:
                continue
            if seq not in issued:
                blocked()  # the next outcome in history order is of an unreached primitive
            given.add(seq)

    def patched(patch_id: str) -> bool:
        nonlocal position
        if patch_id in answers:  # VER-009
            return answers[patch_id]
        end = position
        while end < len(recorded) and recorded[end].kind == "patch":
            end += 1
        block = [recorded[i].name for i in range(position, end)]
        if patch_id in block:  # VER-010
            found = position + block.index(patch_id)
            skipped.update(block[: found - position])
            position = found + 1
            answer = True
        elif position < len(recorded) or patch_id in skipped:  # VER-012, VER-016
            answer = False
        else:
            # VER-015: past everything recorded, the code runs live and cannot diverge.
            raise _Stop
        answers[patch_id] = answer
        return answer

    def issue(op: Mapping[str, Any]) -> Recorded:
        nonlocal position
        skip_block()
        if position >= len(recorded):
            raise _Stop  # new primitives beyond the history: no divergence
        r = recorded[position]
        kind = op["op"]
        if (r.kind, r.name) != (kind, op["name"]) or (
            kind == "record" and r.record_kind != op.get("kind")
        ):
            raise _Diverged(
                {"seq": r.seq, "recorded": side(r), "requested": {"kind": kind, "name": op["name"]}}
            )
        position += 1
        return r

    def outcome(op: Mapping[str, Any], r: Recorded) -> tuple[bool, Any]:
        """(whether the code raises here, the value bound to ``as``)."""
        if op["op"] == "step" and r.failed:
            return (False, {"failed": None}) if op.get("catch") else (True, None)
        if op["op"] == "input" and r.failed:
            return (False, op["on_expired"]["default"]) if "on_expired" in op else (True, None)
        return False, r.value

    def bind(op: Mapping[str, Any], value: Any) -> None:
        if op["op"] in ("step", "input") and op.get("as"):
            variables[op["as"]] = value

    def run(ops: Sequence[Mapping[str, Any]]) -> None:
        for op in ops:
            kind = op["op"]
            if kind in ("step", "sleep", "input", "record"):
                r = issue(op)
                await_outcomes([r])
                raises, value = outcome(op, r)
                if raises:
                    raise _Stop("ended")
                bind(op, value)
            elif kind == "parallel":
                issued = [issue(member) for member in op["ops"]]
                await_outcomes(issued)
                results = [outcome(m, r) for m, r in zip(op["ops"], issued, strict=True)]
                if any(raises for raises, _ in results):
                    raise _Stop("ended")
                for member, (_, value) in zip(op["ops"], results, strict=True):
                    bind(member, value)
            elif kind == "patch":
                run(op.get("then" if patched(op["id"]) else "else") or [])
            elif kind == "branch":
                subject = _lookup(variables, op["var"], op.get("path") or [])
                for case in op["cases"]:
                    if _equal_json(case["equals"], subject):
                        run(case["ops"])
                        break
                else:
                    run(op.get("else") or [])
            elif kind == "raise":
                raise _Stop("ended")
            else:
                raise ValueError(f"unknown op {kind!r}")

    try:
        run(program.get("ops", []))
        unreached()
    except _Diverged as diverged:
        return diverged.details
    except _Stop as stop:
        if stop.args == ("ended",):
            try:
                unreached()
            except _Diverged as diverged:
                return diverged.details
        return None
    return None
