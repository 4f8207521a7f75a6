"""An AI-agent step that pauses for a human to confirm.

The agent drafts an action (a model call in real life: here a deterministic stand-in
so the example runs offline), the run waits until a person confirms, edits or
rejects it, and only then does the action run. The draft is a step result, so it is
recorded once: replays and restarts never ask the model again.

    dwf start agent-confirm --run-id ag-1 --input '{"task": "refund order 58213"}'
    dwf submit ag-1 confirm --value '{"confirm": true}'
"""

from __future__ import annotations

import hashlib
from typing import Any

from durable_workflows.core import Context, workflow

CONFIRM = {
    "type": "object",
    "properties": {
        "confirm": {"type": "boolean"},
        "edited_action": {"type": "string", "minLength": 1, "maxLength": 500},
    },
    "required": ["confirm"],
}


async def draft_action(task: str) -> dict[str, Any]:
    """Stand-in for a language-model call: a proposal and a confidence."""
    digest = hashlib.sha256(task.encode()).hexdigest()
    return {"action": f"Proposed: {task}", "confidence": int(digest[:2], 16) / 255}


def execute(action: str) -> dict[str, Any]:
    return {"executed": action}


@workflow(
    "agent-confirm",
    input_schema={
        "type": "object",
        "properties": {"task": {"type": "string", "minLength": 1, "maxLength": 500}},
        "required": ["task"],
    },
    title="An agent proposes an action; a person confirms or edits it before it runs",
)
async def agent_confirm(ctx: Context, request: dict[str, Any]) -> dict[str, Any]:
    draft: dict[str, Any] = await ctx.step("draft", draft_action, request["task"], retry=3)
    answer = await ctx.request_input(
        "confirm",
        schema=CONFIRM,
        prompt=f"The agent wants to: {draft['action']} (confidence {draft['confidence']:.2f}). "
        "Confirm?",
    )
    if not answer["confirm"]:
        return {"status": "rejected", "draft": draft}
    action = answer.get("edited_action") or draft["action"]
    result = await ctx.step("execute", execute, action)
    return {"status": "done", "action": action, "result": result}
