"""The checks the suite applies to an observed run. Each raises AssertionError with a
message that names what the specification expects and what the engine did."""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped, unused-ignore]
from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped, unused-ignore]

from . import model, schemas
from .driver import Observation, Target, parse_time, without_offset
from .model import Prediction, predict
from .scenario import TERMINAL
from .scrub import differences


def context(obs: Observation | None, target: Target | None) -> str:
    """The scenario and the last HTTP exchanges, for a failure message."""
    parts: list[str] = []
    if obs is not None:
        parts.append(f"run {obs.run_id} of workflow {obs.workflow}")
        parts.append("scenario: " + json.dumps(obs.scenario.to_json(), sort_keys=True))
        if obs.report:
            parts.append("adapter report: " + json.dumps(obs.report))
    if target is not None:
        parts.append("HTTP exchanges (last 12):\n" + target.http.transcript())
    return "\n".join(parts)


def messages_validate(obs: Observation) -> None:
    """Every history message is a valid history event; every well-formed inbox message
    the suite wrote is a valid inbox event."""
    for index, message in enumerate(obs.history):
        try:
            schemas.identify(message, "history")
        except schemas.SchemaError as error:
            raise AssertionError(f"history message {index} is not valid: {error}") from None
    broken = [without_offset(s.message()) for s in obs.scenario.submissions if s.broken]
    for index, message in enumerate(obs.inbox):
        if message in broken:
            continue  # a malformed message the suite sent on purpose
        try:
            schemas.identify(message, "inbox")
        except schemas.SchemaError as error:
            raise AssertionError(f"inbox message {index} is not valid: {error}") from None


def only_specified_fields(obs: Observation) -> None:
    """PRIV-002: a history message's value holds the members its event's schema lists
    and nothing else (the engine's own data, such as configuration or a failing body's
    locals, has no place there); errors hold ``type``, ``message`` and ``details``.
    Runs of a later protocol version may carry members that version adds (EVT-008)."""
    runs = [m for m in obs.history if m.get("type") == "run"]
    if not runs or (runs[0].get("value") or {}).get("protocol") != "1.0":
        return
    for index, message in enumerate(obs.history):
        try:
            event = schemas.identify(message, "history")
        except schemas.SchemaError:
            continue  # messages_validate reports it
        value = message.get("value")
        if not isinstance(value, Mapping):
            continue
        allowed = schemas.value_members(event)
        extra = sorted(set(value) - allowed)
        assert not extra, (
            f"history message {index} ({event}) records members no schema lists: {extra}"
        )
        error = value.get("error")
        if isinstance(error, Mapping):
            extra = sorted(set(error) - {"type", "message", "details"})
            assert not extra, f"history message {index} ({event}): error members {extra}"


def run_messages_agree(obs: Observation, versions: Sequence[str]) -> None:
    """Every run message carries the protocol recorded in run-started, one the adapter
    declares (VER-002); nothing but rejections follows the terminal run event (MODEL-021);
    the engine never writes the inbox (MODEL-010)."""
    runs = [m for m in obs.history if m.get("type") == "run"]
    assert runs and runs[0]["headers"]["operation"] == "insert", "history begins with run-started"
    assert obs.history[0] is runs[0], "run-started is the first message of the history"
    protocol = runs[0]["value"]["protocol"]
    assert protocol in versions, f"run-started records protocol {protocol}, not in {versions}"
    for message in runs:
        assert message["value"]["protocol"] == protocol, "every run message repeats protocol"
    terminal = terminal_position(obs.history)
    if terminal is not None:
        after = [m for m in obs.history[terminal + 1 :] if m.get("type") != "submission"]
        assert not after, f"messages after the terminal run event: {after}"
    ours = [without_offset(s.message()) for s in obs.scenario.submissions]
    foreign = [m for m in obs.inbox if m not in ours]
    assert not foreign, f"the inbox holds messages the suite did not write: {foreign}"


def matches_model(obs: Observation, *, exact: bool = False) -> Prediction:
    """The scrubbed history equals the model's prediction."""
    prediction = predict(obs.scenario, obs.batches, frozenset(obs.after_end))
    problems = differences(prediction.history, obs.scrubbed, exact=exact)
    if problems:
        raise AssertionError(
            "the history differs from what the specification predicts:\n  "
            + "\n  ".join(problems[:8])
        )
    assert obs.history_closed, "the history of a finished run is closed (MODEL-034)"
    for index in prediction.refused:
        status, closed = obs.answers.get(index, (None, False))
        assert status == 409 and closed, (
            f"submission {obs.scenario.submissions[index].id} sent after the run ended got "
            f"{status} (closed: {closed}), expected 409 with Stream-Closed: true"
        )
    return prediction


