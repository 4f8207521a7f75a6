"""A simulated shell for the sans-IO core, and the properties it checks.

``Driver`` plays the engine's I/O shell in pure Python: it keeps the durable history and
the inbox as lists, runs step bodies synchronously, advances a fake clock to the next
timer, delivers scripted inbox messages at their times, and can "crash" at any numbered
point: it then discards the :class:`Activation` (and whatever it had not appended) and
builds a new one from the history appended so far.

Every message the core produces is validated with ``durable_workflows.schemas.identify``.
The hypothesis tests generate workflows as data (sequences of steps, sleeps, inputs,
records and gathers, with failing attempts and scripted submissions) and crash points.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durable_workflows.core import (
    Activation,
    Context,
    Decision,
    InputExpired,
    Limits,
    NonRetryableError,
    RetryPolicy,
    StepErrored,
    StepFailed,
    StepSucceeded,
    StepTask,
    StepTimedOut,
    Workflow,
    WorkflowRegistry,
    replay_check,
)
from durable_workflows.core.timefmt import parse_ts
from durable_workflows.schemas import identify

T0 = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)


def examples(n: int) -> int:
    """``n`` hypothesis examples, scaled by ``DWF_CORE_EXAMPLES_SCALE`` (e.g. 10 for a soak)."""
    return max(1, int(n * float(os.environ.get("DWF_CORE_EXAMPLES_SCALE", "1"))))


TIMESTAMP_FIELDS = frozenset(
    {
        "started_at",
        "finished_at",
        "retry_at",
        "scheduled_at",
        "wake_at",
        "fired_at",
        "requested_at",
        "expires_at",
        "received_at",
        "expired_at",
        "rejected_at",
        "recorded_at",
        "until",
    }
)


class TimedOut(Exception):
    """Raised by a scripted body to tell the driver to report ``StepTimedOut``."""


def submission(sid: str, request: str, value: Any) -> dict[str, Any]:
    """An ``input-submitted`` inbox message."""
    return {
        "type": "submission",
        "key": sid,
        "value": {"submission_id": sid, "request": request, "value": value},
        "headers": {"operation": "insert"},
    }


def cancel(cid: str, reason: str | None = None) -> dict[str, Any]:
    """A ``cancel-requested`` inbox message."""
    return {
        "type": "cancel",
        "key": cid,
        "value": {"cancel_id": cid, "reason": reason},
        "headers": {"operation": "insert"},
    }


def events(history: Iterable[dict[str, Any]]) -> list[str]:
    """The event names of ``history`` (each message validated on the way)."""
    return [identify(m, "history") for m in history]


def scrub(history: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``history`` with every timestamp replaced, for crash/no-crash comparisons."""

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: ("<ts>" if k in TIMESTAMP_FIELDS and isinstance(v, str) else clean(v))
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [clean(v) for v in node]
        return node

    return [clean(m) for m in history]


