"""Garbage-collector thresholds for the long-running processes (``dwf serve``,
``dwf worker``).

CPython's defaults (700, 10, 10) collect the youngest generation every 700 container
allocations and the whole heap whenever a quarter as many objects as it holds have
survived into the oldest generation since the last full collection. A server that keeps
runs replayed in memory (up to 256 kept runs, a 10,000-event history among them in the
benchmark) holds many long-lived objects and allocates a few thousand per request, so it
kept collecting: in the workflow benchmark a new run's start went from about 12.4 ms to
8.4 ms with the thresholds below. Objects are still freed by reference counting as soon
as they are unreferenced; only reference cycles wait longer for a collection.
"""

from __future__ import annotations

import gc

__all__ = ["SERVER_GC_THRESHOLDS", "tune_for_server"]

#: First generation every 50,000 allocations, then every 20 of those for each older one.
SERVER_GC_THRESHOLDS = (50_000, 20, 20)


def tune_for_server() -> None:
    """Set :data:`SERVER_GC_THRESHOLDS` (once the process has loaded its code)."""
    gc.set_threshold(*SERVER_GC_THRESHOLDS)
