"""Replaying a history costs work in proportion to its length, counted, not timed.

A cold replay (parse, check every message, replay the code) of a history twice as long
must do about twice the work. Two counts catch a return of quadratic behaviour: Python
lines executed (a per-message loop over what was parsed so far) and comparisons of the
``seq`` values (a scan or a sort inside C code, such as ``max()`` over all primitives
once per primitive, which no line count sees).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import pytest

from durable_workflows.core import Activation, Context, StepSucceeded, replay_check, workflow


def _same(i: int) -> int:
    return i


@workflow("scaling")
async def _steps(ctx: Context, start: dict[str, Any]) -> int:
    for i in range(start["steps"]):
        await ctx.step(f"s{i}", _same, i)
    await ctx.request_input("go", schema=True)
    return int(start["steps"])


def _history(steps: int) -> list[dict[str, Any]]:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    request = {"run_id": f"scaling-{steps}", "workflow": "scaling", "input": {"steps": steps}}
    activation = Activation(_steps, [], request=request)
    rng = random.Random(0)
    history: list[dict[str, Any]] = []
    decision = activation.advance(now, [], rng)
    while decision.steps:
        history.extend(decision.append)
        for task in decision.steps:
            activation.step_finished(task.key, task.attempt, StepSucceeded(task.call()), now)
        decision = activation.advance(now, [], rng)
    history.extend(decision.append)
    return history


def _counted(op: str) -> Any:
    method = getattr(int, op)

    def counted(self: int, other: Any) -> Any:
        _Seq.count += 1
        return method(self, other)

    return counted


class _Seq(int):
    """An int that counts the comparisons and hashes made of it."""

    count = 0

    __eq__ = _counted("__eq__")
    __ne__ = _counted("__ne__")
    __lt__ = _counted("__lt__")
    __le__ = _counted("__le__")
    __gt__ = _counted("__gt__")
    __ge__ = _counted("__ge__")

    def __hash__(self) -> int:
        _Seq.count += 1
        return int.__hash__(self)


def _with_counting_seqs(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for message in history:
        value = message.get("value")
        if isinstance(value, dict) and isinstance(value.get("seq"), int):
            message = {**message, "value": {**value, "seq": _Seq(value["seq"])}}
        out.append(message)
    return out


def _work(
    replay: Callable[[list[dict[str, Any]]], Any], history: list[dict[str, Any]]
) -> tuple[int, int]:
    """(Python lines executed, seq comparisons) of one ``replay(history)``."""
    history = _with_counting_seqs(history)
    lines = 0

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal lines
        if event == "line":
            lines += 1
        return trace

    _Seq.count = 0
    sys.settrace(trace)
    try:
        replay(history)
    finally:
        sys.settrace(None)
    return lines, _Seq.count


def _checked(history: list[dict[str, Any]]) -> None:
    assert replay_check(_steps, history).ok


def _trusted(history: list[dict[str, Any]]) -> None:
    # The engine's own output: parsed without checking (check_messages=False).
    assert Activation(_steps, history, check_messages=False)._offline_check().ok


@pytest.mark.parametrize("replay", [_checked, _trusted], ids=["checked", "trusted"])
def test_replay_work_grows_linearly_with_the_history(
    replay: Callable[[list[dict[str, Any]]], Any],
) -> None:
    short, long = _history(150), _history(300)
    assert len(long) > 1.9 * len(short)
    replay(_history(5))  # warm-up: compiled checks, caches
    short_lines, short_compares = _work(replay, short)
    long_lines, long_compares = _work(replay, long)
    # Twice the messages: about twice the work (quadratic would be close to four times).
    assert long_lines <= 2.3 * short_lines, (short_lines, long_lines)
    assert long_compares <= 2.3 * short_compares, (short_compares, long_compares)
    assert short_compares > len(short)  # the seqs are compared: the count sees the parse


def test_the_counts_see_a_quadratic_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test above fails for a parse that scans all primitives once per primitive."""
    from durable_workflows.core import history as history_module

    original = history_module._primitive

    def scanning(parsed: Any, *args: Any) -> None:
        max(parsed.primitives, default=0)  # the reported quadratic pattern
        original(parsed, *args)

    monkeypatch.setattr(history_module, "_primitive", scanning)
    short, long = _history(150), _history(300)
    _, short_compares = _work(_checked, short)
    _, long_compares = _work(_checked, long)
    assert long_compares > 3 * short_compares
