"""Example-based cases from ``cases/*.yaml`` (language-neutral data; see its README)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from durable_workflows_conformance import checks
from durable_workflows_conformance.case_files import load_cases, scenario_of
from durable_workflows_conformance.driver import Driver, IndexMessage


def within_history_limit(history: Sequence[Mapping[str, Any]], limit: int) -> None:
    """SEC-010: only the terminal run event and the rejections of the ending after it
    (MODEL-033/034) may take a history past its length limit."""
    terminal = checks.terminal_position(history)
    before = len(history) if terminal is None else terminal
    assert before <= limit, (
        f"{before} history messages before the terminal run event, limit {limit} (SEC-010)"
    )


def matches(message: Mapping[str, Any], pattern: Mapping[str, Any]) -> bool:
    value = message.get("value") or {}
    for name, wanted in pattern.items():
        if name in ("type", "key"):
            if message.get(name) != wanted:
                return False
        elif value.get(name) != wanted:
            return False
    return True


def _params() -> list[Any]:
    return [
        pytest.param(
            case,
            id=case["id"],
            marks=[
                pytest.mark.req(*case["requirements"]),
                *([pytest.mark.feature(*case["features"])] if case.get("features") else []),
            ],
        )
        for case in load_cases()
    ]


def untouched_history(driver: Driver, case: dict[str, Any]) -> None:
    """A case with ``prepared_history``: the engine must append nothing to it."""
    seen = driver.run_prepared(case["program"], case["prepared_history"])
    try:
        assert seen.history == seen.prepared, (
            "the engine appended to a history it must leave alone: "
            f"{seen.history[len(seen.prepared) :]!r}"
        )
        assert not seen.history_closed, "the engine closed a history it must leave alone"
    except AssertionError as error:
        raise AssertionError(
            f"case {case['id']} ({case['file']}): {case['description']}\n{error}\n"
            f"run {seen.run_id}; settle answers {seen.settles}\n"
            + checks.context(None, driver.target)
        ) from None


@pytest.mark.parametrize("case", _params())
def test_case(driver: Driver, case: dict[str, Any]) -> None:
    if "prepared_history" in case:
        untouched_history(driver, case)
        return
    scenario = scenario_of(case)
    index = [IndexMessage(m["when"], m["message"]) for m in case.get("index", [])]
    register = case.get("register", True)
    obs = driver.run(
        scenario, index=index, request_extra=case.get("request_extra"), register=register
    )
    try:
        expect = case["expect"]
        run = [m for m in obs.history if m.get("type") == "run"]
        assert run, "the history holds the run"
        final = run[-1]["value"]
        assert final["status"] == expect["status"], (
            f"run status {final['status']!r}, expected {expect['status']!r}"
        )
        if "output" in expect:
            assert final["output"] == expect["output"], f"output {final['output']!r}"
        for name, wanted in (expect.get("error") or {}).items():
            assert (final["error"] or {}).get(name) == wanted, (
                f"error.{name} is {(final['error'] or {}).get(name)!r}, expected {wanted!r}"
            )
        for pattern in expect.get("messages", []):
            assert any(matches(m, pattern) for m in obs.history), f"no message matches {pattern}"
        for pattern in expect.get("absent", []):
            found = [m for m in obs.history if matches(m, pattern)]
            assert not found, f"messages match {pattern}, which none may: {found}"
        for sid in expect.get("refused", []):
            answers = [
                obs.answers.get(i) for i, s in enumerate(scenario.submissions) if s.id == sid
            ]
            assert answers and all(a == (409, True) for a in answers), (
                f"submission {sid} got {answers}, expected 409 with Stream-Closed: true"
            )
        if "history_length" in expect:
            assert len(obs.history) == expect["history_length"], (
                f"the history holds {len(obs.history)} messages, expected "
                f"{expect['history_length']}"
            )
        if "final_rejections" in expect:
            checks.final_rejections_in_inbox_order(obs)
            ending = checks.final_rejections(obs)
            assert ending == expect["final_rejections"], (
                f"the final append rejects {ending}, expected {expect['final_rejections']}"
            )
        for run_id in expect.get("no_streams_for", []):
            for url in (driver.target.history_url(run_id), driver.target.inbox_url(run_id)):
                status = driver.target.http.request("HEAD", url).status_code
                assert status == 404, f"HEAD {url} answered {status}: the stream exists"
        checks.messages_validate(obs)
        checks.only_specified_fields(obs)
        checks.history_rules(obs)
        # The model knows only workflows the adapter was given, and cannot place what
        # depends on how an engine batches appends (cases README: `model: skip`).
        if not register or case.get("model") == "skip":
            assert obs.history_closed, "the history of a finished run is closed (MODEL-034)"
        else:
            checks.matches_model(obs)
        if (case.get("limits") or {}).get("history_messages"):
            within_history_limit(obs.history, case["limits"]["history_messages"])
        # Rules every history keeps, whatever the case is about.
        checks.fixed_fields_hold(obs)
        checks.resumed_before_new_primitives(obs)
        checks.bodies_never_rerun(obs, faults=False)  # a case arms no fault
        if driver.target.virtual_clock:  # failures are decided at the attempt's start
            checks.retry_at_follows_the_policy(obs)
    except AssertionError as error:
        raise AssertionError(
            f"case {case['id']} ({case['file']}): {case['description']}\n{error}\n"
            + checks.context(obs, driver.target)
        ) from None
