"""One activation of one run: history in, decisions out (replay.md, model.md, inputs.md).

The shell drives it::

    act = Activation(registry, history, request=run_requested_value)   # HistoryError: leave the run
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
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from .api import Workflow, WorkflowRegistry
from .decisions import Decision, Limits, ReplayReport, StepOutcome

__all__ = ["PROTOCOL", "Activation", "replay_check"]

#: The protocol version this core implements and records in new runs.
PROTOCOL = "1.0"


class Activation:
    """The core's state for one run during one activation.

    ``workflows`` is a registry (the run's ``workflow`` name is looked up; an unknown one
    fails the run with ``UnknownWorkflow``, MODEL-019) or a single :class:`Workflow`.
    ``history`` is the run's whole history read from offset -1 (REPLAY-001). For a run that
    has no history yet, pass ``request`` (the ``run-requested`` message or its value:
    ``run_id``, ``workflow``, ``input``); the first decision then starts with ``run-started``.

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
        raise NotImplementedError

    @property
    def run_id(self) -> str:
        """The run's id."""
        raise NotImplementedError

    @property
    def status(self) -> str:
        """The run's status as of the messages produced so far."""
        raise NotImplementedError

    @property
    def finished(self) -> bool:
        """Whether a terminal run event is recorded (or produced): only ``closing`` remains."""
        raise NotImplementedError

    @property
    def history(self) -> tuple[dict[str, Any], ...]:
        """The history as this activation sees it: what it was given plus what it produced."""
        raise NotImplementedError

    def advance(
        self, now: datetime, inbox: Sequence[Any], rng: random.Random, *, inbox_at_tail: bool = True
    ) -> Decision:
        """Move the run as far as it can go at ``now``; return what to append and what to run.

        ``inbox`` is the whole inbox read so far (from its start); decisions are recorded by
        inbox id, so passing a re-read inbox again is idempotent. ``inbox_at_tail`` says the
        read ended with ``Stream-Up-To-Date: true``; only then does the core record
        ``input-expired`` (INPUT-035: a valid submission in the inbox wins the race).
        ``rng`` gives retry jitter and the values of ``ctx.random()``/``ctx.uuid()``.
        """
        raise NotImplementedError

    def step_finished(self, key: str, attempt: int, outcome: StepOutcome, now: datetime) -> None:
        """Report the end of the body of attempt ``attempt`` of step ``key``.

        The outcome is recorded at the next :meth:`advance`. An outcome of an attempt that is
        no longer current (timed out and reported twice, or the run ended) is ignored
        (RETRY-016, CANCEL-006).
        """
        raise NotImplementedError

    def closing(self, inbox_final: Sequence[Any], now: datetime) -> list[dict[str, Any]]:
        """The rejections of the run's last append (INPUT-039, MODEL-033/037).

        Call after the terminal run event is durable and the inbox is closed, with the inbox
        read to its final offset. Every inbox message not yet decided gets one
        ``input-rejected`` in inbox order; duplicates get nothing.
        """
        raise NotImplementedError


def replay_check(workflow: Workflow, history: Sequence[Mapping[str, Any]]) -> ReplayReport:
    """Replay ``history`` against ``workflow`` offline (REPLAY-028..030, ``dwf replay``).

    Runs no step body and writes nothing (REPLAY-029); reports non-determinism with the same
    ``seq``/``recorded``/``requested`` the engine would record (REPLAY-030). For a finished
    run it also checks that the code ends with the recorded output or error.
    """
    raise NotImplementedError
