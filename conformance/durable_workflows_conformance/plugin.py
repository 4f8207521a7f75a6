"""The pytest plugin of the suite: target fixtures, selection, per-requirement results.

Tests cite requirements with ``@pytest.mark.req("REPLAY-023", ...)`` and declare the
optional adapter features they need with ``@pytest.mark.feature("parallel")``. A test
whose feature the adapter does not declare is *not run* (the feature is optional),
unless ``--feature`` asks for it: then it fails as "Not testable". A test that raises
:class:`~.driver.NotTestable` fails the same way. A test that raises
:class:`~.driver.HarnessError` is a harness error.
"""

from __future__ import annotations

import fnmatch
import json
import os
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from .driver import HarnessError, NotTestable, Target

#: Where the running plugin is kept, for the suite's fixtures (suite/conftest.py).
PLUGIN = pytest.StashKey["ConformancePlugin"]()

#: Hypothesis profiles: ``quick`` for CI, ``thorough`` for releases.
PROFILES = {"quick": 6, "thorough": 100}
for _name, _examples in PROFILES.items():
    settings.register_profile(
        _name,
        max_examples=_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )


def requirements_index() -> dict[str, dict[str, Any]]:
    """The spec's requirements by id: the copy packaged with the suite, else the
    repository's ``spec/requirements.json``, else nothing (every level is then MUST)."""
    here = Path(__file__).resolve().parent
    candidates = [
        os.environ.get("DWF_REQUIREMENTS", ""),
        str(here / "requirements.json"),
        str(here.parents[1] / "spec" / "requirements.json"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            data = json.loads(Path(candidate).read_text(encoding="utf-8"))
            return {entry["id"]: entry for entry in data.get("requirements", [])}
    return {}


@dataclass
class CheckResult:
    id: str
    requirements: list[str]
    outcome: str  # passed | failed | not-testable | error | skipped
    duration_ms: int
    message: str | None
    #: how many examples (generated scenarios) a property ran; None for other tests
    examples: int | None = None


@dataclass
class RunConfig:
    target_url: str | None
    req: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    profile: str = "quick"


def req_ids(item: pytest.Item) -> list[str]:
    ids: list[str] = []
    for mark in item.iter_markers("req"):
        ids.extend(str(a) for a in mark.args)
    return sorted(set(ids))


def feature_names(item: pytest.Item) -> list[str]:
    names: list[str] = []
    for mark in item.iter_markers("feature"):
        names.extend(str(a) for a in mark.args)
    return names


def selected(ids: list[str], patterns: list[str]) -> bool:
    """h2spec-style selection: a glob, or a prefix of an id (``REPLAY`` or ``REPLAY-02``)."""
    if not patterns:
        return True
    return any(
        fnmatch.fnmatchcase(i, p) or i.startswith(p.rstrip("*")) for i in ids for p in patterns
    )


class ConformancePlugin:
    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.results: dict[str, CheckResult] = {}
        self.deselected: list[str] = []
        self._target: Target | None = None
        self.harness_errors: list[str] = []
        self._started: dict[str, float] = {}
        self.examples: dict[str, int] = {}

    # -- configuration -------------------------------------------------------------

    def pytest_configure(self, config: pytest.Config) -> None:
        config.addinivalue_line("markers", "req(*ids): the spec requirement ids a test checks")
        config.addinivalue_line("markers", "feature(*names): optional adapter features needed")
        settings.load_profile(self.config.profile)
        config.stash[PLUGIN] = self

    def get_target(self) -> Target:
        if self._target is None:
            if not self.config.target_url:
                raise HarnessError("no target: give --target-url or set DWF_CONFORMANCE_TARGET")
            self._target = Target(self.config.target_url)
        return self._target

    def require_features(self, item: pytest.Item) -> None:
        """Raise NotTestable when a test needs a feature the adapter does not declare
        (it runs at all only because --feature asked for it)."""
        needed = feature_names(item)
        if not needed:
            return
        offered = self.get_target().features
        missing = [f for f in needed if f not in offered]
        if missing:
            raise NotTestable(
                f"the adapter does not declare feature(s) {', '.join(missing)}, "
                "which --feature asked to test"
            )

    def count_example(self, nodeid: str) -> None:
        """A property test ran one more example (shrinking and replays included)."""
        self.examples[nodeid] = self.examples.get(nodeid, 0) + 1

    # -- selection -------------------------------------------------------------------

    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        keep: list[pytest.Item] = []
        drop: list[pytest.Item] = []
        offered: set[str] | None = None
        for item in items:
            if not selected(req_ids(item), self.config.req):
                drop.append(item)
                continue
            needed = feature_names(item)
            if needed:
                if offered is None:
                    try:
                        offered = self.get_target().features
                    except HarnessError as error:
                        self.harness_errors.append(str(error))
                        offered = set()
                wanted = offered | set(self.config.features)
                if not all(f in wanted for f in needed):
                    drop.append(item)
                    continue
            keep.append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            self.deselected.extend(item.nodeid for item in drop)
        items[:] = keep

    # -- results ---------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        excinfo = call.excinfo
        nodeid = item.nodeid
        if report.when == "setup":
            self._started[nodeid] = time.monotonic()
        outcome: str | None = None
        message: str | None = None
        if report.failed:
            if excinfo is not None and excinfo.errisinstance(NotTestable):
                outcome, message = "not-testable", f"Not testable: {excinfo.value}"
            elif excinfo is not None and excinfo.errisinstance(HarnessError):
                outcome, message = "error", f"Harness error: {excinfo.value}"
                self.harness_errors.append(str(excinfo.value))
            else:
                outcome = "failed" if report.when == "call" else "error"
                message = _last_lines(report.longreprtext)
        elif report.skipped:
            outcome, message = "skipped", _last_lines(report.longreprtext)
        elif report.when == "call":
            outcome = "passed"
        if (outcome is not None and nodeid not in self.results) or (
            outcome is not None and outcome != "passed"
        ):
            started = self._started.get(nodeid, time.monotonic())
            self.results[nodeid] = CheckResult(
                id=nodeid,
                requirements=req_ids(item),
                outcome=str(outcome),
                duration_ms=int((time.monotonic() - started) * 1000),
                message=message,
                examples=self.examples.get(nodeid),
            )
        return report

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self._target is not None:
            self._target.http.close()


def _last_lines(text: str, count: int = 60) -> str:
    lines = text.strip().splitlines()
    return "\n".join(lines[-count:])
