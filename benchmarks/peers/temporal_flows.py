"""The benchmark's Temporal workflows and activity (run by ``temporal_driver``).

``local`` in a workflow's input picks local activities (run inside the workflow task,
recorded as a marker when that task completes) instead of activities (scheduled by the
server, recorded when the worker reports the result).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from benchmarks.peers import hooks

TIMEOUT = timedelta(seconds=60)


@activity.defn
async def trivial(i: int) -> int:
    return i


async def step(local: bool, i: int) -> int:
    if local:
        return await workflow.execute_local_activity(trivial, i, start_to_close_timeout=TIMEOUT)
    return await workflow.execute_activity(trivial, i, start_to_close_timeout=TIMEOUT)


@workflow.defn
class Seq:
    """``steps`` trivial steps, one after the other."""

    @workflow.run
    async def run(self, args: dict[str, Any]) -> int:
        for i in range(args["steps"]):
            await step(args["local"], i)
        return int(args["steps"])


@workflow.defn
class Wait:
    """``pre`` steps, then rounds of: wait for the signal ``submit(K)``, one step."""

    def __init__(self) -> None:
        self.received: dict[int, int] = {}

    @workflow.signal
    def submit(self, k: int) -> None:
        self.received[k] = k

    @workflow.run
    async def run(self, args: dict[str, Any]) -> int:
        for i in range(args["pre"]):
            await step(args["local"], i)
        for k in range(args["inputs"]):
            await workflow.wait_condition(lambda k=k: k in self.received)
            await step(args["local"], self.received.pop(k))
        return int(args["inputs"])


@workflow.defn
class Park:
    """Waits for the signal ``go``."""

    def __init__(self) -> None:
        self.go = False

    @workflow.signal
    def submit(self) -> None:
        self.go = True

    @workflow.run
    async def run(self) -> str:
        if not workflow.unsafe.is_replaying():
            hooks.park()
        await workflow.wait_condition(lambda: self.go)
        return "done"
