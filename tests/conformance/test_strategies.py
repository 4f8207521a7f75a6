"""The suite's strategies generate valid, predictable scenarios."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from durable_workflows_conformance import schemas
from durable_workflows_conformance.model import non_determinism, predict
from durable_workflows_conformance.scenario import Scenario, Submission
from durable_workflows_conformance.strategies import (
    GATE,
    REAL_MIN_MS,
    REAL_TIMEOUT_MS,
    Features,
    cancel_points,
    mutations,
    nd_programs,
    scenarios,
)

OPTIONAL = {
    "parallel",
    "records",
    "patches",
    "crash-injection",
    "restart-injection",
    "cancellation",
    "step-timeouts",
}
ALL = Features(frozenset({"virtual-clock", *OPTIONAL}))
REAL = Features(frozenset(OPTIONAL))
FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@FAST
@given(scenarios(Features(), faults=True))
def test_core_scenarios_validate_and_are_predictable(scenario: Scenario) -> None:
    _check(scenario)


@FAST
@given(scenarios(ALL, faults=True))
def test_scenarios_with_every_feature_validate_and_are_predictable(scenario: Scenario) -> None:
    _check(scenario)


@FAST
@given(scenarios(REAL, faults=True, cancels=True))
def test_cancel_plans_validate_and_are_predictable(scenario: Scenario) -> None:
    _check(scenario)
    assert any(s.cancel for s in scenario.submissions)


@FAST
@given(scenarios(REAL, timeouts=True))
def test_timeout_steps_on_a_real_clock_hang_and_stay_short(scenario: Scenario) -> None:
    _check(scenario)
    steps = [
        op
        for op in _walk(scenario.program["ops"])
        if op["op"] == "step" and op.get("timeout_ms") is not None
    ]
    assert steps
    for op in steps:
        assert REAL_TIMEOUT_MS[0] <= op["timeout_ms"] <= REAL_TIMEOUT_MS[1]
    assert any(op.get("hang_attempts") for op in steps)


@FAST
@given(scenarios(ALL, timeouts=True))
def test_on_a_virtual_clock_hanging_attempts_have_short_real_timeouts(scenario: Scenario) -> None:
    """ADAPT-020: the timeout of a hanging attempt bounds real time, so it stays short."""
    _check(scenario)
    for op in _walk(scenario.program["ops"]):
        if op.get("hang_attempts"):
            assert REAL_TIMEOUT_MS[0] <= op["timeout_ms"] <= REAL_TIMEOUT_MS[1]


def test_on_a_virtual_clock_attempts_still_hang() -> None:
    def hangs(scenario: Scenario) -> bool:
        return any(op.get("hang_attempts") for op in _walk(scenario.program["ops"]))

    found = find(scenarios(ALL, timeouts=True), hangs, settings=settings(database=None))
    assert hangs(found)


def test_a_cancel_at_rest_on_a_real_clock_waits_for_an_input_without_deadline() -> None:
    sleep = {"op": "sleep", "name": "nap", "duration_ms": 300}
    ask = {"op": "input", "name": "ok", "schema": True, "as": "ok"}
    timed = {"op": "input", "name": "t", "schema": True, "timeout_ms": 1000, "as": "t"}
    timed["on_expired"] = {"default": None}
    scenario = Scenario({"ops": [sleep, timed, ask]}, None, (Submission("s1", "ok", 1),))
    assert cancel_points(scenario, REAL) == [3]
    assert cancel_points(scenario, ALL) == [1, 2, 3]


@FAST
@given(st.data())
def test_changed_programs_validate_and_the_model_judges_them(data: st.DataObject) -> None:
    features = ALL if data.draw(st.booleans()) else Features()
    ops = data.draw(nd_programs(features))
    program = {"ops": [*ops, GATE]}
    changed = {"ops": [*data.draw(mutations(ops, features)), GATE]}
    schemas.check("program", program)
    schemas.check("program", changed)
    history = predict(Scenario(program, None, (Submission("g", "gate", 1),))).history
    waiting = next(i for i, m in enumerate(history) if m["value"].get("status") == "waiting")
    assert non_determinism(history[: waiting + 1], program, None) is None
    details = non_determinism(history[: waiting + 1], changed, None)
    if details is not None:
        assert details["recorded"] is not None
        assert details["recorded"]["kind"] != "patch"


def _walk(ops: list[Any]) -> list[Any]:
    out: list[Any] = []
    for op in ops:
        out.append(op)
        for key in ("ops", "then", "else"):
            if isinstance(op.get(key), list):
                out.extend(_walk(op[key]))
        for case in op.get("cases") or []:
            out.extend(_walk(case["ops"]))
    return out


def _check(scenario: Scenario) -> None:
    schemas.check("program", scenario.program)
    schemas.check("workflow", {"program": scenario.program})
    schemas.check("run-options", scenario.options())
    for sub in scenario.submissions:
        if not sub.malformed:
            event = "cancel-requested" if sub.cancel else "input-submitted"
            assert schemas.identify(sub.message(), "inbox") == event
    prediction = predict(scenario)
    assert prediction.status in ("completed", "failed", "cancelled")
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
