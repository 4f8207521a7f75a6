"""Fixtures of the suite, backed by the runner's plugin (see plugin.py)."""

from __future__ import annotations

import pytest

from durable_workflows_conformance.driver import Driver, Target
from durable_workflows_conformance.plugin import PLUGIN


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> Target:
    return request.config.stash[PLUGIN].get_target()


@pytest.fixture(scope="session")
def driver(target: Target) -> Driver:
    return Driver(target)


@pytest.fixture(autouse=True)
def _features_present(request: pytest.FixtureRequest) -> None:
    request.config.stash[PLUGIN].require_features(request.node)
