"""The streams of a run as the engine creates them, and the adapter's run options
(model.md, streams of a run; adapter.md, runs)."""

from __future__ import annotations

import pytest

from durable_workflows_conformance import checks, schemas
from durable_workflows_conformance.driver import Driver, Observation
from durable_workflows_conformance.scenario import Scenario

ONE_STEP = {"ops": [{"op": "step", "name": "only", "result": 1, "as": "r"}]}
STEP_SLEEP_STEP = {
    "ops": [
        {"op": "step", "name": "a", "result": 1},
        {"op": "sleep", "name": "pause", "duration_ms": 300},
        {"op": "step", "name": "b", "result": 2},
    ]
}


def _checked(obs: Observation, driver: Driver, check: object) -> None:
    try:
        assert callable(check)
        check()
    except AssertionError as error:
        raise AssertionError(f"{error}\n{checks.context(obs, driver.target)}") from None


@pytest.mark.req("MODEL-003", "MODEL-004")
def test_streams_are_json_and_created_with_no_other_configuration(driver: Driver) -> None:
    obs = driver.run(Scenario(ONE_STEP))
    target = driver.target

    def check() -> None:
        urls = [
            f"{target.namespace}/index",
            target.inbox_url(obs.run_id),
            target.history_url(obs.run_id),
        ]
        for url in urls:
            response = target.http.request("HEAD", url)
            assert response.status_code == 200, f"HEAD {url} answered {response.status_code}"
            kind = response.headers.get("Content-Type", "")
            assert kind.split(";")[0].strip() == "application/json", f"{url}: {kind!r}"
            for header in ("Stream-TTL", "Stream-Expires-At"):
                assert header not in response.headers, f"{url} was created with {header}"
        checks.messages_validate(obs)

    _checked(obs, driver, check)


@pytest.mark.req("ADAPT-012")
def test_options_for_a_run_that_exists_are_refused(driver: Driver) -> None:
    obs = driver.run(Scenario(ONE_STEP))
    target = driver.target
    response = target.http.request("PUT", target.adapter("runs/" + obs.run_id), body={})
    assert response.status_code == 400, (
        f"PUT of options for run {obs.run_id}, whose history exists, answered "
        f"{response.status_code}\n{checks.context(obs, target)}"
    )
    schemas.check("error", response.json())
    assert response.json()["error"]["code"] == "bad-request"


@pytest.mark.req("ADAPT-012")
@pytest.mark.feature("crash-injection")
def test_armed_options_apply_from_the_first_activation(driver: Driver) -> None:
    fault = {"at": "before-append", "n": 1, "action": "crash"}
    obs = driver.run(Scenario(ONE_STEP, faults=(fault,)))

    def check() -> None:
        assert obs.report["faults_fired"] == [0], (
            "a fault at the first append fires in the run's first activation, "
            f"but faults_fired is {obs.report['faults_fired']}"
        )
        assert obs.report["activations"] >= 2, "a crash ends the activation; another follows"
        checks.matches_model(obs)

    _checked(obs, driver, check)


@pytest.mark.req("ADAPT-014")
@pytest.mark.feature("concurrent-workers")
def test_two_workers_each_activate_the_run_for_every_wake(driver: Driver) -> None:
    single = driver.run(Scenario(STEP_SLEEP_STEP))
    double = driver.run(Scenario(STEP_SLEEP_STEP, workers=2))

    def check() -> None:
        checks.matches_model(double)
        # Every wake (the start, the sleep's deadline) starts an activation of each of
        # the two workers, so the run has at least twice the activations of one worker.
        wakes = single.report["activations"]
        assert double.report["activations"] >= 2 * wakes, (
            f"with one worker the run had {wakes} activations, with two only "
            f"{double.report['activations']}"
        )

    _checked(double, driver, check)
