"""The suite's strategies generate valid, predictable scenarios."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from durable_workflows_conformance import schemas
from durable_workflows_conformance.model import predict
from durable_workflows_conformance.scenario import Scenario
from durable_workflows_conformance.strategies import REAL_MIN_MS, Features, scenarios

ALL = Features(
    frozenset(
        {"virtual-clock", "parallel", "records", "patches", "crash-injection", "restart-injection"}
    )
)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@FAST
@given(scenarios(Features(), faults=True))
def test_core_scenarios_validate_and_are_predictable(scenario: Scenario) -> None:
    _check(scenario)


@FAST
@given(scenarios(ALL, faults=True))
def test_scenarios_with_every_feature_validate_and_are_predictable(scenario: Scenario) -> None:
    _check(scenario)


def _check(scenario: Scenario) -> None:
    schemas.check("program", scenario.program)
    schemas.check("workflow", {"program": scenario.program})
    schemas.check("run-options", scenario.options())
    for sub in scenario.submissions:
        if not sub.malformed:
            assert schemas.identify(sub.message(), "inbox") == "input-submitted"
    prediction = predict(scenario)
    assert prediction.status in ("completed", "failed")
    for message in prediction.history:
        assert message["type"] in ("run", "step", "sleep", "input", "record", "patch", "submission")


@FAST
@given(scenarios(Features()))
def test_without_a_virtual_clock_durations_stay_short(scenario: Scenario) -> None:
    def walk(ops: list[dict[str, object]]) -> None:
        for op in ops:
            if op["op"] == "sleep":
                duration = op["duration_ms"]
                assert isinstance(duration, int) and REAL_MIN_MS <= duration <= 1000
            retry = op.get("retry")
            if isinstance(retry, dict):
                assert retry["initial_interval_ms"] >= REAL_MIN_MS
            if op["op"] == "input" and op.get("timeout_ms") is not None:
                assert op["timeout_ms"] == 1000
            for key in ("ops", "then", "else"):
                if isinstance(op.get(key), list):
                    walk(op[key])  # type: ignore[arg-type]

    walk(scenario.program["ops"])
