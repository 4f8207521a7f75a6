"""The official Durable Streams server conformance suite against our server.

``@durable-streams/server-conformance-tests`` (vitest) runs against ``dwf streams
serve`` started as a real process, once with SQLite storage and once in memory,
with the reserved subscription APIs enabled. Every one of its tests must pass
(the Node reference server itself passes 332 of them). Missing ``node`` or npm
peers is a failure with the fix in the message, not a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO_ROOT
from tests.support.embedded_server import embedded_server

PEERS = REPO_ROOT / "peers"
SUITE_PACKAGE = PEERS / "node_modules" / "@durable-streams" / "server-conformance-tests"
VITEST = PEERS / "node_modules" / ".bin" / "vitest"
WRAPPER = "conformance.test.mjs"
#: Tests in @durable-streams/server-conformance-tests 0.3.6 with subscriptions on.
EXPECTED_TESTS = 338
SUITE_TIMEOUT = 300

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def _prerequisites() -> None:
    if shutil.which("node") is None:
        pytest.fail("Not testable: node is not on PATH (the official suite runs on Node.js)")
    for needed in (SUITE_PACKAGE / "package.json", VITEST):
        if not needed.exists():
            pytest.fail(
                f"Not testable: {needed.relative_to(REPO_ROOT)} is missing; run `make peers`"
            )


def _failures(report: dict[str, Any]) -> list[str]:
    lines = []
    for file_result in report.get("testResults", []):
        for test in file_result.get("assertionResults", []):
            if test.get("status") != "passed":
                message = (test.get("failureMessages") or [""])[0].splitlines()
                lines.append(f"{test['status']}: {test['fullName']} -- {message[:1]}")
    return lines


@pytest.mark.parametrize("storage", ["sqlite", "memory"])
def test_official_suite_passes_every_test(storage: str, tmp_path: Path) -> None:
    _prerequisites()
    data_dir = tmp_path / "data" if storage == "sqlite" else None
    report_path = tmp_path / "vitest.json"
    with embedded_server(data_dir=data_dir, long_poll_timeout=0.5) as server:
        env = {
            **os.environ,
            "CONFORMANCE_TEST_URL": server.base_url,
            "SUBSCRIPTIONS": "1",
            "CI": "1",
        }
        run = subprocess.run(
            [str(VITEST), "run", WRAPPER, "--reporter=json", f"--outputFile={report_path}"],
            cwd=PEERS,
            env=env,
            capture_output=True,
            text=True,
            timeout=SUITE_TIMEOUT,
            check=False,
        )
    if not report_path.is_file():
        pytest.fail(f"vitest wrote no report (exit {run.returncode}): {run.stderr[-3000:]}")
    report = json.loads(report_path.read_text())
    failures = _failures(report)
    summary = (
        f"{storage}: {report['numPassedTests']} passed, {report['numFailedTests']} failed, "
        f"{report['numPendingTests']} skipped of {report['numTotalTests']}"
    )
    print(summary)
    assert not failures, summary + "\n" + "\n".join(failures)
    assert report["numTotalTests"] == EXPECTED_TESTS, summary
    assert report["numPassedTests"] == EXPECTED_TESTS, summary
    assert run.returncode == 0, summary