def same_history(expected: Sequence[Any], actual: Sequence[Any], *, exact: bool) -> None:
    problems = differences(expected, actual, exact=exact)
    if problems:
        raise AssertionError("the histories differ:\n  " + "\n  ".join(problems[:8]))


def bodies_never_rerun(obs: Observation, *, faults: bool) -> None:
    """REPLAY-023 and MODEL-027 from the adapter's body log: when a body began, its
    attempt's start was durable and neither the step's outcome nor the attempt's
    failure was."""
    history = obs.history
    executions: dict[tuple[str, int], int] = {}
    for body in obs.report.get("bodies", []):
        key, attempt, known = body["step"], body["attempt"], body["known_history"]
        executions[(key, attempt)] = executions.get((key, attempt), 0) + 1
        prefix = [m for m in history[:known] if m.get("type") == "step" and m.get("key") == key]
        statuses = [(m["value"]["status"], m["value"]["attempt"]) for m in prefix]
        assert ("running", attempt) in statuses, (
            f"the body of {key} attempt {attempt} began before its start was durable "
            f"(history prefix of {known} messages has {statuses})"
        )
        finished = [s for s in statuses if s[0] in ("completed", "failed")]
        assert not finished, (
            f"the body of {key} ran again after its outcome {finished} was recorded"
        )
        assert ("retrying", attempt) not in statuses, (
            f"the body of {key} attempt {attempt} ran again after the attempt failed"
        )
    recorded: dict[tuple[str, int], bool] = {}
    for message in history:
        if message.get("type") == "step" and message["value"]["status"] == "running":
            recorded[(message["key"], message["value"]["attempt"])] = True
    for attempt_key in recorded:
        assert executions.get(attempt_key, 0) >= 1, (
            f"step {attempt_key[0]} attempt {attempt_key[1]} is recorded but its body never ran"
        )
    if not faults and obs.scenario.workers == 1:
        again = {k: n for k, n in executions.items() if n > 1}
        assert not again, f"without faults, these attempts' bodies ran more than once: {again}"


def one_answer_per_request(obs: Observation) -> None:
    """INPUT-003 and INPUT-019, read off the streams alone: each request has at most one
    outcome, and a received request took the first valid submission in inbox order."""
    outcomes: dict[str, list[Mapping[str, Any]]] = {}
    schemas_by_key: dict[str, Any] = {}
    for message in obs.history:
        if message.get("type") != "input":
            continue
        value = message["value"]
        if message["headers"]["operation"] == "insert":
            schemas_by_key[message["key"]] = value["schema"]
        elif value["status"] in ("received", "expired"):
            outcomes.setdefault(message["key"], []).append(value)
    for key, found in outcomes.items():
        assert len(found) == 1, f"request {key} has {len(found)} outcomes: {found}"
    for request, (value,) in outcomes.items():
        if value["status"] != "received":
            continue
        first = _first_valid(obs.inbox, request, schemas_by_key[request])
        assert value["submission_id"] == first, (
            f"request {request} took submission {value['submission_id']}, but the first valid "
            f"submission for it in inbox order is {first}"
        )


def _first_valid(inbox: Sequence[Any], request: str, schema: Any) -> str | None:
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped, unused-ignore]

    seen: set[Any] = set()
    for message in inbox:
        key = message.get("key")
        if key in seen:
            continue
        seen.add(key)
        value = message.get("value") or {}
        if value.get("submission_id") != key or value.get("request") != request:
            continue
        if Draft202012Validator(schema).is_valid(value.get("value")):
            return str(key)
    return None


