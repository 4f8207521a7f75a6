"""The conformance suite is tested too: it must catch deliberately broken engines.

Each engine is the reference with exactly ONE bug (``broken_engines/``), served as
``dwf serve --conformance --memory`` serves the reference. The suite runs against it as
``dwf conformance --profile quick --seed 11`` does, with a selection (``--req``) that
holds the check meant to catch the bug, ``--exitfirst`` and ``--no-shrink`` to stay
within the CI budget. Each test asserts that the report lists the expected check among
the failures, with the failure message that names the bug, and that the engine process
was still serving (so no crash and no harness error stood in for the catch). The
control runs the union of the selections against the unbroken reference: it passes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from durable_workflows.adapter import FEATURES
from tests.support import REPO_ROOT

pytestmark = pytest.mark.slow

START_TIMEOUT = 30.0
SUITE_TIMEOUT = 150.0
SEED = "11"


@dataclass(frozen=True)
class Bug:
    """A broken engine and how the suite must catch it."""

    engine: str
    #: ``--req`` selection: the requirements the catching check cites.
    req: tuple[str, ...]
    #: The check (report test id) that must be among the failures.
    check: str
    #: Text its failure must show (in the suite's output): the symptom of THIS bug, or
    #: one of several when the bug shows in more than one way (a race decides which).
    symptom: str | tuple[str, ...]
    #: The adapter feature the catching check needs, if any.
    feature: str | None = None

    def testable(self) -> bool:
        return self.feature is None or self.feature in FEATURES


CASES = "test_cases.py::test_case"

BUGS = [
    pytest.param(
        Bug(
            "rerun-completed-steps",
            ("REPLAY-023",),
            CASES + "[completed-step-bodies-never-run-again]",
            "ran again after its outcome",
        ),
        id="rerun-completed-steps-caught-by-case-completed-step-bodies-never-run-again",
    ),
    pytest.param(
        Bug(
            "last-valid-input-wins",
            ("INPUT-019",),
            CASES + "[first-of-two-valid-answers-wins]",
            "output {'n': 2}",
        ),
        id="last-valid-input-wins-caught-by-case-first-of-two-valid-answers-wins",
    ),
    pytest.param(
        Bug(
            "no-fencing",
            ("FENCE-004",),
            CASES + "[two-workers-record-each-message-once]",
            (
                "the history differs from what the specification predicts",
                # The unfenced loser also records on after the winner ended the run and
                # closed the inbox: it fails the run with InboxClosed (SEC-028).
                "run status 'failed', expected 'completed'",
                # Its appends carry no Stream-Seq, so the adapter cannot place them and
                # its body log (ADAPT-018) shows a body whose start it cannot see as
                # durable; which of the three checks fires first depends on the race.
                "began before its start was durable",
            ),
            feature="concurrent-workers",
        ),
        id="no-fencing-caught-by-case-two-workers-record-each-message-once",
    ),
    pytest.param(
        Bug(
            "clock-on-replay",
            ("EVT-009",),
            CASES + "[fixed-fields-hold-across-activations]",
            "changes fixed field(s)",
        ),
        id="clock-on-replay-caught-by-case-fixed-fields-hold-across-activations",
    ),
    pytest.param(
        Bug(
            "drop-early-submissions",
            ("INPUT-020",),
            CASES + "[kept-submission-for-a-request-never-made]",
            "no message matches {'type': 'submission', 'key': 's-early'",
        ),
        id="drop-early-submissions-caught-by-case-kept-submission-for-a-request-never-made",
    ),
    pytest.param(
        Bug(
            "out-of-order",
            ("MODEL-026",),
            CASES + "[resumed-run-records-run-resumed-first]",
            "while the run is suspended",
        ),
        id="out-of-order-caught-by-case-resumed-run-records-run-resumed-first",
    ),
    pytest.param(
        Bug(
            "accept-schema-invalid",
            ("INPUT-026",),
            CASES + "[schema-invalid-then-valid]",
            "output {'n': -4}",
        ),
        id="accept-schema-invalid-caught-by-case-schema-invalid-then-valid",
    ),
    pytest.param(
        Bug(
            "append-to-later-versions",
            ("VER-003",),
            CASES + "[later-major-history-is-left-alone]",
            "the engine appended to a history it must leave alone",
        ),
        id="append-to-later-versions-caught-by-case-later-major-history-is-left-alone",
    ),
    pytest.param(
        Bug(
            "traceback-in-errors",
            ("EVT-018",),
            CASES + "[errors-carry-no-host-diagnostics]",
            "records host diagnostics in an error",
        ),
        id="traceback-in-errors-caught-by-case-errors-carry-no-host-diagnostics",
    ),
    pytest.param(
        Bug(
            "final-rejections-reversed",
            ("MODEL-037",),
            CASES + "[final-rejections-follow-inbox-order]",
            "not in inbox order",
        ),
        id="final-rejections-reversed-caught-by-case-final-rejections-follow-inbox-order",
    ),
    pytest.param(
        Bug(
            "history-before-inbox",
            ("MODEL-016",),
            "test_properties.py::test_the_engine_writes_its_streams_as_fencing_requires",
            "before the inbox",
            feature="request-log",
        ),
        id="history-before-inbox-caught-by-the-request-log-property",
    ),
    pytest.param(
        Bug(
            "status-written-once",
            ("MODEL-044",),
            "test_properties.py::test_the_run_status_stream_follows_the_history",
            "is not what its whole history says",
        ),
        id="status-written-once-caught-by-the-run-status-property",
    ),
]


@dataclass
class Engine:
    process: subprocess.Popen[bytes]
    url: str
    log_dir: Path

    def stderr(self) -> str:
        return (self.log_dir / "stderr.log").read_text(errors="replace")


@contextmanager
def broken_engine(bug: str) -> Iterator[Engine]:
    """``python -m tests.conformance.broken_engines BUG`` on a free 127.0.0.1 port."""
    log_dir = Path(tempfile.mkdtemp(prefix="dwf-broken-"))
    out_path, err_path = log_dir / "stdout.log", log_dir / "stderr.log"
    args = ["--port", "0", "--long-poll-timeout", "2"]
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.conformance.broken_engines", bug, *args],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ),
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        url = None
        while url is None and time.monotonic() < deadline and process.poll() is None:
            ready = [
                line
                for line in out_path.read_text(errors="replace").splitlines()
                if line.startswith("ready ")
            ]
            if ready:
                url = ready[0].split()[1]
            else:
                time.sleep(0.05)
        if url is None:
            raise RuntimeError(f"engine {bug} did not start: {err_path.read_text()}")
        yield Engine(process, url, log_dir)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def run_suite(url: str, req: list[str], workdir: Path) -> tuple[int, dict[str, Any], str]:
    """``dwf conformance`` (quick profile, fixed seed) against ``url``; the hypothesis
    database lives in ``workdir``, so no earlier run's examples come back."""
    report = workdir / "report.json"
    selection = [arg for r in req for arg in ("--req", r)]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "durable_workflows.cli",
            "conformance",
            "--target-url",
            url,
            "--profile",
            "quick",
            "--seed",
            SEED,
            *selection,
            "--exitfirst",
            "--no-shrink",
            "--report-json",
            str(report),
        ],
        cwd=workdir,
        capture_output=True,
        timeout=SUITE_TIMEOUT,
    )
    output = done.stdout.decode() + done.stderr.decode()
    loaded: dict[str, Any] = json.loads(report.read_text()) if report.exists() else {}
    return done.returncode, loaded, output


