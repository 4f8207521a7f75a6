"""How a run ends: the code's outcome, engine-decided failures (model.md, EVT-034).

The code's return value or uncaught exception becomes the terminal event (EVT-034,
RETRY-019); the engine itself fails a run that would pass its history limit (SEC-010) or
names a workflow it does not have (MODEL-019).
"""

from __future__ import annotations

from typing import Any

from .api import WorkflowRegistry
from .errors import InputExpired, NonRetryableError, StepFailed
from .inbox import compact_size
from .messages import error_object
from .run_state import RunState, json_copy

__all__ = ["NOT_BY_CODE", "Ending"]

#: Run failures that the engine decides, not the workflow code.
NOT_BY_CODE = frozenset(
    {
        "NonDeterminism",
        "HistoryTooLarge",
        "UnknownWorkflow",
        "InvalidInput",
        "InboxClosed",
        "MessageTooLarge",
    }
)


class Ending(RunState):
    """The outcome of the code, and the failures the engine decides."""

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
        return "completed", json_copy(output), None

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

    def _unknown_text(self) -> str:
        text = f"Workflow '{self._wf_name}' is not known to this engine."
        if isinstance(self._registry, WorkflowRegistry) and len(self._registry):
            text += " It has: " + ", ".join(sorted(self._registry.names())) + "."
        return text