@dataclass
class Driver:
    """A pure-Python shell over the core (see module docstring)."""

    wf: Workflow | WorkflowRegistry
    run_id: str = "run-1"
    workflow_name: str | None = None
    input: Any = None
    clock: datetime = T0
    inbox_script: list[tuple[datetime, Any]] = field(default_factory=list)
    crash_points: frozenset[int] = frozenset()
    limits: Limits | None = None
    max_iterations: int = 500
    #: Run one body per turn (the lowest position first) and advance in between, so that
    #: decisions are made while other bodies are still running; else run a decision's
    #: bodies together and report them together.
    serial: bool = False

    history: list[dict[str, Any]] = field(default_factory=list)
    inbox: list[Any] = field(default_factory=list)
    appends: list[list[dict[str, Any]]] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    body_runs: Counter[tuple[str, int]] = field(default_factory=Counter)
    crashes: int = 0
    closed: bool = False
    opportunity: int = 0
    act: Activation | None = None
    running: list[StepTask] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.workflow_name is None:
            self.workflow_name = self.wf.name if isinstance(self.wf, Workflow) else "?"
        self.inbox_script = sorted(self.inbox_script, key=lambda item: item[0])

    # -- plumbing ----------------------------------------------------------------------

    def rng(self) -> random.Random:
        # Seeded by the history length, so a redone decision draws what the lost one drew.
        return random.Random(len(self.history))

    def request(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "workflow": self.workflow_name, "input": self.input}

    def activation(self) -> Activation:
        if self.act is None:
            self.act = Activation(self.wf, self.history, request=self.request(), limits=self.limits)
        return self.act

    def crash_here(self) -> bool:
        """Count a crash opportunity; True (and the activation dropped) when it is a crash point."""
        self.opportunity += 1
        if self.opportunity in self.crash_points:
            self.crashes += 1
            self.act = None
            self.running = []  # bodies in flight die with the worker
            return True
        return False

    def deliver_inbox(self) -> None:
        while self.inbox_script and self.inbox_script[0][0] <= self.clock:
            self.inbox.append(self.inbox_script.pop(0)[1])

    def append(self, messages: Sequence[dict[str, Any]]) -> None:
        for message in messages:
            identify(message, "history")  # every message the core produces validates
        if messages:
            self.appends.append(list(messages))
        for message in messages:
            name = identify(message, "history")
            if name == "sleep-completed":  # sleeps never fire before wake_at, by the clock
                assert self.clock >= parse_ts(message["value"]["wake_at"])
            if name == "input-expired":
                assert self.clock >= parse_ts(message["value"]["expires_at"])
            if name == "step-attempt-started":
                previous = self.latest("step", message["key"])
                assert previous is not None and previous["status"] == "retrying"
                assert self.clock >= parse_ts(previous["retry_at"])
        self.history.extend(messages)

    def latest(self, entity: str, key: str) -> dict[str, Any] | None:
        found = None
        for message in self.history:
            if message["type"] == entity and message["key"] == key:
                found = message["value"]
        return found

    def check_body_may_run(self, task: StepTask) -> None:
        """REPLAY-023: no body of a finished step or of a failed attempt runs again."""
        step = self.latest("step", task.key)
        assert step is not None, "a body ran before its step-started was durable (MODEL-027)"
        assert step["status"] == "running", f"body of {task.key} ran in status {step['status']}"
        assert step["attempt"] == task.attempt

    def run_body(self, task: StepTask) -> StepSucceeded | StepErrored | StepTimedOut:
        self.check_body_may_run(task)
        self.body_runs[(task.key, task.attempt)] += 1
        try:
            result = task.call()
        except TimedOut:
            return StepTimedOut()
        except Exception as exc:
            return StepErrored.from_exception(exc)
        return StepSucceeded(result)

    # -- the loop ----------------------------------------------------------------------

    def advance(self) -> Decision:
        self.deliver_inbox()
        decision = self.activation().advance(self.clock, list(self.inbox), self.rng())
        self.decisions.append(decision)
        return decision

    def run(self) -> Driver:
        """Drive the run until it ends and is closed, or waits for an inbox that never comes."""
        for _ in range(self.max_iterations):
            decision = self.advance()
            if self.crash_here():
                continue  # the decision is lost: nothing was appended
            self.append(decision.append)
            if self.crash_here():
                continue
            if decision.close_run:
                self.deliver_inbox()
                act = self.activation()
                rejections = act.closing(list(self.inbox), self.clock)
                if self.crash_here():
                    continue
                self.append(rejections)
                self.closed = True
                return self
            if self.serial and (decision.steps or self.running):
                self.running.extend(decision.steps)
                # The lowest position first: the same choice after a crash (the running set
                # is exactly the steps the history shows running).
                task = min(self.running, key=lambda t: (t.seq, t.attempt))
                self.running.remove(task)
                outcome = self.run_body(task)
                if self.crash_here():
                    continue
                self.activation().step_finished(task.key, task.attempt, outcome, self.clock)
                continue
            if decision.steps:
                lost = False
                outcomes = []
                for task in decision.steps:
                    outcomes.append((task, self.run_body(task)))
                    if self.crash_here():
                        lost = True
                        break
                if lost:
                    continue
                act = self.activation()
                for task, outcome in outcomes:
                    act.step_finished(task.key, task.attempt, outcome, self.clock)
                continue
            # Nothing to run: move the clock to the next timer or the next scripted message.
            nexts = [t for t in (decision.wake_at,) if t is not None]
            if self.inbox_script:
                nexts.append(self.inbox_script[0][0])
            if not nexts:
                return self  # waits for an inbox message that never comes
            target = min(nexts)
            if target > self.clock:
                self.clock = target
            elif decision.wake_at is not None and decision.wake_at <= self.clock:
                raise AssertionError(f"core asked to wake at {decision.wake_at} but did not move")
        raise AssertionError("the run did not settle")

    # -- views -------------------------------------------------------------------------

    @property
    def run_value(self) -> dict[str, Any]:
        value = self.latest("run", self.run_id)
        assert value is not None
        return value

    @property
    def events(self) -> list[str]:
        return events(self.history)


