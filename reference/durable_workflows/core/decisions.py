"""The data the core exchanges with its shells: decisions out, step outcomes in."""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from .api import StepInfo

__all__ = [
    "Decision",
    "Limits",
    "ReplayReport",
    "RunStatus",
    "StepErrored",
    "StepOutcome",
    "StepSucceeded",
    "StepTask",
    "StepTimedOut",
]

#: The run entity's status values (model.md).
RunStatus = Literal["running", "sleeping", "waiting", "completed", "failed", "cancelled"]


@dataclass(frozen=True)
class Limits:
    """Engine limits (security.md, SEC-011 defaults)."""

    #: INPUT-031/032: longest submitted ``value`` (compact JSON, UTF-8 bytes).
    submission_bytes: int = 65_536
    #: INPUT-032/033: ``input-submitted`` messages per run.
    submissions_per_run: int = 1_000
    #: SEC-009: longest step result (compact JSON, UTF-8 bytes).
    result_bytes: int = 1_048_576
    #: SEC-010: messages in a history.
    history_messages: int = 50_000
    #: SEC-034: ``input-rejected`` messages in a history; past it, rejections go unrecorded.
    rejections_per_run: int = 1_000


@dataclass(frozen=True)
class StepTask:
    """A step body the shell runs after the decision's append is durable (MODEL-027).

    Run ``fn(*args, **kwargs)`` (await it if it returns an awaitable), bounded by
    ``timeout_ms`` when set (RETRY-015), then report
    ``Activation.step_finished(key, attempt, outcome, now)``. Set the body's
    :class:`StepInfo` (``info``) with :meth:`bind` so that ``current_step()`` works inside.
    """

    run_id: str
    key: str
    name: str
    seq: int
    attempt: int
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    timeout_ms: int | None = None

    @property
    def info(self) -> StepInfo:
        """What the body may learn about itself (REPLAY-024)."""
        return StepInfo(self.run_id, self.key, self.name, self.attempt)

    def call(self) -> Any:
        """Call the body with ``current_step()`` set; returns its value or an awaitable.

        For an async body (or a sync one that returns an awaitable) the returned coroutine
        sets ``current_step()`` itself while it runs, so it works wherever the shell awaits
        it (another task, another thread's event loop).
        """
        from .api import _CURRENT_STEP

        info = self.info
        token = _CURRENT_STEP.set(info)
        try:
            result = self.fn(*self.args, **self.kwargs)
        finally:
            _CURRENT_STEP.reset(token)
        if inspect.isawaitable(result):
            return _with_step(info, result)
        return result


async def _with_step(info: StepInfo, awaitable: Awaitable[Any]) -> Any:
    from .api import _CURRENT_STEP

    token = _CURRENT_STEP.set(info)
    try:
        return await awaitable
    finally:
        _CURRENT_STEP.reset(token)


@dataclass(frozen=True)
class StepSucceeded:
    """A step attempt returned ``result`` (any value the core can encode as JSON)."""

    result: Any


@dataclass(frozen=True)
class StepErrored:
    """A step attempt raised. ``type``/``message``/``details`` become the recorded error.

    ``retryable=False`` ends the step at once (RETRY-014); so does a ``type`` listed in the
    step's ``non_retryable``. Build it from the exception with :meth:`from_exception`.
    """

    type: str
    message: str
    details: dict[str, Any] | None = None
    retryable: bool = True

    @classmethod
    def from_exception(cls, exc: BaseException) -> StepErrored:
        """The error of ``exc``: class name and text, never a traceback (RETRY-012/013)."""
        from .errors import NonRetryableError

        details: dict[str, Any] | None = None
        retryable = True
        if isinstance(exc, NonRetryableError):
            retryable = False
            details = exc.details
            try:
                json.dumps(details, allow_nan=False)
            except (TypeError, ValueError):
                details = None
        type_name = type(exc).__name__[:256] or "Error"
        return cls(type_name, str(exc), details, retryable)


@dataclass(frozen=True)
class StepTimedOut:
    """The shell stopped waiting for an attempt after its ``timeout_ms`` (RETRY-015).

    The core records error type ``StepTimeout`` with details ``{"timeout_ms": N}``.
    """


#: What the shell reports for one attempt.
StepOutcome = StepSucceeded | StepErrored | StepTimedOut


@dataclass(frozen=True)
class Decision:
    """What the shell does next, produced by ``Activation.advance``.

    - ``append``: messages to append now, in order, as ONE append (MODEL-029); may be empty.
    - ``close_run``: the append holds the terminal run event (or the history already ended):
      after it is durable, close the inbox, read it to its final offset, and append
      ``Activation.closing(inbox_final, now)`` with ``Stream-Closed: true`` (MODEL-031..035).
    - ``steps``: bodies to start once ``append`` is durable (MODEL-027); never repeated in a
      later decision of the same activation.
    - ``wake_at``: the earliest instant at which time alone lets the run move on (a sleep's
      ``wake_at``, a step's ``retry_at``, an input's ``expires_at``); call ``advance`` then.
    - ``waiting_for_inbox``: the run waits on at least one input; call ``advance`` when the
      inbox grows. (A cancel can arrive any time; shells follow the inbox anyway.)
    - ``status``: the run's status once ``append`` is durable.
    """

    append: tuple[dict[str, Any], ...]
    close_run: bool
    steps: tuple[StepTask, ...]
    wake_at: datetime | None
    waiting_for_inbox: bool
    status: RunStatus


@dataclass(frozen=True)
class ReplayReport:
    """The result of ``replay_check`` (REPLAY-028..030).

    ``ok`` is false on non-determinism (``error`` is then the ``run-failed`` error the engine
    would record: type ``NonDeterminism``, details ``{seq, recorded, requested}``) and also
    when a finished run's code now ends differently (``outcome_mismatch`` says how).
    ``matched`` counts recorded primitives the code reached; ``stopped`` says where replay
    stopped (``"completed"``, ``"failed"``, ``"blocked"``, ``"finished"``, ``"nondeterminism"``).
    """

    ok: bool
    run_id: str
    workflow: str
    matched: int
    recorded: int
    stopped: str
    error: dict[str, Any] | None = None
    outcome_mismatch: str | None = None

    @property
    def message(self) -> str:
        """One readable line: the non-determinism message, the mismatch, or ``ok``."""
        if self.error is not None:
            return str(self.error["message"])
        if self.outcome_mismatch is not None:
            return self.outcome_mismatch
        return f"ok: {self.matched} of {self.recorded} recorded primitives ({self.stopped})"
