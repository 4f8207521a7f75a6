"""Defaults of the worker's options, in a module light enough for ``dwf --help``.

The command line shows them in its help; importing the worker for them would load the
HTTP client and the streams stack on every ``dwf`` command, ``dwf replay`` included.
"""

from __future__ import annotations

__all__ = ["UNKNOWN_GRACE_SECONDS"]

#: How long a worker that lacks a run's workflow leaves the new run for one that has it
#: before it records UnknownWorkflow itself (MODEL-018/019, MODEL-038).
UNKNOWN_GRACE_SECONDS = 10.0
