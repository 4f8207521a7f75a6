"""The reference adapter's ``limits`` run option (ADAPT-021) and how limits reach the engine.

The YAML cases in ``cases/limits.yaml`` run the limits end to end against the reference
(``dwf conformance --req ADAPT-021``); these tests pin the plumbing: per-run limits that
fall back to the engine's own, re-arming, refusal of a bad option, and the runner's choice.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from durable_workflows.adapter import FEATURES, ConformanceAdapter, conformance_harness
from durable_workflows.adapter.app import AdapterError
from durable_workflows.core import Limits, WorkflowRegistry
from durable_workflows.engine.runner import Runner

NS = "http://127.0.0.1:9/v1/stream/workflows"


def _adapter(limits: Limits | None = None) -> ConformanceAdapter:
    adapter = ConformanceAdapter(NS, WorkflowRegistry(), limits=limits)

    async def no_history(run_id: str) -> None:
        return None

    class _IO:
        read_history = staticmethod(no_history)

    adapter._io = lambda: _IO()  # type: ignore[assignment, method-assign, return-value]
    return adapter


def _put(adapter: ConformanceAdapter, run_id: str, body: Any) -> int:
    status, _ = asyncio.run(adapter.handle("PUT", f"/conformance/v1/runs/{run_id}", body))
    return status


@pytest.mark.req("ADAPT-021", "ADAPT-004")
def test_limits_is_a_declared_feature() -> None:
    assert "limits" in FEATURES
    assert "limits" in _adapter().info()["features"]


@pytest.mark.req("ADAPT-021")
def test_armed_limits_apply_to_their_run_only_and_fall_back_to_the_engines() -> None:
    engine = Limits(submission_bytes=1000)
    adapter = _adapter(engine)
    assert _put(adapter, "small", {"limits": {"history_messages": 5, "result_bytes": 64}}) == 204
    small = adapter.limits_for("small")
    assert small == Limits(submission_bytes=1000, history_messages=5, result_bytes=64)
    assert adapter.limits_for("other") == engine
    # Re-arming without limits gives the run the engine's limits again.
    assert _put(adapter, "small", {}) == 204
    assert adapter.limits_for("small") == engine


@pytest.mark.req("ADAPT-003")
@pytest.mark.parametrize(
    "limits", [{"history_messages": 0}, {"inbox_messages": 3}, {"result_bytes": "64"}]
)
def test_a_bad_limits_option_is_refused_and_not_applied(limits: dict[str, Any]) -> None:
    adapter = _adapter()
    with pytest.raises(AdapterError) as refused:
        _put(adapter, "run", {"limits": limits})
    assert refused.value.code == "bad-request"
    assert adapter.limits_for("run") == Limits()


def test_the_runner_takes_one_set_of_limits_or_one_per_run() -> None:
    io: Any = None
    assert Runner(io, WorkflowRegistry()).limits_for("r") == Limits()
    fixed = Limits(history_messages=7)
    assert Runner(io, WorkflowRegistry(), limits=fixed).limits_for("r") == fixed
    per_run = Runner(
        io, WorkflowRegistry(), limits=lambda run_id: Limits(submissions_per_run=len(run_id))
    )
    assert per_run.limits_for("abc") == Limits(submissions_per_run=3)


@pytest.mark.req("SEC-011")
def test_the_operator_sets_limits_with_dwf_serve_and_dwf_worker() -> None:
    from durable_workflows.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(
        ["serve", "--limit", "history_messages=10", "--limit", "result_bytes=64"]
    )
    assert args.limit == [("history_messages", 10), ("result_bytes", 64)]
    args = parser.parse_args(["worker", "--workflows", "m", "--limit", "submission_bytes=9"])
    assert args.limit == [("submission_bytes", 9)]
    for bad in ("history_messages=0", "inbox=3", "result_bytes", "result_bytes=x"):
        with pytest.raises(SystemExit):
            parser.parse_args(["serve", "--limit", bad])


@pytest.mark.req("SEC-011", "ADAPT-021")
def test_dwf_serve_gives_its_limits_to_the_worker_the_handler_and_the_adapter() -> None:
    from durable_workflows.engine.app import ServeApp

    limits = Limits(history_messages=10)
    plain = ServeApp("http://127.0.0.1:9", WorkflowRegistry(), limits=limits)
    assert plain.handler.limits == limits
    assert plain.worker is not None and plain.worker._limits == limits
    tested = ServeApp(
        "http://127.0.0.1:9", WorkflowRegistry(), limits=limits, harness=conformance_harness
    )
    assert tested.harness is not None
    adapter = tested.harness.app
    assert isinstance(adapter, ConformanceAdapter)
    assert adapter.limits_for("any-run") == limits
    assert tested.handler.limits == adapter.limits_for
    assert tested.worker is not None and tested.worker._limits == adapter.limits_for