# --------------------------------------------------------------------------------------
# Workflows as data


@dataclass(frozen=True)
class StepOp:
    name: str
    script: tuple[str, ...]  # per attempt: "ok", "err", "fatal", "timeout"
    max_attempts: int
    catch: bool = True


@dataclass(frozen=True)
class SleepOp:
    name: str
    ms: int


@dataclass(frozen=True)
class InputOp:
    name: str
    timeout_ms: int | None
    answer_at_ms: int | None  # when a valid answer lands (from T0); None: never
    invalid_first: bool = False
    catch: bool = True


@dataclass(frozen=True)
class RecordOp:
    kind: str  # "now", "random", "uuid"
    name: str


@dataclass(frozen=True)
class PatchOp:
    name: str


@dataclass(frozen=True)
class GatherOp:
    branches: tuple[tuple[Any, ...], ...]


Program = tuple[Any, ...]


def body_for(op: StepOp) -> Callable[[], Any]:
    def body(attempt_box: list[int]) -> Any:
        from durable_workflows.core import current_step

        info = current_step()
        assert info is not None
        what = op.script[min(info.attempt, len(op.script)) - 1]
        if what == "ok":
            return {"step": info.key, "attempt": info.attempt}
        if what == "timeout":
            raise TimedOut()
        if what == "fatal":
            raise NonRetryableError(f"{info.key} failed for good", details={"a": info.attempt})
        raise ConnectionError(f"{info.key} attempt {info.attempt} failed")

    return lambda: body([0])


def make_program_workflow(program: Program, name: str = "generated") -> Workflow:
    """A workflow that interprets ``program`` and returns what each op gave it."""

    async def run_ops(ctx: Context, ops: Sequence[Any], out: list[Any]) -> None:
        for op in ops:
            if isinstance(op, StepOp):
                policy = RetryPolicy(
                    max_attempts=op.max_attempts,
                    initial_interval=timedelta(milliseconds=100),
                    jitter=0.2,
                )
                timeout = timedelta(seconds=5)
                try:
                    out.append(await ctx.step(op.name, body_for(op), retry=policy, timeout=timeout))
                except StepFailed as exc:
                    if not op.catch:
                        raise
                    out.append(["failed", exc.key, exc.attempts, exc.error["type"]])
            elif isinstance(op, SleepOp):
                await ctx.sleep(op.name, timedelta(milliseconds=op.ms))
                out.append(["slept", op.name])
            elif isinstance(op, InputOp):
                deadline = None if op.timeout_ms is None else timedelta(milliseconds=op.timeout_ms)
                try:
                    out.append(
                        await ctx.request_input(
                            op.name, schema={"type": "integer"}, prompt="n?", timeout=deadline
                        )
                    )
                except InputExpired as exc:
                    if not op.catch:
                        raise
                    out.append(["expired", exc.key])
            elif isinstance(op, RecordOp):
                if op.kind == "now":
                    out.append((await ctx.now(op.name)).isoformat())
                elif op.kind == "random":
                    out.append(await ctx.random(op.name))
                else:
                    out.append(await ctx.uuid(op.name))
            elif isinstance(op, PatchOp):
                out.append(["patched", op.name, bool(await ctx.patched(op.name))])
            elif isinstance(op, GatherOp):
                subs: list[list[Any]] = [[] for _ in op.branches]
                await ctx.gather(
                    *(run_ops(ctx, b, s) for b, s in zip(op.branches, subs, strict=True))
                )
                out.append(subs)

    async def interpret(ctx: Context, _input: Any) -> Any:
        out: list[Any] = []
        await run_ops(ctx, program, out)
        return out

    return Workflow(name, interpret)


