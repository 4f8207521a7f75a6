"""The compiled schema checks agree with jsonschema on every message we have, and on
systematic mutations of them (a wrong type, a missing or extra member at every place).

The compiled checks decide whether a history message is valid; jsonschema only words the
error. A compiled check that accepts what jsonschema refuses would weaken validation, one
that refuses what it accepts would make a valid history unreadable: both are failures.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from durable_workflows._compiled_schemas import compiled
from durable_workflows.schemas import (
    EVENTS,
    STREAM_EVENTS,
    _candidates,
    aggregate,
    schema_root,
    validator,
)

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "conformance" / "durable_workflows_conformance" / "golden" / "v1"
SCHEMAS = (*EVENTS, *(aggregate(s) for s in STREAM_EVENTS), "defs/change-message")

#: Values that break some keyword somewhere: types, bounds, lengths, patterns, consts.
REPLACEMENTS: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    1,
    -1,
    1.0,
    1.5,
    "",
    "x",
    "a#1",
    "2030-01-01T00:00:00Z",
    "x" * 300,
    [],
    ["x"],
    {},
    {"type": "E", "message": "m", "details": None},
)


def _examples() -> list[tuple[str, Any]]:
    found = []
    examples = schema_root() / "examples"
    for path in sorted(examples.glob("*/*/*.json")):
        name = path.parent.parent.name
        if name in EVENTS:
            found.append((name, json.loads(path.read_text(encoding="utf-8"))))
    return found


def _golden_messages() -> list[Any]:
    messages: list[Any] = []
    for path in sorted(GOLDEN.glob("*.json")):
        case = json.loads(path.read_text(encoding="utf-8"))
        messages += case.get("history") or []
        messages += [item["message"] for item in case.get("inbox") or [] if "message" in item]
    return messages


def _agree(name: str, message: Any) -> None:
    check = compiled(name)
    assert check is not None, f"{name} does not compile"
    expected = validator(name).is_valid(message)
    assert check(message) is expected, (
        f"{name}: compiled says {not expected}, jsonschema {expected}: {json.dumps(message)}"
    )


@pytest.mark.parametrize("name", SCHEMAS)
def test_every_protocol_schema_compiles(name: str) -> None:
    assert compiled(name) is not None


@pytest.mark.parametrize("name", EVENTS)
def test_examples_get_the_same_verdict_under_every_event_schema(name: str) -> None:
    for _, message in _examples():
        _agree(name, message)


def test_golden_messages_get_the_same_verdict_as_jsonschema() -> None:
    messages = _golden_messages()
    assert len(messages) > 500
    for message in messages:
        for event in _candidates(message, EVENTS)[:1]:
            _agree(event, message)
        _agree("defs/change-message", message)


def _places(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _places(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _places(value, (*path, index))


def _mutations(message: Any) -> Iterator[Any]:
    """The message with one change: each place replaced by each value, each member
    removed, an unknown member added to each object."""
    for path in _places(message):
        if not path:
            continue
        *parents, last = path
        for replacement in REPLACEMENTS:
            mutated = copy.deepcopy(message)
            target = mutated
            for part in parents:
                target = target[part]
            target[last] = copy.deepcopy(replacement)
            yield mutated
        if isinstance(last, str):
            mutated = copy.deepcopy(message)
            target = mutated
            for part in parents:
                target = target[part]
            del target[last]
            yield mutated
    for path in _places(message):
        mutated = copy.deepcopy(message)
        target = mutated
        for part in path:
            target = target[part]
        if isinstance(target, dict):
            target["unexpected"] = 1
            yield mutated


def _one_valid_example_per_event() -> list[tuple[str, Any]]:
    chosen: dict[str, Any] = {}
    for name, message in _examples():
        if name not in chosen and validator(name).is_valid(message):
            chosen[name] = message
    return sorted(chosen.items())


@pytest.mark.parametrize(("name", "message"), _one_valid_example_per_event())
def test_every_single_change_to_a_valid_message_gets_the_same_verdict(
    name: str, message: Any
) -> None:
    verdicts = set()
    for mutated in _mutations(message):
        _agree(name, mutated)
        verdicts.add(validator(name).is_valid(mutated))
    assert verdicts == {True, False}  # the mutations reach both verdicts
