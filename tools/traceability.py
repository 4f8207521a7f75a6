"""Traceability: every MUST and SHOULD requirement maps to a check or to a reason.

``python tools/traceability.py`` reads ``spec/requirements.json`` and finds, for each
requirement of level MUST or SHOULD, the checks that cite it:

- conformance checks: ``@pytest.mark.req(...)`` in the conformance package and the
  ``requirements:`` lists of its YAML cases (``conformance/.../cases/*.yaml``);
- project tests: ``@pytest.mark.req(...)`` under ``tests/``;
- or a written reason for exclusion in ``conformance/exclusions.yaml`` (a mapping of
  requirement id to reason).

A requirement's status is ``conformance`` when a conformance check cites it, else
``excluded`` when it has a reason (project tests may prove it too: the reason says why
the language-neutral suite cannot), else ``project`` when only project tests cite it,
else ``gap``. A MUST whose status is ``project`` is a gap of the suite: an engine in
another language could not run its proof.

It prints the gaps by area. It also reports ids that checks cite but the spec does not
define or has withdrawn, and exclusions of requirements that conformance checks do
cover (stale exclusions). ``--strict`` exits 1 when there is a gap, a MUST proven by
project tests only, an unknown id or a stale exclusion; without it the exit status is 0
unless an input cannot be read (2). ``--json`` prints the whole mapping for scripts.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
LEVELS = ("MUST", "SHOULD")


def _marker_ids(tree: ast.AST) -> Iterator[str]:
    """String arguments of every ``<...>.mark.req(...)`` call in a module."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "req"
            and (
                (isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "mark")
                or (isinstance(node.func.value, ast.Name) and node.func.value.id == "mark")
            )
        ):
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    yield arg.value


def python_citations(root: Path) -> dict[str, set[str]]:
    """Requirement id -> the ``file`` names (relative to ``root``) that cite it."""
    found: dict[str, set[str]] = {}
    if not root.exists():
        return found
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for req in _marker_ids(tree):
            found.setdefault(req, set()).add(path.relative_to(root).as_posix())
    return found


def case_citations(root: Path) -> dict[str, set[str]]:
    """Requirement id -> the YAML case ids that cite it."""
    found: dict[str, set[str]] = {}
    if not root.exists():
        return found
    for path in sorted(root.rglob("*.yaml")):
        if path.name == "exclusions.yaml":
            continue
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        for case in loaded if isinstance(loaded, list) else []:
            if isinstance(case, dict):
                for req in case.get("requirements") or []:
                    found.setdefault(str(req), set()).add(f"{path.name}:{case.get('id')}")
    # Validation vectors become cases too (json_schema_rules.vector_cases): a vector cites
    # its own requirements and INPUT-044/045, for every schema an adapter can be given.
    for path in sorted(root.rglob("vectors/*.json")):
        for vector in json.loads(path.read_text(encoding="utf-8")).get("cases", []):
            if isinstance(vector.get("schema"), dict | bool):
                for req in {"INPUT-044", "INPUT-045", *vector.get("requirements", [])}:
                    found.setdefault(str(req), set()).add(f"{path.name}:{vector.get('id')}")
    return found


