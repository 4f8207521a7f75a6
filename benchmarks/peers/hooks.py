"""A counter the Temporal workflows share with the driver (a module the workflow
sandbox passes through instead of re-importing)."""

from __future__ import annotations

import threading

_lock = threading.Lock()
parked = 0


def park() -> None:
    global parked
    with _lock:
        parked += 1
