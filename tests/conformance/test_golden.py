"""The golden corpus (conformance/durable_workflows_conformance/golden/v1): it is what the
suite's model predicts, the reference's sans-IO core reproduces every case, and together
the cases cover every event type and every rejection reason."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

import pytest

from durable_workflows.adapter.golden import run_case
from durable_workflows.core.status import StatusView
from durable_workflows.schemas import EVENTS
from durable_workflows_conformance import golden
from tests.support import REPO_ROOT

CORPUS = golden.corpus()
REASONS = {
    "schema-invalid",
    "already-answered",
    "expired",
    "run-finished",
    "malformed",
    "too-large",
}


def test_the_committed_corpus_is_what_the_model_predicts() -> None:
    generated = sorted(golden.generate(), key=lambda c: c["id"])
    assert [c["id"] for c in generated] == [c["id"] for c in CORPUS]
    for made, committed in zip(generated, CORPUS, strict=True):
        assert json.loads(json.dumps(made)) == committed, (
            f"{committed['id']}: the corpus is stale: "
            "python -m durable_workflows_conformance.golden generate"
        )


@pytest.mark.req("REPLAY-013", "MODEL-050")
@pytest.mark.parametrize("case", CORPUS, ids=[c["id"] for c in CORPUS])
def test_the_reference_core_reproduces_the_case(case: dict[str, Any]) -> None:
    appends = list(run_case(case))
    view = StatusView()
    for append in appends:
        view.feed(append)
    row = view.message("2030-01-01T00:00:00.000Z")
    result = golden.check(case, appends, row)
    assert result.ok, "\n".join(result.problems)


def test_the_runner_drives_a_core_process_through_stdin_and_stdout() -> None:
    core = f"{sys.executable} -m durable_workflows.adapter.golden"
    results = golden.run(core, CORPUS[:3])
    assert [r.ok for r in results] == [True, True, True], results
    broken = golden.run(f"{sys.executable} -c 'print(\"[]\")'", CORPUS[:1])
    assert not broken[0].ok and "expected" in broken[0].problems[0]


def _events(case: Mapping[str, Any]) -> set[str]:
    """The event names a case's messages are (scrubbed history, inbox, request, row)."""
    names = {"run-requested", "run-status"}
    for item in case["inbox"]:
        kind = item["message"].get("type")
        names.add({"submission": "input-submitted", "cancel": "cancel-requested"}.get(kind, ""))
    for m in case["history"]:
        status = (m.get("value") or {}).get("status")
        kind, op = m["type"], m["op"]
        if kind == "run":
            names.add(
                "run-started"
                if op == "insert"
                else {
                    "waiting": "run-suspended",
                    "sleeping": "run-suspended",
                    "running": "run-resumed",
                }.get(status, f"run-{status}")
            )
        elif kind == "step":
            names.add(
                "step-started"
                if op == "insert"
                else {
                    "running": "step-attempt-started",
                    "retrying": "step-attempt-failed",
                }.get(status, f"step-{status}")
            )
        elif kind == "sleep":
            names.add("sleep-scheduled" if op == "insert" else "sleep-completed")
        elif kind == "input":
            names.add("input-requested" if op == "insert" else f"input-{status}")
        elif kind == "submission":
            names.add("input-rejected")
        elif kind == "record":
            names.add("value-recorded")
        elif kind == "patch":
            names.add("patch-recorded")
    return names - {""}


def test_the_corpus_covers_every_event_type_and_rejection_reason() -> None:
    covered = set().union(*(_events(c) for c in CORPUS))
    assert set(EVENTS) - covered == set(), f"not covered: {set(EVENTS) - covered}"
    reasons = {
        (m.get("value") or {}).get("reason")
        for c in CORPUS
        for m in c["history"]
        if m["type"] == "submission"
    }
    assert REASONS - reasons == set(), f"rejection reasons not covered: {REASONS - reasons}"


def test_the_corpus_is_plain_json_in_the_repository() -> None:
    folder = REPO_ROOT / "conformance" / "durable_workflows_conformance" / "golden" / "v1"
    files = sorted(folder.glob("*.json"))
    assert len(files) == len(CORPUS) >= 70
    for path in files:
        case = json.loads(path.read_text(encoding="utf-8"))
        assert path.stem == case["id"]
        assert {"program", "request", "inbox", "history", "status", "run_status"} <= set(case)
