"""Inbox messages: ids, classification and submission checks (inputs.md).

The decisions themselves live in :mod:`.activation`; this module holds the pure helpers:
the inbox id of a message (INPUT-014), whether it is a readable submission or cancel
(INPUT-017 check 2, SEC-005), value sizes (INPUT-031), and JSON Schema handling
(INPUT-026..029): 2020-12, ``format`` as annotation, nothing fetched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from referencing import Registry

from .errors import InvalidPrimitive

__all__ = [
    "ID_PATTERN",
    "KEY_PATTERN",
    "InboxEntry",
    "check_request_schema",
    "classify",
    "compact_size",
    "inbox_id",
    "schema_problem",
]

#: Run ids, submission ids, cancel ids (EVT-014).
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: Entity keys (EVT-015).
KEY_PATTERN = re.compile(r"^[^#\x00-\x1f]{1,128}(#[1-9][0-9]*)?$")


def inbox_id(message: object, index: int) -> str:
    """INPUT-014: the message's key when it is a valid id, else ``inbox-{index}``."""
    if isinstance(message, Mapping):
        key = message.get("key")
        if isinstance(key, str) and ID_PATTERN.match(key):
            return key
    return f"inbox-{index}"


@dataclass(frozen=True)
class InboxEntry:
    """One inbox message as the core sees it."""

    index: int
    inbox_id: str
    kind: str | None  # "submission", "cancel", or None when malformed
    request: str | None  # value.request when it matches the key pattern (INPUT-024)
    value: Any = None
    reason: str | None = None  # cancel reason


def classify(message: object, index: int) -> InboxEntry:
    """Read one inbox message (INPUT-017 check 2 against ``inbox-message.json``, SEC-005)."""
    from ..schemas import SchemaError
    from ._memo import classify_message

    iid = inbox_id(message, index)
    request: str | None = None
    if isinstance(message, Mapping):
        value = message.get("value")
        if isinstance(value, Mapping):
            raw = value.get("request")
            if isinstance(raw, str) and KEY_PATTERN.match(raw):
                request = raw
    if not encodable(message):  # SEC-005: never fail an activation on a message
        return InboxEntry(index, iid, None, request)
    try:
        # identify also checks key == value.submission_id / value.cancel_id (EVT-090, EVT-093).
        event = classify_message(message, "inbox")
    except SchemaError:
        return InboxEntry(index, iid, None, request)
    assert isinstance(message, Mapping)
    value = message["value"]
    if event == "cancel-requested":
        return InboxEntry(index, iid, "cancel", None, reason=value.get("reason"))
    return InboxEntry(index, iid, "submission", request, value=value.get("value"))


#: The largest integer every JSON reader holds exactly (I-JSON, EVT-100).
MAX_EXACT_INT = 2**53 - 1


def _exact_integers(value: Any) -> bool:
    """Whether every integer in ``value`` is within +-(2**53 - 1), without recursion."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, int) and not isinstance(node, bool):
            if not -MAX_EXACT_INT <= node <= MAX_EXACT_INT:
                return False
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
    return True


def compact_size(value: Any) -> int | None:
    """Bytes of ``value`` as compact UTF-8 JSON (INPUT-031, SEC-009); None if it is not
    I-JSON (EVT-100: NaN, infinities, lone surrogates, integers beyond 2**53 - 1)."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError, RecursionError):  # lone surrogates: UnicodeEncodeError
        return None
    return size if _exact_integers(value) else None


#: A message nested deeper cannot be written back inside a history message by every
#: JSON codec (Python's recurses about 1,000 levels deep).
MAX_DEPTH = 256


