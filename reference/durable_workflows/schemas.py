"""The protocol's JSON Schemas (2020-12), packaged with the library and resolved offline.

Every schema file is registered under its ``$id``
(``https://durable-workflows.dev/schemas/v1/<path>``) in a :class:`referencing.Registry`
whose retrieve function refuses every other URI, so validation never touches the
network. A wheel carries the files as ``durable_workflows/schemas/v1``; a source
checkout (editable install) uses the repository's ``schemas/v1``.

Events are told apart by the discriminator the spec fixes: the change message's
``type``, its ``headers.operation`` and, where the entity has one, ``value.status``.
The discriminators are read from the event schemas themselves (their ``const``
keywords), so the schemas stay the single source of truth.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT202012

from . import _event_rules
from ._compiled_schemas import compiled

# jsonschema is imported on use: a valid message never needs it (the compiled checks
# decide), and importing it costs a cold ``dwf replay`` a tenth of its time.
# It ships no type information; these names are Any to mypy unless the types-jsonschema
# stubs are installed (then the ignores are unused, and allowed to be).
if TYPE_CHECKING:
    from jsonschema.exceptions import (  # type: ignore[import-untyped, unused-ignore]
        ValidationError,
    )
    from jsonschema.protocols import Validator  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "BASE_URI",
    "EVENTS",
    "STREAM_EVENTS",
    "SchemaError",
    "Violation",
    "aggregate",
    "identify",
    "identify_any",
    "identify_valid",
    "registry",
    "rule_violations",
    "schema",
    "schema_root",
    "validator",
    "violations",
]

#: The ``$id`` of ``schemas/v1`` itself; every schema's ``$id`` is this plus its path.
BASE_URI: Final = "https://durable-workflows.dev/schemas/v1/"

#: The 23 events of protocol 1.x, named as their schema files.
EVENTS: Final = (
    "run-started",
    "run-suspended",
    "run-resumed",
    "run-completed",
    "run-failed",
    "run-cancelled",
    "step-started",
    "step-attempt-started",
    "step-attempt-failed",
    "step-completed",
    "step-failed",
    "sleep-scheduled",
    "sleep-completed",
    "input-requested",
    "input-received",
    "input-expired",
    "input-rejected",
    "value-recorded",
    "patch-recorded",
    "input-submitted",
    "cancel-requested",
    "run-requested",
    "run-status",
)

Stream = Literal["history", "inbox", "index", "status"]

#: The events each stream carries (history and status: engine-written; inbox and index:
#: client-written).
STREAM_EVENTS: Final[Mapping[Stream, tuple[str, ...]]] = {
    "history": EVENTS[:19],
    "inbox": ("input-submitted", "cancel-requested"),
    "index": ("run-requested",),
    "status": ("run-status",),
}

#: The aggregate schema (``oneOf`` its events) of each stream.
_AGGREGATES: Final[Mapping[Stream, str]] = {
    "history": "history-message",
    "inbox": "inbox-message",
    "index": "index-message",
    "status": "status-message",
}


@dataclass(frozen=True)
class Violation:
    """One way a message breaks its event's constraints.

    ``path`` is a JSON Pointer into the message ("" for the message itself). A schema
    violation has ``schema_path``, the keyword location in the schema that failed; a
    violation of a rule that JSON Schema cannot express (a value id equal to the key, a
    timestamp not before another) has ``schema_path`` "" and names the spec
    ``requirement`` instead.
    """

    path: str
    schema_path: str
    message: str
    requirement: str | None = None

    def __str__(self) -> str:
        where = self.path or "(message)"
        return f"{where}: {self.message}"


class SchemaError(ValueError):
    """A message is not a valid message of the stream it was checked against.

    ``event`` names the event the message claims to be (from its discriminator),
    or is None when no event of the stream has that discriminator.
    """

    def __init__(
        self, reason: str, *, event: str | None = None, violations: tuple[Violation, ...] = ()
    ) -> None:
        self.reason = reason
        self.event = event
        self.violations = violations
        lines = [reason, *(f"  {v}" for v in violations)]
        super().__init__("\n".join(lines))


def schema_root() -> Path:
    """The folder holding ``v1``'s schema files.

    The packaged copy (``durable_workflows/schemas/v1``, present in a wheel) wins;
    otherwise the repository's ``schemas/v1`` (source checkout or editable install).
    """
    packaged = Path(__file__).resolve().parent / "schemas" / "v1"
    if packaged.is_dir():
        return packaged
    repository = Path(__file__).resolve().parents[2] / "schemas" / "v1"
    if repository.is_dir():
        return repository
    raise FileNotFoundError(
        f"the protocol's schemas are missing: neither {packaged} nor {repository} exists"
    )


def _schema_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.json")):
        if "examples" not in path.relative_to(root).parts:
            yield path


@cache
def _schemas() -> dict[str, dict[str, Any]]:
    """Every schema file by ``$id``; each ``$id`` must match the file's path."""
    root = schema_root()
    found: dict[str, dict[str, Any]] = {}
    for path in _schema_files(root):
        contents = json.loads(path.read_text(encoding="utf-8"))
        expected = BASE_URI + path.relative_to(root).as_posix()
        if contents.get("$id") != expected:
            raise RuntimeError(f"{path}: $id is {contents.get('$id')!r}, expected {expected!r}")
        found[expected] = contents
    return found


