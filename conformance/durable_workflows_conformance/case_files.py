"""The suite's example cases as data: ``cases/*.yaml`` (see its README) and the input
validation vectors as generated cases, and the scenario each one drives."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from typing import Any

import yaml

from . import schemas
from .json_schema_rules import vector_cases
from .scenario import Scenario, Submission


def load_cases() -> list[dict[str, Any]]:
    folder = resources.files("durable_workflows_conformance") / "cases"
    cases: list[dict[str, Any]] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            loaded = yaml.safe_load(entry.read_text(encoding="utf-8")) or []
            found = schemas.problems("cases", loaded)  # conformance/cases.json
            if found:
                raise ValueError(f"cases/{entry.name} is not a valid case file: {found[:5]}")
            for case in loaded:
                case["file"] = entry.name
                cases.append(case)
    vectors = vector_cases()  # vectors/input-validation.json (INPUT-044, INPUT-045)
    found = schemas.problems("cases", vectors)
    if found:
        raise ValueError(f"the validation vectors make invalid cases: {found[:5]}")
    for case in vectors:
        case["file"] = "vectors/input-validation.json"
    return cases + vectors


def submission_of(entry: Mapping[str, Any]) -> Submission:
    """One entry of a case's ``submissions`` (see the cases README)."""
    raw = entry.get("raw")
    if raw is not None:
        value = raw.get("value") if isinstance(raw.get("value"), Mapping) else {}
        request = value.get("request")
        return Submission(
            id=str(raw.get("key")),
            request=request if isinstance(request, str) else "",
            value=None,
            when=entry.get("when", "waiting"),
            client=entry.get("client", 0),
            raw=raw,
        )
    return Submission(
        id=entry["id"],
        request=entry.get("request", ""),
        value=entry.get("value"),
        when=entry.get("when", "waiting"),
        client=entry.get("client", 0),
        malformed=entry.get("malformed", False),
        kind=entry.get("kind", "submission"),
        reason=entry.get("reason"),
        at=entry.get("at", 0),
        headers=entry.get("headers"),
    )


def scenario_of(case: Mapping[str, Any]) -> Scenario:
    subs = tuple(submission_of(s) for s in case.get("submissions", []))
    return Scenario(
        case["program"],
        case.get("input"),
        subs,
        workers=case.get("workers", 1),
        limits=case.get("limits"),
    )
