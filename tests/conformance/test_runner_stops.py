"""The runner's options for quick answers: ``-x``/``--maxfail``, ``--no-shrink``, and
the harness error for a suite module that cannot be collected (which ``-x`` would
otherwise turn into a clean-looking exit 0). Against the FAKE adapter (fake_adapter.py):
nothing here is evidence that any engine conforms."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import Phase, settings

from durable_workflows_conformance import cli
from durable_workflows_conformance.cli import main

from .fake_adapter import fake_adapter

IDENTITY = ["--req", "ADAPT-00[1-6]", "--seed", "7"]
INFO_CHECK = "test_adapter.py::test_info_validates_and_names_protocol_1_0"


def _tests(path: Path) -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = json.loads(path.read_text())["tests"]
    return tests


def test_exitfirst_stops_at_the_first_failing_check(tmp_path: Path) -> None:
    first, every = tmp_path / "x.json", tmp_path / "all.json"
    with fake_adapter(info_valid=False) as fake:
        assert main(["--target-url", fake.url, *IDENTITY, "-x", "--report-json", str(first)]) == 1
        assert main(["--target-url", fake.url, *IDENTITY, "--report-json", str(every)]) == 1
    assert [t["id"] for t in _tests(first)] == [INFO_CHECK]
    assert len(_tests(every)) > 1
    assert cli.parser().parse_args(["--maxfail", "3"]).maxfail == 3


def test_no_shrink_runs_the_profile_without_its_shrink_phase() -> None:
    with fake_adapter() as fake:
        assert main(["--target-url", fake.url, *IDENTITY, "--no-shrink"]) == 0
    profile = settings.get_profile("quick-no-shrink")
    assert Phase.shrink not in profile.phases
    assert profile.max_examples == settings.get_profile("quick").max_examples


@pytest.mark.parametrize("stop", [[], ["-x"]], ids=["whole-run", "exitfirst"])
def test_a_suite_module_that_cannot_be_collected_is_a_harness_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop: list[str]
) -> None:
    suite = tmp_path / "suite"
    shutil.copytree(cli.SUITE_DIR, suite, ignore=shutil.ignore_patterns("__pycache__"))
    (suite / "test_aaa_broken.py").write_text("import no_such_module_for_the_runner_test\n")
    monkeypatch.setattr(cli, "SUITE_DIR", suite)
    out = tmp_path / "r.json"
    with fake_adapter() as fake:
        code = main(["--target-url", fake.url, *IDENTITY, *stop, "--report-json", str(out)])
    assert code == 2
    assert json.loads(out.read_text())["exit_status"] == 2