def deadlines_not_early(obs: Observation) -> None:
    """Sleeps, input timeouts and retries never fire before their deadlines
    (INPUT-034, RETRY-006, WAKE-003)."""
    retry_at: dict[str, str] = {}
    for message in obs.history:
        value = message.get("value", {})
        kind = message.get("type")
        if kind == "sleep" and value.get("status") == "completed":
            assert parse_time(value["fired_at"]) >= parse_time(value["wake_at"]), (
                f"sleep {message['key']} fired at {value['fired_at']}, before {value['wake_at']}"
            )
        if kind == "input" and value.get("status") == "expired":
            assert parse_time(value["expired_at"]) >= parse_time(value["expires_at"]), (
                f"input {message['key']} expired at {value['expired_at']}, before "
                f"{value['expires_at']}"
            )
        if kind == "step" and value.get("status") == "retrying":
            retry_at[message["key"]] = value["retry_at"]
        if kind == "step" and value.get("status") == "running" and value.get("attempt", 1) > 1:
            due = retry_at.get(message["key"])
            if due is not None:
                assert parse_time(value["started_at"]) >= parse_time(due), (
                    f"step {message['key']} attempt {value['attempt']} started at "
                    f"{value['started_at']}, before its retry_at {due}"
                )
    assert not obs.early_fires, "a deadline fired early: " + "; ".join(obs.early_fires)


#: Value fields marked *fixed* in spec/events.md: they keep their insert's value in
#: every later message of the entity (EVT-009).
FIXED_FIELDS: dict[str, tuple[str, ...]] = {
    "run": ("run_id", "workflow", "protocol", "input", "started_at"),
    "step": ("name", "seq", "max_attempts", "timeout_ms"),
    "sleep": ("name", "seq", "duration_ms", "scheduled_at", "wake_at"),
    "input": ("name", "seq", "prompt", "schema", "requested_at", "expires_at"),
}


def _as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def fixed_fields_hold(obs: Observation) -> None:
    """EVT-009: a fixed field holds, in every later message of its entity, the value it
    had in the entity's insert (for a timestamp: the engine's clock when it inserted,
    never a clock read again later, for example while replaying)."""
    inserted: dict[tuple[Any, Any], Mapping[str, Any]] = {}
    for index, message in enumerate(obs.history):
        fixed = FIXED_FIELDS.get(message.get("type"), ())
        entity = (message.get("type"), message.get("key"))
        value = message.get("value") or {}
        if message["headers"]["operation"] == "insert":
            inserted.setdefault(entity, value)
            continue
        first = inserted.get(entity)
        if first is None:
            continue  # an update before its insert: the model comparison reports it
        changed = [f for f in fixed if _as_json(value.get(f)) != _as_json(first.get(f))]
        assert not changed, (
            f"history message {index} ({entity[0]} {entity[1]!r}) changes fixed field(s) "
            + ", ".join(f"{f} from {first.get(f)!r} to {value.get(f)!r}" for f in changed)
        )


_PRIMITIVE_TYPES = ("step", "sleep", "input", "record", "patch")


def resumed_before_new_primitives(obs: Observation) -> None:
    """MODEL-026: once a run is suspended, the engine records ``run-resumed`` before it
    records any new primitive (the insert of a step, sleep, input, record or patch)."""
    suspended: int | None = None
    for index, message in enumerate(obs.history):
        kind = message.get("type")
        if kind == "run":
            status = (message.get("value") or {}).get("status")
            suspended = index if status in ("sleeping", "waiting") else None
        elif (
            kind in _PRIMITIVE_TYPES
            and message["headers"]["operation"] == "insert"
            and suspended is not None
        ):
            raise AssertionError(
                f"history message {index} inserts {kind} {message.get('key')!r} while the run "
                f"is suspended (run-suspended at message {suspended}, no run-resumed since)"
            )


#: Traces and host paths that EVT-018 keeps out of recorded errors: Python and
#: JavaScript stack frames, file:line references and absolute paths.
_DIAGNOSTICS = re.compile(
    r"Traceback \(most recent call last\)"
    r'|File "[^"]*", line \d+'
    r"|\bat \S+ \(\S+:\d+:\d+\)"
    r"|\.(?:py|js|mjs|ts|java|go|rs|rb|cs|kt):\d+"
    r"|(?<![\w.])/(?:home|usr|tmp|var|opt|srv|root|Users|private|etc|nix)/\S"
    r"|\b[A-Za-z]:\\\S"
)


def _scripted_messages(program: Any) -> set[str]:
    """Every error message a program scripts (the engine records those as given)."""
    found: set[str] = set()
    if isinstance(program, Mapping):
        error = program.get("error")
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            found.add(error["message"])
        for value in program.values():
            found |= _scripted_messages(value)
    elif isinstance(program, list):
        for item in program:
            found |= _scripted_messages(item)
    return found