def _refuse(uri: str) -> Resource[Any]:
    """Retrieve function of the registry: nothing outside the packaged files resolves."""
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


@cache
def registry() -> Registry[Any]:
    """A registry of every schema file, by ``$id``, that never fetches anything."""
    resources = [
        (uri, DRAFT202012.create_resource(contents)) for uri, contents in _schemas().items()
    ]
    return Registry(retrieve=_refuse).with_resources(resources).crawl()  # type: ignore[call-arg]


def schema(name: str) -> dict[str, Any]:
    """The schema of an event or aggregate by name (``step-started``, ``history-message``,
    ``defs/common``)."""
    uri = BASE_URI + name + ".json"
    try:
        return _schemas()[uri]
    except KeyError:
        raise KeyError(f"no schema named {name!r} (looked for {uri})") from None


@cache
def validator(event_name: str) -> Validator:
    """A 2020-12 validator for an event (or an aggregate such as ``history-message``).

    ``format`` is an annotation only, as the schemas intend: timestamps are checked by
    their ``pattern``.
    """
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped, unused-ignore]

    return Draft202012Validator(schema(event_name), registry=registry())


@dataclass(frozen=True)
class _Discriminator:
    type: str
    operation: str
    statuses: frozenset[str] | None  # None: the entity has no status


def _status_consts(node: object) -> set[str]:
    """The ``value.status`` consts a value schema fixes, through allOf/oneOf."""
    found: set[str] = set()
    if not isinstance(node, dict):
        return found
    status = node.get("properties", {}).get("status")
    if isinstance(status, dict) and "const" in status:
        found.add(status["const"])
    for keyword in ("allOf", "oneOf"):
        for branch in node.get(keyword, []):
            found |= _status_consts(branch)
    return found


@cache
def _discriminators() -> dict[str, _Discriminator]:
    table: dict[str, _Discriminator] = {}
    for event in EVENTS:
        properties = schema(event)["properties"]
        statuses = _status_consts(properties["value"])
        table[event] = _Discriminator(
            type=properties["type"]["const"],
            operation=properties["headers"]["properties"]["operation"]["const"],
            statuses=frozenset(statuses) if statuses else None,
        )
    return table


@cache
def _by_type_operation(
    events: tuple[str, ...],
) -> dict[tuple[str, str], list[tuple[str, _Discriminator]]]:
    """``events`` grouped by their (type, operation), each group in ``events`` order."""
    table: dict[tuple[str, str], list[tuple[str, _Discriminator]]] = {}
    for event in events:
        d = _discriminators()[event]
        table.setdefault((d.type, d.operation), []).append((event, d))
    return table


def _candidates(message: Mapping[str, Any], events: tuple[str, ...]) -> list[str]:
    """Events whose discriminator the message carries; an explicit status match first."""
    headers = message.get("headers")
    operation = headers.get("operation") if isinstance(headers, dict) else None
    value = message.get("value")
    status = value.get("status") if isinstance(value, dict) else None
    entity = message.get("type")
    # Discriminators are strings: anything else matches no event.
    if not isinstance(entity, str) or not isinstance(operation, str):
        return []
    explicit: list[str] = []
    statusless: list[str] = []
    for event, d in _by_type_operation(events).get((entity, operation), ()):
        if d.statuses is None:
            statusless.append(event)
        elif status in d.statuses:
            explicit.append(event)
    return explicit or statusless


