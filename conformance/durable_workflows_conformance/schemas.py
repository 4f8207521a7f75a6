"""Schema checks for the suite: protocol messages and adapter messages.

The schema files ship in the same distribution as the suite (``durable_workflows``
resolves them offline, by ``$id``); the adapter's messages are the schemas under
``schemas/v1/conformance/``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jsonschema.protocols import Validator  # type: ignore[import-untyped, unused-ignore]

from durable_workflows import schemas as protocol

ADAPTER_SCHEMAS = (
    "info",
    "program",
    "workflow",
    "run-options",
    "fault",
    "settle",
    "run-report",
    "clock",
    "error",
    "report",
    "cases",
    "request-log",
)


@cache
def validator(name: str) -> Validator:
    """A validator for an adapter schema (``program``) or a protocol schema
    (``step-started``, ``history-message``)."""
    if name in ADAPTER_SCHEMAS:
        return protocol.validator("conformance/" + name)
    return protocol.validator(name)


def problems(name: str, document: Any) -> list[str]:
    """Readable schema violations of ``document`` (empty when it is valid)."""
    errors = sorted(validator(name).iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"/{'/'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in errors]


def check(name: str, document: Any) -> None:
    """Raise AssertionError naming each violation when ``document`` is not valid."""
    found = problems(name, document)
    if found:
        raise AssertionError(f"not a valid {name} message:\n  " + "\n  ".join(found[:10]))


@cache
def value_members(event: str) -> frozenset[str]:
    """The members an event's schema lists for ``value`` (through ``allOf`` and
    ``$ref``)."""
    found: set[str] = set()
    resolver = protocol.registry().resolver()

    def walk(schema: Any, resolver: Any) -> None:
        if not isinstance(schema, dict):
            return
        if "$ref" in schema:
            resolved = resolver.lookup(schema["$ref"])
            walk(resolved.contents, resolved.resolver)
        for part in schema.get("allOf", []):
            walk(part, resolver)
        found.update(schema.get("properties", {}))
        found.update(schema.get("required", []))

    top = resolver.lookup(f"{protocol.BASE_URI}{event}.json")
    walk(top.contents.get("properties", {}).get("value"), top.resolver)
    return frozenset(found)


def identify(message: Any, stream: str) -> str:
    """The event of a stream message (raises :class:`durable_workflows.schemas.SchemaError`)."""
    return protocol.identify(message, stream)


SchemaError = protocol.SchemaError
