"""The suite runs from an installed wheel, with no repository checkout around it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .fake_adapter import fake_adapter

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_installed_suite_runs_against_a_target(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("durable_workflows-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    report = tmp_path / "report.json"
    with fake_adapter() as fake:  # the FAKE adapter: plumbing only
        result = subprocess.run(
            [sys.executable, "-m", "durable_workflows_conformance.cli", "--target-url", fake.url,
             "--req", "ADAPT-00[1-6]", "--report-json", str(report)],
            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    loaded = json.loads(report.read_text())
    assert {t["outcome"] for t in loaded["tests"]} == {"passed"}
    assert all(t["id"].startswith("test_adapter.py::") for t in loaded["tests"])