def errors_carry_no_diagnostics(obs: Observation) -> None:
    """EVT-018: no recorded error (a run's, a step's, a rejection's) holds a stack trace
    or a path of the engine's host; messages the program scripted are the program's."""
    scripted = _scripted_messages(obs.scenario.program)

    def texts(item: Any) -> list[str]:
        if isinstance(item, str):
            return [] if item in scripted else [item]
        if isinstance(item, Mapping):
            return [t for v in item.values() for t in texts(v)]
        if isinstance(item, list):
            return [t for v in item for t in texts(v)]
        return []

    for index, message in enumerate(obs.history):
        value = message.get("value")
        if not isinstance(value, Mapping):
            continue
        recorded: list[Any] = [value.get("error")]
        if message.get("type") == "submission":
            recorded.append(value.get("message"))
        for text in texts(recorded):
            found = _DIAGNOSTICS.search(text)
            assert found is None, (
                f"history message {index} ({message.get('type')} {message.get('key')!r}) "
                f"records host diagnostics in an error: {found.group(0)!r} in {text[:200]!r}"
            )


def txids_where_specified(obs: Observation) -> None:
    """EVT-019: ``headers.txid`` appears only on run-started, input-received,
    input-rejected and run-cancelled."""
    for index, message in enumerate(obs.history):
        headers = message.get("headers") or {}
        if "txid" not in headers:
            continue
        value = message.get("value") or {}
        kind, status = message.get("type"), value.get("status")
        allowed = (
            (kind == "run" and headers.get("operation") == "insert")
            or (kind == "run" and status == "cancelled")
            or (kind == "input" and status == "received")
            or kind == "submission"
        )
        assert allowed, (
            f"history message {index} ({kind} {message.get('key')!r}, status {status!r}) "
            f"carries headers.txid {headers['txid']!r}; only run-started, input-received, "
            "input-rejected and run-cancelled do"
        )


def _lets_the_run_proceed(message: Mapping[str, Any]) -> bool:
    value = message.get("value") or {}
    kind, status = message.get("type"), value.get("status")
    return (
        (kind == "sleep" and status == "completed")
        or (kind == "input" and status in ("received", "expired"))
        or (kind == "step" and status == "running" and value.get("attempt", 1) > 1)
    )


def resumed_after_its_cause(obs: Observation) -> None:
    """EVT-030: ``run-resumed`` comes after a message that let the run proceed (a sleep
    completed, an input received or expired, a retried attempt started), recorded since
    the run suspended. (That both travel in one append is not visible to a reader.)"""
    suspended: int | None = None
    cause = False
    for index, message in enumerate(obs.history):
        status = (message.get("value") or {}).get("status")
        if message.get("type") == "run":
            if status in ("sleeping", "waiting"):
                suspended, cause = index, False
            elif status == "running" and suspended is not None:
                assert cause, (
                    f"history message {index} resumes the run suspended at message "
                    f"{suspended}, but nothing recorded since let it proceed"
                )
                suspended = None
        elif suspended is not None and _lets_the_run_proceed(message):
            cause = True


def until_is_the_earliest_deadline(obs: Observation) -> None:
    """MODEL-024: a suspended run's ``waiting_for.until`` is the earliest deadline among
    what it waits on (a scheduled sleep's ``wake_at``, a pending input's ``expires_at``,
    a retrying step's ``retry_at``), or null when there is none. A scripted workflow
    awaits every primitive it has issued, so every pending one counts."""
    deadlines: dict[str, str | None] = {}
    for index, message in enumerate(obs.history):
        value = message.get("value") or {}
        kind, status = message.get("type"), value.get("status")
        entity = f"{kind}/{message.get('key')}"
        if kind == "sleep":
            deadlines[entity] = value.get("wake_at") if status == "scheduled" else None
        elif kind == "input":
            deadlines[entity] = value.get("expires_at") if status == "pending" else None
        elif kind == "step":
            deadlines[entity] = value.get("retry_at") if status == "retrying" else None
        elif kind == "run" and status in ("sleeping", "waiting"):
            pending = [parse_time(d) for d in deadlines.values() if d is not None]
            until = (value.get("waiting_for") or {}).get("until")
            if not pending:
                assert until is None, f"history message {index}: until {until}, expected null"
                continue
            assert until is not None and parse_time(until) == min(pending), (
                f"history message {index}: waiting_for.until is {until}, expected the "
                f"earliest pending deadline {min(pending).isoformat()}"
            )