def inbox_for(program: Program) -> list[tuple[datetime, Any]]:
    """Scripted submissions for the program's inputs (keys follow the occurrence counters)."""
    script: list[tuple[datetime, Any]] = []
    counts: Counter[str] = Counter()
    serial = [0]

    def walk(ops: Sequence[Any]) -> None:
        for op in ops:
            if isinstance(op, InputOp):
                counts[op.name] += 1
                n = counts[op.name]
                key = op.name if n == 1 else f"{op.name}#{n}"
                if op.answer_at_ms is not None:
                    at = T0 + timedelta(milliseconds=op.answer_at_ms)
                    serial[0] += 1
                    if op.invalid_first:
                        script.append((at, submission(f"bad-{serial[0]}", key, "not a number")))
                    script.append((at, submission(f"s-{serial[0]}", key, serial[0])))
                    # a retried POST: the same submission again is a no-op (INPUT-015)
                    script.append((at, submission(f"s-{serial[0]}", key, serial[0])))
                    script.append((at, submission(f"late-{serial[0]}", key, -1)))
            elif isinstance(op, GatherOp):
                for branch in op.branches:
                    walk(branch)

    walk(program)
    return script


NAMES = st.sampled_from(["a", "b", "fetch", "charge"])


def step_ops() -> st.SearchStrategy[StepOp]:
    return st.builds(
        StepOp,
        name=NAMES,
        script=st.lists(
            st.sampled_from(["ok", "ok", "err", "timeout", "fatal"]), min_size=1, max_size=3
        ).map(tuple),
        max_attempts=st.integers(1, 3),
        catch=st.booleans(),
    )


def leaf_ops() -> st.SearchStrategy[Any]:
    return st.one_of(
        step_ops(),
        st.builds(SleepOp, name=NAMES, ms=st.integers(0, 5000)),
        st.builds(
            InputOp,
            name=st.sampled_from(["approve", "n"]),
            timeout_ms=st.one_of(st.none(), st.integers(0, 4000)),
            answer_at_ms=st.one_of(st.none(), st.integers(0, 6000)),
            invalid_first=st.booleans(),
            catch=st.booleans(),
        ),
        st.builds(
            RecordOp,
            kind=st.sampled_from(["now", "random", "uuid"]),
            name=st.sampled_from(["r", "t"]),
        ),
    )


def programs() -> st.SearchStrategy[Program]:
    """Programs with gathers and patch checks (a repeated patch id answers as the first)."""
    patch = st.builds(PatchOp, name=st.sampled_from(["p1", "p2"]))
    branch = st.lists(st.one_of(leaf_ops(), patch), min_size=1, max_size=3).map(tuple)
    gather = st.builds(GatherOp, branches=st.lists(branch, min_size=1, max_size=3).map(tuple))
    top = st.one_of(leaf_ops(), leaf_ops(), patch, gather)
    return st.lists(top, min_size=1, max_size=6).map(tuple)


@dataclass(frozen=True)
class Extras:
    """Inbox traffic besides the answers: a cancel and an unreadable message, at given times."""

    cancel_at_ms: int | None = None
    junk_at_ms: int | None = None

    def script(self) -> list[tuple[datetime, Any]]:
        out: list[tuple[datetime, Any]] = []
        if self.junk_at_ms is not None:
            out.append((T0 + timedelta(milliseconds=self.junk_at_ms), ["not", "a", "message"]))
        if self.cancel_at_ms is not None:
            at = T0 + timedelta(milliseconds=self.cancel_at_ms)
            out.append((at, cancel("c-1", "generated cancel")))
            out.append((at, cancel("c-1", "generated cancel")))  # a retried POST
        return out


def extras() -> st.SearchStrategy[Extras]:
    times = st.one_of(st.none(), st.integers(0, 8000))
    return st.builds(Extras, cancel_at_ms=times, junk_at_ms=times)


def drive(
    program: Program,
    crash_points: Iterable[int] = (),
    more: Extras = Extras(),
    serial: bool = False,
) -> Driver:
    wf = make_program_workflow(program)
    script = inbox_for(program) + more.script()
    return Driver(
        wf, inbox_script=script, crash_points=frozenset(crash_points), serial=serial
    ).run()


#: Fields that never change after an entity's insert (events.md, EVT-009).
FIXED_FIELDS = {
    "run": ("run_id", "workflow", "protocol", "input", "started_at"),
    "step": ("name", "seq", "max_attempts", "timeout_ms"),
    "sleep": ("name", "seq", "duration_ms", "scheduled_at", "wake_at"),
    "input": ("name", "seq", "prompt", "schema", "requested_at", "expires_at"),
}

#: Events that carry headers.txid (EVT-019), and what it equals.
TXID_EVENTS = {"run-started", "input-received", "input-rejected", "run-cancelled"}


