"""The benchmark's workflows for our runtime (loaded by ``dwf serve --workflows``)."""

from __future__ import annotations

import os
import socket
from typing import Any

from durable_workflows.core import Context, workflow

#: Where :func:`mark` tells the driver (a UDP port on 127.0.0.1), set by the driver.
MARK_PORT = "DWF_BENCH_MARK_PORT"
_marks = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def trivial(i: int) -> int:
    return i


def mark(probe: str) -> None:
    """Tell the driver ``probe`` (one datagram; a retried body may send it twice)."""
    port = os.environ.get(MARK_PORT)
    if port:
        _marks.sendto(probe.encode(), ("127.0.0.1", int(port)))


@workflow("bench-seq")
async def seq(ctx: Context, start: dict[str, Any]) -> int:
    """``start["steps"]`` trivial steps, one after the other."""
    for i in range(start["steps"]):
        await ctx.step(f"s{i}", trivial, i)
    return int(start["steps"])


@workflow("bench-first")
async def first(ctx: Context, start: dict[str, Any]) -> int:
    """Step ``s0``, then a step whose body marks ``start["probe"]``: that body runs only
    once the append holding ``s0``'s outcome (and the mark's start) was acknowledged,
    after the server's commit, so the mark says that ``s0`` is recorded, as the line
    after a step does in DBOS."""
    await ctx.step("s0", trivial, 0)
    await ctx.step("mark", mark, start["probe"])
    return 1


@workflow("bench-wait")
async def wait(ctx: Context, start: dict[str, Any]) -> int:
    """``start["pre"]`` steps (to grow the history), then rounds of: wait for the input
    ``in-K``, record the step ``after-K``."""
    for i in range(start.get("pre", 0)):
        await ctx.step(f"p{i}", trivial, i)
    for k in range(start["inputs"]):
        value = await ctx.request_input(f"in-{k}", schema=True)
        await ctx.step(f"after-{k}", trivial, value)
    return int(start["inputs"])


@workflow("bench-park")
async def park(ctx: Context, start: dict[str, Any]) -> str:
    """Waits for an input with no deadline."""
    await ctx.request_input("go", schema=True)
    return "done"
