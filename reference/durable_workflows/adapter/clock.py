"""The adapter's virtual clock (adapter.md, time; ADAPT-019).

The engine reads every timestamp it records and every deadline it compares from
:meth:`VirtualClock.now`. The clock starts at the real time when the adapter starts
(cut to the whole millisecond) and then stands still; only :meth:`advance`, which the
suite calls through ``POST /conformance/v1/clock``, moves it, and only forwards.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from ..core.timefmt import floor_ms, format_ts

__all__ = ["VirtualClock"]


class VirtualClock:
    """A thread-safe clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._now = floor_ms(start if start is not None else datetime.now(UTC))

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, ms: int) -> datetime:
        """Move the clock ``ms`` milliseconds forward; returns the new time."""
        if ms < 0:
            raise ValueError("the virtual clock never moves backwards")
        with self._lock:
            self._now += timedelta(milliseconds=ms)
            return self._now

    def text(self) -> str:
        """The current time as the protocol writes timestamps."""
        return format_ts(self.now())