def assert_well_formed(driver: Driver) -> None:
    """Invariants every history the core writes must hold."""
    history = driver.history
    names = events(history)
    assert names[0] == "run-started"
    # EVT-009: fixed fields keep their insert's value; EVT-019: txid only where defined.
    inserted: dict[tuple[str, str], dict[str, Any]] = {}
    for message, name in zip(history, names, strict=True):
        entity = (message["type"], message["key"])
        fixed = FIXED_FIELDS.get(message["type"], ())
        if message["headers"]["operation"] == "insert":
            inserted[entity] = message["value"]
        else:
            first = inserted[entity]
            assert all(message["value"][f] == first[f] for f in fixed), (name, message)
        assert ("txid" in message["headers"]) == (name in TXID_EVENTS), message
        assert set(message) == {"type", "key", "value", "headers"}  # EVT-001, EVT-002
    # EVT-016: positions 1..n in the order of the primitives' inserts.
    inserts = [
        m
        for m in history
        if m["headers"]["operation"] == "insert"
        and m["type"] in ("step", "sleep", "input", "record", "patch")
    ]
    assert [m["value"]["seq"] for m in inserts] == list(range(1, len(inserts) + 1))
    # INPUT-003: at most one final state per input; INPUT-015: one outcome per inbox id.
    finals = Counter(
        m["key"]
        for m in history
        if m["type"] == "input" and m["value"]["status"] in ("received", "expired")
    )
    assert all(n == 1 for n in finals.values())
    outcome_ids: Counter[str] = Counter()
    for m in history:
        if m["type"] == "submission":
            outcome_ids[m["key"]] += 1
        elif m["type"] == "input" and m["value"]["status"] == "received":
            outcome_ids[m["value"]["submission_id"]] += 1
        elif m["type"] == "run" and m["value"]["status"] == "cancelled":
            outcome_ids[m["headers"]["txid"]] += 1
    assert all(n == 1 for n in outcome_ids.values()), outcome_ids
    # MODEL-020: run events follow the transition table.
    allowed = {
        "running": {"sleeping", "waiting", "completed", "failed", "cancelled"},
        "sleeping": {"running", "failed", "cancelled"},
        "waiting": {"running", "failed", "cancelled"},
    }
    status = None
    for m in history:
        if m["type"] != "run":
            continue
        new = m["value"]["status"]
        if status is not None:
            assert new in allowed.get(status, set()), f"{status} -> {new}"
        status = new
    if driver.closed:
        # MODEL-021: after the terminal event, only rejections.
        terminal = max(i for i, m in enumerate(history) if m["type"] == "run")
        assert all(m["type"] == "submission" for m in history[terminal + 1 :])
        # every non-duplicate inbox message has exactly one outcome
        seen: set[str] = set()
        for index, message in enumerate(driver.inbox):
            from durable_workflows.core.inbox import inbox_id

            iid = inbox_id(message, index)
            if iid in seen:
                continue
            seen.add(iid)
            assert outcome_ids[iid] == 1, f"inbox message {iid} has {outcome_ids[iid]} outcomes"
    # the history replays cleanly against the same code
    assert isinstance(driver.wf, Workflow)
    report = replay_check(driver.wf, history)
    assert report.ok, report.message


# --------------------------------------------------------------------------------------
# Properties


