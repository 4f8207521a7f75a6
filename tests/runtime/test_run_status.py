"""The run-status stream ``{ns}/status`` (issue 13; MODEL-040 to MODEL-048, SEC-036/037),
against ``dwf serve`` over real HTTP: one row per run that a task list can follow on one
connection, derived from a prefix of the history and never ahead of it, written when
what it shows changes, written again after a restart, rebuilt when deleted; readable by
clients only with the ``list`` right, writable by no client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from durable_workflows import schemas
from durable_workflows.access import KeySet, mint_client_token, mint_engine_token
from durable_workflows.core.status import StatusView
from durable_workflows.engine.namespace import strip_read_annotations
from durable_workflows.streams import StreamClient, StreamNotFound

from .engine_support import (
    Process,
    cli,
    dwf_serve,
    read_history,
    run_status,
    start,
    submission,
    to_inbox,
    unique,
    wait_until,
)

pytestmark = pytest.mark.slow

EXPENSE = {"report_id": "R-1", "items": [{"amount": 900}]}


def ns_of(served: Process) -> str:
    return f"{served.url}/v1/stream/workflows"


def status_rows(ns: str, headers: dict[str, str] | None = None) -> list[Any]:
    with StreamClient(timeout=10, headers=headers or {}) as client:
        try:
            result = client.stream(f"{ns}/status").read()
        except StreamNotFound:
            return []
    return strip_read_annotations(result.items)


def rows_of(ns: str, run_id: str) -> list[Any]:
    return [row for row in status_rows(ns) if row.get("key") == run_id]


def shown(row: dict[str, Any]) -> dict[str, Any]:
    """What a task list shows: every field but the write time and the length."""
    return {k: v for k, v in row["value"].items() if k not in ("updated_at", "history_length")}


def assert_rows_follow_history(ns: str, run_id: str) -> list[Any]:
    rows = rows_of(ns, run_id)
    history, _ = read_history(ns, run_id)
    assert rows, f"no run-status row for {run_id}"
    for row in rows:
        assert schemas.identify(row, "status") == "run-status"
        length = row["value"]["history_length"]
        assert length <= len(history), "a row leads its history (MODEL-043)"
        assert shown(row) == StatusView(history[:length]).fields(), row
    assert shown(rows[-1]) == StatusView(history).fields(), "last row is stale (MODEL-044)"
    return rows


@pytest.fixture()
def served(tmp_path: Path) -> Any:
    with dwf_serve("--data", str(tmp_path / "data")) as running:
        yield running


def test_a_run_that_waits_and_completes_has_a_row_for_each_change(served: Process) -> None:
    ns = ns_of(served)
    run_id = start(ns, "expense-approval", EXPENSE)
    wait_until(lambda: run_status(ns, run_id) == "waiting", 20, "the run waits")
    rows = wait_until(
        lambda: [r for r in rows_of(ns, run_id) if r["value"]["status"] == "waiting"], 10
    )
    waiting = rows[-1]["value"]
    assert waiting["workflow"] == "expense-approval"
    assert [i["name"] for i in waiting["inputs"]] == ["manager"]
    assert waiting["inputs"][0]["prompt"].startswith("Approve expense report R-1")
    assert waiting["waiting_for"]["inputs"] == ["manager"]
    to_inbox(ns, run_id, submission("s-1", "manager", {"approved": True}))
    wait_until(lambda: run_status(ns, run_id) == "completed", 20, "the run completes")
    wait_until(lambda: rows_of(ns, run_id)[-1]["value"]["status"] == "completed", 10)
    rows = assert_rows_follow_history(ns, run_id)
    assert [r["value"]["status"] for r in rows] == ["running", "waiting", "running", "completed"]
    assert all(r["headers"] == {"operation": "update"} for r in rows)
    # A step that only records a step of a running run writes no row: 4 rows, not one
    # per history append.
    history, _ = read_history(ns, run_id)
    assert len(rows) < len(history)


def test_a_failed_run_row_carries_its_error(served: Process) -> None:
    ns = ns_of(served)
    run_id = start(ns, "expense-approval", {"report_id": "R-2"})  # no items: it fails
    wait_until(lambda: run_status(ns, run_id) in ("failed", "completed"), 20, "run ends")
    wait_until(lambda: rows_of(ns, run_id)[-1]["value"]["finished_at"] is not None, 10)
    rows = assert_rows_follow_history(ns, run_id)
    last = rows[-1]["value"]
    assert last["status"] == "failed" and last["error"]["type"], last


def test_a_restarted_engine_writes_the_row_of_every_run_again(tmp_path: Path) -> None:
    """MODEL-045: a row lost between the history append and the status append (here:
    a stale row appended last, as a crash in that window leaves the stream) is written
    again by the run's next activation, which a restart causes."""
    data = str(tmp_path / "data")
    with dwf_serve("--data", data) as first:
        ns = ns_of(first)
        run_id = start(ns, "expense-approval", EXPENSE)
        wait_until(lambda: run_status(ns, run_id) == "waiting", 20, "the run waits")
        wait_until(lambda: rows_of(ns, run_id)[-1]["value"]["status"] == "waiting", 10)
        stale = rows_of(ns, run_id)[0]
        assert stale["value"]["status"] == "running"
        assert httpx.post(f"{ns}/status", json=[stale], timeout=10).is_success
    with dwf_serve("--data", data) as again:
        ns = ns_of(again)
        wait_until(
            lambda: rows_of(ns, run_id)[-1]["value"]["status"] == "waiting", 20, "row rewritten"
        )
        history, _ = read_history(ns, run_id)
        assert shown(rows_of(ns, run_id)[-1]) == StatusView(history).fields()


