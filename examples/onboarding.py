"""A multi-step onboarding wizard.

Each page of the wizard is an input request; the browser (or ``dwf submit``) answers
them in order, or early: a submission for a later page is kept until the run gets
there (INPUT-020). Account creation runs once the profile and the plan are known;
the welcome e-mail goes out after a short pause.

    dwf start onboarding-wizard --run-id ob-1 --input '{"tenant": "acme"}'
    dwf submit ob-1 profile --value '{"name": "Ana", "email": "ana@example.com"}'
    dwf submit ob-1 plan --value '{"plan": "team", "seats": 5}'
    dwf submit ob-1 preferences --value '{"newsletter": false}'
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from durable_workflows.core import Context, workflow

PROFILE = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "email": {"type": "string", "pattern": "^[^@]+@[^@]+$"},
    },
    "required": ["name", "email"],
}
PLAN = {
    "type": "object",
    "properties": {
        "plan": {"enum": ["free", "team", "enterprise"]},
        "seats": {"type": "integer", "minimum": 1},
    },
    "required": ["plan"],
}
PREFERENCES = {
    "type": "object",
    "properties": {"newsletter": {"type": "boolean"}},
    "required": ["newsletter"],
}


def create_account(tenant: str, profile: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    return {"account": f"{tenant}/{profile['email']}", "plan": plan["plan"]}


def send_welcome(email: str, newsletter: bool) -> dict[str, Any]:
    return {"sent_to": email, "newsletter": newsletter}


@workflow(
    "onboarding-wizard",
    input_schema={
        "type": "object",
        "properties": {
            "tenant": {"type": "string", "minLength": 1, "maxLength": 64},
            "settle_ms": {"type": "integer", "minimum": 0, "maximum": 60000},
        },
        "required": ["tenant"],
    },
    title="A three-form sign-up: profile, plan, preferences",
)
async def onboarding(ctx: Context, start: dict[str, Any]) -> dict[str, Any]:
    profile = await ctx.request_input("profile", schema=PROFILE, prompt="Who are you?")
    plan = await ctx.request_input("plan", schema=PLAN, prompt="Pick a plan")
    account = await ctx.step("create-account", create_account, start["tenant"], profile, plan)
    prefs = await ctx.request_input("preferences", schema=PREFERENCES, prompt="Preferences")
    await ctx.sleep("settle", timedelta(milliseconds=int(start.get("settle_ms", 200))))
    welcome = await ctx.step("welcome-email", send_welcome, profile["email"], prefs["newsletter"])
    return {"account": account, "welcome": welcome}