SETTINGS = settings(
    max_examples=examples(150),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.req(
    "REPLAY-011",
    "REPLAY-013",
    "RETRY-011",
    "REPLAY-023",
    "EVT-016",
    "EVT-009",
    "EVT-019",
    "EVT-001",
    "EVT-002",
    "EVT-030",
)
@SETTINGS
@given(program=programs(), more=extras(), serial=st.booleans(), data=st.data())
def test_crashes_do_not_change_the_history(
    program: Program, more: Extras, serial: bool, data: st.DataObject
) -> None:
    """A history with crashes equals the history without them, timestamps aside (RETRY-011).

    Crashes fall anywhere: before a decision is appended, after it, after a step body ran
    but before its outcome was reported, between the terminal event and the closing append.
    """
    clean = drive(program, (), more, serial)
    assert_well_formed(clean)
    points = data.draw(
        st.frozensets(st.integers(1, max(1, clean.opportunity)), min_size=1, max_size=6),
        label="crash points",
    )
    crashed = drive(program, points, more, serial)
    assert_well_formed(crashed)
    assert scrub(crashed.history) == scrub(clean.history)
    assert crashed.closed == clean.closed


@pytest.mark.req("REPLAY-023", "RETRY-010", "MODEL-027")
@SETTINGS
@given(program=programs(), data=st.data())
def test_no_completed_step_body_runs_again(program: Program, data: st.DataObject) -> None:
    """Bodies run only while their attempt is running and recorded (asserted by the driver)."""
    clean = drive(program)
    points = data.draw(
        st.frozensets(st.integers(1, max(1, clean.opportunity)), min_size=1, max_size=10),
        label="crash points",
    )
    crashed = drive(program, points)
    # Without crashes, every attempt body runs exactly once.
    assert all(n == 1 for n in clean.body_runs.values())
    # With crashes, the attempts are the same ones; only interrupted ones may run again.
    assert set(crashed.body_runs) == set(clean.body_runs)


@pytest.mark.req("MODEL-029", "MODEL-022", "MODEL-028")
@SETTINGS
@given(program=st.lists(leaf_ops(), min_size=1, max_size=8).map(tuple))
def test_one_append_per_step(program: Program) -> None:
    """Sequential code: a step's outcome always travels with what follows it.

    After a step ends, the code either starts the next step, blocks, or ends; each of
    those produces a message, and it goes in the same append (MODEL-029). So no
    append ends with a step outcome, and a run costs one append per step attempt plus
    one per wait, plus one per turn that only rejects answers while the run waits
    (too late for an expired request: the run stays suspended), plus the closing
    append.
    """
    clean = drive(program)
    outcome_events = ("step-completed", "step-failed", "step-attempt-failed")
    for batch in clean.appends:
        assert identify(batch[-1], "history") not in outcome_events, events(batch)
    names = clean.events
    attempts = names.count("step-started") + names.count("step-attempt-started")
    wakes = names.count("run-resumed")
    rejecting = sum(
        1
        for batch in clean.appends[:-1]
        if {identify(m, "history") for m in batch} == {"input-rejected"}
    )
    assert len(clean.appends) <= 1 + attempts + wakes + rejecting + 1


@pytest.mark.req(
    "EVT-017",
    "EVT-026",
    "EVT-029",
    "EVT-031",
    "EVT-032",
    "EVT-033",
    "EVT-038",
    "EVT-045",
    "EVT-047",
    "EVT-050",
    "EVT-054",
    "EVT-058",
    "EVT-059",
    "EVT-063",
    "EVT-068",
    "EVT-073",
    "EVT-074",
    "EVT-075",
    "EVT-078",
    "EVT-088",
    "EVT-012",
    "EVT-086",
    "VER-007",
)
@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=programs(), more=extras())
def test_every_message_the_core_writes_is_a_valid_event(program: Program, more: Extras) -> None:
    """Each message validates against its event's schema and rules (``identify``), so it has
    the shape, fields, txid and cross-field rules its event defines, and nothing else."""
    driver = drive(program, (), more)
    for message in driver.history:
        name = identify(message, "history")
        value = message["value"]
        for field_name, field_value in value.items():
            if field_name.endswith("_at") and isinstance(field_value, str):
                assert len(field_value) == len("2026-11-24T10:00:00.000Z")  # EVT-012
        if name == "value-recorded" and value["kind"] == "uuid":
            assert value["value"][14] == "4"  # EVT-086: version 4
        if name == "input-received":
            submitted = next(
                m
                for m in driver.inbox
                if isinstance(m, dict) and m["key"] == value["submission_id"]
            )
            assert value["value"] == submitted["value"]["value"]  # EVT-074: unchanged


def test_driver_smoke() -> None:
    """The driver runs a small program end to end."""
    program: Program = (
        StepOp("a", ("err", "ok"), 3),
        SleepOp("nap", 1000),
        InputOp("approve", 5000, 2000, invalid_first=True),
        RecordOp("uuid", "u"),
        GatherOp(((StepOp("b", ("ok",), 1),), (SleepOp("x", 10), StepOp("c", ("ok",), 1)))),
    )
    d = drive(program)
    assert_well_formed(d)
    assert d.run_value["status"] == "completed"
    out = d.run_value["output"]
    assert out[0] == {"step": "a", "attempt": 2}
    assert out[2] == 1
    assert d.closed