def terminal_position(history: Sequence[Mapping[str, Any]]) -> int | None:
    """The position of the terminal run event, if the history has one."""
    return next(
        (
            i
            for i, m in enumerate(history)
            if m.get("type") == "run" and (m.get("value") or {}).get("status") in TERMINAL
        ),
        None,
    )


def final_rejections(obs: Observation) -> list[str]:
    """The inbox ids rejected after the terminal run event (the final append)."""
    terminal = terminal_position(obs.history)
    if terminal is None:
        return []
    return [str(m.get("key")) for m in obs.history[terminal + 1 :] if m.get("type") == "submission"]


def final_rejections_in_inbox_order(obs: Observation) -> None:
    """MODEL-037: the rejections of the final append follow the inbox order."""
    order: dict[str, int] = {}
    for position, message in enumerate(obs.inbox):
        order.setdefault(str(message.get("key")), position)
    ending = final_rejections(obs)
    positions = [order.get(key, -1) for key in ending]
    assert positions == sorted(positions), (
        f"the final append rejects {ending}, not in inbox order "
        f"({sorted(ending, key=lambda k: order.get(k, -1))})"
    )


def recorded_schemas_are_valid(obs: Observation) -> None:
    """EVT-068: the ``schema`` of every input request is a valid JSON Schema 2020-12."""
    for index, message in enumerate(obs.history):
        value = message.get("value") or {}
        if message.get("type") != "input" or "schema" not in value:
            continue
        try:
            Draft202012Validator.check_schema(value["schema"])
        except SchemaError as error:
            raise AssertionError(
                f"history message {index} (input {message.get('key')!r}) records a schema "
                f"that is not valid 2020-12: {error.message}"
            ) from None


def history_rules(obs: Observation) -> None:
    """The rules every history keeps that a reader can check message by message:
    EVT-018, EVT-019, EVT-030, EVT-068, MODEL-024, MODEL-037 and MODEL-050."""
    errors_carry_no_diagnostics(obs)
    txids_where_specified(obs)
    resumed_after_its_cause(obs)
    recorded_schemas_are_valid(obs)
    until_is_the_earliest_deadline(obs)
    final_rejections_in_inbox_order(obs)
    due_outcomes_in_deadline_order(obs)


def due_outcomes_in_deadline_order(obs: Observation) -> None:
    """MODEL-050: outcomes of deadlines the engine found due at one instant (the same
    ``fired_at`` / ``expired_at``) are recorded by deadline, then ``seq``."""
    fired: list[tuple[str, str, int, str]] = []  # (decided at, deadline, seq, key)
    for message in obs.history:
        value = message.get("value") or {}
        kind, status = message.get("type"), value.get("status")
        if kind == "sleep" and status == "completed":
            times = value.get("fired_at"), value.get("wake_at")
        elif kind == "input" and status == "expired":
            times = value.get("expired_at"), value.get("expires_at")
        else:
            continue
        if all(isinstance(t, str) for t in times):  # the schemas check presence (EVT-007)
            fired.append((str(times[0]), str(times[1]), int(value.get("seq", 0)), message["key"]))
    for (at_a, due_a, seq_a, key_a), (at_b, due_b, seq_b, key_b) in itertools.pairwise(fired):
        if at_a == at_b and (parse_time(due_a), seq_a) > (parse_time(due_b), seq_b):
            raise AssertionError(
                f"{key_a} (due {due_a}, seq {seq_a}) is recorded before {key_b} (due {due_b}, "
                f"seq {seq_b}), both decided at {at_a}: due outcomes go by deadline, then seq "
                "(MODEL-050)"
            )


def _entry(index: int, request: Mapping[str, Any]) -> str:
    return f"request {index} ({request['method']} {request['stream']})"


