"""What the engine does when someone else wrote its streams (security.md, "When the
streams were tampered with"), on a server that enforces no permissions: ``dwf serve
--insecure-no-auth``, as any third-party Durable Streams server may be."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from durable_workflows.core.messages import run_started

from .engine_support import (
    Process,
    cli,
    dwf_serve,
    read_history,
    run_status,
    start,
    unique,
    wait_until,
)

pytestmark = pytest.mark.slow

CLOSE = {"content-type": "application/json", "stream-closed": "true"}
REPORT = {"report_id": "R-1", "items": [{"amount": 900}, {"amount": 350}]}


@pytest.fixture(scope="module")
def served() -> Iterator[Process]:
    with dwf_serve() as running:
        yield running


def ns(served: Process) -> str:
    return served.ready_line.split("namespace ")[1].split()[0]


def last_run(namespace: str, run_id: str) -> dict[str, Any]:
    items, _ = read_history(namespace, run_id)
    runs: list[dict[str, Any]] = [m["value"] for m in items if m["type"] == "run"]
    return runs[-1]


def approve(namespace: str, run_id: str) -> None:
    submission = {
        "type": "submission",
        "key": f"s-{run_id}",
        "value": {
            "submission_id": f"s-{run_id}",
            "request": "manager",
            "value": {"approved": True},
        },
        "headers": {"operation": "insert"},
    }
    reply = httpx.post(f"{namespace}/runs/{run_id}/inbox", json=submission)
    assert reply.status_code == 204, reply.text


@pytest.mark.req("SEC-028")
def test_a_waiting_run_whose_inbox_was_closed_fails_with_inbox_closed(served: Process) -> None:
    namespace = ns(served)
    run_id = start(namespace, "expense-approval", REPORT)
    wait_until(lambda: run_status(namespace, run_id) == "waiting", 20, "the run waits")
    closed = httpx.post(f"{namespace}/runs/{run_id}/inbox", headers=CLOSE)
    assert closed.status_code == 204
    # A pull-wake subscription is not woken by a close (nothing was appended), so the
    # engine sees it at the run's next wake: here a plain one, as its timer would.
    reply = httpx.post(f"{served.url}/wake", json={"run_id": run_id})
    assert reply.status_code == 200, reply.text
    # Never a silent hang: the run ends, visibly, and its history is closed.
    wait_until(lambda: read_history(namespace, run_id)[1], 20, "the history is closed")
    run = last_run(namespace, run_id)
    assert run["status"] == "failed" and run["error"]["type"] == "InboxClosed", run


@pytest.mark.req("SEC-029", "SEC-030")
def test_a_history_not_started_from_the_request_is_left_alone(served: Process) -> None:
    namespace = ns(served)
    run_id = unique("forged")
    history = f"{namespace}/runs/{run_id}/history"
    forged = run_started(
        run_id,
        "expense-approval",
        "1.0",
        {**REPORT, "items": [{"amount": 1}]},
        "2026-01-01T00:00:00.000Z",
    )
    assert httpx.put(history, headers={"content-type": "application/json"}).status_code == 201
    assert httpx.post(history, json=forged).status_code == 204
    start(namespace, "expense-approval", REPORT, run_id=run_id)  # the real request
    time.sleep(3)  # the worker has read the request and served the run by now
    items, closed = read_history(namespace, run_id)
    assert items == [forged] and not closed  # nothing appended, no step body run
    reply = httpx.post(f"{served.url}/wake", json={"run_id": run_id})
    assert reply.status_code == 409 and "not trusted" in reply.json()["error"]
    assert read_history(namespace, run_id) == ([forged], False)
    code, shown = cli("inspect", run_id, "--url", served.url)
    assert code == 0 and "run-started input differs" in shown["untrusted"], shown


@pytest.mark.req("SEC-032", "SEC-033")
@pytest.mark.parametrize("tamper", ["delete", "close"])
def test_runs_still_wake_when_the_wake_stream_is_deleted_or_closed(
    served: Process, tamper: str
) -> None:
    namespace = ns(served)
    wake = f"{namespace}/wake"
    if tamper == "delete":
        assert httpx.delete(wake).status_code == 204
    else:
        # There again if the delete case ran first (dwf serve's own worker is told of
        # wakes in-process and never reads the wake stream, so it leaves it deleted).
        created = httpx.put(wake, headers={"content-type": "application/json"})
        assert created.status_code in (200, 201)
        assert httpx.post(wake, headers=CLOSE).status_code in (200, 204)
    run_id = start(namespace, "expense-approval", REPORT)
    wait_until(lambda: run_status(namespace, run_id) == "waiting", 20, "the new run starts")
    approve(namespace, run_id)
    wait_until(lambda: run_status(namespace, run_id) == "completed", 20, "the answer wakes it")
    assert json.dumps(last_run(namespace, run_id)["output"])


@pytest.mark.req("MODEL-015", "SEC-005")
def test_a_run_request_whose_input_cannot_be_recorded_is_ignored() -> None:
    from durable_workflows.engine.namespace import first_requests

    def request(run_id: str, value: Any) -> dict[str, Any]:
        return {
            "type": "start",
            "key": run_id,
            "value": {"run_id": run_id, "workflow": "wf", "input": value},
            "headers": {"operation": "insert"},
        }

    deep: Any = 1
    for _ in range(1000):
        deep = [deep]
    found = first_requests([request("a", "\ud800"), request("b", deep), request("c", "ok")])
    assert list(found) == ["c"]
