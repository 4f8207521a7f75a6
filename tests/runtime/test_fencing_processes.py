"""(d) Two worker processes serve the same runs at once: fencing keeps every
history a single writer's history (fencing.md).

Both ``dwf worker`` processes start together on one namespace and race for the
same runs. Checks, per run: the history validates; every entity is inserted once
(EVT-006), so no position was written twice; each step has exactly one outcome;
and every recorded completion was produced by a body that ran in the process that
recorded it (its result carries that process's pid and a token the body logged).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from durable_workflows.core import Context, replay_check, workflow
from durable_workflows.schemas import identify
from durable_workflows.streams import StreamClient
from tests.support.embedded_server import EmbeddedServer, embedded_server

from .engine_support import BODY_LOG_ENV, Process, log_body_run, read_history, spawn, wait_until

LOG_ENV = BODY_LOG_ENV
RUNS = 4
STEPS = 12


def traced(i: int) -> dict[str, Any]:
    return log_body_run(i, 0.01)


@workflow("race")
async def race(ctx: Context, start: dict[str, Any]) -> int:
    total = 0
    for i in range(STEPS):
        total += (await ctx.step(f"s{i}", traced, i))["i"]
    return total


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedServer]:
    with embedded_server(long_poll_timeout=1.0) as running:
        yield running


def request_runs(ns: str, run_ids: list[str]) -> None:
    with StreamClient(timeout=10) as client:
        index = client.stream(f"{ns}/index", content_type="application/json")
        index.create_json()
        index.append_json_batch(
            {
                "type": "start",
                "key": run_id,
                "value": {"run_id": run_id, "workflow": "race", "input": {}},
                "headers": {"operation": "insert"},
            }
            for run_id in run_ids
        )


@pytest.mark.slow
@pytest.mark.req("FENCE-003", "FENCE-004", "FENCE-010", "FENCE-011", "MODEL-002")
def test_two_workers_on_the_same_runs_never_both_record(
    server: EmbeddedServer, tmp_path: Path
) -> None:
    ns = f"{server.stream_base}/race-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "bodies.log"
    run_ids = [f"race-{n}" for n in range(RUNS)]
    # Long-poll wakes: a pull-wake subscription would hand each wake to one of them,
    # and this test wants them to race for every run (fencing is what is tested).
    args = ["worker", "--url", ns, "--workflows", "tests.runtime.test_fencing_processes"]
    args += ["--wake", "long-poll"]
    workers: list[Process] = [
        spawn([*args, "--name", f"w{n}"], env={LOG_ENV: str(log)}) for n in range(2)
    ]
    # Requested once both follow the index, so both see the requests at once: requested
    # before they start, the one that started first could finish every run alone.
    try:
        request_runs(ns, run_ids)
        for run_id in run_ids:
            wait_until(lambda r=run_id: read_history(ns, r)[1], 60, f"{run_id} closed")
    finally:
        for running in workers:
            running.stop()
    pids = {w.process.pid for w in workers}
    stats = [w.stdout().split("stopped ")[-1] for w in workers]
    fenced = sum(int(text.split("fenced=")[1].split()[0]) for text in stats)
    assert fenced >= 1, f"the workers never raced: {stats}"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    for run_id in run_ids:
        items, closed = read_history(ns, run_id)
        assert closed
        for message in items:
            identify(message, "history")
        inserts = [(m["type"], m["key"]) for m in items if m["headers"]["operation"] == "insert"]
        assert len(inserts) == len(set(inserts)), f"{run_id}: an entity was inserted twice"
        assert [m["type"] for m in items].count("run") >= 2
        assert items[0]["type"] == "run" and items[0]["value"]["status"] == "running"
        completions = [
            m for m in items if m["type"] == "step" and m["value"]["status"] == "completed"
        ]
        assert sorted(m["key"] for m in completions) == sorted(f"s{i}" for i in range(STEPS))
        for message in completions:
            result = message["value"]["result"]
            assert result["pid"] in pids
            ran = [x for x in lines if x["run"] == run_id and x["token"] == result["token"]]
            assert (
                len(ran) == 1 and ran[0]["pid"] == result["pid"] and ran[0]["key"] == message["key"]
            )
        report = replay_check(race, items)
        assert report.ok, report.message
        final = [m for m in items if m["type"] == "run"][-1]["value"]
        assert final["status"] == "completed" and final["output"] == sum(range(STEPS))