def streams_created_in_order(requests: Sequence[Mapping[str, Any]]) -> None:
    """MODEL-016 and FENCE-001 from the engine's request log: it creates the inbox, then
    the history, then appends ``run-started``, unless the history's creating ``PUT``
    carried it (with the rest of the run's first append); it puts messages into the
    history only by that ``PUT`` or by ``POST`` appends."""

    def first(stream: str, method: str, with_messages: bool | None = None) -> int | None:
        return next(
            (
                i
                for i, r in enumerate(requests)
                if r["stream"] == stream
                and r["method"] == method
                and (with_messages is None or (r["messages"] > 0) == with_messages)
            ),
            None,
        )

    inbox, history = first("inbox", "PUT"), first("history", "PUT")
    append = first("history", "POST", with_messages=True)
    assert inbox is not None, "the engine never created the run's inbox (MODEL-016)"
    assert history is not None, "the engine never created the run's history (FENCE-001)"
    assert inbox < history, (
        f"the engine created the history (request {history}) before the inbox "
        f"(request {inbox}); MODEL-016 orders inbox, history, run-started"
    )
    assert append is None or history < append, (
        f"the engine appended to the history (request {append}) before it created it "
        f"(request {history})"
    )
    stored = False  # whether the history holds messages the log put there
    for index, request in enumerate(requests):
        if request["stream"] != "history":
            continue
        if request["method"] == "PUT":
            # A PUT that found the history (200) stored nothing; one that created it
            # (201) may hold the run's first append, and so comes before any append.
            assert not (request["messages"] and request["status"] == 201 and stored), (
                f"{_entry(index, request)} creates the history with {request['messages']} "
                "message(s) after messages were appended; FENCE-001 creates it once, "
                "empty or holding the run's first append"
            )
            stored = stored or (request["messages"] > 0 and request["status"] == 201)
        elif request["messages"] > 0:
            stored = True
            assert request["method"] == "POST", (
                f"{_entry(index, request)} puts messages into the history other than by an append"
            )


def appends_follow_the_producer_rules(requests: Sequence[Mapping[str, Any]]) -> None:
    """FENCE-006 and FENCE-008: every history append that carries messages names its
    activation's producer (``Producer-Id``, ``Producer-Epoch: 0``, ``Producer-Seq`` 0
    for its first append and one more for each later one; a resend of an append whose
    outcome is unknown repeats its number, FENCE-014), and an activation sends its next
    append only once the previous one has an answer."""
    last: dict[str, tuple[int, Mapping[str, Any]]] = {}
    for index, request in enumerate(requests):
        if request["stream"] != "history" or request["method"] != "POST":
            continue
        if request["messages"] == 0:
            continue  # a close-only POST carries no messages
        headers = request["headers"]
        producer, epoch, seq = (
            headers.get("Producer-Id"),
            headers.get("Producer-Epoch"),
            headers.get("Producer-Seq"),
        )
        assert producer, f"{_entry(index, request)} carries no Producer-Id (FENCE-006)"
        assert epoch == "0", f"{_entry(index, request)} has Producer-Epoch {epoch!r}, not '0'"
        assert seq is not None and seq.isdigit(), (
            f"{_entry(index, request)} has Producer-Seq {seq!r}, not a number"
        )
        number = int(seq)
        previous = last.get(producer)
        if previous is None:
            assert number == 0, (
                f"{_entry(index, request)} is the first append of producer {producer} "
                f"with Producer-Seq {number}, not 0"
            )
        else:
            before, earlier = previous
            assert number in (before, before + 1), (
                f"{_entry(index, request)}: producer {producer} goes from Producer-Seq "
                f"{before} to {number}; FENCE-006 counts up by one"
            )
            resend = (earlier["headers"].get("Stream-Seq"), earlier["messages"])
            assert number != before or resend == (headers.get("Stream-Seq"), request["messages"]), (
                f"{_entry(index, request)} reuses Producer-Seq {number} of producer {producer} "
                "for other messages; only a resend of the same append may (FENCE-014)"
            )
            answered = earlier["answered_ms"]
            assert answered is not None and request["sent_ms"] >= answered, (
                f"{_entry(index, request)} was sent at {request['sent_ms']} ms while the "
                f"previous append of producer {producer} had no answer (answered at "
                f"{answered}); FENCE-008 allows one append in flight"
            )
        last[producer] = (number, request)


#: The ``run`` value members a run-status row repeats (MODEL-042).
_ROW_FROM_RUN = (
    "run_id", "workflow", "started_at", "status", "waiting_for", "error", "finished_at",
)  # fmt: skip


