"""The reference's core on a golden history case, with no stream, no HTTP, no thread.

    python -m durable_workflows.adapter.golden < case.json

Reads one case of the golden corpus (docs/conformance.md, "Golden histories") on stdin:
a program, the run's input and its inbox schedule. Drives the sans-IO core
(:class:`~durable_workflows.core.Activation`) as a shell would, on a virtual clock that
moves only to the next deadline when the run rests, and prints each append it would send,
one JSON array per line, then the run's run-status row as ``{"run-status": ROW}``. This
is the interface a port's core implements to check itself
against the corpus before it has any adapter.

The schedule's delivery rules (each inbox message's ``when``): ``early`` before the run
starts; ``waiting`` (and ``at-deadline``, which also moves the clock to the run's
``waiting_for.until`` at once) when the run rests waiting on the message's ``request``;
``late`` once that request has been received or has expired; ``suspended`` once the run
has suspended ``at`` times; anything left is appended after the run has ended, where the
closed inbox refuses it. Messages reach the core as a reader of the stream gets them: an
``offset`` member of their headers removed (EVT-097).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ..core import Activation
from ..core.decisions import Limits, StepErrored, StepOutcome, StepSucceeded
from ..core.status import StatusView
from ..core.timefmt import format_ts, parse_ts
from .interpreter import BodyLog, _Interpreter

__all__ = ["RUN_ID", "run_case"]

RUN_ID = "golden-run"
WORKFLOW = "golden"
#: The virtual clock starts here; only deadlines move it.
EPOCH = datetime(2030, 1, 1, tzinfo=UTC)


class _Rest:
    """What the schedule's delivery rules read of the history so far."""

    def __init__(self) -> None:
        self.status: str | None = None
        self.waiting: list[str] = []
        self.until: str | None = None
        self.suspensions = 0
        self.decided: set[str] = set()

    def feed(self, messages: Sequence[Mapping[str, Any]]) -> None:
        for message in messages:
            value = message.get("value") or {}
            if message.get("type") == "run":
                self.status = value.get("status")
                waiting = value.get("waiting_for") or {}
                self.waiting = list(waiting.get("inputs") or [])
                self.until = waiting.get("until")
                if self.status in ("waiting", "sleeping"):
                    self.suspensions += 1
            elif message.get("type") == "input" and value.get("status") in ("received", "expired"):
                self.decided.add(str(message.get("key")))

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")

    @property
    def suspended(self) -> bool:
        return self.status in ("waiting", "sleeping")


def _due(schedule: Sequence[Mapping[str, Any]], delivered: set[int], rest: _Rest) -> list[int]:
    out = []
    for index, item in enumerate(schedule):
        when = item.get("when", "waiting")
        if index in delivered or when == "early":
            continue
        request = item.get("request")
        if (
            rest.finished
            or (when in ("waiting", "at-deadline") and request in rest.waiting)
            or (when == "late" and request in rest.decided)
            or (when == "suspended" and rest.suspended and rest.suspensions >= item.get("at", 0))
        ):
            out.append(index)
    return out


async def _no_history(_run_id: str) -> int:
    return 0


def _outcome(task: Any) -> StepOutcome:
    try:
        result = task.call()
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
    except Exception as exc:
        return StepErrored.from_exception(exc)
    return StepSucceeded(result)


def run_case(case: Mapping[str, Any]) -> Iterator[list[dict[str, Any]]]:
    """The appends the reference's core makes for ``case``, in order."""
    from ..core.api import Workflow

    program = case["program"]
    workflow = Workflow(WORKFLOW, _Interpreter(program, BodyLog(), _no_history).run)
    schedule: list[Mapping[str, Any]] = list(case.get("inbox") or [])
    rng = random.Random(0)
    now = EPOCH
    inbox: list[dict[str, Any]] = []
    delivered: set[int] = set()
    rest = _Rest()

    def deliver(indexes: Sequence[int]) -> None:
        for index in indexes:
            delivered.add(index)
            message = dict(schedule[index]["message"])
            headers = message.get("headers")
            if isinstance(headers, dict) and "offset" in headers:  # as a reader gets it (EVT-097)
                message["headers"] = {k: v for k, v in headers.items() if k != "offset"}
            inbox.append(message)

    deliver([i for i, item in enumerate(schedule) if item.get("when") == "early"])
    request = case.get("request") or {
        "value": {"run_id": RUN_ID, "workflow": WORKFLOW, "input": case.get("input")}
    }
    # A case may set engine limits for its run (security.md, Limits); the rest keep defaults.
    limits = Limits(**(case.get("limits") or {}))
    activation = Activation(workflow, [], request=request["value"], limits=limits)
    decision = activation.advance(now, inbox, rng)
    for _ in range(10_000):  # a case is small; this bounds a core that never settles
        if decision.append:
            rest.feed(decision.append)
            yield list(decision.append)
        if decision.close_run:
            # The inbox is closed now: what is still scheduled is refused with 409 and
            # never read; what was appended before gets its rejections (MODEL-033).
            yield list(activation.closing(inbox, now))
            return
        if decision.steps:
            for task in decision.steps:
                activation.step_finished(task.key, task.attempt, _outcome(task), now)
        else:
            due = _due(schedule, delivered, rest)
            if due:
                deliver(due)
                if any(schedule[i].get("when") == "at-deadline" for i in due) and rest.until:
                    now = max(now, parse_ts(rest.until))
            elif decision.wake_at is not None:
                now = max(now, decision.wake_at)
            else:
                raise RuntimeError("the run rests with nothing due and no deadline")
        decision = activation.advance(now, inbox, rng)
    raise RuntimeError("the run did not end within 10,000 decisions")


def main() -> int:
    case = json.load(sys.stdin)
    status = StatusView()
    for append in run_case(case):
        status.feed(append)
        print(json.dumps(append, ensure_ascii=False), flush=True)
    row = status.message(format_ts(EPOCH))  # the row after the last append (MODEL-041)
    print(json.dumps({"run-status": row}, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
