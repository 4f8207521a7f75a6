"""Broken engines of every class of issue 14: for each class, one mutant of
tools/mutation/mutants.yaml (the reference with one changed decision, served from a
copy of the runtime) and the quick profile's checks of the rule it breaks, which must
fail it. The full mutation score is in docs/conformance.md ("Mutation testing")."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from types import ModuleType

import pytest

from tests.support import REPO_ROOT

pytestmark = pytest.mark.slow

#: class -> (mutant, the requirements whose checks must catch it)
CLASSES = {
    "computed values": ("retry-no-backoff", ("RETRY-004",)),
    "computed deadlines": ("until-is-the-latest-deadline", ("MODEL-024",)),
    "clock": ("sleep-fires-early", ("EVT-064",)),
    "retry policy": ("attempts-from-current-code", ("RETRY-003",)),
    "engine-worded errors": ("step-failed-attempts-off-by-one", ("RETRY-019",)),
    "rejection reasons": ("expired-answer-called-already-answered", ("INPUT-017",)),
    "derived ids": ("derived-inbox-ids-shifted", ("INPUT-014",)),
    "value fidelity": ("answer-empty-containers-lost", ("EVT-010",)),
    "cross-language JSON": ("results-beyond-exact-integers-kept", ("EVT-100",)),
    "non-determinism": ("nd-ignores-sleep-names", ("REPLAY-010",)),
    "patches": ("patch-skipped-marker-taken-again", ("VER-016",)),
    "run status": ("waiting-recorded-as-sleeping", ("EVT-028",)),
}


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "dwf_mutation_tool", REPO_ROOT / "tools" / "mutation" / "run.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("klass", sorted(CLASSES))
def test_the_quick_profile_catches_a_broken_engine_of_the_class(klass: str) -> None:
    tool = _tool()
    name, reqs = CLASSES[klass]
    mutant = next(m for m in tool.load() if m.name == name)
    with tool.engine(mutant) as url:
        argv = [sys.executable, "-m", "durable_workflows.cli", "conformance"]
        argv += ["--target-url", url, "--profile", "quick", "--seed", "11", "-x", "--no-shrink"]
        for req in reqs:
            argv += ["--req", req]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        done = subprocess.run(
            argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
        )
    last = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 1, f"{name} was not caught: {last}"
    failed = re.search(r"MUST requirements: \d+ passed, (\d+) failed", last)
    assert failed is not None and int(failed.group(1)) > 0, last