def test_a_deleted_status_stream_is_rebuilt_from_the_histories(tmp_path: Path) -> None:
    """MODEL-046: at start-up, an engine that finds no run-status stream writes one row
    per run from its history; a stream deleted while it runs is rebuilt at the next row
    it writes."""
    data = str(tmp_path / "data")
    with dwf_serve("--data", data) as served:
        ns = ns_of(served)
        done = start(ns, "expense-approval", {"report_id": "R-3"})
        waiting = start(ns, "expense-approval", EXPENSE)
        wait_until(lambda: run_status(ns, done) == "failed", 20, "first run ends")
        wait_until(lambda: run_status(ns, waiting) == "waiting", 20, "second run waits")
        wait_until(lambda: rows_of(ns, waiting) and rows_of(ns, done), 10)
        assert httpx.delete(f"{ns}/status", timeout=10).status_code in (200, 204)
        # Deleted under the running engine: the next row it writes rebuilds it all.
        to_inbox(ns, waiting, submission("s-bad", "manager", {"approved": "yes"}))
        third = start(ns, "expense-approval", EXPENSE)
        wait_until(lambda: rows_of(ns, third) and rows_of(ns, done), 20, "rebuilt while running")
        assert rows_of(ns, done)[-1]["value"]["status"] == "failed"
        # All runs end, so that no activation after the restart writes a row itself.
        for run_id in (waiting, third):
            to_inbox(ns, run_id, submission(f"s-{run_id}", "manager", {"approved": True}))
        for run_id in (waiting, third):
            wait_until(lambda r=run_id: read_history(ns, r)[1], 20, "the run's streams close")
        assert httpx.delete(f"{ns}/status", timeout=10).status_code in (200, 204)
    with dwf_serve("--data", data) as restarted:
        ns = ns_of(restarted)
        wait_until(lambda: len({r["key"] for r in status_rows(ns)}) == 3, 20, "rebuilt at start")
        for run_id in (done, waiting, third):
            assert_rows_follow_history(ns, run_id)