def _leaf(error: ValidationError) -> ValidationError:
    """The most useful error: descend into oneOf/anyOf branches to the best match.

    Branches are tried in this order of preference: a branch whose discriminating
    ``const`` holds (the message chose it) over one whose ``const`` fails, and an error
    deeper than ``type`` (such as a nullable field's ``null`` branch) over a bare type
    mismatch.
    """
    from jsonschema.exceptions import best_match  # type: ignore[import-untyped, unused-ignore]

    while error.context:
        branches: dict[object, list[ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        chosen = [
            sub
            for subs in branches.values()
            if not any(e.validator == "const" for e in subs)
            for sub in subs
        ] or list(error.context)
        chosen = [e for e in chosen if e.validator != "type"] or chosen
        best = best_match(chosen)
        if best is None:
            break
        error = best
    return error


def _pointer(parts: Iterable[object]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _forbidden_member(event_name: str, message: Any, error: ValidationError) -> Violation | None:
    """A readable violation for a member an event forbids with a ``false`` schema
    (``old_value``, or ``headers.txid`` on most history events).

    jsonschema reports those at the enclosing object without naming the member, so
    find it: walk the event schema along the error's schema path to the ``properties``
    that holds the ``false`` and see which of them the message has.
    """
    if error.validator is not None or list(error.absolute_schema_path)[-1:] != ["properties"]:
        return None
    node: Any = schema(event_name)
    instance: Any = message
    try:
        for part in error.absolute_schema_path:
            node = node[part]
        for part in error.absolute_path:
            instance = instance[part]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(node, dict) or not isinstance(instance, dict):
        return None
    members = sorted(k for k, sub in node.items() if sub is False and k in instance)
    if not members:
        return None
    return Violation(
        path=_pointer([*error.absolute_path, members[0]]),
        schema_path=_pointer([*error.absolute_schema_path, members[0]]),
        message=f"{members[0]!r} is not allowed in a {event_name} message",
    )


def violations(event_name: str, message: Any) -> tuple[Violation, ...]:
    """Every way ``message`` breaks the schema named ``event_name`` (empty when valid).

    Any schema name works: an event, an aggregate, or ``defs/change-message``.
    """
    from jsonschema.exceptions import relevance  # type: ignore[import-untyped, unused-ignore]

    found: dict[tuple[str, str], Violation] = {}
    for error in sorted(validator(event_name).iter_errors(message), key=relevance):
        leaf = _leaf(error)
        forbidden = _forbidden_member(event_name, message, leaf)
        if forbidden is not None:
            found.setdefault((forbidden.path, forbidden.message), forbidden)
            continue
        path = _pointer(leaf.absolute_path)
        # The same fault can fail two keywords (an entity's definition and the event's
        # narrowing of it); report it once.
        found.setdefault(
            (path, leaf.message),
            Violation(
                path=path, schema_path=_pointer(leaf.absolute_schema_path), message=leaf.message
            ),
        )
    return tuple(sorted(found.values(), key=lambda v: (v.path, v.message)))


def rule_violations(event_name: str, message: Mapping[str, Any]) -> tuple[Violation, ...]:
    """The constraints of the event's spec table that JSON Schema cannot express and
    that ``message`` breaks. Only meaningful for a message that passes the schema."""
    return tuple(
        Violation(path=b.path, schema_path="", message=b.message, requirement=b.requirement)
        for b in _event_rules.check(event_name, message)
    )


def _describe(message: Mapping[str, Any]) -> str:
    headers = message.get("headers")
    operation = headers.get("operation") if isinstance(headers, dict) else None
    value = message.get("value")
    status = value.get("status") if isinstance(value, dict) else None
    parts = [
        f"type {message.get('type')!r}",
        "no headers.operation" if operation is None else f"operation {operation!r}",
    ]
    if status is not None:
        parts.append(f"status {status!r}")
    return ", ".join(parts)


def identify(message: object, stream: str) -> str:
    """The event a valid message of ``stream`` ("history", "inbox", "index" or "status") is.

    Raises :class:`SchemaError` when no event of the stream has the message's
    discriminator, when the message breaks that event's schema, or when it breaks one
    of the event's rules that a schema cannot express (:func:`rule_violations`).
    """
    if stream not in STREAM_EVENTS:
        raise ValueError(f"unknown stream {stream!r}: expected one of {sorted(STREAM_EVENTS)}")
    events = STREAM_EVENTS[cast(Stream, stream)]
    if not isinstance(message, dict):
        raise SchemaError(f"a {stream} message is a JSON object, not {_json_kind(message)}")
    candidates = _candidates(message, events)
    if not candidates:
        known = "; ".join(
            f"{e} ({_discriminators()[e].type}/{_discriminators()[e].operation})" for e in events
        )
        raise SchemaError(
            f"no {stream} event has {_describe(message)}; the {stream} events are: {known}",
            violations=violations("defs/change-message", message),
        )
    event = candidates[0]
    # The compiled check answers valid or not; only jsonschema words an error.
    check = compiled(event)
    valid = check is not None and check(message)
    found = (() if valid else violations(event, message)) or rule_violations(event, message)
    if found:
        raise SchemaError(f"invalid {event} message", event=event, violations=found)
    return event


def identify_valid(message: object, stream: Stream) -> str | None:
    """The event of ``message`` when it is a valid message of ``stream``, by the compiled
    checks only; None when it may not be (then :func:`identify` decides, and words why)."""
    if not isinstance(message, dict):
        return None
    candidates = _candidates(message, STREAM_EVENTS[stream])
    if not candidates:
        return None
    event = candidates[0]
    check = compiled(event)
    if check is None or not check(message) or _event_rules.check(event, message):
        return None
    return event


def identify_any(message: object) -> tuple[str, str]:
    """``(stream, event)`` for a valid message of any of a run's streams.

    Used by ``dwf validate``, whose files do not say which stream they come from.
    Raises :class:`SchemaError` like :func:`identify`.
    """
    if not isinstance(message, dict):
        raise SchemaError(f"a message is a JSON object, not {_json_kind(message)}")
    candidates = _candidates(message, EVENTS)
    if not candidates:
        raise SchemaError(
            f"no event has {_describe(message)}",
            violations=violations("defs/change-message", message),
        )
    stream = next(s for s, events in STREAM_EVENTS.items() if candidates[0] in events)
    return stream, identify(message, stream)


def aggregate(stream: str) -> str:
    """The name of the aggregate schema of ``stream`` (e.g. ``history-message``)."""
    return _AGGREGATES[cast(Stream, stream)]


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    return type(value).__name__
