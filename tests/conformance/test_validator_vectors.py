"""The reference's input validation against the language-neutral vectors of
conformance/durable_workflows_conformance/vectors/input-validation.json (INPUT-044 to
INPUT-046): every schema accepted or refused as the vector says, every value accepted or
rejected as it says."""

from __future__ import annotations

import json
from typing import Any

import pytest

from durable_workflows.core.errors import InvalidPrimitive
from durable_workflows.core.inbox import check_request_schema, schema_problem
from tests.support import REPO_ROOT

VECTORS = REPO_ROOT / "conformance" / "durable_workflows_conformance" / "vectors"
CASES: list[dict[str, Any]] = json.loads((VECTORS / "input-validation.json").read_text())["cases"]


@pytest.mark.req("INPUT-044", "INPUT-045", "INPUT-027", "INPUT-029")
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_the_reference_agrees_with_the_vector(case: dict[str, Any]) -> None:
    if not case["valid"]:
        with pytest.raises(InvalidPrimitive):
            check_request_schema("n", case["schema"])
        return
    schema = check_request_schema("n", case["schema"])
    for vector in case["values"]:
        problem = schema_problem("n", schema, vector["value"])
        assert (problem is None) == vector["valid"], (vector, problem)


def test_the_vectors_cover_valid_and_invalid_schemas_and_values() -> None:
    assert {c["valid"] for c in CASES} == {True, False}
    values = [v["valid"] for c in CASES if c["valid"] for v in c["values"]]
    assert True in values and False in values
    assert len({c["id"] for c in CASES}) == len(CASES)
