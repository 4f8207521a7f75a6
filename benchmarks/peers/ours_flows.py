"""The benchmark's workflows for our runtime (loaded by ``dwf serve --workflows``)."""

from __future__ import annotations

from typing import Any

from durable_workflows.core import Context, workflow


def trivial(i: int) -> int:
    return i


@workflow("bench-seq")
async def seq(ctx: Context, start: dict[str, Any]) -> int:
    """``start["steps"]`` trivial steps, one after the other."""
    for i in range(start["steps"]):
        await ctx.step(f"s{i}", trivial, i)
    return int(start["steps"])


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
