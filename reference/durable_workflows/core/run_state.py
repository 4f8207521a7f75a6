"""The state one activation keeps, and how it records changes (model.md).

:class:`RunState` holds what the history says and what the activation has produced so
far, and the few operations every part of an activation shares: emitting a message,
updating the run entity, ending the run, resuming a suspended run. The parts build on it:
replaying the code (:mod:`.replayer`), timers and step attempts (:mod:`.timers`), the
inbox (:mod:`.inbox_pass`) and ending (:mod:`.ending`); :mod:`.activation` drives them.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .api import RetryPolicy, Workflow, WorkflowRegistry
from .decisions import Limits, RunStatus, StepOutcome
from .errors import HistoryError, NonDeterminism
from .history import TERMINAL, ParsedHistory, Recorded, parse_history
from .inbox import ID_PATTERN, InboxEntry
from .messages import run_update
from .scheduler import Pending, Scheduler

__all__ = ["PROTOCOL", "RunState"]

#: The protocol version this core implements and records in new runs.
PROTOCOL = "1.0"

_SUSPENDED = ("sleeping", "waiting")


@dataclass
class Issued:
    """A primitive the code issued in this activation, with what the current code passed."""

    rec: Recorded
    pending: Pending[Any]
    fn: Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    policy: RetryPolicy | None = None


@dataclass
class StepReport:
    key: str
    attempt: int
    outcome: StepOutcome
    at: datetime


def json_copy(value: Any) -> Any:
    """The value decoded from its JSON encoding (REPLAY-014)."""
    kind = type(value)
    # Immutable values that JSON round-trips to themselves need no copy.
    if value is None or kind is str or kind is int or kind is bool:
        return value
    if kind is float and math.isfinite(value):
        return value
    return json.loads(json.dumps(value, allow_nan=False))


class RunState:
    """The core's state for one run during one activation (see :class:`.Activation`)."""

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
        self._issued: dict[int, Issued] = {}
        self._open: dict[int, Issued] = {}  # issued and not finished
        self._pending_seq: dict[int, int] = {}  # id of a primitive's Pending -> its seq
        self._next_outcome = 0
        self._sched: Scheduler | None = None
        self._root: Pending[Any] | None = None
        self._nd: NonDeterminism | None = None
        self._offline = False
        self._stopped = False
        self._replayed = False

        self._buffer: list[dict[str, Any]] = []
        self._to_dispatch: list[tuple[str, int]] = []
        self._dispatched: set[tuple[str, int]] = set()
        self._reports: list[StepReport] = []
        self._inbox_cache: list[InboxEntry] = []
        self._now = datetime.min
        self._t = ""
        self._rng: random.Random | None = None

    # -- public state --------------------------------------------------------------

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self._run_id

    @property
    def workflow_name(self) -> str:
        """The name the run was started under."""
        return self._wf_name

    @property
    def workflow(self) -> Workflow | None:
        """The code this run is interpreted with (None: the engine lacks it)."""
        return self._workflow

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

    # -- recording -----------------------------------------------------------------

    def _status(self) -> RunStatus:
        assert self._run is not None
        status: RunStatus = self._run["status"]
        return status

    def _pending_prims(self) -> list[Recorded]:
        """Issued primitives without an outcome, in position order."""
        return [self._open[seq].rec for seq in sorted(self._open)]

    def _track(self, seq: int, issued: Issued) -> None:
        self._issued[seq] = issued
        self._pending_seq[id(issued.pending)] = seq
        if not issued.rec.finished:
            self._open[seq] = issued

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

    def _code_ended(self) -> bool:
        return self._root is not None and self._root.done

    def _stop_code(self) -> None:
        self._stopped = True
        if self._sched is not None:
            self._sched.close()

    def _history_run(self) -> dict[str, Any]:
        for message in reversed(self._history):
            if message["type"] == "run":
                return dict(message["value"])
        raise RuntimeError("no run entity")
