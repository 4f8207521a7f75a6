"""tools/mutation: every mutant still applies to the engine as it is (its old text
occurs exactly once, the changed file compiles), so the standing mutation run of
docs/conformance.md cannot go stale silently; and a stale one is reported."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.support import REPO_ROOT


def _tool() -> ModuleType:
    path = REPO_ROOT / "tools" / "mutation" / "run.py"
    spec = importlib.util.spec_from_file_location("dwf_mutation_tool", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_mutant_applies_and_compiles() -> None:
    tool = _tool()
    mutants = tool.load()
    assert len(mutants) >= 20
    assert tool.check(mutants) == []
    for mutant in mutants:
        assert tool.mutated_source(mutant) != (tool.PACKAGE / mutant.file).read_text()


def test_a_stale_or_broken_mutant_is_reported() -> None:
    tool = _tool()
    stale = tool.Mutant("stale", "x", "RETRY-004", "core/api.py", "no such text", "y")
    broken = tool.Mutant(
        "broken",
        "x",
        "RETRY-004",
        "core/api.py",
        "return float(min(raw, self.max_interval_ms))",
        "return (",
    )
    problems = tool.check([stale, broken])
    assert any("stale" in p and "occurs 0 times" in p for p in problems), problems
    assert any("broken" in p and "does not compile" in p for p in problems), problems
