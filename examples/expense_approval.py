"""Expense approval with a deadline and escalation.

A report under the auto-approval limit is approved by policy. Otherwise the manager
is asked; if the manager does not answer in time (``InputExpired``), the request is
escalated to the director, who has no deadline. An approved report is paid by a
step that retries.

Start one::

    dwf start expense-approval --run-id exp-1 --input '{"report_id": "R-17",
      "items": [{"amount": 900}, {"amount": 350}], "manager_timeout_s": 60}'
    dwf submit exp-1 manager --value '{"approved": true, "comment": "ok"}'
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from durable_workflows.core import Context, InputExpired, RetryPolicy, workflow

APPROVAL = {
    "type": "object",
    "properties": {
        "approved": {"type": "boolean"},
        "comment": {"type": "string", "maxLength": 500},
    },
    "required": ["approved"],
}


def sum_items(items: list[dict[str, Any]]) -> float:
    return round(sum(float(item["amount"]) for item in items), 2)


def notify_escalation(report_id: str, total: float) -> dict[str, Any]:
    # A real deployment would send an e-mail or a chat message here.
    return {"notified": "director", "report_id": report_id, "total": total}


def pay(report_id: str, total: float) -> dict[str, Any]:
    # Idempotent on the payment provider's side: the report id is the idempotency key.
    return {"paid": True, "report_id": report_id, "amount": total}


REPORT = {
    "type": "object",
    "properties": {
        "report_id": {"type": "string", "minLength": 1, "maxLength": 64},
        "items": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {"amount": {"type": "number", "minimum": 0}},
                "required": ["amount"],
            },
        },
        "currency": {"type": "string", "default": "EUR"},
        "manager_timeout_s": {"type": "number", "exclusiveMinimum": 0},
        "auto_approve_below": {"type": "number", "minimum": 0, "default": 100},
    },
    "required": ["report_id", "items"],
}


@workflow(
    "expense-approval",
    input_schema=REPORT,
    title="Approve an expense report; a manager decides, a director if the manager is late",
)
async def expense_approval(ctx: Context, report: dict[str, Any]) -> dict[str, Any]:
    total = await ctx.step("sum", sum_items, report["items"])
    currency = report.get("currency", "EUR")
    decision: dict[str, Any]
    if total < float(report.get("auto_approve_below", 100)):
        decision = {"approved": True, "by": "policy"}
    else:
        prompt = f"Approve expense report {report['report_id']} ({total:.2f} {currency})?"
        try:
            answer = await ctx.request_input(
                "manager",
                schema=APPROVAL,
                prompt=prompt,
                timeout=timedelta(seconds=float(report.get("manager_timeout_s", 3 * 86400))),
            )
            decision = {**answer, "by": "manager"}
        except InputExpired:
            await ctx.step("notify-escalation", notify_escalation, report["report_id"], total)
            answer = await ctx.request_input(
                "director", schema=APPROVAL, prompt=f"Escalated: {prompt}"
            )
            decision = {**answer, "by": "director"}
    payment = None
    if decision["approved"]:
        payment = await ctx.step(
            "pay",
            pay,
            report["report_id"],
            total,
            retry=RetryPolicy(max_attempts=5, initial_interval=timedelta(milliseconds=200)),
        )
    return {
        "report_id": report["report_id"],
        "total": total,
        "decision": decision,
        "payment": payment,
    }
