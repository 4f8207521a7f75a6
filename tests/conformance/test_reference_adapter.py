"""The reference runtime's conformance adapter (spec/adapter.md) against the suite.

``dwf serve --conformance`` runs as a real process; ``dwf conformance`` (quick profile)
drives it from another process and must pass with a report that validates.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from jsonschema import Draft202012Validator

from durable_workflows.adapter import FEATURES
from durable_workflows.schemas import registry, schema_root
from tests.runtime.engine_support import REPO_ROOT, dwf_serve

pytestmark = pytest.mark.slow


def test_the_adapter_is_off_by_default() -> None:
    with dwf_serve("--memory") as served:
        answer = httpx.get(f"{served.url}/conformance/v1/info", timeout=10)
        assert answer.status_code != 200
        assert "conformance" not in served.stderr().lower()


def test_info_declares_what_the_adapter_implements() -> None:
    with dwf_serve("--conformance", "--memory") as served:
        assert "must never be reachable in production" in served.stderr().lower()
        info = httpx.get(f"{served.url}/conformance/v1/info", timeout=10).json()
        assert info["features"] == sorted(FEATURES)
        assert info["protocol_versions"] == ["1.0"]
        assert info["namespace"] == f"{served.url}/v1/stream/workflows"
        assert {"virtual-clock", "concurrent-workers"} <= set(info["features"])
        clock = httpx.get(f"{served.url}/conformance/v1/clock", timeout=10)
        assert clock.status_code == 200
        assert set(clock.json()) == {"now"}


def test_the_quick_suite_passes_against_the_reference_adapter(tmp_path: Path) -> None:
    """With a random seed: the runner picks one and reports it (printed here, and in the
    assertion message, so that a failure can be replayed with ``--seed``)."""
    report_path = tmp_path / "report.json"
    with dwf_serve("--conformance", "--memory") as served:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "durable_workflows.cli",
                "conformance",
                "--target-url",
                served.url,
                "--profile",
                "quick",
                "--report-json",
                str(report_path),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            timeout=480,
        )
    output = done.stdout.decode() + done.stderr.decode()
    seed = json.loads(report_path.read_text()).get("seed") if report_path.exists() else None
    print(f"conformance suite seed: {seed}")
    assert done.returncode == 0, f"seed {seed}\n" + output[-4000:]
    report = json.loads(report_path.read_text())
    schema = json.loads((schema_root() / "conformance" / "report.json").read_text())
    errors = list(Draft202012Validator(schema, registry=registry()).iter_errors(report))
    assert not errors, [e.message for e in errors[:5]]
    assert report["exit_status"] == 0
    assert report["summary"]["MUST"]["failed"] == 0
    assert report["target"]["info"]["features"] == sorted(FEATURES)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _start(served_url: str, run_id: str, workflow: str) -> None:
    index = f"{served_url}/v1/stream/workflows/index"
    headers = {"Content-Type": "application/json"}
    httpx.put(index, headers=headers, timeout=10)
    request = {
        "type": "start",
        "key": run_id,
        "value": {"run_id": run_id, "workflow": workflow, "input": None},
        "headers": {"operation": "insert"},
    }
    answer = httpx.post(index, content=json.dumps([request]), headers=headers, timeout=10)
    assert answer.status_code in (200, 204), answer.text


@pytest.mark.parametrize("point", ["before-append", "after-append", "in-step-body"])
def test_a_crash_ends_the_activation_and_a_fresh_one_replays(point: str) -> None:
    program = {
        "ops": [
            {"op": "step", "name": "a", "result": 1, "as": "a"},
            {"op": "step", "name": "b", "result": 2, "as": "b"},
        ]
    }
    with dwf_serve("--conformance", "--memory") as served:
        api = f"{served.url}/conformance/v1"
        assert httpx.put(f"{api}/workflows/two", json={"program": program}).status_code == 204
        options = {"faults": [{"at": point, "n": 2, "action": "crash"}]}
        assert httpx.put(f"{api}/runs/r1", json=options).status_code == 204
        _start(served.url, "r1", "two")
        report = httpx.post(f"{api}/runs/r1/settle", json={"timeout_ms": 20000}, timeout=30)
        assert report.status_code == 200, report.text
        body = report.json()
        assert body["state"] == "finished"
        assert body["faults_fired"] == [0]
        assert body["activations"] >= 2
        history = httpx.get(f"{served.url}/v1/stream/workflows/runs/r1/history?offset=-1").json()
        assert history[-1]["value"]["status"] == "completed"
        assert history[-1]["value"]["output"] == {"a": 1, "b": 2}
        # The armed run cannot be re-armed once its history exists (ADAPT-012).
        again = httpx.put(f"{api}/runs/r1", json={})
        assert again.status_code == 400
        assert again.json()["error"]["code"] == "bad-request"


def test_always_replay_ends_the_activation_after_each_append() -> None:
    program = {
        "ops": [
            {"op": "step", "name": "a", "result": 1, "as": "a"},
            {
                "op": "step",
                "name": "b",
                "fail_attempts": 1,
                "result": 2,
                "as": "b",
                "retry": {"initial_interval_ms": 10},
            },
        ]
    }
    with dwf_serve("--conformance", "--memory") as served:
        api = f"{served.url}/conformance/v1"
        assert httpx.put(f"{api}/workflows/two", json={"program": program}).status_code == 204
        assert httpx.put(f"{api}/runs/r2", json={"always_replay": True}).status_code == 204
        _start(served.url, "r2", "two")
        report = httpx.post(f"{api}/runs/r2/settle", json={"timeout_ms": 20000}, timeout=30)
        assert report.status_code == 200, report.text
        # The retry waits (10 ms and its jitter) on the adapter's virtual clock: move it on.
        assert report.json()["state"] == "suspended"
        history = httpx.get(f"{served.url}/v1/stream/workflows/runs/r2/history?offset=-1").json()
        until = _time(history[-1]["value"]["waiting_for"]["until"])
        now = _time(httpx.get(f"{api}/clock").json()["now"])
        advance = int((until - now).total_seconds() * 1000)
        assert httpx.post(f"{api}/clock", json={"advance_ms": advance}).status_code == 200
        report = httpx.post(f"{api}/runs/r2/settle", json={"timeout_ms": 20000}, timeout=30)
        assert report.status_code == 200, report.text
        body = report.json()
        assert body["state"] == "finished"
        assert body["step_runs"] == {"a": 1, "b": 2}
        history = httpx.get(f"{served.url}/v1/stream/workflows/runs/r2/history?offset=-1").json()
        appends = {m["key"] for m in history if m["type"] == "step"}
        assert appends == {"a", "b"}
        assert body["activations"] >= 4  # a fresh activation after every append
