"""Generate client types from the protocol's JSON Schemas, offline.

    python tools/codegen.py typescript OUT_DIR   # one .d.ts per schema (json2ts)
    python tools/codegen.py python OUT_DIR       # a package of pydantic v2 models

Both generators resolve ``$ref``s against the schemas' ``$id``s, which are absolute
``https://durable-workflows.dev/...`` URLs that need not be served. So the schemas are
first copied to a scratch folder without their ``$id``s: the relative ``$ref``s
between files then resolve against the files themselves and nothing is fetched.

TypeScript: json-schema-to-typescript reads a schema that constrains nothing but
carries a description (an "any JSON value" field) as an object; the copy marks such
schemas ``tsType: unknown``, json2ts' own annotation. Objects whose schema leaves
``additionalProperties`` unset are typed closed; the protocol's entity values say
``additionalProperties: true`` and keep an index signature.

Python: date-time strings stay strings (``--type-mappings date-time=string``), so a
parsed message dumps back to exactly the JSON it came from.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "schemas" / "v1"
JSON2TS = REPO / "peers" / "node_modules" / ".bin" / "json2ts"

#: Keywords that only annotate; a schema with nothing else accepts any JSON value.
_ANNOTATIONS = frozenset({"title", "description", "$comment", "examples", "default"})

JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]


class CodegenError(RuntimeError):
    """A generator is missing or failed; the message says which and how to fix it."""


def _mark_unknown(node: JSONValue) -> None:
    if isinstance(node, dict):
        if node and set(node) <= _ANNOTATIONS:
            node["tsType"] = "unknown"
        for value in node.values():
            _mark_unknown(value)
    elif isinstance(node, list):
        for value in node:
            _mark_unknown(value)


def prepare(schemas: Path, work: Path, *, typescript: bool) -> Path:
    """Copy the schema files (not the examples) into ``work`` without ``$id``."""
    target = work / "schemas"
    for path in sorted(schemas.rglob("*.json")):
        relative = path.relative_to(schemas)
        if relative.parts[0] in ("examples", "conformance"):
            continue  # client types cover protocol messages, not the test adapter's
        document: JSONValue = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(document, dict):
            raise CodegenError(f"{path}: a schema file holds a JSON object")
        document.pop("$id", None)
        if typescript:
            _mark_unknown(document)
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return target


def _run(command: Sequence[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CodegenError(
            f"{what} failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
        )


def typescript(out_dir: Path, *, schemas: Path = SCHEMAS, json2ts: Path = JSON2TS) -> list[Path]:
    """Write one ``<schema>.d.ts`` per event and aggregate schema into ``out_dir``."""
    if not json2ts.exists():
        raise CodegenError(
            f"json2ts is not installed ({json2ts} is missing): run `make peers` first"
        )
    if shutil.which("node") is None:
        raise CodegenError("node is not on PATH: json2ts needs Node.js")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dwf-codegen-") as scratch:
        source = prepare(schemas, Path(scratch), typescript=True)
        _run(
            [
                str(json2ts),
                "--input",
                str(source / "*.json"),
                "--output",
                str(out_dir),
                "--cwd",
                str(source),
                "--unknownAny",
                "--additionalProperties=false",
            ],
            "json2ts",
        )
    written = sorted(out_dir.glob("*.d.ts"))
    if not written:
        raise CodegenError(f"json2ts wrote nothing into {out_dir}")
    return written


def python(out_dir: Path, *, schemas: Path = SCHEMAS) -> list[Path]:
    """Write a package of pydantic v2 models (one module per schema) into ``out_dir``."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise CodegenError(f"{out_dir} is not empty")
    with tempfile.TemporaryDirectory(prefix="dwf-codegen-") as scratch:
        source = prepare(schemas, Path(scratch), typescript=False)
        _run(
            [
                sys.executable,
                "-m",
                "datamodel_code_generator",
                "--input",
                str(source),
                "--input-file-type",
                "jsonschema",
                "--output",
                str(out_dir),
                "--output-model-type",
                "pydantic_v2.BaseModel",
                "--target-python-version",
                "3.11",
                "--type-mappings",
                "date-time=string",
                "--disable-timestamp",
                "--collapse-root-models",
                "--formatters",
                "builtin",
            ],
            "datamodel-codegen",
        )
    written = sorted(out_dir.rglob("*.py"))
    if not written:
        raise CodegenError(f"datamodel-codegen wrote nothing into {out_dir}")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="codegen", description="Generate client types from schemas/v1, offline."
    )
    parser.add_argument("language", choices=["typescript", "python"])
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    args = parser.parse_args(argv)
    try:
        if args.language == "typescript":
            written = typescript(args.out_dir)
        else:
            written = python(args.out_dir)
    except CodegenError as error:
        print(f"codegen: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files into {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
