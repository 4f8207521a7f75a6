"""How the suite decides, as the specification does, whether a request's schema is valid
(INPUT-044) and whether a value satisfies it (INPUT-045): JSON Schema 2020-12 with
``format`` an annotation, unknown keywords ignored, numbers by value, lengths in code
points, and ECMA-262 patterns whose ``\\d``, ``\\w`` and ``\\b`` are ASCII only.

The vectors of ``vectors/input-validation.json`` become cases here too, so every engine
is checked against them through its adapter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any

from jsonschema import (  # type: ignore[import-untyped, unused-ignore]
    Draft202012Validator,
    validators,
)
from jsonschema.exceptions import (  # type: ignore[import-untyped, unused-ignore]
    SchemaError,
    ValidationError,
)
from referencing import Registry

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _search(pattern: str, text: str) -> bool:
    return re.search(pattern, text, re.ASCII) is not None


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"the string does not match {pattern!r}")  # never the value


def _pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> Any:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


_Validator = validators.extend(
    Draft202012Validator, {"pattern": _pattern, "patternProperties": _pattern_properties}
)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def schema_refused(schema: Any) -> bool:
    """Whether the engine must refuse the schema with ``InvalidPrimitive`` (INPUT-029,
    INPUT-044)."""
    if not isinstance(schema, dict | bool):
        return True
    if isinstance(schema, dict) and schema.get("$schema", DIALECT) != DIALECT:
        return True
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError:
        return True
    if any(not ref.startswith("#") for ref in _refs(schema)):
        return True
    try:  # every local reference resolves
        _Validator(schema, registry=Registry()).is_valid(None)
    except Exception:
        return True
    return False


def accepts(schema: Any, value: Any) -> bool:
    """Whether ``value`` satisfies ``schema`` (INPUT-026, INPUT-027, INPUT-045)."""
    return bool(_Validator(schema, registry=Registry()).is_valid(value))


def vector_cases() -> list[dict[str, Any]]:
    """The validation vectors as cases (cases/README.md): a refused schema fails the run
    with ``InvalidPrimitive``; for a valid one, one request per value, each answered
    once, expiring after a rejection, so every value's outcome is in the history."""
    path = resources.files("durable_workflows_conformance") / "vectors" / "input-validation.json"
    vectors = json.loads(path.read_text(encoding="utf-8"))["cases"]
    cases: list[dict[str, Any]] = []
    for vector in vectors:
        if not isinstance(vector["schema"], dict | bool):
            continue  # no adapter program can pass it (conformance/program.json)
        case: dict[str, Any] = {
            "id": f"vector-{vector['id']}",
            "description": f"input validation vector {vector['id']}",
            "requirements": sorted({"INPUT-044", "INPUT-045", *vector["requirements"]}),
        }
        if not vector["valid"]:
            case["program"] = {"ops": [{"op": "input", "name": "v", "schema": vector["schema"]}]}
            case["expect"] = {
                "status": "failed",
                "error": {"type": "InvalidPrimitive"},
                "absent": [{"type": "input"}],
            }
        else:
            ops, subs, output, messages = [], [], {}, []
            for i, item in enumerate(vector["values"]):
                name = f"v{i}"
                ops.append(
                    {
                        "op": "input",
                        "name": name,
                        "schema": vector["schema"],
                        "timeout_ms": 1000,
                        "on_expired": {"default": "refused"},
                        "as": name,
                    }
                )
                subs.append({"id": f"s-{i}", "request": name, "value": item["value"]})
                output[name] = item["value"] if item["valid"] else "refused"
                if not item["valid"]:
                    messages.append(
                        {"type": "submission", "key": f"s-{i}", "reason": "schema-invalid"}
                    )
            case["program"] = {"ops": ops}
            case["submissions"] = subs
            case["expect"] = {"status": "completed", "output": output, "messages": messages}
        cases.append(case)
    return cases
