"""tools/traceability.py on fixtures, and on the repository itself: every MUST and
SHOULD of the spec maps to a check or to a written reason for exclusion, or the
build fails."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import traceability  # noqa: E402


def _fixture(tmp_path: Path, *, exclude: bool = True) -> list[str]:
    index = {
        "requirements": [
            {"id": "AREA-001", "level": "MUST"},
            {"id": "AREA-002", "level": "MUST"},
            {"id": "AREA-003", "level": "SHOULD"},
            {"id": "AREA-004", "level": "MAY"},
        ],
        "withdrawn": [{"id": "AREA-005"}],
    }
    (tmp_path / "requirements.json").write_text(json.dumps(index))
    conformance = tmp_path / "conformance"
    (conformance / "cases").mkdir(parents=True)
    (conformance / "suite.py").write_text(
        'import pytest\n\n@pytest.mark.req("AREA-001")\ndef test_a():\n    pass\n'
    )
    (conformance / "cases" / "c.yaml").write_text("- id: c1\n  requirements: [AREA-001]\n")
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_b.py").write_text(
        "from pytest import mark\n\n@mark.req('AREA-002')\ndef test_b():\n    pass\n"
    )
    exclusions = tmp_path / "exclusions.yaml"
    exclusions.write_text(
        "AREA-002: not observable through the adapter\nAREA-003: a client requirement\n"
        if exclude
        else "AREA-002: not observable through the adapter\n"
    )
    return [
        "--requirements", str(tmp_path / "requirements.json"),
        "--conformance-dir", str(conformance),
        "--tests-dir", str(tests),
        "--exclusions", str(exclusions),
    ]  # fmt: skip


def test_every_must_and_should_maps_to_a_check_or_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _fixture(tmp_path)
    assert traceability.main([*args, "--strict"]) == 0
    out = capsys.readouterr().out
    assert (
        "MUST: 2 requirements; 1 by conformance checks, 1 excluded from the suite with a "
        "reason, 0 by project tests only, 0 uncovered" in out
    )
    assert (
        "SHOULD: 1 requirements; 0 by conformance checks, 1 excluded from the suite with a "
        "reason, 0 by project tests only" in out
    )


def test_a_must_proven_only_by_project_tests_fails_strict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Deliverable of the suite: a MUST needs a language-neutral check, or a reason."""
    args = _fixture(tmp_path)
    (tmp_path / "exclusions.yaml").write_text("AREA-003: a client requirement\n")
    assert traceability.main(args) == 0
    out = capsys.readouterr().out
    assert "1 by project tests only" in out
    assert "needs a conformance check or case" in out and "AREA (1): AREA-002" in out
    assert traceability.main([*args, "--strict"]) == 1
    capsys.readouterr()
    assert traceability.main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["must_without_suite_check"] == ["AREA-002"]


def test_the_gap_is_printed_and_fails_only_under_strict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _fixture(tmp_path, exclude=False)
    assert traceability.main(args) == 0
    assert "AREA (1): AREA-003" in capsys.readouterr().out
    assert traceability.main([*args, "--strict"]) == 1


def test_unknown_withdrawn_and_stale_ids_are_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _fixture(tmp_path)
    (tmp_path / "conformance" / "test_c.py").write_text(
        "import pytest\n\n@pytest.mark.req('AREA-009', 'AREA-005', 'AREA-003')\n"
        "def test_c():\n    pass\n"
    )
    assert traceability.main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["unknown"] == ["AREA-009"]
    assert report["withdrawn"] == ["AREA-005"]
    assert report["stale_exclusions"] == ["AREA-003"]
    assert traceability.main([*args, "--strict"]) == 1


def test_an_unreadable_index_exits_2(tmp_path: Path) -> None:
    assert traceability.main(["--requirements", str(tmp_path / "missing.json")]) == 2


#: Requirements whose checks are being written right now, each with who owns them. The
#: list may only shrink: an id that gets a check or an exclusion must leave it, and no
#: other id may be uncovered.
PENDING: dict[str, str] = {}


def test_every_must_and_should_of_the_spec_is_covered_or_excluded() -> None:
    result = subprocess.run(
        [sys.executable, "tools/traceability.py", "--json"], cwd=REPO, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    gap = sorted(r["id"] for r in report["requirements"] if r["status"] == "gap")
    unexplained = sorted(set(gap) - set(PENDING))
    assert not unexplained, (
        f"MUST/SHOULD requirements with no check and no exclusion: {unexplained}; cite them "
        "with @pytest.mark.req / a case's requirements, or give a reason in "
        "conformance/exclusions.yaml"
    )
    closed = sorted(set(PENDING) - set(gap))
    assert not closed, f"covered or excluded now, remove them from PENDING: {closed}"
    assert report["unknown"] == [], f"checks cite ids the spec does not define: {report}"
    assert report["withdrawn"] == [], "checks cite withdrawn ids"
    assert report["stale_exclusions"] == [], "excluded ids that conformance checks cover"
    assert report["must_without_suite_check"] == [], (
        "MUSTs proven only by project tests: add a conformance check or case, or a reason"
    )


def test_strict_fails_exactly_when_something_is_pending() -> None:
    result = subprocess.run(
        [sys.executable, "tools/traceability.py", "--strict"], cwd=REPO, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    assert result.stdout.startswith("MUST: ")
    assert result.returncode == (1 if PENDING else 0), result.stdout
