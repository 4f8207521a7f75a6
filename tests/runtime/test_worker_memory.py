"""What the worker keeps per run it no longer serves."""

from __future__ import annotations

import pytest

from durable_workflows.core import WorkflowRegistry
from durable_workflows.engine import worker as worker_module
from durable_workflows.engine.runner import ActivationOutcome
from durable_workflows.engine.worker import RunEntry, Worker


def test_the_worker_remembers_a_bounded_number_of_ended_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker_module, "ENDED_MEMORY", 3)
    worker = Worker("http://127.0.0.1:9/v1/stream/ns", WorkflowRegistry())
    for i in range(5):
        entry = worker.runs[f"r{i}"] = RunEntry(f"r{i}")
        worker._record(entry, ActivationOutcome(f"r{i}", "ended"))
    assert list(worker.ended) == ["r2", "r3", "r4"]  # the oldest are forgotten first
    assert worker.runs == {} and worker.stats.ended == 5
    # A remembered run is never served again; a forgotten one may be (one read
    # finds its closed history).
    assert worker._add("r4", None) is None
