"""The README's workflow runs as printed (issue 12, item 6): its code block is executed,
and the workflow is driven to the end on both paths, approved and rejected."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest

from durable_workflows.core import InvalidPrimitive, Workflow
from tests.support import REPO_ROOT

from .test_core_driver import T0, Driver, submission


def readme_workflow() -> Workflow:
    text = (REPO_ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S)
    assert block is not None, "the README has no python block"
    namespace: dict[str, Any] = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    workflow = namespace["expense_approval"]
    assert isinstance(workflow, Workflow)
    return workflow


REPORT = {"report_id": "R-17", "items": [{"amount": 900}, {"amount": 350}]}


@pytest.mark.parametrize(
    ("answer", "output"),
    [
        ({"approved": True}, {"paid": True, "report_id": "R-17"}),
        ({"approved": False}, {"status": "rejected", "total": 1250}),
    ],
)
def test_the_readme_workflow_runs_as_printed(answer: Any, output: Any) -> None:
    script = [(T0 + timedelta(seconds=1), submission("s-1", "manager", answer))]
    driver = Driver(readme_workflow(), input=REPORT, inbox_script=script).run()
    run = [m["value"] for m in driver.history if m["type"] == "run"][-1]
    assert run["status"] == "completed", run
    assert run["output"] == output


def test_a_misspelt_step_option_is_refused_when_the_step_is_issued() -> None:
    from durable_workflows.core import Context

    def pay(report: dict[str, Any]) -> dict[str, Any]:
        return {"paid": True}

    async def wf(ctx: Context, report: Any) -> Any:
        try:
            return await ctx.step("pay", pay, report, retries=3)
        except InvalidPrimitive as error:
            return str(error)

    driver = Driver(Workflow("w", wf), input=REPORT).run()
    run = [m["value"] for m in driver.history if m["type"] == "run"][-1]
    assert "unexpected keyword argument 'retries'" in run["output"]
    assert "did you mean the step option retry=" in run["output"]
    assert not driver.body_runs  # the body never ran
