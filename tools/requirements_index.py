"""Generate ``spec/requirements.json``, the index of every requirement in the spec.

``python tools/requirements_index.py`` rewrites the index; ``--check`` exits 1 when the
committed index differs from what the spec says (CI runs it). The index is sorted by
id; each entry gives the id, its level (MUST, SHOULD or MAY), the page, the anchor
(URL fragment), the section heading and the requirement's text without markup. The
format is defined by ``tools/requirements.schema.json``.

Ids are never removed or reused: a withdrawn requirement keeps its id and anchor (its
text becomes "Withdrawn in VERSION: ...") and is listed under ``withdrawn``. When
regenerating, an id that the committed index holds but the spec no longer has at all
is an error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spec_lint import lint
from spec_markup import load_pages, requirements, withdrawn

REPO_ROOT = Path(__file__).resolve().parent.parent
GENERATOR = "tools/requirements_index.py"


def build_index(spec_dir: Path) -> dict[str, Any]:
    """The index as a JSON-ready document (the spec must lint clean)."""
    pages = load_pages(spec_dir)
    entries = [
        {
            "id": requirement.id,
            "level": requirement.levels[0],
            "page": requirement.page,
            "anchor": requirement.id,
            "section": requirement.section,
            "text": requirement.text,
        }
        for requirement in requirements(pages)
    ]
    gone = [
        {
            "id": requirement.id,
            "page": requirement.page,
            "anchor": requirement.id,
            "text": requirement.text,
        }
        for requirement in withdrawn(pages)
    ]
    return {"generator": GENERATOR, "requirements": entries, "withdrawn": gone}


def _ids(index: Any) -> set[str]:
    return {
        entry["id"]
        for key in ("requirements", "withdrawn")
        for entry in index.get(key, [])
        if isinstance(entry, dict) and "id" in entry
    }


def render(index: dict[str, Any]) -> str:
    return json.dumps(index, indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="requirements_index", description="Generate spec/requirements.json."
    )
    parser.add_argument("--spec-dir", type=Path, default=REPO_ROOT / "spec")
    parser.add_argument(
        "--output", type=Path, default=None, help="default: SPEC_DIR/requirements.json"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the index on disk is out of date"
    )
    parser.add_argument(
        "--allow-removal",
        action="store_true",
        help="accept ids that left the spec (only for drafts that were never released)",
    )
    args = parser.parse_args(argv)
    spec_dir: Path = args.spec_dir
    output: Path = args.output if args.output is not None else spec_dir / "requirements.json"

    findings = lint(spec_dir)
    if findings:
        for finding in findings:
            print(finding.render(), file=sys.stderr)
        print(
            "requirements_index: the spec does not lint clean (tools/spec_lint.py)",
            file=sys.stderr,
        )
        return 1
    text = render(build_index(spec_dir))
    current = output.read_text(encoding="utf-8") if output.exists() else None

    if args.check:
        if current != text:
            print(
                f"requirements_index: {output} is out of date;"
                " run python tools/requirements_index.py and commit the result",
                file=sys.stderr,
            )
            return 1
        return 0

    if current is not None:
        vanished = sorted(_ids(json.loads(current)) - _ids(json.loads(text)))
        if vanished and args.allow_removal:
            print(f"requirements_index: removed ids: {', '.join(vanished)}", file=sys.stderr)
        elif vanished:
            print(
                "requirements_index: ids are never removed; keep each as a withdrawn"
                " requirement ('<a id=\"ID\"></a>**ID** Withdrawn in VERSION: why')"
                f" instead: {', '.join(vanished)}",
                file=sys.stderr,
            )
            return 1
    if current != text:
        output.write_text(text, encoding="utf-8")
        print(f"requirements_index: wrote {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