def test_only_the_list_right_reads_the_status_stream_and_no_client_writes_it(
    tmp_path: Path,
) -> None:
    with dwf_serve("--data", str(tmp_path / "data"), auth=True) as served:
        assert served.keys is not None
        keys = KeySet.load(served.keys)
        ns = ns_of(served)
        engine = {"Authorization": f"Bearer {mint_engine_token(keys)}"}
        run_id = unique("ui")
        value = {"run_id": run_id, "workflow": "expense-approval", "input": EXPENSE}
        insert = {"operation": "insert"}
        request = {"type": "start", "key": run_id, "value": value, "headers": insert}
        assert httpx.post(f"{ns}/index", json=request, headers=engine, timeout=10).is_success
        wait_until(lambda: status_rows(ns, engine), 20, "a row")
        lister = {"Authorization": f"Bearer {mint_client_token(keys, rights=['list'])}"}
        reader = {
            "Authorization": f"Bearer {mint_client_token(keys, runs=[run_id], rights=['read'])}"
        }
        url = f"{ns}/status?offset=-1"
        listed = httpx.get(url, headers=lister, timeout=10)
        assert listed.status_code == 200 and run_id in listed.text
        refused = httpx.get(url, headers=reader, timeout=10)
        assert refused.status_code == 403 and "list right" in refused.text
        assert httpx.get(url, timeout=10).status_code == 401
        row = json.loads(listed.text)[-1]
        forged = {**row, "value": {**row["value"], "status": "completed"}}
        everything = {
            "Authorization": "Bearer "
            + mint_client_token(
                keys, run_prefix="u", rights=["read", "submit", "cancel", "start", "list"]
            )
        }
        for method, body, extra in (
            ("POST", json.dumps([forged]), {"Content-Type": "application/json"}),
            ("POST", "", {"Stream-Closed": "true"}),
            ("PUT", "", {"Content-Type": "application/json"}),
            ("DELETE", "", {}),
        ):
            answer = httpx.request(
                method, f"{ns}/status", content=body, headers={**everything, **extra}, timeout=10
            )
            assert answer.status_code == 403, (method, extra, answer.text)
        assert "completed" not in httpx.get(url, headers=lister, timeout=10).text


def test_the_status_view_follows_inputs_in_request_order() -> None:
    """MODEL-042, sans-IO: pending inputs in seq order; an answered or expired input
    leaves the row; before any run message there is no row."""
    assert StatusView([]).fields() is None
    run = {"type": "run", "key": "r", "value": {
        "run_id": "r", "workflow": "w", "status": "waiting", "started_at": "t0",
        "waiting_for": {"inputs": ["b", "a"], "until": None}, "error": None,
        "finished_at": None, "input": None, "output": None, "protocol": "1.0"}}  # fmt: skip

    def asked(key: str, seq: int, status: str = "pending") -> dict[str, Any]:
        return {"type": "input", "key": key, "value": {
            "name": key, "seq": seq, "status": status, "prompt": f"{key}?",
            "expires_at": None}}  # fmt: skip

    view = StatusView([run, asked("b", 3), asked("a", 2)])
    fields = view.fields()
    assert fields is not None and [i["key"] for i in fields["inputs"]] == ["a", "b"]
    view.feed([asked("a", 2, "received")])
    fields = view.fields()
    assert fields is not None and [i["key"] for i in fields["inputs"]] == ["b"]
    view.feed([asked("b", 3, "expired")])
    fields = view.fields()
    assert fields is not None and fields["inputs"] == [] and view.length == 5
    message = view.message("2026-01-01T00:00:00Z")
    assert message is not None and message["value"]["history_length"] == 5


def test_dwf_runs_lists_the_last_row_of_each_run(served: Process) -> None:
    ns = ns_of(served)
    waiting = start(ns, "expense-approval", EXPENSE)
    failed = start(ns, "expense-approval", {"report_id": "R-4"})
    wait_until(lambda: run_status(ns, waiting) == "waiting", 20, "the run waits")
    wait_until(lambda: run_status(ns, failed) == "failed", 20, "the run fails")
    wait_until(lambda: rows_of(ns, failed)[-1]["value"]["status"] == "failed", 10)
    code, listed = cli("runs", "--url", served.url)
    assert code == 0
    by_id = {row["run_id"]: row for row in listed["runs"]}
    assert by_id[waiting]["status"] == "waiting" and by_id[failed]["status"] == "failed"
    code, listed = cli("runs", "--status", "waiting", "--url", served.url)
    assert code == 0 and [row["run_id"] for row in listed["runs"]] == [waiting]
    assert listed["runs"][0]["inputs"][0]["name"] == "manager"
