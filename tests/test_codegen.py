"""Client types generated from the schemas are usable: TypeScript compiles under
``--strict`` and rejects wrong events; the Python models round-trip every valid example.

These checks need Node.js and the npm peers (``make peers``); when either is missing
they fail and say so: a code generator that cannot run is not a pass.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from durable_workflows import schemas

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import codegen  # noqa: E402

BIN = REPO / "peers" / "node_modules" / ".bin"
INSTANCES = REPO / "tests" / "typescript" / "instances.ts"
WRONG = REPO / "tests" / "typescript" / "wrong.ts"
EXAMPLES = schemas.schema_root() / "examples"
TSC_FLAGS = ["--noEmit", "--strict", "--target", "es2022", "--module", "esnext"]
TSC_FLAGS += ["--moduleResolution", "bundler"]


def _require_peers() -> None:
    if shutil.which("node") is None:
        pytest.fail("Not testable: node is not on PATH (install Node.js)")
    for tool in ("json2ts", "tsc"):
        if not (BIN / tool).exists():
            pytest.fail(f"Not testable: {BIN / tool} is missing: run `make peers`")


@pytest.fixture(scope="module")
def typescript_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require_peers()
    project = tmp_path_factory.mktemp("ts")
    codegen.typescript(project / "generated")
    shutil.copy(INSTANCES, project / "instances.ts")
    return project


def _tsc(project: Path, source: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "tsc"), *TSC_FLAGS, source],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.peers
def test_typescript_types_are_generated_for_every_event_and_stream(
    typescript_project: Path,
) -> None:
    names = {p.name.removesuffix(".d.ts") for p in (typescript_project / "generated").iterdir()}
    aggregates = {"history-message", "inbox-message", "index-message", "status-message"}
    assert names == {*schemas.EVENTS, *aggregates}
    started = (typescript_project / "generated" / "step-started.d.ts").read_text()
    assert "export type StepStarted = ChangeMessage &" in started
    assert "attempt: 1;" in started


@pytest.mark.peers
def test_instances_file_covers_every_event() -> None:
    imported = set(re.findall(r'from "\./generated/([a-z-]+)"', INSTANCES.read_text()))
    assert set(schemas.EVENTS) <= imported


@pytest.mark.peers
def test_an_instance_of_every_event_compiles_under_strict(typescript_project: Path) -> None:
    result = _tsc(typescript_project, "instances.ts")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.peers
def test_wrong_instances_fail_to_compile_on_exactly_the_wrong_lines(
    typescript_project: Path,
) -> None:
    shutil.copy(WRONG, typescript_project / "wrong.ts")
    result = _tsc(typescript_project, "wrong.ts")
    assert result.returncode != 0
    pattern = r"^wrong\.ts\((\d+),\d+\): error"
    reported = {int(n) for n in re.findall(pattern, result.stdout, re.MULTILINE)}
    lines = WRONG.read_text().splitlines()
    expected = {i for i, line in enumerate(lines, 1) if line.endswith("// wrong")}
    assert len(expected) == 8
    assert reported == expected, result.stdout


# --- Python models ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    root = tmp_path_factory.mktemp("py")
    codegen.python(root / "dwf_models")
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module("dwf_models")
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == "dwf_models" or m.startswith("dwf_models.")]:
            del sys.modules[name]


def _model(name: str) -> Any:
    """The generated model of an event or aggregate schema, named after its title."""
    module = importlib.import_module("dwf_models." + name.replace("-", "_"))
    class_name = "".join(word.capitalize() for word in schemas.schema(name)["title"].split())
    return getattr(module, class_name)


VALID = [(e, p) for e in schemas.EVENTS for p in sorted((EXAMPLES / e / "valid").glob("*.json"))]


@pytest.mark.parametrize(("event", "path"), VALID, ids=[f"{e}/{p.stem}" for e, p in VALID])
def test_python_model_round_trips_a_valid_example(
    models: ModuleType, event: str, path: Path
) -> None:
    original = json.loads(path.read_text(encoding="utf-8"))
    parsed = _model(event).model_validate(original)
    dumped = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert dumped == original
    assert json.loads(parsed.model_dump_json(by_alias=True, exclude_unset=True)) == original
    # The stream's union model picks the same event.
    stream = next(s for s, events in schemas.STREAM_EVENTS.items() if event in events)
    union = _model(schemas.aggregate(stream)).model_validate(original)
    assert type(union.root) is type(parsed)
    assert union.model_dump(mode="json", by_alias=True, exclude_unset=True) == original


def test_python_model_fields_are_plain_values_as_on_the_wire(models: ModuleType) -> None:
    """docs/client-types.md: timestamps stay strings (no wrapper models around a field)."""
    path = EXAMPLES / "step-completed" / "valid" / "expense-sum.json"
    message = _model("step-completed").model_validate(json.loads(path.read_text()))
    assert type(message.value.finished_at) is str
    assert type(message.value.started_at) is str


def test_python_models_reject_a_wrong_type(models: ModuleType) -> None:
    from pydantic import ValidationError

    message = json.loads((EXAMPLES / "step-started" / "invalid" / "attempt-not-1.json").read_text())
    with pytest.raises(ValidationError, match="attempt"):
        _model("step-started").model_validate(message)
    message = json.loads(
        (EXAMPLES / "step-started" / "invalid" / "extra-header-field.json").read_text()
    )
    with pytest.raises(ValidationError, match="producer"):
        _model("step-started").model_validate(message)


def test_codegen_says_how_to_install_a_missing_generator(tmp_path: Path) -> None:
    with pytest.raises(codegen.CodegenError, match="make peers"):
        codegen.typescript(tmp_path / "out", json2ts=tmp_path / "no-json2ts")


def test_codegen_copies_schemas_without_ids_so_nothing_is_fetched(tmp_path: Path) -> None:
    copied = codegen.prepare(schemas.schema_root(), tmp_path, typescript=True)
    files = sorted(copied.rglob("*.json"))
    assert len(files) == 33
    assert all("$id" not in json.loads(p.read_text()) for p in files)
    assert not (copied / "examples").exists()
    run = json.loads((copied / "defs" / "run.json").read_text())
    assert run["properties"]["output"]["tsType"] == "unknown"
