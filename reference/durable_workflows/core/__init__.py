"""The sans-IO core of the reference workflow runtime.

History in, decisions out: :class:`Activation` replays a run's history against its
workflow code and says what to append, which step bodies to run and when to wake up. It
never touches a socket, a clock or a random source; time, randomness and the inbox are
passed in by the I/O shells (``durable_workflows.engine``). A test enforces the boundary.

Workflow authors use :func:`workflow`, :class:`Context` and the errors below.
"""

from .activation import PROTOCOL, Activation, replay_check
from .api import (
    NAME_PATTERN,
    Context,
    RetryPolicy,
    StepInfo,
    Workflow,
    WorkflowFunction,
    WorkflowRegistry,
    current_step,
    workflow,
)
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
    Cancelled,
    HistoryError,
    InputExpired,
    InvalidPrimitive,
    NonDeterminism,
    NonRetryableError,
    StepFailed,
    UnsupportedProtocol,
    WorkflowAwaitError,
    WorkflowError,
)
from .scheduler import PatchCheck, Pending

__all__ = [
    "NAME_PATTERN",
    "PROTOCOL",
    "Activation",
    "Cancelled",
    "Context",
    "Decision",
    "HistoryError",
    "InputExpired",
    "InvalidPrimitive",
    "Limits",
    "NonDeterminism",
    "NonRetryableError",
    "PatchCheck",
    "Pending",
    "ReplayReport",
    "RetryPolicy",
    "RunStatus",
    "StepErrored",
    "StepFailed",
    "StepInfo",
    "StepOutcome",
    "StepSucceeded",
    "StepTask",
    "StepTimedOut",
    "UnsupportedProtocol",
    "Workflow",
    "WorkflowAwaitError",
    "WorkflowError",
    "WorkflowFunction",
    "WorkflowRegistry",
    "current_step",
    "replay_check",
    "workflow",
]
