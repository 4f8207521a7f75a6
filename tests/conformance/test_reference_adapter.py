"""The reference runtime's conformance adapter (spec/adapter.md) against the suite.

``dwf serve --conformance`` runs as a real process; ``dwf conformance`` (quick profile)
drives it from another process and must pass with a report that validates.
"""

from __future__ import annotations

import json
import subprocess
import sys
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
        clock = httpx.get(f"{served.url}/conformance/v1/clock", timeout=10)
        assert clock.status_code == 501
        assert clock.json()["error"]["code"] == "unsupported"


def test_the_quick_suite_passes_against_the_reference_adapter(tmp_path: Path) -> None:
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
            timeout=240,
        )
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, output[-4000:]
    report = json.loads(report_path.read_text())
    schema = json.loads((schema_root() / "conformance" / "report.json").read_text())
    errors = list(Draft202012Validator(schema, registry=registry()).iter_errors(report))
    assert not errors, [e.message for e in errors[:5]]
    assert report["exit_status"] == 0
    assert report["summary"]["MUST"]["failed"] == 0
    assert report["target"]["info"]["features"] == sorted(FEATURES)
