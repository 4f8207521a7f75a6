"""Errors of the workflow API and of the core.

Two families, as in h11: errors that workflow code sees (``WorkflowError`` and its
subclasses, raised *into* the code at the point where it awaits a primitive), and errors
that tell the shell the history cannot be worked on (``HistoryError``).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Cancelled",
    "HistoryError",
    "InputExpired",
    "InvalidPrimitive",
    "NonDeterminism",
    "NonRetryableError",
    "StepFailed",
    "UnsupportedProtocol",
    "WorkflowAwaitError",
    "WorkflowError",
]


class WorkflowError(Exception):
    """Base of the errors the core raises into workflow code."""


class InvalidPrimitive(WorkflowError, ValueError):
    """A primitive was called with an invalid name, schema, policy or duration.

    Raised at the call, before anything is recorded (REPLAY-005, RETRY-002, INPUT-029).
    If the code does not catch it, the run fails with type ``InvalidPrimitive``.
    """


class WorkflowAwaitError(WorkflowError, TypeError):
    """Workflow code awaited something that is not a ``ctx`` primitive (REPLAY-008).

    Workflow code runs under the core's deterministic scheduler, not under asyncio:
    awaiting ``asyncio.sleep`` or a network call there cannot be replayed. Put such
    work inside a step body instead.
    """


class StepFailed(WorkflowError):
    """A step failed for good (RETRY-018): its last attempt failed or was not retryable.

    Carries the step's key, its final attempt number and the recorded error object
    (``{"type", "message", "details"}``), the same on first execution and on replay.
    """

    def __init__(self, key: str, attempts: int, error: dict[str, Any]) -> None:
        self.key = key
        self.attempts = attempts
        self.error = dict(error)
        super().__init__(
            f"Step '{key}' failed after {attempts} attempt(s): {error['type']}: {error['message']}"
        )

    @property
    def error_type(self) -> str:
        """The recorded error's ``type`` (for example ``ConnectionError``)."""
        return str(self.error["type"])


class InputExpired(WorkflowError):
    """An input request's deadline passed before a valid answer was read (INPUT-006)."""

    def __init__(self, key: str, expired_at: str) -> None:
        self.key = key
        self.expired_at = expired_at
        super().__init__(f"Input '{key}' expired at {expired_at} without an answer.")


class Cancelled(WorkflowError):
    """The run was cancelled (EVT-036/EVT-037).

    Version 1 gives workflow code no chance to observe a cancel; this class exists so
    that shells and tests can name the error type ``Cancelled``.
    """


class NonDeterminism(WorkflowError):
    """The code no longer matches its history (REPLAY-015, REPLAY-017).

    ``recorded`` and ``requested`` are ``{"kind": entity type, "name": name}`` or ``None``.
    Workflow code never sees this error; the core records ``run-failed`` with it and
    ``replay_check`` reports it.
    """

    def __init__(
        self,
        seq: int,
        recorded: dict[str, str] | None,
        requested: dict[str, str] | None,
        message: str,
    ) -> None:
        self.seq = seq
        self.recorded = recorded
        self.requested = requested
        super().__init__(message)

    @property
    def details(self) -> dict[str, Any]:
        """The ``details`` object of the recorded error: ``{seq, recorded, requested}``."""
        return {"seq": self.seq, "recorded": self.recorded, "requested": self.requested}


class NonRetryableError(Exception):
    """Raise this (or a subclass) from a step body to end the step without retries (RETRY-014).

    The recorded error's ``type`` is the class name of the exception, so a subclass
    ``CardDeclined(NonRetryableError)`` records ``CardDeclined``. ``details`` (a JSON object
    or ``None``) is recorded as the error's details.
    """

    def __init__(self, message: str = "", *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details


class HistoryError(Exception):
    """The shell must not append to this history (VER-003, VER-005, VER-006).

    Raised by ``Activation(...)`` for histories that are not well-formed runs: a message
    that is not an event of the run's protocol, a missing ``run-started``, or a history
    of another run.
    """


class UnsupportedProtocol(HistoryError):
    """The history's protocol major (or minor) is not one the core implements (VER-003, VER-005).

    The shell appends nothing, reports it to its operator (VER-004) and leaves the run.
    """


#: Error types the protocol defines whose ``message`` the engine words (events.md, the
#: error table; EVT-099): not compared (REPLAY-032).
FREE_MESSAGE = frozenset(
    {
        "NonDeterminism",
        "StepTimeout",
        "StepFailed",
        "InputExpired",
        "InvalidResult",
        "InvalidPrimitive",
        "UnknownWorkflow",
        "InvalidInput",
        "ResultTooLarge",
        "HistoryTooLarge",
        "InboxClosed",
        "MessageTooLarge",
    }
)
#: Protocol-defined types whose ``details`` the spec fixes (compared, REPLAY-032).
FIXED_DETAILS = frozenset({"NonDeterminism", "Cancelled", "StepTimeout", "StepFailed"})


def same_error(a: Any, b: Any) -> bool:
    """REPLAY-032: equal types and equal fixed parts (for an error raised by code, the
    message; for a protocol-defined type, what the error table fixes)."""
    if a.get("type") != b.get("type"):
        return False
    kind = a.get("type")
    if kind not in FREE_MESSAGE and a.get("message") != b.get("message"):
        return False
    return kind not in FIXED_DETAILS or a.get("details") == b.get("details")
