"""One activation of one run: history in, decisions out (replay.md, model.md, inputs.md).

The shell drives it::

    act = Activation(registry, history, request=run_requested_value)   # HistoryError: leave it
    decision = act.advance(now, inbox, rng)
    while True:
        append(decision.append)                  # one append; on Fenced: discard `act`
        if decision.close_run:
            close inbox; inbox_final = read inbox to its final offset
            append(act.closing(inbox_final, now), close=True); break
        start decision.steps; when one ends: act.step_finished(key, attempt, outcome, now)
        wait for a step outcome, decision.wake_at, or (any time) inbox growth
        decision = act.advance(now, inbox, rng)

Nothing here reads a clock, a random source or a stream: ``now``, ``rng`` and the inbox
are passed in, so the same inputs always give the same decisions.

How replay works here. The workflow coroutine is started once per activation and driven
by the deterministic scheduler. Every primitive it issues is matched against the recorded
primitive at the next position (REPLAY-010) or, past the recorded ones, recorded anew. The
*outcome log* lists the positions of finished steps, sleeps and inputs in the order their
outcome messages appear in history; outcomes are given to the code strictly in that order,
one at a time, running the code until it blocks between two (REPLAY-013). Live outcomes are
appended to the same log and given the same way, so a live execution and its replay see
identical interleavings.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .api import Context, RetryPolicy, Workflow, WorkflowRegistry
from .decisions import (
    Decision,
    Limits,
    ReplayReport,
    RunStatus,
    StepErrored,
    StepOutcome,
    StepSucceeded,
    StepTask,
    StepTimedOut,
)
from .errors import (
    HistoryError,
    InputExpired,
    NonDeterminism,
    NonRetryableError,
    StepFailed,
)
from .history import TERMINAL, ParsedHistory, Recorded, parse_history
from .inbox import (
    ID_PATTERN,
    InboxEntry,
    check_request_schema,
    classify,
    compact_size,
    schema_problem,
)
from .messages import (
    error_object,
    input_expired,
    input_received,
    input_rejected,
    input_requested,
    patch_recorded,
    run_started,
    run_update,
    sleep_completed,
    sleep_scheduled,
    step_started,
    step_update,
    value_recorded,
)
from .scheduler import PatchCheck, Pending, Scheduler
from .timefmt import ceil_ms, floor_ms, format_ts, parse_ts, plus_ms

__all__ = ["PROTOCOL", "Activation", "replay_check"]

#: The protocol version this core implements and records in new runs.
PROTOCOL = "1.0"

_SUSPENDED = ("sleeping", "waiting")

#: Run failures that the engine decides, not the workflow code.
_NOT_BY_CODE = frozenset(
    {"NonDeterminism", "HistoryTooLarge", "UnknownWorkflow", "InboxClosed", "MessageTooLarge"}
)


class _Diverged(BaseException):
    """Unwinds workflow code once non-determinism is found (code must not catch it)."""


class _Beyond(Exception):
    """Offline check of a live history: the code went past what is recorded (it stops there)."""


class _Stopped(BaseException):
    """A primitive issued after the core stopped the code (run ended, or offline check)."""


@dataclass
class _Issued:
    """A primitive the code issued in this activation, with what the current code passed."""

    rec: Recorded
    pending: Pending[Any]
    fn: Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    policy: RetryPolicy | None = None


@dataclass
class _Report:
    key: str
    attempt: int
    outcome: StepOutcome
    at: datetime


def _json_copy(value: Any) -> Any:
    """The value decoded from its JSON encoding (REPLAY-014)."""
    return json.loads(json.dumps(value, allow_nan=False))


def _uuid4(rng: random.Random) -> str:
    """A version-4 UUID from ``rng`` (no ``uuid.uuid4``: that reads the OS random source)."""
    bits = rng.getrandbits(128)
    bits &= ~(0xF000 << 64)
    bits |= 0x4000 << 64  # version 4
    bits &= ~(0xC000 << 48)
    bits |= 0x8000 << 48  # RFC 4122 variant
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _describe(entity: str, name: str, kind: str | None) -> str:
    text = f'{entity} "{name}"'
    return f"{text} (kind {kind})" if kind is not None else text


class Activation:
    """The core's state for one run during one activation.

    ``workflows`` is a registry (the run's ``workflow`` name is looked up; an unknown name
    fails a new run with ``UnknownWorkflow``, MODEL-019, and raises :class:`HistoryError`
    for a run that already has a history, so the shell leaves it, MODEL-018) or a single
    :class:`Workflow`, used whatever the run's recorded name. ``history`` is the run's
    whole history read from offset -1 (FENCE-003). For a run that has no history yet, pass
    ``request`` (the ``run-requested`` message or its value: ``run_id``, ``workflow``,
    ``input``); the first decision then starts with ``run-started``.

    Raises :class:`HistoryError` / :class:`UnsupportedProtocol` when the shell must append
    nothing to this history (VER-003, VER-005, VER-006).

    Contract with the shell: after each :meth:`advance` the shell appends
    ``decision.append`` (as one append) before it calls anything else; if that append fails
    or is fenced, it discards this object and builds a new one from the re-read history.
    """

    def __init__(
        self,
        workflows: WorkflowRegistry | Workflow,
        history: Sequence[Mapping[str, Any]],
        *,
        request: Mapping[str, Any] | None = None,
        protocol: str = PROTOCOL,
        limits: Limits | None = None,
        check_messages: bool = True,
    ) -> None:
        self._protocol = protocol
        self._limits = limits or Limits()
        self._parsed: ParsedHistory = parse_history(
            history, protocol=protocol, check=check_messages
        )
        self._history: list[dict[str, Any]] = list(self._parsed.messages)
        self._run: dict[str, Any] | None = self._parsed.run
        if self._run is not None:
            self._run_id = str(self._run["run_id"])
            self._wf_name = str(self._run["workflow"])
            self._input: Any = self._run["input"]
        else:
            if request is None:
                raise HistoryError("the history is empty and no run-requested was given")
            req = request["value"] if isinstance(request.get("value"), Mapping) else request
            run_id = req.get("run_id")
            if not isinstance(run_id, str) or not ID_PATTERN.match(run_id):
                raise HistoryError(f"run id {run_id!r} does not match the run id pattern (SEC-006)")
            self._run_id = run_id
            self._wf_name = str(req.get("workflow"))
            self._input = req.get("input")
        self._registry = workflows
        if isinstance(workflows, Workflow):
            self._workflow: Workflow | None = workflows
        else:
            self._workflow = workflows.get(self._wf_name)
            if self._workflow is None and self._run is not None and not self._parsed.terminal:
                raise HistoryError(f"workflow {self._wf_name!r} is not registered with this engine")

        # Primitives by position and by (entity, key): recorded ones first, new ones as issued.
        self._recorded: dict[int, Recorded] = dict(self._parsed.primitives)
        self._by_key: dict[tuple[str, str], Recorded] = dict(self._parsed.by_key)
        self._history_max_seq = self._parsed.max_seq
        self._max_seq = self._history_max_seq
        self._outcomes: list[int] = list(self._parsed.outcomes)
        self._decided: set[str] = set(self._parsed.decided)
        self._rejections = self._parsed.rejections

        self._cursor = 1  # next recorded position to match
        self._counts: dict[tuple[str, str], int] = {}
        self._patches: dict[str, bool] = {}
        self._issued: dict[int, _Issued] = {}
        self._open: dict[int, _Issued] = {}  # issued and not finished
        self._pending_seq: dict[int, int] = {}  # id of a primitive's Pending -> its seq
        self._next_outcome = 0
        self._sched: Scheduler | None = None
        self._root: Pending[Any] | None = None
        self._ctx = Context(self)
        self._nd: NonDeterminism | None = None
        self._offline = False
        self._stopped = False
        self._replayed = False

        self._buffer: list[dict[str, Any]] = []
        self._to_dispatch: list[tuple[str, int]] = []
        self._dispatched: set[tuple[str, int]] = set()
        self._reports: list[_Report] = []
        self._inbox_cache: list[InboxEntry] = []
        self._now = datetime.min
        self._t = ""
        self._rng: random.Random | None = None

    # -- public state ------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self._run_id

    @property
    def workflow_name(self) -> str:
        """The name the run was started under."""
        return self._wf_name

    @property
    def status(self) -> str:
        """The run's status as of the messages produced so far (``"new"`` before run-started)."""
        return "new" if self._run is None else str(self._run["status"])

    @property
    def finished(self) -> bool:
        """Whether a terminal run event is recorded (or produced): only ``closing`` remains."""
        return self._run is not None and self._run["status"] in TERMINAL

    @property
    def history(self) -> tuple[dict[str, Any], ...]:
        """The history as this activation sees it: what it was given plus what it produced."""
        return tuple(self._history)

    # -- the shell's calls -------------------------------------------------------------

    def advance(
        self,
        now: datetime,
        inbox: Sequence[Any],
        rng: random.Random,
        *,
        inbox_at_tail: bool = True,
        inbox_closed: bool = False,
    ) -> Decision:
        """Move the run as far as it can go at ``now``; return what to append and what to run.

        ``inbox`` is the whole inbox read so far (from its start); decisions are recorded by
        inbox id, so passing a re-read inbox again is idempotent. ``inbox_at_tail`` says the
        read ended with ``Stream-Up-To-Date: true``; only then does the core record
        ``input-expired`` (INPUT-035: a valid submission in the inbox wins the race).
        ``rng`` gives retry jitter and the values of ``ctx.random()``/``ctx.uuid()``.

        When it returns, every message of ``inbox`` is processed (INPUT-018): decided (the
        outcome is in ``append``), a duplicate, or kept for a request the run has not made
        yet (INPUT-020). A shell may acknowledge inbox offsets up to what it passed
        (WAKE-018) once the append is durable.

        ``inbox_closed`` says the inbox read ended at a closed stream. The engine closes it
        only after the run has ended, so on a live run someone else did, and no input or
        cancel can reach the run any more: it is decided, then failed (SEC-028).
        """
        self._now = floor_ms(now)
        self._t = format_ts(self._now)
        self._rng = rng
        if self.finished:
            # MODEL-035: only the closing steps remain; the code never runs (REPLAY-004).
            return self._decision(())
        decided_before = (set(self._decided), self._rejections)
        entries = self._classify(inbox)
        if self._run is None:
            self._emit(
                run_started(self._run_id, self._wf_name, self._protocol, self._input, self._t)
            )
            if self._workflow is None:
                self._end("failed", error=error_object("UnknownWorkflow", self._unknown_text()))
        if not self.finished and self._cancel_waiting(entries):
            # CANCEL-005/012: a cancel in the inbox ends the run before any code or body runs;
            # what precedes it in the inbox is decided first (INPUT-016). The run does not
            # resume in between: it goes straight to cancelled (model.md transitions).
            self._inbox_pass(entries, resume=False)
        if not self.finished and inbox_closed:
            self._inbox_pass(entries, resume=False)
            self._end(
                "failed",
                error=error_object(
                    "InboxClosed",
                    "The run's inbox was closed before the run ended; "
                    "no input or cancel can reach the run.",
                ),
            )
        if not self.finished and not self._replayed:
            self._replay()
        if not self.finished:
            self._live(entries, inbox_at_tail)
        if not self.finished and self._code_ended():
            self._finish_code()
        # SEC-010: the terminal event is exempt from the limit.
        counted = [
            m for m in self._buffer if not (m["type"] == "run" and m["value"]["status"] in TERMINAL)
        ]
        if len(self._history) + len(counted) > self._limits.history_messages:
            self._history_too_large(decided_before)
        return self._decision(tuple(self._buffer))

    def step_finished(self, key: str, attempt: int, outcome: StepOutcome, now: datetime) -> None:
        """Report the end of the body of attempt ``attempt`` of step ``key``.

        The outcome is recorded at the next :meth:`advance`. An outcome of an attempt that is
        not running (reported twice, or the run ended) is ignored (RETRY-016, MODEL-021).
        """
        if (key, attempt) not in self._dispatched or self.finished:
            return
        self._dispatched.discard((key, attempt))
        self._reports.append(_Report(key, attempt, outcome, floor_ms(now)))

    def fail(self, now: datetime, error_type: str, message: str, details: Any = None) -> Decision:
        """End the run as failed with an error the engine decides, at ``now``.

        For a shell that cannot record what the run decided (SEC-035: the stream server
        refuses a message as too large): call it on a fresh activation of the run's
        durable history, before :meth:`advance`; the decision is the terminal event
        alone, built on the run as last recorded. Then finish as usual (``closing``).
        """
        if self._run is None or self.finished or self._replayed:
            raise RuntimeError("fail() is for a fresh activation of a run that has not ended")
        self._now = floor_ms(now)
        self._t = format_ts(self._now)
        self._end("failed", error=error_object(error_type, message, details))
        return self._decision(tuple(self._buffer))

    def closing(self, inbox_final: Sequence[Any], now: datetime) -> list[dict[str, Any]]:
        """The rejections of the run's last append (INPUT-039, MODEL-033/037).

        Call after the terminal run event is durable and the inbox is closed, with the inbox
        read to its final offset. Every inbox message not yet decided gets one
        ``input-rejected`` in inbox order; duplicates get nothing.
        """
        if not self.finished:
            raise RuntimeError("closing() is only for a run whose terminal event is recorded")
        t = format_ts(now)
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        submissions = 0
        for entry in self._classify(inbox_final):
            if entry.inbox_id in seen:
                continue  # check 1: duplicate
            seen.add(entry.inbox_id)
            if entry.kind == "submission":
                submissions += 1
            if entry.inbox_id in self._decided:
                continue
            if entry.kind is None:
                reason, text = "malformed", self._malformed_text(entry)
            elif entry.kind == "cancel":
                # CANCEL-009: a cancel of an ended run.
                reason, text = (
                    "run-finished",
                    "The run had already ended; the cancel has no effect.",
                )
            elif self._too_large(entry, submissions) is not None:
                reason, text = "too-large", str(self._too_large(entry, submissions))
            else:
                reason = "run-finished"
                text = f"Input '{entry.request}' was not taken: the run has ended."
            if self._record_rejection(entry):
                out.append(input_rejected(entry.inbox_id, entry.request, reason, text, t))
        self._history.extend(out)
        return out

    # -- decisions ---------------------------------------------------------------------

    def _unknown_text(self) -> str:
        text = f"Workflow '{self._wf_name}' is not known to this engine."
        if isinstance(self._registry, WorkflowRegistry) and len(self._registry):
            text += " It has: " + ", ".join(sorted(self._registry.names())) + "."
        return text

    def _decision(self, append: tuple[dict[str, Any], ...]) -> Decision:
        self._history.extend(append)
        self._buffer = []
        if self.finished:
            self._to_dispatch = []
            return Decision(append, True, (), None, False, self._status())
        tasks = []
        for key, attempt in self._to_dispatch:
            rec = self._by_key[("step", key)]
            issued = self._issued[rec.seq]
            assert issued.fn is not None
            tasks.append(
                StepTask(
                    run_id=self._run_id,
                    key=key,
                    name=rec.name,
                    seq=rec.seq,
                    attempt=attempt,
                    fn=issued.fn,
                    args=issued.args,
                    kwargs=issued.kwargs,
                    timeout_ms=rec.value["timeout_ms"],
                )
            )
            self._dispatched.add((key, attempt))
        self._to_dispatch = []
        pending = self._pending_prims()
        return Decision(
            append,
            False,
            tuple(tasks),
            self._earliest_deadline(pending),
            any(p.entity == "input" for p in pending),
            self._status(),
        )

    def _status(self) -> RunStatus:
        assert self._run is not None
        status: RunStatus = self._run["status"]
        return status

    def _pending_prims(self) -> list[Recorded]:
        """Issued primitives without an outcome, in position order."""
        return [self._open[seq].rec for seq in sorted(self._open)]

    def _track(self, seq: int, issued: _Issued) -> None:
        self._issued[seq] = issued
        self._pending_seq[id(issued.pending)] = seq
        if not issued.rec.finished:
            self._open[seq] = issued

    @staticmethod
    def _deadline(rec: Recorded) -> str | None:
        if rec.entity == "sleep":
            return str(rec.value["wake_at"])
        if rec.entity == "input":
            expires = rec.value["expires_at"]
            return None if expires is None else str(expires)
        if rec.entity == "step" and rec.status == "retrying":
            return str(rec.value["retry_at"])
        return None

    def _earliest_deadline(self, pending: list[Recorded]) -> datetime | None:
        times = [parse_ts(d) for d in (self._deadline(r) for r in pending) if d is not None]
        return min(times, default=None)

    # -- emitting ----------------------------------------------------------------------

    def _emit(self, message: dict[str, Any]) -> None:
        self._buffer.append(message)
        if message["type"] == "run":
            self._run = dict(message["value"])

    def _run_event(self, txid: str | None = None, **changes: Any) -> None:
        assert self._run is not None
        self._emit(run_update(self._run, txid, **changes))

    def _end(
        self, status: str, *, output: Any = None, error: Any = None, txid: str | None = None
    ) -> None:
        """Record the terminal run event and stop the code (MODEL-031)."""
        self._run_event(
            txid, status=status, waiting_for=None, output=output, error=error, finished_at=self._t
        )
        self._stop_code()

    def _awaited(self) -> set[int]:
        """Positions of the primitives the blocked code waits on (MODEL-023/024)."""
        if self._sched is None:
            return set()
        seqs = (self._pending_seq.get(id(p)) for p in self._sched.waited_on())
        return {seq for seq in seqs if seq is not None}

    def _resume_if_awaited(self, seq: int) -> None:
        # MODEL-026: the run moves on only when the code waits on what finished; the outcome
        # of a primitive the code issued but does not await yet changes nothing it waits for.
        if self._run is not None and self._run["status"] in _SUSPENDED and seq in self._awaited():
            self._resume_if_suspended()

    def _resume_if_suspended(self) -> None:
        # MODEL-026: a blocked run that can move on records run-resumed before new primitives.
        if self._run is not None and self._run["status"] in _SUSPENDED:
            self._run_event(status="running", waiting_for=None)

    def _update(self, rec: Recorded, message: dict[str, Any], outcome: bool) -> None:
        rec.value = dict(message["value"])
        self._emit(message)
        if outcome:
            self._outcomes.append(rec.seq)
        if rec.finished:
            self._open.pop(rec.seq, None)

    # -- running the code --------------------------------------------------------------

    def _start_code(self) -> None:
        assert self._workflow is not None
        self._sched = Scheduler()
        fn = self._workflow.fn
        try:
            coro = fn(self._ctx, _json_copy(self._input))
        except Exception as exc:  # a non-async function that raised at once
            self._root = Pending("workflow")
            self._root.set_error(exc)
            return
        if not inspect.iscoroutine(coro):
            self._root = Pending("workflow")
            self._root.set_error(
                TypeError(f"workflow '{self._workflow.name}' must be an async def function")
            )
            return
        self._root = self._sched.spawn(coro, "workflow")

    def _code_ended(self) -> bool:
        return self._root is not None and self._root.done

    def _run_code(self) -> None:
        """Run ready branches until all block, the code ends, or non-determinism is found."""
        assert self._sched is not None
        with contextlib.suppress(_Diverged):
            self._sched.run_until_blocked(stop=lambda: self._nd is not None or self._code_ended())

    def _pump(self) -> None:
        """Give outcomes to the code in outcome-log order, one at a time (REPLAY-013)."""
        while True:
            self._run_code()
            if self._nd is not None or self._code_ended() or self._stopped:
                return
            if self._next_outcome >= len(self._outcomes):
                return
            issued = self._issued.get(self._outcomes[self._next_outcome])
            if issued is None:
                return  # its primitive is not reached: blocked (case 3 in replay)
            self._next_outcome += 1
            self._give(issued)

    def _give(self, issued: _Issued) -> None:
        rec = issued.rec
        v = rec.value
        if rec.entity == "step":
            if v["status"] == "completed":
                issued.pending.set_result(_json_copy(v["result"]))
            else:  # RETRY-018, RETRY-018: the error built from the recorded one
                issued.pending.set_error(StepFailed(rec.key, int(v["attempt"]), v["error"]))
        elif rec.entity == "sleep":
            issued.pending.set_result(None)
        elif v["status"] == "received":  # INPUT-005
            issued.pending.set_result(_json_copy(v["value"]))
        else:  # INPUT-006
            issued.pending.set_error(InputExpired(rec.key, str(v["expired_at"])))

    def _stop_code(self) -> None:
        self._stopped = True
        if self._sched is not None:
            self._sched.close()

    def _replay(self) -> None:
        """REPLAY-016: replay the whole history before acting on anything."""
        self._replayed = True
        self._start_code()
        self._pump()
        if self._nd is None:
            self._check_unreached()
        if self._nd is not None:
            # REPLAY-017/018: nothing from the divergent code is recorded.
            self._buffer = []
            self._to_dispatch = []
            nd = self._nd
            self._end("failed", error=error_object("NonDeterminism", str(nd), nd.details))

    def _check_unreached(self) -> None:
        """Cases 2 and 3 of replay.md: the code ended or blocked short of the history."""
        self._skip_markers()  # VER-013
        if self._cursor > self._history_max_seq:
            return
        rec = self._recorded[self._cursor]
        if self._code_ended():
            how = "the code ended without reaching it"
        else:
            how = "the code is blocked without reaching it"
        self._nd = NonDeterminism(
            rec.seq,
            {"kind": rec.entity, "name": rec.name},
            None,
            f"at seq {rec.seq} history has {rec.describe()} but {how}",
        )

    # -- matching primitives -----------------------------------------------------------

    def _skip_markers(self) -> None:
        while (
            self._cursor <= self._history_max_seq and self._recorded[self._cursor].entity == "patch"
        ):
            self._cursor += 1

    def _issue(self, entity: str, name: str, kind: str | None) -> tuple[int, str, Recorded | None]:
        """Take the next position for a primitive and match it (REPLAY-006, REPLAY-010)."""
        if self._stopped:
            raise _Stopped("the run has ended; no primitive is recorded")
        if self._nd is not None:
            raise _Diverged
        self._skip_markers()  # VER-013
        count = self._counts.get((entity, name), 0) + 1
        self._counts[(entity, name)] = count
        key = name if count == 1 else f"{name}#{count}"  # EVT-015
        if self._cursor <= self._history_max_seq:
            rec = self._recorded[self._cursor]
            if (rec.entity, rec.name, rec.kind) != (entity, name, kind):
                asked = _describe(entity, name, kind)
                self._nd = NonDeterminism(
                    rec.seq,
                    {"kind": rec.entity, "name": rec.name},
                    {"kind": entity, "name": name},
                    f"at seq {rec.seq} history has {rec.describe()} but the code asked for {asked}",
                )
                raise _Diverged
            self._cursor += 1
            return rec.seq, rec.key, rec
        if self._offline:
            if self._code_ended_run():
                # A finished history checked offline: the code asks for more than was recorded.
                seq = self._max_seq + 1
                asked = _describe(entity, name, kind)
                self._nd = NonDeterminism(
                    seq,
                    None,
                    {"kind": entity, "name": name},
                    f"at seq {seq} the finished run's history has nothing "
                    f"but the code asked for {asked}",
                )
                raise _Diverged
            raise _Beyond
        seq = self._max_seq + 1
        self._max_seq = seq
        self._cursor = seq + 1
        return seq, key, None

    def _new(
        self, seq: int, entity: str, key: str, name: str, kind: str | None, message: dict[str, Any]
    ) -> Recorded:
        rec = Recorded(seq, entity, key, name, kind, dict(message["value"]))
        self._recorded[seq] = rec
        self._by_key[(entity, key)] = rec
        # MODEL-026: a suspended run resumes before it records a new primitive (new code can
        # issue one during replay of a suspended run).
        self._resume_if_suspended()
        self._emit(message)
        return rec

    # -- the _Runtime protocol (called by Context) ----------------------------------------

    def issue_step(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        policy: RetryPolicy,
        timeout_ms: int | None,
    ) -> Pending[Any]:
        try:
            seq, key, rec = self._issue("step", name, None)
        except _Beyond:  # REPLAY-029: where an offline check stops
            return Pending(f'step "{name}"')
        pending: Pending[Any] = Pending(f'step "{key}"')
        if rec is None:
            # RETRY-003: max_attempts and timeout_ms are recorded and govern every attempt.
            msg = step_started(key, name, seq, policy.max_attempts, timeout_ms, self._t)
            rec = self._new(seq, "step", key, name, None, msg)
            self._to_dispatch.append((key, 1))
        elif rec.status == "running":
            # REPLAY-012/022, RETRY-011: an interrupted attempt runs again as the same attempt.
            self._to_dispatch.append((key, int(rec.value["attempt"])))
        self._track(seq, _Issued(rec, pending, fn, args, kwargs, policy))
        return pending

    def issue_sleep(
        self, name: str, duration_ms: int | None, until: datetime | None
    ) -> Pending[None]:
        try:
            seq, key, rec = self._issue("sleep", name, None)
        except _Beyond:  # REPLAY-029: where an offline check stops
            return Pending(f'sleep "{name}"')
        pending: Pending[None] = Pending(f'sleep "{key}"')
        if rec is None:
            if duration_ms is not None:
                wake = plus_ms(self._now, duration_ms)  # EVT-059
            else:
                assert until is not None
                wake = ceil_ms(until)  # EVT-060; rounded up so it never fires early
            msg = sleep_scheduled(key, name, seq, duration_ms, self._t, format_ts(wake))
            rec = self._new(seq, "sleep", key, name, None, msg)
        self._track(seq, _Issued(rec, pending))
        return pending

    def issue_input(
        self, name: str, schema: Any, prompt: str | None, timeout_ms: int | None
    ) -> Pending[Any]:
        # INPUT-029: checked before anything is recorded (and before a position is taken).
        schema = check_request_schema(name, schema)
        try:
            seq, key, rec = self._issue("input", name, None)
        except _Beyond:  # REPLAY-029: where an offline check stops
            return Pending(f'input "{name}"')
        pending: Pending[Any] = Pending(f'input "{key}"')
        if rec is None:
            expires = None if timeout_ms is None else format_ts(plus_ms(self._now, timeout_ms))
            msg = input_requested(key, name, seq, prompt, schema, self._t, expires)  # INPUT-004
            rec = self._new(seq, "input", key, name, None, msg)
        self._track(seq, _Issued(rec, pending))
        return pending

    def issue_record(self, name: str, kind: str) -> Pending[Any]:
        try:
            seq, key, rec = self._issue("record", name, kind)
        except _Beyond:
            return Pending(f'record "{name}"')
        pending: Pending[Any] = Pending(f'record "{key}"')
        if rec is None:
            assert self._rng is not None
            value: Any
            if kind == "time":
                value = self._t
            elif kind == "random":
                value = self._rng.random()
            else:
                value = _uuid4(self._rng)
            msg = value_recorded(key, name, seq, kind, value, self._t)
            rec = self._new(seq, "record", key, name, kind, msg)
        self._track(seq, _Issued(rec, pending))
        recorded = rec.value["value"]
        # REPLAY-011: a record's outcome is its recorded value, at once.
        pending.set_result(parse_ts(recorded) if kind == "time" else recorded)
        return pending

    def issue_patch(self, patch_id: str) -> PatchCheck:
        if self._stopped:
            raise _Stopped("the run has ended; no primitive is recorded")
        if self._nd is not None:
            raise _Diverged
        pending = PatchCheck(f'patch "{patch_id}"')
        if patch_id in self._patches:  # VER-009
            pending.set_result(self._patches[patch_id])
            return pending
        answer: bool
        if self._cursor <= self._history_max_seq:
            block: list[Recorded] = []
            pos = self._cursor
            while pos <= self._history_max_seq and self._recorded[pos].entity == "patch":
                block.append(self._recorded[pos])
                pos += 1
            match = next((r for r in block if r.name == patch_id), None)
            if match is not None:  # VER-010: skip the markers before it, match it
                self._cursor = match.seq + 1
                answer = True
            else:  # VER-012: the run passed here before the patch existed
                answer = False
        elif ("patch", patch_id) in self._by_key:
            # VER-016, EVT-006: never a second marker. This id's marker was skipped earlier, so
            # the run did not pass this check where the code now asks: the old branch.
            answer = False
        elif self._offline:
            if self._code_ended_run():
                seq = self._max_seq + 1
                self._nd = NonDeterminism(
                    seq,
                    None,
                    {"kind": "patch", "name": patch_id},
                    f"at seq {seq} the finished run's history has nothing "
                    f'but the code asked for patch "{patch_id}"',
                )
                raise _Diverged
            # Offline, past a live history: the answer live execution would give (VER-015),
            # recorded nowhere (REPLAY-029).
            answer = True
        else:  # VER-015: live execution records the marker at the next position
            seq = self._max_seq + 1
            self._max_seq = seq
            self._cursor = seq + 1
            self._new(
                seq, "patch", patch_id, patch_id, None, patch_recorded(patch_id, seq, self._t)
            )
            answer = True
        self._patches[patch_id] = answer
        pending.set_result(answer)
        return pending

    def gather(self, awaitables: tuple[Awaitable[Any], ...]) -> Pending[list[Any]]:
        if self._stopped:
            raise _Stopped("the run has ended")
        assert self._sched is not None
        children: list[Pending[Any]] = []
        for aw in awaitables:
            if isinstance(aw, Pending):
                children.append(aw)
            elif inspect.iscoroutine(aw):
                children.append(self._sched.spawn(aw, "gather branch"))
            elif inspect.isawaitable(aw):
                children.append(self._sched.spawn(_await(aw), "gather branch"))
            else:
                raise TypeError(f"gather() takes awaitables, not {type(aw).__name__}")
        result: Pending[list[Any]] = Pending("gather", tuple(children))
        if not children:
            result.set_result([])
            return result
        remaining = [len(children)]

        def child_done(child: Pending[Any]) -> None:
            if result.done:
                return
            try:
                child.result()
            except Exception as exc:  # the first error, in the order outcomes are given
                result.set_error(exc)
                return
            remaining[0] -= 1
            if remaining[0] == 0:
                result.set_result([c.result() for c in children])

        for child in children:
            child.add_callback(child_done)
        return result

    # -- live phase --------------------------------------------------------------------

    def _live(self, entries: list[InboxEntry], inbox_at_tail: bool) -> None:
        while not self.finished and not self._code_ended():
            progressed = self._record_reports()
            progressed |= self._inbox_pass(entries)
            if self.finished:
                return
            progressed |= self._fire_timers(inbox_at_tail)
            self._pump()
            if self._code_ended() or not progressed:
                break
        if self.finished or self._code_ended():
            return
        if self._to_dispatch:
            self._resume_if_suspended()
            return
        if self._dispatched:
            return  # bodies still run: the run is not blocked (model.md)
        if self._run is not None and self._run["status"] == "running":
            self._suspend()

    def _suspend(self) -> None:
        """MODEL-022..024, EVT-027/028: record what the blocked code waits for."""
        awaited = self._awaited()
        pending = [r for r in self._pending_prims() if r.seq in awaited]
        inputs = [r.key for r in pending if r.entity == "input"]
        until = self._earliest_deadline(pending)
        if not inputs and until is None:
            # Blocked on nothing that can finish (code awaiting something no primitive
            # resolves): there is nothing to wait for, so no suspension is recorded.
            return
        waiting_for = {"inputs": inputs, "until": None if until is None else format_ts(until)}
        self._run_event(status="waiting" if inputs else "sleeping", waiting_for=waiting_for)

    def _ending(self) -> tuple[str, Any, dict[str, Any] | None]:
        """How the ended code ends the run: (status, output, error) (EVT-034)."""
        assert self._root is not None
        try:
            output = self._root.result()
        except Exception as exc:
            return "failed", None, self._error_of(exc)
        if compact_size(output) is None:
            return (
                "failed",
                None,
                error_object("TypeError", "The workflow returned a value that is not JSON."),
            )
        return "completed", _json_copy(output), None

    def _finish_code(self) -> None:
        status, output, error = self._ending()
        self._end(status, output=output, error=error)

    @staticmethod
    def _error_of(exc: Exception) -> dict[str, Any]:
        """EVT-034: the run-failed error of an uncaught exception (no stack trace, EVT-018)."""
        if isinstance(exc, StepFailed):  # RETRY-019
            return error_object(
                "StepFailed",
                str(exc),
                {"step": exc.key, "attempts": exc.attempts, "error": exc.error},
            )
        if isinstance(exc, InputExpired):
            return error_object("InputExpired", str(exc), {"input": exc.key})
        details = exc.details if isinstance(exc, NonRetryableError) else None
        if details is not None and compact_size(details) is None:
            details = None
        return error_object(type(exc).__name__, str(exc), details)

    def _history_too_large(self, decided_before: tuple[set[str], int]) -> None:
        """SEC-010: the append would pass the limit; record run-failed instead."""
        keep = [
            m for m in self._buffer if m["type"] == "run" and m["headers"]["operation"] == "insert"
        ]
        self._buffer = keep
        self._decided, self._rejections = decided_before
        self._to_dispatch = []
        # The run as last durable (never terminal here: advance returns early then).
        self._run = dict(keep[0]["value"]) if keep else self._history_run()
        self._end(
            "failed",
            error=error_object(
                "HistoryTooLarge",
                f"The run's history would exceed {self._limits.history_messages} messages.",
            ),
        )

    def _history_run(self) -> dict[str, Any]:
        for message in reversed(self._history):
            if message["type"] == "run":
                return dict(message["value"])
        raise RuntimeError("no run entity")

    # -- step outcomes -----------------------------------------------------------------

    def _record_reports(self) -> bool:
        progressed = False
        reports, self._reports = self._reports, []
        for report in reports:
            rec = self._by_key.get(("step", report.key))
            if rec is None or rec.status != "running" or rec.value["attempt"] != report.attempt:
                continue  # RETRY-016: an attempt already decided
            self._record_attempt(rec, self._issued[rec.seq], report)
            progressed = True
        return progressed

    def _record_attempt(self, rec: Recorded, issued: _Issued, report: _Report) -> None:
        t = format_ts(report.at)
        outcome = report.outcome
        attempt = report.attempt
        if isinstance(outcome, StepSucceeded):
            size = compact_size(outcome.result)
            if size is None:  # EVT-052
                outcome = StepErrored(
                    "InvalidResult",
                    f"Step '{rec.key}' returned a value that cannot be encoded as JSON.",
                    retryable=False,
                )
            elif size > self._limits.result_bytes:  # SEC-009
                outcome = StepErrored(
                    "ResultTooLarge",
                    f"Step '{rec.key}' returned {size} bytes, more than the limit of "
                    f"{self._limits.result_bytes}.",
                    {"size": size, "limit": self._limits.result_bytes},
                    retryable=False,
                )
            else:  # RETRY-010
                msg = step_update(
                    rec.key,
                    rec.value,
                    status="completed",
                    result=_json_copy(outcome.result),
                    error=None,
                    retry_at=None,
                    finished_at=t,
                )
                self._update(rec, msg, outcome=True)
                return
        if isinstance(outcome, StepTimedOut):  # RETRY-015
            timeout_ms = rec.value["timeout_ms"]
            if timeout_ms is None:  # a shell's own limit, not the step's (none recorded)
                error = error_object(
                    "StepTimeout", f"Attempt {attempt} of step '{rec.key}' timed out."
                )
            else:
                error = error_object(
                    "StepTimeout",
                    f"Attempt {attempt} of step '{rec.key}' exceeded {timeout_ms} ms.",
                    {"timeout_ms": timeout_ms},
                )
            retryable = True
        else:
            assert isinstance(outcome, StepErrored)
            details = outcome.details if compact_size(outcome.details) is not None else None
            error = error_object(outcome.type, outcome.message, details)
            retryable = outcome.retryable
        policy = issued.policy or RetryPolicy()
        if error["type"] in policy.non_retryable:  # RETRY-014
            retryable = False
        if retryable and attempt < int(rec.value["max_attempts"]):  # RETRY-008
            assert self._rng is not None
            delay = policy.delay_ms(attempt)
            jitter = self._rng.random() * policy.jitter * delay  # RETRY-005
            retry_at = ceil_ms(plus_ms(report.at, delay + jitter))  # RETRY-004
            msg = step_update(
                rec.key,
                rec.value,
                status="retrying",
                error=error,
                retry_at=format_ts(retry_at),
                finished_at=None,
            )
            self._update(rec, msg, outcome=False)
        else:  # RETRY-009
            msg = step_update(
                rec.key, rec.value, status="failed", error=error, retry_at=None, finished_at=t
            )
            self._update(rec, msg, outcome=True)

    # -- timers ------------------------------------------------------------------------

    def _fire_timers(self, inbox_at_tail: bool) -> bool:
        due: list[tuple[datetime, int, Recorded]] = []
        for rec in self._pending_prims():
            deadline = self._deadline(rec)
            if deadline is None:
                continue
            when = parse_ts(deadline)
            if rec.entity == "input" and not inbox_at_tail:
                continue  # INPUT-035: only after the inbox was read to its tail
            if self._now >= when:  # EVT-064, INPUT-034, RETRY-006: never early
                due.append((when, rec.seq, rec))
        for _, _, rec in sorted(due, key=lambda d: (d[0], d[1])):
            if rec.entity == "sleep":
                self._update(rec, sleep_completed(rec.key, rec.value, self._t), outcome=True)
            elif rec.entity == "input":  # INPUT-036
                self._update(rec, input_expired(rec.key, rec.value, self._t), outcome=True)
            else:  # RETRY-007: the next attempt's start is recorded before its body runs
                attempt = int(rec.value["attempt"]) + 1
                msg = step_update(
                    rec.key,
                    rec.value,
                    status="running",
                    attempt=attempt,
                    started_at=self._t,
                    error=None,
                    retry_at=None,
                )
                self._update(rec, msg, outcome=False)
                self._to_dispatch.append((rec.key, attempt))
                self._resume_if_suspended()  # a body will run: the run is not blocked
                continue
            self._resume_if_awaited(rec.seq)
        return bool(due)

    # -- inbox -------------------------------------------------------------------------

    def _classify(self, inbox: Sequence[Any]) -> list[InboxEntry]:
        """Classify the inbox, reusing the entries of messages seen before (it only grows)."""
        cache = self._inbox_cache
        for index in range(len(inbox)):
            message = inbox[index]
            if index < len(cache):
                key = message.get("key") if isinstance(message, Mapping) else None
                if cache[index].inbox_id == (
                    key if isinstance(key, str) and ID_PATTERN.match(key) else f"inbox-{index}"
                ):
                    continue
                del cache[index:]
            cache.append(classify(message, index))
        return cache[: len(inbox)]

    def _cancel_waiting(self, entries: list[InboxEntry]) -> bool:
        seen: set[str] = set()
        for entry in entries:
            if entry.inbox_id in seen:
                continue
            seen.add(entry.inbox_id)
            if entry.kind == "cancel" and entry.inbox_id not in self._decided:
                return True
        return False

    def _too_large(self, entry: InboxEntry, submissions: int) -> str | None:
        if submissions > self._limits.submissions_per_run:  # INPUT-033
            return (
                f"Submission {entry.inbox_id} is beyond the run's limit of "
                f"{self._limits.submissions_per_run} submissions."
            )
        size = compact_size(entry.value)
        if size is None or size > self._limits.submission_bytes:  # INPUT-031
            return (
                f"The value submitted for input '{entry.request}' is larger than "
                f"{self._limits.submission_bytes} bytes."
            )
        return None

    @staticmethod
    def _malformed_text(entry: InboxEntry) -> str:
        return f"Inbox message {entry.index} is not an input-submitted or cancel-requested message."

    def _record_rejection(self, entry: InboxEntry) -> bool:
        """Decide ``entry`` as rejected; True when its ``input-rejected`` is to be recorded.

        SEC-034: past the run's rejection limit a rejection is decided without a record,
        so no inbox content can grow the history by more than the limit. The count comes
        from the history, so every activation draws the line at the same message.
        """
        self._decided.add(entry.inbox_id)
        if self._rejections >= self._limits.rejections_per_run:
            return False
        self._rejections += 1
        return True

    def _reject(self, entry: InboxEntry, reason: str, text: str) -> None:
        if self._record_rejection(entry):  # INPUT-022
            self._emit(input_rejected(entry.inbox_id, entry.request, reason, text, self._t))

    def _inbox_pass(self, entries: list[InboxEntry], *, resume: bool = True) -> bool:
        """Decide inbox messages in inbox order (INPUT-016/017); True when an input was answered."""
        answered = False
        seen: set[str] = set()
        submissions = 0
        for entry in entries:
            if entry.inbox_id in seen:  # check 1, INPUT-015
                continue
            seen.add(entry.inbox_id)
            if entry.kind == "submission":
                submissions += 1
            if entry.inbox_id in self._decided:
                continue
            if entry.kind is None:  # check 2
                self._reject(entry, "malformed", self._malformed_text(entry))
                continue
            if entry.kind == "cancel":  # check 3, CANCEL-003/004
                reason = entry.reason
                text = "Run cancelled." if reason is None else str(reason)[:1024]
                self._decided.add(entry.inbox_id)
                self._to_dispatch = []
                self._end(
                    "cancelled",
                    error=error_object("Cancelled", text, {"cancel_id": entry.inbox_id}),
                    txid=entry.inbox_id,
                )
                return answered
            too_large = self._too_large(entry, submissions)
            if too_large is not None:  # check 4
                self._reject(entry, "too-large", too_large)
                continue
            # check 5 (run ended) is decided by closing().
            rec = self._by_key.get(("input", entry.request or ""))
            if rec is None:
                continue  # check 8, INPUT-020: kept until the request is recorded
            key = rec.key
            if rec.status == "received":  # check 6
                self._reject(
                    entry,
                    "already-answered",
                    f"Input '{key}' was already answered by another submission.",
                )
                continue
            if rec.status == "expired":  # check 7
                self._reject(
                    entry, "expired", f"Input '{key}' expired before this submission was read."
                )
                continue
            problem = schema_problem(key, rec.value["schema"], entry.value)  # INPUT-026
            if problem is not None:  # check 9
                self._reject(entry, "schema-invalid", problem)
                continue
            # check 10, INPUT-019: the first valid submission wins.
            self._decided.add(entry.inbox_id)
            value = _json_copy(entry.value)
            self._update(
                rec, input_received(key, rec.value, value, entry.inbox_id, self._t), outcome=True
            )
            if resume:
                self._resume_if_awaited(rec.seq)
            answered = True
        return answered

    # -- offline check -----------------------------------------------------------------

    def _code_ended_run(self) -> bool:
        """The history ends where the code ended the run (returned or raised).

        Only then is a primitive past the history a divergence (recorded ``null``); a run
        cut short by a cancel, a non-determinism or a limit simply stops there.
        """
        run = self._parsed.run
        if run is None or run["status"] not in ("completed", "failed"):
            return False
        error = run["error"]
        return error is None or error["type"] not in _NOT_BY_CODE

    def _offline_check(self) -> ReplayReport:
        self._offline = True
        self._replayed = True
        recorded = self._history_max_seq
        self._start_code()
        self._pump()
        if self._nd is None:
            self._check_unreached()
        matched = min(self._cursor - 1, recorded)
        if self._nd is not None:
            nd = self._nd
            self._stop_code()
            return ReplayReport(
                ok=False,
                run_id=self._run_id,
                workflow=self._wf_name,
                matched=nd.seq - 1 if nd.seq <= recorded else recorded,
                recorded=recorded,
                stopped="nondeterminism",
                error=error_object("NonDeterminism", str(nd), nd.details),
            )
        mismatch: str | None = None
        stopped = "blocked"
        run = self._parsed.run or {}
        if self._code_ended():
            assert self._root is not None
            stopped, output, code_error = self._ending()
            if run.get("status") == "completed":
                if code_error is not None:
                    mismatch = (
                        f"the run completed, but the code now raises {code_error['type']}: "
                        f"{code_error['message']}"
                    )
                elif output != run.get("output"):
                    mismatch = "the run completed with another output than the code now returns"
            elif run.get("status") == "failed" and run["error"]["type"] not in _NOT_BY_CODE:
                recorded_error = run["error"]
                # REPLAY-027: errors are equal when type and message are equal.
                if code_error is None:
                    mismatch = (
                        f"the run failed with {recorded_error['type']}, but the code now returns"
                    )
                elif (code_error["type"], code_error["message"]) != (
                    recorded_error["type"],
                    recorded_error["message"],
                ):
                    mismatch = (
                        f"the run failed with {recorded_error['type']}: "
                        f"{recorded_error['message']}, "
                        f"but the code now raises {code_error['type']}: {code_error['message']}"
                    )
        elif run.get("status") == "completed" or (
            run.get("status") == "failed" and run["error"]["type"] not in _NOT_BY_CODE
        ):
            mismatch = f"the run {run['status']}, but the code is still waiting"
        if self._parsed.terminal and not self._code_ended() and mismatch is None:
            stopped = "finished"
        self._stop_code()
        return ReplayReport(
            ok=mismatch is None,
            run_id=self._run_id,
            workflow=self._wf_name,
            matched=matched,
            recorded=recorded,
            stopped=stopped,
            outcome_mismatch=mismatch,
        )


async def _await(aw: Awaitable[Any]) -> Any:
    return await aw


def replay_check(workflow: Workflow, history: Sequence[Mapping[str, Any]]) -> ReplayReport:
    """Replay ``history`` against ``workflow`` offline (REPLAY-028..030, ``dwf replay``).

    Runs no step body and writes nothing (REPLAY-029); reports non-determinism with the same
    ``seq``/``recorded``/``requested`` the engine would record (REPLAY-030). For a finished
    run it also checks that the code ends with the recorded output or error.
    """
    act = Activation(workflow, history)
    if act._run is None:
        raise HistoryError("an empty history has nothing to replay")
    return act._offline_check()
