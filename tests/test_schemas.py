"""The v1 JSON Schemas: well-formed, offline, packaged, and proven by their examples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing.exceptions import Unresolvable

from durable_workflows import schemas

ROOT = schemas.schema_root()
EXAMPLES = ROOT / "examples"
REPO = Path(__file__).resolve().parents[1]
AGGREGATES = ("history-message", "inbox-message", "index-message", "status-message")
META_SCHEMA = "https://json-schema.org/draft/2020-12/schema"

SCHEMA_FILES = sorted(p for p in ROOT.rglob("*.json") if "examples" not in p.parts)


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _stream_of(event: str) -> str:
    return next(s for s, events in schemas.STREAM_EVENTS.items() if event in events)


def _examples(kind: str) -> list[tuple[str, Path]]:
    return [
        (event, path)
        for event in schemas.EVENTS
        for path in sorted((EXAMPLES / event / kind).glob("*.json"))
    ]


def _ids(cases: list[tuple[str, Path]]) -> list[str]:
    return [f"{event}/{path.stem}" for event, path in cases]


VALID = _examples("valid")
INVALID = _examples("invalid")


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=_rel)
def test_schema_passes_the_2020_12_meta_schema(path: Path) -> None:
    schema = _load(path)
    assert schema.get("$schema") == META_SCHEMA
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=_rel)
def test_schema_id_matches_its_path(path: Path) -> None:
    assert _load(path)["$id"] == schemas.BASE_URI + _rel(path)


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=_rel)
def test_schema_has_a_title_and_a_description(path: Path) -> None:
    schema = _load(path)
    assert isinstance(schema.get("title"), str) and schema["title"]
    assert isinstance(schema.get("description"), str) and len(schema["description"]) > 40


@pytest.mark.parametrize("event", schemas.EVENTS)
def test_event_description_says_who_writes_it(event: str) -> None:
    description = schemas.schema(event)["description"]
    writer = (
        "a client"
        if event in ("input-submitted", "cancel-requested", "run-requested")
        else "the engine"
    )
    assert f"Written by {writer}" in description


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=_rel)
def test_every_ref_is_relative_and_resolves_offline(path: Path) -> None:
    schema = _load(path)
    resolver = schemas.registry().resolver(base_uri=schema["$id"])
    refs = list(_refs(schema))
    for ref in refs:
        assert not ref.startswith(("http:", "https:")), f"{ref} is not relative"
        resolved = resolver.lookup(ref)
        assert resolved.contents is not None
    if path.stem in schemas.EVENTS:
        assert refs, "an event schema builds on the shared definitions"


def test_the_registry_holds_every_schema_file_by_id() -> None:
    ids = {_load(p)["$id"] for p in SCHEMA_FILES}
    registered = {uri for uri in schemas.registry() if uri.startswith(schemas.BASE_URI)}
    assert registered == ids


def test_the_registry_refuses_to_fetch_unknown_uris() -> None:
    with pytest.raises(Unresolvable):
        schemas.registry().resolver().lookup("https://durable-workflows.dev/schemas/v1/nope.json")
    outside = Draft202012Validator(
        {"$ref": "https://example.com/schema.json"}, registry=schemas.registry()
    )
    with pytest.raises(Unresolvable):
        outside.is_valid({})


def test_events_are_the_23_event_files() -> None:
    top_level = {p.stem for p in ROOT.glob("*.json")}
    assert len(schemas.EVENTS) == len(set(schemas.EVENTS)) == 23
    assert top_level == set(schemas.EVENTS) | set(AGGREGATES)
    streams = [e for events in schemas.STREAM_EVENTS.values() for e in events]
    assert sorted(streams) == sorted(schemas.EVENTS)


@pytest.mark.parametrize("stream", sorted(schemas.STREAM_EVENTS))
def test_aggregate_is_one_of_the_events_of_its_stream(stream: str) -> None:
    aggregate = schemas.schema(schemas.aggregate(stream))
    refs = [branch["$ref"] for branch in aggregate["oneOf"]]
    assert refs == [f"{event}.json" for event in schemas.STREAM_EVENTS[stream]]  # type: ignore[index]


@pytest.mark.req("EVT-003", "EVT-004")
@pytest.mark.parametrize("event", schemas.EVENTS)
def test_event_schema_is_a_closed_change_message(event: str) -> None:
    schema = schemas.schema(event)
    assert {"$ref": "defs/change-message.json"} in schema["allOf"]
    assert schema["required"] == ["type", "key", "value", "headers"]
    assert "const" in schema["properties"]["type"]
    assert "const" in schema["properties"]["headers"]["properties"]["operation"]
    envelope = schemas.schema("defs/change-message")
    assert envelope["additionalProperties"] is False
    assert envelope["$defs"]["headers"]["additionalProperties"] is False


@pytest.mark.req("EVT-021")
@pytest.mark.parametrize("stream", sorted(schemas.STREAM_EVENTS))
def test_discriminators_are_unique_within_a_stream(stream: str) -> None:
    seen: dict[tuple[str, str, str | None], str] = {}
    for event in schemas.STREAM_EVENTS[stream]:  # type: ignore[index]
        d = schemas._discriminators()[event]
        for status in sorted(d.statuses) if d.statuses else [None]:
            key = (d.type, d.operation, status)
            assert key not in seen, f"{event} and {seen[key]} share {key}"
            seen[key] = event


@pytest.mark.parametrize(
    ("message", "valid"),
    [
        ({"type": "user", "key": "1", "value": {"n": 1}, "headers": {"operation": "insert"}}, True),
        ({"type": "user", "key": "1", "value": "dark", "headers": {"operation": "update"}}, True),
        ({"type": "user", "key": "1", "headers": {"operation": "delete"}}, True),
        ({"type": "user", "key": "1", "value": None, "headers": {"operation": "delete"}}, True),
        ({"type": "user", "key": "1", "old_value": {}, "headers": {"operation": "delete"}}, True),
        ({"type": "user", "key": "1", "headers": {"operation": "insert"}}, False),
        ({"type": "user", "key": "1", "headers": {"operation": "update"}}, False),
        ({"type": "user", "key": "1", "value": 1, "headers": {"operation": "upsert"}}, False),
        ({"type": "", "key": "1", "value": 1, "headers": {"operation": "insert"}}, False),
        (
            {"type": "u", "key": "1", "value": 1, "headers": {"operation": "insert", "from": "x"}},
            False,
        ),
        (
            {"type": "u", "key": "1", "value": 1, "headers": {"operation": "insert", "txid": ""}},
            False,
        ),
        ({"type": "u", "key": "1", "value": 1, "headers": {"operation": "insert"}, "x": 1}, False),
        ({"headers": {"control": "reset"}}, False),
    ],
)
def test_change_message_follows_the_state_protocol(message: object, valid: bool) -> None:
    assert schemas.validator("defs/change-message").is_valid(message) is valid


@pytest.mark.parametrize("event", schemas.EVENTS)
def test_event_has_at_least_three_valid_and_three_invalid_examples(event: str) -> None:
    assert len(list((EXAMPLES / event / "valid").glob("*.json"))) >= 3
    assert len(list((EXAMPLES / event / "invalid").glob("*.json"))) >= 3


def test_examples_name_only_known_events() -> None:
    # examples/conformance/<name>/ holds the conformance adapter's message examples
    # (schemas/v1/conformance/<name>.json); tests/conformance checks them.
    assert {p.name for p in EXAMPLES.iterdir()} <= set(schemas.EVENTS) | {"conformance"}
    folders = [f for f in EXAMPLES.iterdir() if f.name != "conformance"]
    for folder in [*folders, *(EXAMPLES / "conformance").glob("*")]:
        assert {p.name for p in folder.iterdir()} <= {"valid", "invalid"}


@pytest.mark.req("EVT-021")
@pytest.mark.parametrize(("event", "path"), VALID, ids=_ids(VALID))
def test_valid_example_validates_and_is_identified_as_its_event(event: str, path: Path) -> None:
    message = _load(path)
    assert schemas.violations(event, message) == ()
    stream = _stream_of(event)
    assert schemas.validator(schemas.aggregate(stream)).is_valid(message)
    matching = [e for e in schemas.STREAM_EVENTS[stream] if schemas.validator(e).is_valid(message)]  # type: ignore[index]
    assert matching == [event], "exactly one branch of the aggregate matches"
    assert schemas.identify(message, stream) == event
    assert schemas.identify_any(message) == (stream, event)


@pytest.mark.parametrize(("event", "path"), INVALID, ids=_ids(INVALID))
def test_invalid_example_fails_its_event_schema(event: str, path: Path) -> None:
    message = _load(path)
    assert schemas.violations(event, message), f"{path} validates as {event}"
    assert not schemas.validator(event).is_valid(message)
    # Nor is it a valid message of another event of its stream.
    with pytest.raises(schemas.SchemaError):
        schemas.identify(message, _stream_of(event))


def test_identify_names_the_event_and_the_failing_path() -> None:
    message = _load(EXAMPLES / "step-started" / "invalid" / "attempt-not-1.json")
    with pytest.raises(schemas.SchemaError) as caught:
        schemas.identify(message, "history")
    assert caught.value.event == "step-started"
    assert [v.path for v in caught.value.violations] == ["/value/attempt"]
    assert "/value/attempt" in str(caught.value)


def test_identify_rejects_a_message_of_another_stream() -> None:
    message = _load(EXAMPLES / "input-submitted" / "valid" / "manager-approves.json")
    with pytest.raises(schemas.SchemaError, match="no history event has type 'submission'"):
        schemas.identify(message, "history")
    assert schemas.identify(message, "inbox") == "input-submitted"


def test_identify_rejects_what_is_not_a_change_message() -> None:
    with pytest.raises(schemas.SchemaError, match="JSON object, not an array"):
        schemas.identify([], "history")
    with pytest.raises(schemas.SchemaError) as caught:
        schemas.identify({"type": "step", "key": "a"}, "history")
    assert caught.value.event is None
    assert any("'headers' is a required property" in v.message for v in caught.value.violations)
    with pytest.raises(ValueError, match="unknown stream"):
        schemas.identify({}, "outbox")


def test_validator_checks_format_only_through_patterns() -> None:
    message = _load(EXAMPLES / "sleep-completed" / "valid" / "expense-cool-off.json")
    message["value"]["fired_at"] = "2026-02-30T10:00:00.000Z"  # a pattern-shaped non-date
    assert schemas.validator("sleep-completed").is_valid(message)
    message["value"]["fired_at"] = "2026-11-24T10:00:00+00:00"
    assert not schemas.validator("sleep-completed").is_valid(message)


# --- packaging --------------------------------------------------------------------------

_CHECK_INSTALLED = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from durable_workflows import schemas
    root = schemas.schema_root()
    assert root.is_relative_to(Path(sys.argv[1])), (root, sys.argv[1])
    example = root / "examples" / "step-started" / "valid" / "expense-sum.json"
    message = json.loads(example.read_text())
    print(json.dumps({
        "root": str(root),
        "module": schemas.__file__,
        "registered": len(list(schemas.registry())),
        "identified": schemas.identify(message, "history"),
    }))
    """
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("durable_workflows-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_carries_every_schema_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    expected = {
        "durable_workflows/schemas/v1/" + p.relative_to(ROOT).as_posix()
        for p in ROOT.rglob("*.json")
    }
    assert expected - names == set()
    assert "durable_workflows/schemas.py" in names
    assert "durable_workflows/validate.py" in names


@pytest.mark.slow
def test_the_installed_wheel_resolves_its_schemas_offline(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    result = subprocess.run(
        [sys.executable, "-c", _CHECK_INSTALLED, str(site)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["module"].startswith(str(site))
    assert report["registered"] >= len(SCHEMA_FILES)
    assert report["identified"] == "step-started"
