"""Property-based checks: hypothesis generates programs, submission schedules and
faults; the pure model predicts the history; the engine must agree.

A failure prints the shrunk scenario (program, input, submissions, faults), the
hypothesis seed (in the suite's report and in hypothesis's reproduction blob) and the
last HTTP exchanges with the adapter and the stream server.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from durable_workflows_conformance import checks
from durable_workflows_conformance.driver import Driver, Observation, Target, new_id
from durable_workflows_conformance.model import non_determinism
from durable_workflows_conformance.scenario import Scenario, state_of
from durable_workflows_conformance.scrub import scrub_all
from durable_workflows_conformance.strategies import Features, scenarios


def _features(target: Target) -> Features:
    return Features(frozenset(target.features))


def _run(driver: Driver, scenario: Scenario) -> Observation:
    note("scenario: " + str(scenario.to_json()))
    try:
        return driver.run(scenario)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{checks.context(None, driver.target)}") from None


def _checked(obs: Observation, driver: Driver, check: Callable[[], Any]) -> Any:
    try:
        return check()
    except AssertionError as error:
        raise AssertionError(f"{error}\n{checks.context(obs, driver.target)}") from None


def _exact(scenario: Scenario) -> bool:
    """Whole-sequence comparison is sound when nothing runs concurrently."""
    return not any(op["op"] == "parallel" for op in scenario.program["ops"]) and not any(
        s.client for s in scenario.submissions
    )


@pytest.mark.req(
    "EVT-003", "EVT-004", "EVT-006", "EVT-007", "EVT-011", "EVT-023", "EVT-041", "EVT-067",
    "EVT-080", "EVT-082",
)  # fmt: skip
def test_every_message_of_a_run_validates(driver: Driver) -> None:
    @given(st.data())
    def check(data: st.DataObject) -> None:
        scenario = data.draw(scenarios(_features(driver.target)))
        obs = _run(driver, scenario)
        _checked(obs, driver, lambda: checks.messages_validate(obs))

    check()


@pytest.mark.req(
    "REPLAY-006", "REPLAY-009", "EVT-015", "EVT-016", "INPUT-015", "INPUT-017", "INPUT-019",
    "INPUT-020", "INPUT-021", "INPUT-022", "INPUT-023", "INPUT-039", "MODEL-022", "MODEL-023",
    "EVT-027", "EVT-028", "MODEL-026", "MODEL-034", "RETRY-008", "RETRY-009", "RETRY-010",
    "RETRY-019",
    "ADAPT-009", "ADAPT-010", "ADAPT-011", "INPUT-002", "MODEL-021", "MODEL-031", "MODEL-010",
    "VER-001", "VER-002",
)  # fmt: skip
def test_the_history_is_the_one_the_specification_predicts(driver: Driver) -> None:
    @given(st.data())
    def check(data: st.DataObject) -> None:
        scenario = data.draw(scenarios(_features(driver.target), concurrent=False))
        obs = _run(driver, scenario)
        _checked(obs, driver, lambda: checks.matches_model(obs))
        versions = list(driver.target.info()["protocol_versions"])
        _checked(obs, driver, lambda: checks.run_messages_agree(obs, versions))

    check()


@pytest.mark.req("INPUT-003", "INPUT-015", "INPUT-016", "INPUT-019")
def test_each_input_request_takes_exactly_one_answer(driver: Driver) -> None:
    @given(st.data())
    def check(data: st.DataObject) -> None:
        scenario = data.draw(scenarios(_features(driver.target), concurrent=True))
        obs = _run(driver, scenario)
        _checked(obs, driver, lambda: checks.one_answer_per_request(obs))
        _checked(obs, driver, lambda: checks.matches_model(obs))

    check()


@pytest.mark.req("REPLAY-023", "RETRY-010", "MODEL-027", "RETRY-007", "ADAPT-018")
def test_no_completed_step_body_runs_again(driver: Driver) -> None:
    features = _features(driver.target)
    faults = features.has("crash-injection") or features.has("restart-injection")

    @given(st.data())
    def check(data: st.DataObject) -> None:
        scenario = data.draw(scenarios(features, faults=faults))
        obs = _run(driver, scenario)
        _checked(obs, driver, lambda: checks.bodies_never_rerun(obs, faults=bool(scenario.faults)))

    check()


@pytest.mark.req(
    "FENCE-003", "REPLAY-002", "REPLAY-011", "REPLAY-012", "REPLAY-020",
    "RETRY-011", "FENCE-011", "FENCE-013", "MODEL-035", "ADAPT-015", "ADAPT-016",
)  # fmt: skip
@pytest.mark.feature("crash-injection")
def test_a_history_with_crashes_equals_the_history_without(driver: Driver) -> None:
    @given(st.data())
    def check(data: st.DataObject) -> None:
        scenario = data.draw(scenarios(_features(driver.target), faults=True, concurrent=False))
        calm = _run(driver, scenario.without_faults())
        crashed = _run(driver, scenario)
        note(f"faults fired: {crashed.report.get('faults_fired')}")
        _checked(
            crashed,
            driver,
            lambda: checks.same_history(calm.scrubbed, crashed.scrubbed, exact=_exact(scenario)),
        )
        _checked(crashed, driver, lambda: checks.matches_model(crashed))
        _checked(crashed, driver, lambda: checks.bodies_never_rerun(crashed, faults=True))

    check()


@pytest.mark.req("REPLAY-002", "REPLAY-011", "REPLAY-016", "ADAPT-013")
@pytest.mark.feature("always-replay")
def test_replaying_after_every_append_changes_nothing(driver: Driver) -> None:
    @given(st.data())
    def check(data: st.DataObject) -> None:
        base = data.draw(scenarios(_features(driver.target), concurrent=False))
        scenario = Scenario(base.program, base.input, base.submissions, always_replay=True)
        obs = _run(driver, scenario)
        _checked(obs, driver, lambda: checks.matches_model(obs))
        _checked(obs, driver, lambda: checks.bodies_never_rerun(obs, faults=False))

    check()


@pytest.mark.req("FENCE-003", "FENCE-004", "FENCE-005", "FENCE-010", "FENCE-011", "EVT-006")
@pytest.mark.feature("concurrent-workers")
def test_two_workers_never_both_record(driver: Driver) -> None:
    @given(st.data())
    def check(data: st.DataObject) -> None:
        base = data.draw(scenarios(_features(driver.target), concurrent=False))
        scenario = Scenario(base.program, base.input, base.submissions, workers=2)
        obs = _run(driver, scenario)
        _checked(obs, driver, lambda: checks.matches_model(obs))
        _checked(obs, driver, lambda: checks.bodies_never_rerun(obs, faults=True))

    check()


@pytest.mark.req("INPUT-034", "INPUT-036", "RETRY-006", "WAKE-003", "WAKE-004")
def test_sleeps_timeouts_and_retries_never_fire_early(driver: Driver) -> None:
    @given(st.data())
    def check(data: st.DataObject) -> None:
        scenario = data.draw(scenarios(_features(driver.target), concurrent=False))
        obs = _run(driver, scenario)
        _checked(obs, driver, lambda: checks.deadlines_not_early(obs))

    check()


# -- non-determinism ----------------------------------------------------------------------


def _mutations(ops: list[dict[str, Any]]) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Changed programs: a primitive renamed, replaced by another kind, removed, or a
    new primitive inserted before it; each at a position the history records."""

    @st.composite
    def mutate(draw: st.DrawFn) -> list[dict[str, Any]]:
        changed = copy.deepcopy(ops)
        index = draw(st.integers(0, len(changed) - 1))
        how = draw(st.sampled_from(["rename", "kind", "remove", "insert"]))
        victim = changed[index]
        if how == "rename":
            victim["name"] = victim["name"] + "-v2"
        elif how == "kind":
            changed[index] = (
                {"op": "sleep", "name": victim["name"], "duration_ms": 1}
                if victim["op"] != "sleep"
                else {"op": "step", "name": victim["name"], "result": None}
            )
        elif how == "remove":
            del changed[index]
        else:
            changed.insert(index, {"op": "step", "name": "inserted", "result": None})
        return changed

    return mutate()