def _merge(*maps: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for mapping in maps:
        for key, values in mapping.items():
            out.setdefault(key, set()).update(values)
    return out


@dataclass
class Trace:
    requirements: dict[str, dict[str, Any]]
    conformance: dict[str, set[str]]
    project: dict[str, set[str]]
    exclusions: dict[str, str]
    withdrawn: set[str] = field(default_factory=set)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def build(self) -> Trace:
        self.rows = []
        for req, entry in sorted(self.requirements.items()):
            if entry.get("level") not in LEVELS:
                continue
            conformance = sorted(self.conformance.get(req, ()))
            project = sorted(self.project.get(req, ()))
            excluded = self.exclusions.get(req)
            status = (
                "conformance"
                if conformance
                else "excluded"
                if excluded
                else "project"
                if project
                else "gap"
            )
            self.rows.append(
                {
                    "id": req,
                    "level": entry.get("level"),
                    "status": status,
                    "conformance": conformance,
                    "project": project,
                    "exclusion": excluded,
                }
            )
        return self

    @property
    def gap(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "gap"]

    @property
    def must_without_suite_check(self) -> list[dict[str, Any]]:
        """MUSTs that only this project's tests prove, with no reason why the suite
        cannot: each needs a conformance check or case (or an exclusion)."""
        return [r for r in self.rows if r["level"] == "MUST" and r["status"] == "project"]

    @property
    def unknown(self) -> list[str]:
        cited = set(self.conformance) | set(self.project) | set(self.exclusions)
        return sorted(cited - set(self.requirements) - self.withdrawn)

    @property
    def cites_withdrawn(self) -> list[str]:
        cited = set(self.conformance) | set(self.project) | set(self.exclusions)
        return sorted(cited & self.withdrawn)

    @property
    def stale_exclusions(self) -> list[str]:
        return sorted(r["id"] for r in self.rows if r["exclusion"] and r["conformance"])

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for level in LEVELS:
            rows = [r for r in self.rows if r["level"] == level]
            out[level] = {
                status: sum(1 for r in rows if r["status"] == status)
                for status in ("conformance", "project", "excluded", "gap")
            }
            out[level]["total"] = len(rows)
        return out


def trace(requirements: Path, conformance_dir: Path, tests_dir: Path, exclusions: Path) -> Trace:
    index = json.loads(requirements.read_text(encoding="utf-8"))
    by_id = {entry["id"]: entry for entry in index.get("requirements", [])}
    withdrawn = {entry["id"] for entry in index.get("withdrawn", [])}
    excluded: dict[str, str] = {}
    if exclusions.exists():
        loaded = yaml.safe_load(exclusions.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{exclusions}: expected a mapping of requirement id to reason")
        excluded = {str(k): str(v) for k, v in loaded.items() if v}
    conformance = _merge(python_citations(conformance_dir), case_citations(conformance_dir))
    project = python_citations(tests_dir)
    return Trace(by_id, conformance, project, excluded, withdrawn).build()


def _areas(ids: Iterable[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for req in ids:
        out.setdefault(req.split("-")[0], []).append(req)
    return out


def render(result: Trace) -> str:
    lines = []
    for level, counts in result.counts().items():
        lines.append(
            f"{level}: {counts['total']} requirements; {counts['conformance']} by conformance "
            f"checks, {counts['excluded']} excluded from the suite with a reason, "
            f"{counts['project']} by project tests only, {counts['gap']} uncovered"
        )
    gap = result.gap
    if gap:
        lines.append("uncovered (no check, no exclusion):")
        for area, ids in sorted(_areas(r["id"] for r in gap).items()):
            lines.append(f"  {area} ({len(ids)}): {' '.join(ids)}")
    without = result.must_without_suite_check
    if without:
        lines.append("MUST proven by project tests only (needs a conformance check or case):")
        for area, ids in sorted(_areas(r["id"] for r in without).items()):
            lines.append(f"  {area} ({len(ids)}): {' '.join(ids)}")
    if result.unknown:
        lines.append("cited but not in the spec: " + " ".join(result.unknown))
    if result.cites_withdrawn:
        lines.append("cited but withdrawn: " + " ".join(result.cites_withdrawn))
    if result.stale_exclusions:
        lines.append(
            "excluded but covered (stale exclusions): " + " ".join(result.stale_exclusions)
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="traceability", description="Map every MUST/SHOULD requirement to checks."
    )
    parser.add_argument("--requirements", type=Path, default=REPO_ROOT / "spec/requirements.json")
    parser.add_argument("--conformance-dir", type=Path, default=REPO_ROOT / "conformance")
    parser.add_argument("--tests-dir", type=Path, default=REPO_ROOT / "tests")
    parser.add_argument(
        "--exclusions", type=Path, default=REPO_ROOT / "conformance" / "exclusions.yaml"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 on any gap")
    parser.add_argument("--json", action="store_true", help="print the mapping as JSON")
    args = parser.parse_args(argv)
    try:
        result = trace(args.requirements, args.conformance_dir, args.tests_dir, args.exclusions)
    except (OSError, ValueError, SyntaxError, yaml.YAMLError) as error:
        print(f"traceability: {error}", file=sys.stderr)
        return 2
    if args.json:
        document = {
            "counts": result.counts(),
            "requirements": result.rows,
            "unknown": result.unknown,
            "withdrawn": result.cites_withdrawn,
            "stale_exclusions": result.stale_exclusions,
            "must_without_suite_check": [r["id"] for r in result.must_without_suite_check],
        }
        print(json.dumps(document, indent=2))
    else:
        print(render(result))
    problems = (
        result.gap
        or result.must_without_suite_check
        or result.unknown
        or result.cites_withdrawn
        or result.stale_exclusions
    )
    if args.strict and problems:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