@pytest.mark.parametrize("bug", BUGS)
def test_the_suite_catches_a_broken_engine(bug: Bug, tmp_path: Path) -> None:
    if not bug.testable():
        pytest.skip(f"the reference adapter does not offer {bug.feature}")
    with broken_engine(bug.engine) as engine:
        code, report, output = run_suite(engine.url, list(bug.req), tmp_path)
        alive = engine.process.poll() is None
    assert alive, f"the {bug.engine} engine died: {engine.stderr()[-2000:]}"
    assert code == 1, f"exit {code} (1 = a conformance failure)\n{output[-4000:]}"
    failed = {t["id"]: t for t in report["tests"] if t["outcome"] == "failed"}
    assert failed, f"no failing check\n{output[-4000:]}"
    assert bug.check in failed, f"{bug.check} not among the failures {sorted(failed)}"
    # The report keeps the end of a failure; the suite's output has all of it.
    symptoms = (bug.symptom,) if isinstance(bug.symptom, str) else bug.symptom
    assert any(symptom in output for symptom in symptoms), (
        f"{bug.check} failed for another reason:\n{output[-6000:]}"
    )
    assert not [t for t in report["tests"] if t["outcome"] == "error"], output[-4000:]


def test_the_same_selections_pass_against_the_reference(tmp_path: Path) -> None:
    """Control: the unbroken reference passes every selection above, so each failure
    comes from its bug."""
    bugs = [param.values[0] for param in BUGS]
    testable = [bug for bug in bugs if isinstance(bug, Bug) and bug.testable()]
    req = sorted({r for bug in testable for r in bug.req})
    with broken_engine("none") as engine:
        code, report, output = run_suite(engine.url, req, tmp_path)
    assert code == 0, output[-4000:]
    passed = {t["id"] for t in report["tests"] if t["outcome"] == "passed"}
    missing = [bug.check for bug in testable if bug.check not in passed]
    assert not missing, f"these checks did not run and pass against the reference: {missing}"