@pytest.mark.req(
    "REPLAY-010", "REPLAY-015", "REPLAY-016", "REPLAY-017", "REPLAY-018", "ADAPT-008",
)  # fmt: skip
def test_non_determinism_is_found_and_reported(driver: Driver) -> None:
    target = driver.target

    @given(st.data())
    def check(data: st.DataObject) -> None:
        steps = data.draw(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "op": st.just("step"),
                        "name": st.sampled_from(["a", "b", "c"]),
                        "result": st.integers(0, 3),
                    }
                ),
                min_size=1,
                max_size=4,
            )
        )
        gate = {"op": "input", "name": "gate", "schema": True, "as": "gate"}
        program = {"ops": [*steps, gate]}
        changed = {"ops": [*data.draw(_mutations(steps)), gate]}
        note(f"program: {program}\nchanged: {changed}")
        workflow = f"nd-{abs(hash(str(program))) % 10**9}-{data.draw(st.integers(0, 10**6))}"
        scenario = Scenario(program)
        # Run the original program until it waits at the gate.
        run_id = new_id("run")
        target.put_workflow(workflow, program)
        target.request_run(run_id, workflow, None)
        target.settle(run_id)
        before, _ = target.read(target.history_url(run_id))
        state = state_of(scrub_all(before, run_id))
        assert state.waiting == ["gate"], f"the run waits at the gate, got {state}"
        expected = non_determinism(scrub_all(before, run_id), changed, None)
        # Deploy the changed program, then wake the run by answering the gate.
        target.put_workflow(workflow, changed)
        target.settle(run_id)
        after, _ = target.read(target.history_url(run_id))
        if not state_of(scrub_all(after, run_id)).finished:
            submission = {
                "type": "submission",
                "key": "s-gate",
                "value": {"submission_id": "s-gate", "request": "gate", "value": True},
                "headers": {"operation": "insert"},
            }
            target.append(target.inbox_url(run_id), [submission])
            target.settle(run_id)
        after, closed = target.read(target.history_url(run_id))
        added = after[len(before) :]
        context = checks.context(None, target) + f"\nscenario: {scenario.to_json()}"
        runs = [m for m in added if m.get("type") == "run"]
        if expected is None:
            assert not any(m["value"].get("error", {}) and m["value"]["error"].get("type") ==
                           "NonDeterminism" for m in runs), (
                f"no divergence expected, but the engine reported one\n{context}"
            )  # fmt: skip
            return
        assert runs and runs[0]["value"]["status"] == "failed", (
            f"expected run-failed with NonDeterminism {expected}, got {added}\n{context}"
        )
        error = runs[0]["value"]["error"]
        assert error["type"] == "NonDeterminism", f"error type {error['type']}\n{context}"
        assert error["details"] == expected, (
            f"details {error['details']} differ from {expected}\n{context}"
        )
        others = [m for m in added if m.get("type") not in ("run", "submission")]
        assert not others, f"messages of the divergent code were recorded: {others}\n{context}"
        assert closed, f"the history of the failed run is closed\n{context}"

    check()