def depth(value: Any) -> int:
    """How deep ``value`` nests (a scalar is 0, ``[]`` is 1), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, level + 1) for child in children)
    return deepest


def encodable(value: Any) -> bool:
    """Whether ``value`` can be recorded: JSON in UTF-8 (no lone surrogates), nested at
    most :data:`MAX_DEPTH` deep. A message that cannot is malformed (SEC-005)."""
    return depth(value) <= MAX_DEPTH and compact_size(value) is not None


def _refs(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("$ref", "$dynamicRef") and isinstance(v, str):
                found.append(v)
            else:
                found.extend(_refs(v))
    elif isinstance(node, list):
        for item in node:
            found.extend(_refs(item))
    return found


#: The one dialect a recorded schema may name (INPUT-044).
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _search(pattern: str, text: str) -> bool:
    # ECMA-262 classes: \d, \w and \b are ASCII only (INPUT-045); Python's are Unicode.
    return re.search(pattern, text, re.ASCII) is not None


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    from jsonschema.exceptions import (  # type: ignore[import-untyped, unused-ignore]
        ValidationError,
    )

    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"the string does not match {pattern!r}")  # never the value


def _pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> Any:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


@cache
def _validator_class() -> Any:
    """2020-12 with ECMA-262's ASCII classes in ``pattern`` and ``patternProperties``.

    Built on first use: jsonschema is imported only when a schema is checked or used.
    """
    from jsonschema import (  # type: ignore[import-untyped, unused-ignore]
        Draft202012Validator,
        validators,
    )

    return validators.extend(
        Draft202012Validator, {"pattern": _pattern, "patternProperties": _pattern_properties}
    )


def check_request_schema(name: str, schema: Any) -> Any:
    """INPUT-029: a valid 2020-12 schema (object or boolean) with no ``$ref`` outside itself.

    Returns the schema as it will be recorded (decoded from JSON, REPLAY-014).
    """
    if not isinstance(schema, dict | bool):
        raise InvalidPrimitive(f"input {name!r}: schema must be a JSON object or a boolean")
    if isinstance(schema, bool):
        return schema  # true and false are valid 2020-12 schemas, with nothing to resolve
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped, unused-ignore]
    from jsonschema.exceptions import (  # type: ignore[import-untyped, unused-ignore]
        SchemaError as JsonSchemaError,
    )

    try:
        schema = json.loads(json.dumps(schema, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidPrimitive(f"input {name!r}: schema is not JSON: {exc}") from None
    if isinstance(schema, dict) and schema.get("$schema", DIALECT) != DIALECT:
        raise InvalidPrimitive(
            f"input {name!r}: $schema must be {DIALECT} (or absent), not {schema['$schema']!r}"
        )
    try:
        Draft202012Validator.check_schema(schema)
    except JsonSchemaError as exc:
        raise InvalidPrimitive(
            f"input {name!r}: not a valid JSON Schema 2020-12: {exc.message}"
        ) from None
    for ref in _refs(schema):
        if not ref.startswith("#"):
            raise InvalidPrimitive(f"input {name!r}: schema $ref {ref!r} points outside the schema")
    try:  # every local $ref must resolve, so that validation never fails on the schema itself
        _validator(schema).is_valid(None)
    except Exception as exc:
        raise InvalidPrimitive(f"input {name!r}: schema cannot be used: {exc}") from None
    return schema


def _validator(schema: Any) -> Any:
    # An empty registry with no retrieve function: nothing is ever fetched (INPUT-028).
    return _validator_class()(schema, registry=Registry())


def schema_problem(request_key: str, schema: Any, value: Any) -> str | None:
    """None when ``value`` satisfies ``schema`` (INPUT-026/027), else one readable sentence.

    The sentence names the request, where in the value and which rule failed, and never
    copies the submitted value (INPUT-025).
    """
    return _problem(f"Input '{request_key}'", schema, value)


def run_input_problem(schema: Any, value: Any) -> str | None:
    """As :func:`schema_problem`, for a run's input and its workflow's input schema
    (MODEL-051)."""
    return _problem("The run's input", schema, value)


def _problem(subject: str, schema: Any, value: Any) -> str | None:
    from jsonschema.exceptions import best_match  # type: ignore[import-untyped, unused-ignore]

    try:
        error = best_match(_validator(schema).iter_errors(value))
    except Exception:  # a recorded schema that cannot be evaluated accepts nothing
        return f"{subject}: the schema cannot be evaluated."
    if error is None:
        return None
    where = (
        "the value"
        if not error.absolute_path
        else "'" + "/".join(map(str, error.absolute_path)) + "'"
    )
    rule = error.validator
    if rule == "required" and isinstance(error.validator_value, list):
        present = error.instance if isinstance(error.instance, dict) else {}
        missing = [p for p in error.validator_value if p not in present]
        if missing:
            at = "" if not error.absolute_path else f" in {where}"
            return f"{subject}: property '{missing[0]}' is required{at}."
    if rule == "type":
        return f"{subject}: {where} must be of type {error.validator_value}."
    if rule is False or error.schema is False:
        return f"{subject}: the schema accepts no value."
    return f"{subject}: {where} fails the schema's '{rule}' rule."
