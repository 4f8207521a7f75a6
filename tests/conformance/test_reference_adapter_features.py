"""The reference adapter's virtual clock, its two workers and program replacement
(spec/adapter.md: ADAPT-008, ADAPT-014, ADAPT-019).

Most tests drive ``dwf serve --conformance`` as a real process over HTTP. The
two-worker test runs the adapter's workers in this process, against a stream server
process, so that it can look at each worker's own activations.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from durable_workflows.adapter import ConformanceAdapter
from durable_workflows.core import WorkflowRegistry
from durable_workflows_conformance.scrub import scrub_all
from tests.runtime.engine_support import dwf_serve, unique
from tests.support.embedded_server import embedded_server

pytestmark = pytest.mark.slow

JSON = {"Content-Type": "application/json"}


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Served:
    """A ``dwf serve --conformance`` process, reached as the suite reaches it."""

    def __init__(self, url: str) -> None:
        self.api = f"{url}/conformance/v1"
        self.ns = f"{url}/v1/stream/workflows"
        self.http = httpx.Client(timeout=30)

    def register(self, name: str, program: dict[str, Any]) -> None:
        answer = self.http.put(f"{self.api}/workflows/{name}", json={"program": program})
        assert answer.status_code == 204, answer.text

    def start(self, run_id: str, workflow: str, options: dict[str, Any] | None = None) -> None:
        if options is not None:
            answer = self.http.put(f"{self.api}/runs/{run_id}", json=options)
            assert answer.status_code == 204, answer.text
        self.http.put(f"{self.ns}/index", headers=JSON)
        request = {
            "type": "start",
            "key": run_id,
            "value": {"run_id": run_id, "workflow": workflow, "input": None},
            "headers": {"operation": "insert"},
        }
        answer = self.http.post(f"{self.ns}/index", content=json.dumps([request]), headers=JSON)
        assert answer.status_code in (200, 204), answer.text

    def settle(self, run_id: str) -> dict[str, Any]:
        answer = self.http.post(f"{self.api}/runs/{run_id}/settle", json={"timeout_ms": 20000})
        assert answer.status_code == 200, answer.text
        report: dict[str, Any] = answer.json()
        return report

    def history(self, run_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.http.get(
            f"{self.ns}/runs/{run_id}/history?offset=-1"
        ).json()
        return items

    def now(self) -> datetime:
        answer = self.http.get(f"{self.api}/clock")
        assert answer.status_code == 200, answer.text
        return _time(answer.json()["now"])

    def advance(self, ms: int) -> datetime:
        answer = self.http.post(f"{self.api}/clock", json={"advance_ms": ms})
        assert answer.status_code == 200, answer.text
        return _time(answer.json()["now"])


@contextmanager
def served() -> Iterator[Served]:
    with dwf_serve("--conformance", "--memory") as process:
        target = Served(process.url)
        try:
            yield target
        finally:
            target.http.close()


def _last_run(history: list[dict[str, Any]]) -> dict[str, Any]:
    value: dict[str, Any] = [m for m in history if m["type"] == "run"][-1]["value"]
    return value


@pytest.mark.req("ADAPT-019")
def test_the_clock_stands_still_until_the_suite_advances_it() -> None:
    before = datetime.now(UTC)
    with served() as target:
        first = target.now()
        # It starts at the real time of the adapter's start, in whole milliseconds.
        assert before - timedelta(seconds=1) <= first <= datetime.now(UTC)
        assert first.microsecond % 1000 == 0
        time.sleep(0.3)
        assert target.now() == first, "the virtual clock moved on its own"
        assert target.advance(1500) == first + timedelta(milliseconds=1500)
        assert target.now() == first + timedelta(milliseconds=1500)
        assert target.advance(0) == first + timedelta(milliseconds=1500)
        # Never backwards, and only {"advance_ms": N} moves it.
        for body in ({"advance_ms": -1}, {"now": "2020-01-01T00:00:00.000Z"}, {}):
            refused = target.http.post(f"{target.api}/clock", json=body)
            assert refused.status_code == 400, (body, refused.text)
            assert refused.json()["error"]["code"] == "bad-request"
        assert target.now() == first + timedelta(milliseconds=1500)


@pytest.mark.req("ADAPT-019", "ADAPT-017")
def test_a_sleep_fires_only_when_the_clock_passes_its_wake_at() -> None:
    program = {
        "ops": [
            {"op": "step", "name": "a", "result": 1, "as": "a"},
            {"op": "sleep", "name": "nap", "duration_ms": 3_600_000},
            {"op": "step", "name": "b", "result": 2, "as": "b"},
        ]
    }
    with served() as target:
        target.register("napper", program)
        start = target.now()
        target.start("nap-1", "napper")
        assert target.settle("nap-1")["state"] == "suspended"
        time.sleep(0.3)  # real time passing changes nothing
        history = target.history("nap-1")
        sleep = [m["value"] for m in history if m["type"] == "sleep"]
        assert len(sleep) == 1 and sleep[0]["status"] == "scheduled"
        assert _time(sleep[0]["scheduled_at"]) == start
        wake_at = _time(sleep[0]["wake_at"])
        assert wake_at == start + timedelta(hours=1)
        assert _last_run(history)["status"] == "sleeping"
        assert all(_time(m["value"]["started_at"]) == start for m in history if m["type"] == "run")

        target.advance(3_599_999)
        assert target.settle("nap-1")["state"] == "suspended"
        assert len(target.history("nap-1")) == len(history), "the sleep fired early"

        assert target.advance(1) == wake_at
        report = target.settle("nap-1")
        assert report["state"] == "finished"
        assert report["step_runs"] == {"a": 1, "b": 1}
        history = target.history("nap-1")
        fired = [m["value"] for m in history if m["type"] == "sleep"][-1]
        assert fired["status"] == "completed"
        assert _time(fired["fired_at"]) == wake_at
        final = _last_run(history)
        assert final["output"] == {"a": 1, "b": 2}
        assert _time(final["finished_at"]) == wake_at


@pytest.mark.req("ADAPT-019")
def test_a_retry_and_an_input_timeout_wait_for_the_virtual_clock() -> None:
    program = {
        "ops": [
            {
                "op": "step",
                "name": "flaky",
                "fail_attempts": 1,
                "result": "ok",
                "as": "flaky",
                "retry": {"max_attempts": 2, "initial_interval_ms": 600_000},
            },
            {
                "op": "input",
                "name": "ask",
                "schema": True,
                "timeout_ms": 86_400_000,
                "as": "answer",
                "on_expired": {"default": "nobody answered"},
            },
        ]
    }
    with served() as target:
        target.register("patient", program)
        target.start("patient-1", "patient")
        assert target.settle("patient-1")["state"] == "suspended"
        history = target.history("patient-1")
        failed = [m["value"] for m in history if m["type"] == "step"][-1]
        assert failed["status"] == "retrying"
        retry_at = _time(failed["retry_at"])
        assert _time(_last_run(history)["waiting_for"]["until"]) == retry_at

        target.advance(int((retry_at - target.now()).total_seconds() * 1000) - 1)
        assert target.settle("patient-1")["step_runs"] == {"flaky": 1}
        target.advance(1)
        assert target.settle("patient-1")["step_runs"] == {"flaky": 2}
        history = target.history("patient-1")
        second = [m["value"] for m in history if m["type"] == "step" and m["value"]["attempt"] == 2]
        assert _time(second[0]["started_at"]) == retry_at
        asked = [m["value"] for m in history if m["type"] == "input"][-1]
        assert asked["status"] == "pending"
        expires_at = _time(asked["expires_at"])
        assert expires_at == retry_at + timedelta(days=1)

        target.advance(86_399_999)
        assert target.settle("patient-1")["state"] == "suspended"
        target.advance(1)
        assert target.settle("patient-1")["state"] == "finished"
        history = target.history("patient-1")
        expired = [m["value"] for m in history if m["type"] == "input"][-1]
        assert expired["status"] == "expired"
        assert _time(expired["expired_at"]) == expires_at
        assert _last_run(history)["output"] == {"flaky": "ok", "answer": "nobody answered"}


@pytest.mark.req("ADAPT-017")
def test_a_rejected_cancel_does_not_keep_the_run_from_settling() -> None:
    program = {"ops": [{"op": "sleep", "name": "nap", "duration_ms": 60_000}]}
    with served() as target:
        target.register("napper", program)
        target.start("malformed-cancel", "napper")
        assert target.settle("malformed-cancel")["state"] == "suspended"
        malformed = {
            "type": "cancel",
            "key": "c1",
            "value": {"cancel_id": "c1-other", "reason": None},
            "headers": {"operation": "insert"},
        }
        inbox = f"{target.ns}/runs/malformed-cancel/inbox"
        answer = target.http.post(inbox, content=json.dumps([malformed]), headers=JSON)
        assert answer.status_code in (200, 204), answer.text
        began = time.monotonic()
        assert target.settle("malformed-cancel")["state"] == "suspended"
        assert time.monotonic() - began < 10, "the settle waited for a decided cancel"
        rejected = [m["value"] for m in target.history("malformed-cancel")][-1]
        assert rejected["submission_id"] == "c1" and rejected["reason"] == "malformed"


@pytest.mark.req("ADAPT-008")
def test_replacing_a_program_ends_the_activation_in_progress() -> None:
    hanging = {"ops": [{"op": "step", "name": "slow", "hang_attempts": [1], "result": 1}]}
    fixed = {"ops": [{"op": "step", "name": "slow", "result": 2, "as": "slow"}]}
    with served() as target:
        target.register("deploy", hanging)
        target.start("deploy-1", "deploy")
        deadline = time.monotonic() + 10
        while not target.http.get(f"{target.api}/runs/deploy-1").json()["bodies"]:
            assert time.monotonic() < deadline, "the step body never began"
            time.sleep(0.05)
        # The body hangs until its activation ends: a deployment of the fixed program
        # ends it, and the next activation replays the history with the new program.
        target.register("deploy", fixed)
        report = target.settle("deploy-1")
        assert report["state"] == "finished"
        assert report["step_runs"] == {"slow": 2}
        assert report["activations"] >= 2
        first, second = report["bodies"]
        assert first["activation"] != second["activation"]
        final = _last_run(target.history("deploy-1"))
        assert final["status"] == "completed" and final["output"] == {"slow": 2}


# -- two workers ------------------------------------------------------------------------


@pytest.mark.req("ADAPT-014", "ADAPT-016")
@pytest.mark.parametrize("point", ["before-append", "in-step-body"])
def test_a_fault_in_a_two_worker_run_is_replaced(point: str) -> None:
    program = {
        "ops": [
            {"op": "step", "name": "a", "result": 1, "as": "a"},
            {"op": "sleep", "name": "nap", "duration_ms": 1000},
            {"op": "step", "name": "b", "result": 2, "as": "b"},
        ]
    }
    with served() as target:
        target.register("pair", program)
        options = {"workers": 2, "faults": [{"at": point, "n": 2, "action": "crash"}]}
        target.start("pair-1", "pair", options)
        assert target.settle("pair-1")["state"] == "suspended"
        target.advance(1000)
        report = target.settle("pair-1")
        assert report["state"] == "finished"
        assert report["faults_fired"] == [0]
        final = _last_run(target.history("pair-1"))
        assert final["status"] == "completed" and final["output"] == {"a": 1, "b": 2}


TWO_STEPS_AND_A_GATE = {
    "ops": [
        {"op": "step", "name": "a", "result": 1, "as": "a"},
        {"op": "input", "name": "gate", "schema": True, "as": "gate"},
        {"op": "step", "name": "b", "result": 2, "as": "b"},
        {"op": "sleep", "name": "nap", "duration_ms": 5000},
        {"op": "step", "name": "c", "result": 3, "as": "c"},
    ]
}


async def _drive(adapter: ConformanceAdapter, ns: str, run_id: str, options: Any) -> list[Any]:
    """One run of TWO_STEPS_AND_A_GATE, through the adapter's HTTP interface; returns
    the run's history."""
    transport = httpx.ASGITransport(app=adapter)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://adapter") as api,
        httpx.AsyncClient(timeout=30) as streams,
    ):

        async def settle() -> dict[str, Any]:
            answer = await api.post(
                f"/conformance/v1/runs/{run_id}/settle", json={"timeout_ms": 20000}
            )
            assert answer.status_code == 200, answer.text
            report: dict[str, Any] = answer.json()
            return report

        if options is not None:
            answer = await api.put(f"/conformance/v1/runs/{run_id}", json=options)
            assert answer.status_code == 204, answer.text
        await streams.put(f"{ns}/index", headers=JSON)
        request = {
            "type": "start",
            "key": run_id,
            "value": {"run_id": run_id, "workflow": "gated", "input": None},
            "headers": {"operation": "insert"},
        }
        await streams.post(f"{ns}/index", content=json.dumps([request]), headers=JSON)
        assert (await settle())["state"] == "suspended"
        submission = {
            "type": "submission",
            "key": "s-1",
            "value": {"submission_id": "s-1", "request": "gate", "value": "go"},
            "headers": {"operation": "insert"},
        }
        inbox = f"{ns}/runs/{run_id}/inbox"
        answer = await streams.post(inbox, content=json.dumps([submission]), headers=JSON)
        assert answer.status_code in (200, 204), answer.text
        assert (await settle())["state"] == "suspended"
        await api.post("/conformance/v1/clock", json={"advance_ms": 5000})
        assert (await settle())["state"] == "finished"
        history: list[Any] = (await streams.get(f"{ns}/runs/{run_id}/history?offset=-1")).json()
        return history