def expected_row(history: Sequence[Any]) -> dict[str, Any] | None:
    """What MODEL-042 derives from ``history`` (every row field but ``updated_at`` and
    ``history_length``), or None when it holds no ``run`` message."""
    run: Mapping[str, Any] | None = None
    pending: dict[str, Mapping[str, Any]] = {}
    for message in history:
        value = message.get("value") if isinstance(message, dict) else None
        if not isinstance(value, dict):
            continue
        if message.get("type") == "run":
            run = value
        elif message.get("type") == "input":
            pending.pop(message["key"], None)
            if value.get("status") == "pending":
                pending[message["key"]] = value
    if run is None:
        return None
    row = {name: run.get(name) for name in _ROW_FROM_RUN}
    ordered = sorted(pending.items(), key=lambda item: item[1].get("seq", 0))
    row["inputs"] = [
        {"key": key, **{f: v.get(f) for f in ("name", "prompt", "expires_at")}}
        for key, v in ordered
    ]
    return row


def status_rows_reflect_history(obs: Observation) -> None:
    """MODEL-040 to MODEL-045: the run has rows in ``{ns}/status``; each is a valid
    ``update`` derived from a prefix of the history no longer than the history; and once
    the run is at rest its last row says what the whole history says."""
    rows = obs.status_rows
    assert rows, f"the run-status stream has no row for run {obs.run_id} (MODEL-040, MODEL-044)"
    for index, row in enumerate(rows):
        try:
            schemas.identify(row, "status")
        except schemas.SchemaError as error:
            raise AssertionError(f"run-status row {index} is not valid: {error}") from None
        length = row["value"]["history_length"]
        assert length <= len(obs.history), (
            f"run-status row {index} reflects {length} history messages, but the history "
            f"has only {len(obs.history)} (MODEL-043: a row never leads its history)"
        )
        fields = _shown(row)
        expected = expected_row(obs.history[:length])
        assert fields == expected, (
            f"run-status row {index} is not what the first {length} history messages say "
            f"(MODEL-042):\n  row:      {json.dumps(fields, sort_keys=True)}\n"
            f"  expected: {json.dumps(expected, sort_keys=True)}"
        )
    last = _shown(rows[-1])
    assert last == expected_row(obs.history), (
        f"the last run-status row of run {obs.run_id} is not what its whole history says "
        f"(MODEL-044, MODEL-045): {json.dumps(last, sort_keys=True)}"
    )


def _shown(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row's fields but the two that no history decides."""
    return {k: v for k, v in row["value"].items() if k not in ("updated_at", "history_length")}


def _step_ops(node: Any) -> Iterator[Mapping[str, Any]]:
    """Every step operation of a program, at any depth (parallel groups, branches)."""
    if isinstance(node, Mapping):
        if node.get("op") == "step":
            yield node
        for value in node.values():
            yield from _step_ops(value)
    elif isinstance(node, list):
        for item in node:
            yield from _step_ops(item)


def retry_at_follows_the_policy(obs: Observation) -> None:
    """RETRY-004 and RETRY-005 on a virtual clock, where a failure is decided at the
    attempt's ``started_at`` (the clock never moves while a body runs, ADAPT-020): a
    retrying step's ``retry_at`` is ``started_at`` plus ``delay(a)`` of its policy, plus a
    jitter of at most 20 % of it, rounded up to the millisecond. A step name used with two
    different policies is skipped (its keys do not say which policy they had)."""
    policies: dict[str, list[Any]] = {}
    for op in _step_ops(obs.scenario.program):
        policies.setdefault(str(op["name"]), []).append(op.get("retry") or {})
    for message in obs.history:
        value = message.get("value") or {}
        if message.get("type") != "step" or value.get("status") != "retrying":
            continue
        known = policies.get(str(value.get("name")))
        if not known or any(p != known[0] for p in known):
            continue
        wanted = model.delay(int(value["attempt"]), known[0])
        gap = parse_time(value["retry_at"]) - parse_time(value["started_at"])
        gap_ms = gap.total_seconds() * 1000
        assert wanted <= gap_ms <= math.ceil(wanted * 1.2) + 1, (
            f"step {message['key']} attempt {value['attempt']} failed at "
            f"{value['started_at']} and retries at {value['retry_at']}: {gap_ms:.0f} ms "
            f"later, but its policy {known[0]} gives delay {wanted} ms plus at most 20 % "
            "jitter (RETRY-004, RETRY-005)"
        )
