"""(a) Crash test: a 50-step workflow with sleeps and inputs survives 20+ SIGKILLs of
its worker process.

The stream server (``dwf streams serve``) stays up; the worker (``dwf worker``) is
killed at random points and restarted. The run must complete with the output of an
uninterrupted run, every history message must validate, and no step body may run
after the execution whose result was recorded (a completed step never runs again,
REPLAY-023 / RETRY-010). Each body appends one line to a log file with O_APPEND
before it returns, so executions are counted outside the killed process.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from durable_workflows.core import Context, workflow
from durable_workflows.schemas import identify
from durable_workflows.streams import StreamClient
from tests.support.embedded_server import EmbeddedServer, embedded_server

from .engine_support import (
    BODY_LOG_ENV,
    Process,
    log_body_run,
    pending_inputs,
    read_history,
    spawn,
    start,
    submission,
    wait_until,
)

LOG_ENV = BODY_LOG_ENV
STEPS = 50
KILLS = 22


def logged_body(i: int) -> dict[str, Any]:
    """A step body that leaves a trace outside the process before it returns."""
    return log_body_run(i, 0.04)


@workflow("crash-50")
async def crash_50(ctx: Context, start: dict[str, Any]) -> dict[str, Any]:
    total = 0
    for i in range(start.get("steps", STEPS)):
        result = await ctx.step(f"s{i}", logged_body, i)
        total += result["i"] ** 2
        if i % 10 == 4:
            await ctx.sleep(f"nap{i}", timedelta(milliseconds=150))
        if i % 10 == 9:
            total += await ctx.request_input(f"in{i}", schema={"type": "integer"})
    return {"total": total}


def expected_total(steps: int = STEPS) -> int:
    return sum(i * i for i in range(steps)) + sum(i for i in range(steps) if i % 10 == 9)


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedServer]:
    with embedded_server(long_poll_timeout=1.0) as running:
        yield running


def answer_inputs(ns: str, run_id: str, stop: threading.Event) -> None:
    """Answer each pending input ``inN`` with N (same submission id on every retry)."""
    with StreamClient(timeout=10) as client:
        inbox = client.stream(f"{ns}/runs/{run_id}/inbox", content_type="application/json")
        while not stop.is_set():
            try:
                for key in pending_inputs(ns, run_id):
                    n = int(key.removeprefix("in"))
                    inbox.append_json(submission(f"sub-{key}", key, n))
            except Exception:
                pass  # the inbox may not exist yet, or is closed: try again
            time.sleep(0.05)


def worker(ns: str, log: Path) -> Process:
    return spawn(
        ["worker", "--url", ns, "--workflows", "tests.runtime.test_crash", "--name", "crash"],
        env={LOG_ENV: str(log)},
    )


def run_to_end(ns: str, run_id: str, seconds: float) -> list[Any]:
    wait_until(lambda: read_history(ns, run_id)[1], seconds, f"{run_id} closed")
    return read_history(ns, run_id)[0]


@pytest.mark.slow
@pytest.mark.req("REPLAY-023", "MODEL-027", "FENCE-003", "WAKE-006")
def test_run_survives_twenty_kills_with_the_same_output(
    server: EmbeddedServer, tmp_path: Path
) -> None:
    ns = f"{server.stream_base}/{'crash-' + uuid.uuid4().hex[:8]}"
    log = tmp_path / "bodies.log"
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    stop = threading.Event()
    helpers = [
        threading.Thread(target=answer_inputs, args=(ns, run, stop), daemon=True)
        for run in ("calm", "crashy")
    ]
    for helper in helpers:
        helper.start()
    try:
        # The uninterrupted run.
        start(ns, "crash-50", {}, "calm")
        began = time.monotonic()
        calm = worker(ns, log)
        try:
            calm_history = run_to_end(ns, "calm", 60)
        finally:
            calm.stop()
        print(f"uninterrupted run: {time.monotonic() - began:.2f} s (seed {seed})")
        # The same workflow, killed again and again.
        start(ns, "crash-50", {}, "crashy")
        kills = 0
        while kills < KILLS:
            victim = worker(ns, log)
            # Spread the kills over the whole run, but slow its progress near the end
            # so that at least KILLS land before it completes.
            done = len(read_history(ns, "crashy")[0]) / len(calm_history)
            time.sleep(rng.uniform(0.02, 0.4) if done < 0.75 else rng.uniform(0.0, 0.08))
            victim.kill()
            kills += 1
            if read_history(ns, "crashy")[1]:
                break  # finished early; the kills so far still count
        print(f"{kills} kills, {len(read_history(ns, 'crashy')[0])} messages recorded so far")
        survivor = worker(ns, log)
        try:
            crash_history = run_to_end(ns, "crashy", 90)
        finally:
            survivor.stop()
    finally:
        stop.set()
    assert kills >= 20, f"the run finished after {kills} kills (seed {seed})"

    def output(items: list[Any]) -> Any:
        return [m for m in items if m["type"] == "run"][-1]["value"]

    assert output(calm_history)["status"] == "completed"
    assert output(crash_history)["status"] == "completed", f"seed {seed}"
    assert output(crash_history)["output"] == output(calm_history)["output"]
    assert output(calm_history)["output"] == {"total": expected_total()}
    for message in crash_history + calm_history:
        identify(message, "history")

    executions: dict[str, list[dict[str, Any]]] = {}
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if entry["run"] == "crashy":
            executions.setdefault(entry["key"], []).append(entry)
    completed = {
        m["key"]: m["value"]["result"]
        for m in crash_history
        if m["type"] == "step" and m["value"]["status"] == "completed"
    }
    assert len(completed) == STEPS
    for key, result in completed.items():
        runs = executions[key]
        # The recorded execution is the last one: nothing ran after it was recorded.
        assert runs[-1]["token"] == result["token"], f"{key} ran again (seed {seed})"
    assert sum(len(v) for v in executions.values()) <= STEPS + kills