@pytest.mark.req("ADAPT-014")
def test_a_second_worker_serves_exactly_the_runs_armed_with_two_workers() -> None:
    with embedded_server(long_poll_timeout=0.5) as server:
        ns = f"{server.stream_base}/{unique('adapter')}"
        adapter = ConformanceAdapter(ns, WorkflowRegistry())
        adapter.registry.set_program("gated", TWO_STEPS_AND_A_GATE)
        threads = adapter.worker_threads()
        assert len(threads) == 2
        for thread in threads:
            thread.start()
        try:
            one = asyncio.run(_drive(adapter, ns, "one-worker", None))
            first, second = (thread.worker for thread in threads)
            assert first is not None and second is not None
            assert first.stats.activations >= 1
            assert second.stats.activations == 0, "the second worker served a one-worker run"
            two = asyncio.run(_drive(adapter, ns, "two-workers", {"workers": 2}))
            assert second.stats.activations >= 1, "the second worker never served the run"
        finally:
            for thread in threads:
                thread.stop()
    # Fencing holds: the history of the raced run is the one a single worker records,
    # one message per position (no primitive, outcome or run event twice).
    assert scrub_all(two, "two-workers") == scrub_all(one, "one-worker")


@pytest.mark.req("INPUT-015")
def test_a_cancel_that_repeats_a_submission_id_does_not_keep_a_run_unsettled() -> None:
    """The engine records nothing for a repeated id, so settle must not wait for it."""
    from durable_workflows.adapter.app import ConformanceAdapter

    early = {"type": "submission", "key": "s2", "value": {"request": "ask-2", "value": 1}}
    repeat = {"type": "cancel", "key": "s2", "value": {"cancel_id": "s2", "reason": None}}
    sleeping = {"status": "sleeping", "waiting_for": {"inputs": [], "until": None}}
    assert ConformanceAdapter._inbox_decided([], [early, repeat], sleeping)
    cancel = {"type": "cancel", "key": "c1", "value": {"cancel_id": "c1", "reason": None}}
    assert not ConformanceAdapter._inbox_decided([], [early, cancel], sleeping)
