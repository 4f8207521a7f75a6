"""The workflow and the helpers of the fault-injection test (test_fault_injection.py).

The worker processes of that test import this module (``dwf worker --workflows
tests.runtime.fault_support``), so it stays light: no pytest, no test servers.

Every step body appends JSON lines to the file named by ``$DWF_FI_BODY_LOG``: one
``start`` line when it begins and one ``finish`` line (or ``fail``, for an attempt that
raises on purpose) after its work, each written with O_APPEND and fsync'd, so the lines
of every process land in one order that a SIGKILL cannot undo. The test process writes
its ``kill`` and ``up`` lines into the same file, which places every body execution
between the crashes around it.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from durable_workflows.core import Context, RetryPolicy, current_step, workflow

#: The file (named by this environment variable) where step bodies log each execution.
LOG_ENV = "DWF_FI_BODY_LOG"

WORKFLOW = "fi-mixed"

#: The answer schemas of the two input requests.
EARLY_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": 10_000_000}
LATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "pattern": "^c-[0-9]{1,9}$"},
        "n": {"type": "integer"},
    },
    "required": ["code", "n"],
    "additionalProperties": False,
}

#: The submission ids of the valid answers; the hostile client never uses them first.
EARLY_ID = "ans-early"
LATE_ID = "ans-late"


def log_event(path: str | os.PathLike[str], **fields: Any) -> None:
    """Append one JSON line (O_APPEND, fsync'd) to ``path``."""
    line = (json.dumps(fields, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def value_of(n: int, i: int) -> int:
    """What step ``i`` of the run with input ``n`` computes."""
    return (n * 31 + i * 17 + i * i) % 1009


def early_answer(n: int) -> int:
    return n * 3 + 1


def late_answer(n: int) -> dict[str, Any]:
    return {"code": f"c-{n * 7}", "n": n}


def _trace(event: str, token: str) -> None:
    info = current_step()
    assert info is not None, "a step body runs with its StepInfo"
    log_event(
        os.environ[LOG_ENV],
        ev=event,
        run=info.run_id,
        key=info.key,
        attempt=info.attempt,
        token=token,
        pid=os.getpid(),
    )


def work(n: int, i: int) -> dict[str, Any]:
    """A step body: logs its start, works a little (a window for SIGKILL), logs its end."""
    token = uuid.uuid4().hex
    _trace("start", token)
    time.sleep(random.uniform(0.03, 0.2))
    result = {"v": value_of(n, i), "token": token}
    _trace("finish", token)
    return result


def flaky(n: int, i: int) -> dict[str, Any]:
    """Like :func:`work`, but the first attempt fails (so the step retries once)."""
    info = current_step()
    assert info is not None
    token = uuid.uuid4().hex
    _trace("start", token)
    time.sleep(random.uniform(0.03, 0.1))
    if info.attempt == 1:
        _trace("fail", token)
        raise RuntimeError("the first attempt fails on purpose")
    result = {"v": value_of(n, i), "token": token}
    _trace("finish", token)
    return result


FLAKY_RETRY = RetryPolicy(max_attempts=3, initial_interval=timedelta(milliseconds=200), jitter=0)


@workflow(WORKFLOW)
async def mixed(ctx: Context, start: dict[str, Any]) -> dict[str, Any]:
    """Steps (one of them twice in parallel, one retried), two sleeps and two inputs:
    ``early`` (answered before the run asks) and ``late`` (answered once pending)."""
    n = int(start["n"])
    values = [(await ctx.step("prep", work, n, 0))["v"]]
    fan = await ctx.gather(ctx.step("fan", work, n, 1), ctx.step("fan", work, n, 2))
    values += [r["v"] for r in fan]
    await ctx.sleep("nap", timedelta(milliseconds=300 + 100 * (n % 5)))
    early = await ctx.request_input("early", schema=EARLY_SCHEMA, prompt="a number")
    values.append((await ctx.step("flaky", flaky, n, 3, retry=FLAKY_RETRY))["v"])
    late = await ctx.request_input("late", schema=LATE_SCHEMA)
    for i in range(4, 7):
        values.append((await ctx.step(f"s{i}", work, n, i))["v"])
    await ctx.sleep("nap", timedelta(milliseconds=500))
    values.append((await ctx.step("sum", work, n + sum(values), 7))["v"])
    return {"n": n, "values": values, "early": early, "late": late}


def expected_output(n: int) -> dict[str, Any]:
    """What :func:`mixed` returns for input ``{"n": n}`` with the valid answers."""
    values = [value_of(n, i) for i in range(4)] + [value_of(n, i) for i in range(4, 7)]
    values.append(value_of(n + sum(values), 7))
    return {"n": n, "values": values, "early": early_answer(n), "late": late_answer(n)}


# ---------------------------------------------------------------------- the body log


@dataclass
class Execution:
    """One execution of a step body, as the log shows it (positions are line numbers)."""

    run: str
    key: str
    attempt: int
    token: str
    started: int
    ended: int | None = None
    how: str | None = None  # "finish" or "fail"


@dataclass
class BodyLog:
    """The body log parsed: executions per (run, step key), crash lines by kind."""

    executions: dict[tuple[str, str], list[Execution]] = field(default_factory=dict)
    worker_kills: list[int] = field(default_factory=list)
    #: (kill line, up line) of each stream server outage
    outages: list[tuple[int, int]] = field(default_factory=list)


def parse_body_log(lines: Iterable[str]) -> BodyLog:
    log = BodyLog()
    by_token: dict[str, Execution] = {}
    executions: dict[tuple[str, str], list[Execution]] = defaultdict(list)
    server_down: int | None = None
    for position, line in enumerate(lines):
        entry = json.loads(line)
        event = entry["ev"]
        if event == "kill" and entry["what"] == "worker":
            log.worker_kills.append(position)
        elif event == "kill" and entry["what"] == "server":
            server_down = position
        elif event == "up" and entry["what"] == "server" and server_down is not None:
            log.outages.append((server_down, position))
            server_down = None
        elif event == "start":
            execution = Execution(
                entry["run"], entry["key"], entry["attempt"], entry["token"], position
            )
            by_token[execution.token] = execution
            executions[(execution.run, execution.key)].append(execution)
        elif event in ("finish", "fail"):
            execution = by_token[entry["token"]]
            execution.ended, execution.how = position, event
    if server_down is not None:
        log.outages.append((server_down, 1 << 62))
    log.executions = dict(executions)
    return log


def crash_between(log: BodyLog, first: int, second: int) -> bool:
    """Whether a crash can explain a body that started at line ``first`` being started
    again at line ``second``: a worker was killed after ``first`` and before ``second``,
    or the stream server was down at some point between them."""
    if any(first < kill < second for kill in log.worker_kills):
        return True
    return any(up > first and down < second for down, up in log.outages)


def completed_steps(history: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {
        str(m["key"]): m["value"]
        for m in history
        if m.get("type") == "step" and m["value"]["status"] == "completed"
    }


def body_problems(
    log: BodyLog, histories: Mapping[str, Sequence[Mapping[str, Any]]], *, crashes: bool
) -> list[str]:
    """What the body log says went wrong (an empty list when nothing did).

    For every step the history records as completed:

    - the recorded result is that of an execution that finished, of the recorded
      attempt, and it is the LAST execution of the step that started: no body of the
      step started once the recorded one had run (REPLAY-023, RETRY-010);
    - every execution of an attempt before the last one of that attempt was cut short by
      a crash (a worker killed, or the stream server down, between the two starts); with
      ``crashes`` False (an undisturbed run) each attempt ran exactly once;
    - every attempt before the recorded one ended in ``fail`` (a retry the history shows).

    And no body ran for a step the history does not record as completed.
    """
    problems: list[str] = []
    for run_id, history in histories.items():
        completed = completed_steps(history)
        for (run, key), runs in log.executions.items():
            if run == run_id and key not in completed:
                problems.append(f"{run}/{key}: {len(runs)} bodies ran, the step is not completed")
        for key, value in completed.items():
            runs = log.executions.get((run_id, key), [])
            where = f"{run_id}/{key}"
            token = value["result"]["token"]
            recorded = [e for e in runs if e.token == token]
            if len(recorded) != 1:
                problems.append(f"{where}: the recorded result {token} is from no logged body")
                continue
            chosen = recorded[0]
            if chosen.how != "finish" or chosen.attempt != value["attempt"]:
                problems.append(
                    f"{where}: the recorded body ended {chosen.how!r} in attempt "
                    f"{chosen.attempt}; the history says attempt {value['attempt']}"
                )
            later = [e for e in runs if e.started > chosen.started]
            if later:
                problems.append(
                    f"{where}: {len(later)} body execution(s) started after the one whose "
                    f"result was recorded (tokens {[e.token for e in later]}): a completed "
                    "step ran again"
                )
            for attempt in range(1, value["attempt"] + 1):
                of_attempt = sorted(
                    (e for e in runs if e.attempt == attempt), key=lambda e: e.started
                )
                if not of_attempt:
                    problems.append(f"{where}: attempt {attempt} never ran")
                    continue
                if attempt < value["attempt"] and of_attempt[-1].how != "fail":
                    problems.append(f"{where}: attempt {attempt} did not fail, yet was retried")
                if not crashes and len(of_attempt) != 1:
                    problems.append(
                        f"{where}: attempt {attempt} ran {len(of_attempt)} times in an "
                        "undisturbed run"
                    )
                for before, after in itertools.pairwise(of_attempt):
                    if not crash_between(log, before.started, after.started):
                        problems.append(
                            f"{where}: attempt {attempt} ran again (lines {before.started} and "
                            f"{after.started}, the first ended {before.how!r}) with no crash "
                            "between"
                        )
    return problems
