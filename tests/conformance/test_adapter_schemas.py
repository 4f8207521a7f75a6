"""The conformance adapter's schemas (schemas/v1/conformance/) and their examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from durable_workflows import schemas as protocol
from durable_workflows_conformance import schemas

ROOT = protocol.schema_root()
EXAMPLES = ROOT / "examples" / "conformance"


def _cases(kind: str) -> list[tuple[str, Path]]:
    return [
        (name, path)
        for name in schemas.ADAPTER_SCHEMAS
        for path in sorted((EXAMPLES / name / kind).glob("*.json"))
    ]


def test_every_adapter_schema_file_is_known_and_has_examples() -> None:
    files = {p.stem for p in (ROOT / "conformance").glob("*.json")}
    assert files == set(schemas.ADAPTER_SCHEMAS)
    assert {p.name for p in EXAMPLES.iterdir()} == files
    for name in files:
        assert len(list((EXAMPLES / name / "valid").glob("*.json"))) >= 3, name
        assert len(list((EXAMPLES / name / "invalid").glob("*.json"))) >= 3, name


@pytest.mark.parametrize(("name", "path"), _cases("valid"), ids=lambda v: str(v))
def test_valid_example_validates(name: str, path: Path) -> None:
    assert schemas.problems(name, json.loads(path.read_text())) == []


@pytest.mark.parametrize(("name", "path"), _cases("invalid"), ids=lambda v: str(v))
def test_invalid_example_fails(name: str, path: Path) -> None:
    assert schemas.problems(name, json.loads(path.read_text())) != []


def test_the_spec_page_names_every_adapter_schema() -> None:
    page = (Path(__file__).resolve().parents[2] / "spec" / "adapter.md").read_text()
    for name in schemas.ADAPTER_SCHEMAS:
        assert f"{name}.json" in page, name
