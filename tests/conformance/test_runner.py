"""The conformance runner's plumbing: options, exit statuses, baseline, reports.

These tests point the runner at a FAKE adapter (fake_adapter.py) that answers only
the identity and error endpoints, and select only the checks of those endpoints.
Nothing here is evidence that any engine conforms.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from durable_workflows_conformance import schemas
from durable_workflows_conformance.cli import Outcome, main
from durable_workflows_conformance.plugin import CheckResult, selected

from .fake_adapter import fake_adapter

IDENTITY = ["--req", "ADAPT-00[1-6]", "--seed", "7"]
INFO_CHECK = "test_adapter.py::test_info_validates_and_names_protocol_1_0"


def _report(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(path.read_text())
    schemas.check("report", report)
    return report


def test_no_target_is_a_harness_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DWF_CONFORMANCE_TARGET", raising=False)
    out = tmp_path / "r.json"
    assert main(["--report-json", str(out)]) == 2
    report = _report(out)
    assert report["exit_status"] == 2 and report["target"]["url"] is None


def test_an_unreachable_adapter_is_a_harness_error() -> None:
    assert main(["--target-url", "http://127.0.0.1:9", *IDENTITY]) == 2


def test_the_target_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fake_adapter() as fake:
        monkeypatch.setenv("DWF_CONFORMANCE_TARGET", fake.url)
        out = tmp_path / "r.json"
        assert main([*IDENTITY, "--report-json", str(out)]) == 0
    report = _report(out)
    assert report["target"]["url"] == fake.url
    assert report["target"]["info"]["adapter"]["name"] == "fake-adapter-for-runner-tests"


def test_passing_checks_exit_0_and_reports_validate(tmp_path: Path) -> None:
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    with fake_adapter() as fake:
        code = main(
            ["--target-url", fake.url, *IDENTITY, "--report-json", str(out), "--report-md", str(md)]
        )
    assert code == 0
    report = _report(out)
    assert report["seed"] == 7 and report["profile"] == "quick"
    assert {t["outcome"] for t in report["tests"]} == {"passed"}
    rows = {r["id"]: r for r in report["requirements"]}
    assert rows["ADAPT-004"]["status"] == "passed"
    assert rows["REPLAY-023"]["status"] == "not-run"
    text = md.read_text()
    assert "| ADAPT-004 | MUST | passed |" in text
    assert "seed: 7" in text


def test_a_must_failure_exits_1(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with fake_adapter(info_valid=False) as fake:
        assert main(["--target-url", fake.url, *IDENTITY, "--report-json", str(out)]) == 1
    report = _report(out)
    failed = [t for t in report["tests"] if t["outcome"] == "failed"]
    assert [t["id"] for t in failed] == [INFO_CHECK]
    assert "protocol_versions" in failed[0]["message"]


def test_an_expected_failure_is_not_an_error_and_a_stale_entry_is(tmp_path: Path) -> None:
    baseline = tmp_path / "expected.yaml"
    baseline.write_text(f"{INFO_CHECK}: the fake reports a bad version on purpose\n")
    with fake_adapter(info_valid=False) as fake:
        assert (
            main(["--target-url", fake.url, *IDENTITY, "--expected-failures", str(baseline)]) == 0
        )
    out = tmp_path / "r.json"
    with fake_adapter() as fake:
        code = main(
            ["--target-url", fake.url, *IDENTITY, "--expected-failures", str(baseline),
             "--report-json", str(out)]
        )  # fmt: skip
    assert code == 1
    assert _report(out)["stale"] == [INFO_CHECK]


def test_an_unreadable_baseline_is_a_harness_error(tmp_path: Path) -> None:
    with fake_adapter() as fake:
        missing = str(tmp_path / "nope.yaml")
        assert main(["--target-url", fake.url, *IDENTITY, "--expected-failures", missing]) == 2


def test_a_feature_asked_for_but_not_declared_is_not_testable(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with fake_adapter() as fake:
        code = main(
            ["--target-url", fake.url, "--req", "ADAPT-019", "--feature", "virtual-clock",
             "--report-json", str(out)]
        )  # fmt: skip
    assert code == 1
    report = _report(out)
    (test,) = report["tests"]
    assert test["outcome"] == "not-testable"
    assert test["message"].startswith("Not testable:")
    assert report["summary"]["MUST"]["not_testable"] == 1


def test_an_undeclared_optional_feature_is_not_run(tmp_path: Path) -> None:
    with fake_adapter() as fake:
        assert main(["--target-url", fake.url, "--req", "ADAPT-019"]) == 2  # nothing selected


def _result(outcome: str, *reqs: str) -> CheckResult:
    return CheckResult(id=f"t-{outcome}-{'-'.join(reqs)}", requirements=list(reqs),
                      outcome=outcome, duration_ms=1, message=None)  # fmt: skip


def test_a_should_failure_fails_only_under_strict() -> None:
    index = {"X-001": {"level": "SHOULD"}, "X-002": {"level": "MUST"}}
    results = [_result("failed", "X-001"), _result("passed", "X-002")]
    assert Outcome(results, {}, False, index).exit_status() == 0
    assert Outcome(results, {}, True, index).exit_status() == 1
    rows = {r["id"]: r["status"] for r in Outcome(results, {}, False, index).requirement_rows()}
    assert rows == {"X-001": "failed", "X-002": "passed"}


def test_selection_takes_globs_and_prefixes() -> None:
    assert selected(["REPLAY-023"], ["REPLAY-*"])
    assert selected(["REPLAY-023"], ["REPLAY-02"])
    assert selected(["REPLAY-023"], [])
    assert not selected(["INPUT-001"], ["REPLAY"])
    assert not selected([], ["REPLAY"])
