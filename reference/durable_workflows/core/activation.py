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

The parts: :mod:`.run_state` (the state and how changes are recorded), :mod:`.replayer`
(running and matching the code), :mod:`.timers` (deadlines, suspension, step attempts),
:mod:`.inbox_pass` (the inbox's decisions), :mod:`.ending` (the terminal event) and
:mod:`.offline` (``replay_check``). This module drives them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from .api import Workflow
from .decisions import Decision, ReplayReport, StepOutcome, StepTask
from .ending import Ending
from .errors import HistoryError
from .history import TERMINAL
from .inbox import InboxEntry, run_input_problem
from .inbox_pass import InboxPass
from .messages import error_object, run_started
from .offline import OfflineCheck
from .run_state import PROTOCOL, StepReport
from .timefmt import floor_ms, format_ts
from .timers import Timers

__all__ = ["PROTOCOL", "Activation", "replay_check"]


class Activation(OfflineCheck, Timers, InboxPass, Ending):
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

    # -- the shell's calls ---------------------------------------------------------

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
            elif self._workflow.input_schema is not None:
                # MODEL-051: an input the workflow says it cannot take fails the run at
                # once, with the schema's reason, not later with whatever the code raises.
                problem = run_input_problem(self._workflow.input_schema, self._input)
                if problem is not None:
                    self._end("failed", error=error_object("InvalidInput", problem))
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
        self._reports.append(StepReport(key, attempt, outcome, floor_ms(now)))

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
        ``input-rejected`` in inbox order, up to the rejection limit (SEC-034); duplicates
        get nothing.
        """
        if not self.finished:
            raise RuntimeError("closing() is only for a run whose terminal event is recorded")
        out = self._closing_rejections(inbox_final, format_ts(now))
        self._history.extend(out)
        return out

    # -- decisions -----------------------------------------------------------------

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
