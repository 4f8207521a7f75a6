"""The example workflows end to end: ``dwf serve`` as a real process, driven by the
``dwf`` client commands (start, submit, cancel, inspect, replay)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from examples.agent_confirm import CONFIRM, draft_action, execute

from durable_workflows.core import Context, workflow
from durable_workflows.schemas import identify

from .engine_support import (
    Process,
    cli,
    dwf_serve,
    pending_inputs,
    read_history,
    run_status,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def serve() -> Iterator[Process]:
    """``dwf serve`` as ``make run`` runs it, authentication on: the commands find its
    key file as they find ``.dwf/keys.json`` after ``make run`` (here: $DWF_KEYS)."""
    with dwf_serve(auth=True) as running, pytest.MonkeyPatch.context() as patch:
        assert running.keys is not None
        patch.setenv("DWF_KEYS", running.keys)
        yield running


def ns(serve: Process) -> str:
    return serve.ready_line.split("namespace ")[1].split()[0]


def finished(serve: Process, run_id: str, seconds: float = 20) -> dict[str, Any]:
    wait_until(lambda: read_history(ns(serve), run_id)[1], seconds, f"history of {run_id} closed")
    code, data = cli("inspect", run_id, "--url", serve.url)
    assert code == 0, data
    items, _ = read_history(ns(serve), run_id)
    for message in items:
        identify(message, "history")  # every message validates
    result: dict[str, Any] = data
    return result


def waiting_for(serve: Process, run_id: str, request: str, seconds: float = 20) -> None:
    wait_until(lambda: request in pending_inputs(ns(serve), run_id), seconds, f"{request}")


def test_expense_times_out_and_escalates_to_the_director(serve: Process) -> None:
    report = {
        "report_id": "R-1",
        "items": [{"amount": 900}, {"amount": 350}],
        "manager_timeout_s": 1,
    }
    code, _ = cli(
        "start",
        "expense-approval",
        "--input",
        json.dumps(report),
        "--run-id",
        "exp-esc",
        "--url",
        serve.url,
    )
    assert code == 0
    waiting_for(serve, "exp-esc", "manager")
    code, shown = cli("inspect", "exp-esc", "--url", serve.url)
    assert shown["status"] == "waiting"
    assert shown["waiting_for"]["inputs"][0]["request"] == "manager"
    waiting_for(serve, "exp-esc", "director")  # the manager never answered
    code, outcome = cli(
        "submit",
        "exp-esc",
        "director",
        "--value",
        '{"approved": true}',
        "--wait",
        "15",
        "--url",
        serve.url,
    )
    assert code == 0 and outcome["status"] == "accepted", outcome
    data = finished(serve, "exp-esc")
    assert data["status"] == "completed"
    assert data["output"]["decision"] == {"approved": True, "by": "director"}
    assert data["output"]["payment"]["amount"] == 1250.0
    events = [e["event"] for e in data["events"]]
    assert "input-expired" in events and events.count("step-completed") == 3


def test_expense_approved_by_the_manager_in_time(serve: Process) -> None:
    report = {"report_id": "R-2", "items": [{"amount": 500}]}
    cli(
        "start",
        "expense-approval",
        "--input",
        json.dumps(report),
        "--run-id",
        "exp-ok",
        "--url",
        serve.url,
    )
    waiting_for(serve, "exp-ok", "manager")
    code, outcome = cli(
        "submit",
        "exp-ok",
        "manager",
        "--value",
        '{"approved": false}',
        "--wait",
        "15",
        "--url",
        serve.url,
    )
    assert code == 0 and outcome["status"] == "accepted"
    data = finished(serve, "exp-ok")
    assert data["output"]["decision"] == {"approved": False, "by": "manager"}
    assert data["output"]["payment"] is None


def test_agent_step_waits_for_a_human_to_confirm(serve: Process) -> None:
    cli(
        "start",
        "agent-confirm",
        "--input",
        '{"task": "refund order 58213"}',
        "--run-id",
        "agent-1",
        "--url",
        serve.url,
    )
    waiting_for(serve, "agent-1", "confirm")
    code, shown = cli("inspect", "agent-1", "--url", serve.url)
    assert code == 0 and shown["waiting_for"]["inputs"][0]["request"] == "confirm"
    assert "refund order 58213" in shown["waiting_for"]["inputs"][0]["prompt"]
    code, outcome = cli(
        "submit",
        "agent-1",
        "confirm",
        "--value",
        '{"confirm": true, "edited_action": "refund 20 EUR"}',
        "--wait",
        "15",
        "--url",
        serve.url,
    )
    assert code == 0 and outcome["status"] == "accepted", outcome
    data = finished(serve, "agent-1")
    assert data["output"]["status"] == "done"
    assert data["output"]["result"] == {"executed": "refund 20 EUR"}


@pytest.mark.req("INPUT-019", "INPUT-022")
def test_two_clients_answer_at_once_one_is_taken(serve: Process) -> None:
    """(b) two clients answer the same request at once: exactly one answer is taken,
    the other is rejected with a reason, and both are visible in the history."""
    cli(
        "start",
        "onboarding-wizard",
        "--input",
        '{"tenant": "race"}',
        "--run-id",
        "ob-race",
        "--url",
        serve.url,
    )
    waiting_for(serve, "ob-race", "profile")
    results: dict[str, tuple[int, Any]] = {}

    def answer(sub_id: str, name: str) -> None:
        value = json.dumps({"name": name, "email": f"{name}@example.com"})
        results[sub_id] = cli(
            "submit",
            "ob-race",
            "profile",
            "--value",
            value,
            "--submission-id",
            sub_id,
            "--wait",
            "15",
            "--url",
            serve.url,
        )

    threads = [
        threading.Thread(target=answer, args=("tab-a", "ana")),
        threading.Thread(target=answer, args=("tab-b", "bo")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    statuses = sorted(r[1]["status"] for r in results.values())
    assert statuses == ["accepted", "rejected"], results
    loser = next(r for r in results.values() if r[1]["status"] == "rejected")
    assert loser[0] == 1 and loser[1]["reason"] == "already-answered" and loser[1]["message"]
    winner = next(k for k, r in results.items() if r[1]["status"] == "accepted")
    items, _ = read_history(ns(serve), "ob-race")
    received = [m for m in items if m["type"] == "input" and m["value"]["status"] == "received"]
    assert [m["value"]["submission_id"] for m in received] == [winner]
    rejected = [m["key"] for m in items if m["type"] == "submission"]
    assert rejected == [({"tab-a", "tab-b"} - {winner}).pop()]
    cli("cancel", "ob-race", "--url", serve.url)


def test_onboarding_wizard_takes_early_answers(serve: Process) -> None:
    cli(
        "start",
        "onboarding-wizard",
        "--input",
        '{"tenant": "acme", "settle_ms": 100}',
        "--run-id",
        "ob-1",
        "--url",
        serve.url,
    )
    # Pages answered before the run reaches them are kept (INPUT-020).
    for request, value in [
        ("profile", {"name": "Ana", "email": "ana@example.com"}),
        ("plan", {"plan": "team", "seats": 5}),
    ]:
        code, _ = cli("submit", "ob-1", request, "--value", json.dumps(value), "--url", serve.url)
        assert code == 0
    waiting_for(serve, "ob-1", "preferences")
    code, outcome = cli(
        "submit",
        "ob-1",
        "preferences",
        "--value",
        '{"newsletter": "yes"}',
        "--wait",
        "15",
        "--url",
        serve.url,
    )
    assert code == 1 and outcome["reason"] == "schema-invalid"
    code, outcome = cli(
        "submit",
        "ob-1",
        "preferences",
        "--value",
        '{"newsletter": true}',
        "--wait",
        "15",
        "--url",
        serve.url,
    )
    assert code == 0 and outcome["status"] == "accepted"
    data = finished(serve, "ob-1")
    assert data["output"]["account"] == {"account": "acme/ana@example.com", "plan": "team"}
    code, late = cli("submit", "ob-1", "preferences", "--value", "{}", "--url", serve.url)
    assert code == 1 and late["status"] == "refused"  # closed inbox: 409 (INPUT-040)


def test_cancel_ends_a_waiting_run(serve: Process) -> None:
    cli(
        "start",
        "agent-confirm",
        "--input",
        '{"task": "t"}',
        "--run-id",
        "agent-c",
        "--url",
        serve.url,
    )
    waiting_for(serve, "agent-c", "confirm")
    code, outcome = cli(
        "cancel", "agent-c", "--reason", "changed my mind", "--wait", "15", "--url", serve.url
    )
    assert code == 0 and outcome["status"] == "cancelled", outcome
    data = finished(serve, "agent-c")
    assert data["status"] == "cancelled"
    assert data["error"]["message"] == "changed my mind"


@pytest.mark.req("SEC-015")
def test_plain_wake_endpoint(serve: Process) -> None:
    import httpx

    from durable_workflows.access import KeySet, mint_client_token, mint_engine_token

    assert serve.keys is not None
    keys = KeySet.load(serve.keys)
    engine = {"authorization": f"Bearer {mint_engine_token(keys)}"}
    other = {"authorization": f"Bearer {mint_client_token(keys, runs=['someone-else'])}"}
    # A wake needs a credential that names the run (SEC-015).
    assert httpx.post(f"{serve.url}/wake", json={"run_id": "nobody"}).status_code == 401
    refused = httpx.post(f"{serve.url}/wake", json={"run_id": "nobody"}, headers=other)
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert (
        httpx.post(f"{serve.url}/wake", json={"run_id": "nobody"}, headers=engine).status_code
        == 404
    )
    assert httpx.post(f"{serve.url}/wake", content=b"[1]", headers=engine).status_code == 400
    cli(
        "start",
        "agent-confirm",
        "--input",
        '{"task": "w"}',
        "--run-id",
        "agent-w",
        "--url",
        serve.url,
    )
    waiting_for(serve, "agent-w", "confirm")
    own = {"authorization": f"Bearer {mint_client_token(keys, runs=['agent-w'], rights=['read'])}"}
    reply = httpx.post(f"{serve.url}/wake", json={"run_id": "agent-w"}, headers=own)
    assert reply.status_code == 200 and reply.json()["status"] == "waiting"
    assert reply.json()["appends"] == 0  # WAKE-002: nothing new, nothing appended


# ------------------------------------------------------------------ dwf replay (c)


@workflow("agent-confirm")
async def reordered(ctx: Context, request: dict[str, Any]) -> dict[str, Any]:
    """agent-confirm with its first two primitives swapped."""
    answer = await ctx.request_input("confirm", schema=CONFIRM, prompt="Confirm?")
    draft: dict[str, Any] = await ctx.step("draft", draft_action, request["task"])
    if not answer["confirm"]:
        return {"status": "rejected", "draft": draft}
    return {"status": "done", "result": await ctx.step("execute", execute, draft["action"])}


@pytest.mark.req("REPLAY-028", "REPLAY-030")
def test_replay_passes_unchanged_code_and_names_both_sides_of_a_reorder(
    serve: Process, tmp_path: Path
) -> None:
    cli(
        "start",
        "agent-confirm",
        "--input",
        '{"task": "r"}',
        "--run-id",
        "agent-r",
        "--url",
        serve.url,
    )
    waiting_for(serve, "agent-r", "confirm")
    cli(
        "submit",
        "agent-r",
        "confirm",
        "--value",
        '{"confirm": true}',
        "--wait",
        "15",
        "--url",
        serve.url,
    )
    finished(serve, "agent-r")
    items, _ = read_history(ns(serve), "agent-r")
    path = tmp_path / "history.json"
    path.write_text(json.dumps(items))
    code, report = cli("replay", str(path), "--workflow", "examples.agent_confirm:agent_confirm")
    assert code == 0 and report["ok"], report
    code, text = _replay_text(path, "examples.agent_confirm:agent_confirm")
    assert code == 0 and text.startswith("ok: ") and text.count("ok:") == 1, text
    code, report = cli("replay", str(path), "--workflow", f"{__name__}:reordered")
    assert code == 1
    details = report["error"]["details"]
    assert details["recorded"] == {"kind": "step", "name": "draft"}
    assert details["requested"] == {"kind": "input", "name": "confirm"}
    code, text = _replay_text(path, f"{__name__}:reordered")
    assert code == 1 and "step 'draft'" in text and "input 'confirm'" in text
    assert run_status(ns(serve), "agent-r") == "completed"


def _replay_text(path: Path, spec: str) -> tuple[int, str]:
    import subprocess
    import sys

    from tests.support import REPO_ROOT

    done = subprocess.run(
        [sys.executable, "-m", "durable_workflows.cli", "replay", str(path), "--workflow", spec],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=60,
    )
    return done.returncode, done.stdout.decode()


def test_the_commands_say_when_nothing_happened(serve: Process) -> None:
    """Issue 12: an unknown workflow, a misspelt request name and an unknown run are
    failures with a non-zero exit and a sentence that says what exists instead."""
    # A worker leaves a run of a workflow it lacks for 10 s (MODEL-039), then fails it.
    code, data = cli(
        "start", "no-such-flow", "--run-id", "ghost-1", "--wait", "30", "--url", serve.url
    )
    assert code == 1 and data["status"] == "failed", data
    assert data["error"]["type"] == "UnknownWorkflow"
    assert "It has: agent-confirm, expense-approval" in data["error"]["message"], data
    report = {"report_id": "R-9", "items": [{"amount": 5000}]}
    code, _ = cli(
        "start", "expense-approval", "--input", json.dumps(report), "--run-id", "typo-1",
        "--wait", "10", "--url", serve.url,
    )  # fmt: skip
    assert code == 0
    waiting_for(serve, "typo-1", "manager")
    code, data = cli(
        "submit", "typo-1", "manger", "--value", '{"approved": true}', "--wait", "2",
        "--url", serve.url,
    )  # fmt: skip
    assert code == 1 and data["pending_inputs"] == ["manager"], data
    code, data = cli("submit", "nobody-1", "manager", "--value", "1", "--url", serve.url)
    assert code == 1
    import subprocess
    import sys

    shown = subprocess.run(
        [sys.executable, "-m", "durable_workflows.cli", "inspect", "typo-1", "--url", serve.url],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    assert 'answer schema: {"type":"object"' in shown, shown
