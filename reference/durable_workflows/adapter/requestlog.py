"""The adapter's request log (feature ``request-log``, ADAPT-022).

Every request other than a read that the engine's workers send to a run's inbox or
history is noted here, in the order sent, with the headers the fencing rules are about,
the number of messages its body carries and when it was sent and answered. The suite
reads the log with ``GET /conformance/v1/runs/{run_id}/requests`` and checks the
engine's requests against fencing.md and model.md, which it cannot see otherwise.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx

__all__ = ["LOGGED_HEADERS", "RequestLog"]

#: The request headers the log keeps (when the request has them).
LOGGED_HEADERS = (
    "Content-Type",
    "Stream-Seq",
    "Stream-Closed",
    "Producer-Id",
    "Producer-Epoch",
    "Producer-Seq",
)


def _message_count(request: httpx.Request) -> int:
    if not request.content:
        return 0
    try:
        body = json.loads(request.content)
    except ValueError:
        return 1
    return len(body) if isinstance(body, list) else 1


class RequestLog:
    """Per run, the engine's non-read requests to its streams (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, list[dict[str, Any]]] = {}
        self._origin = time.monotonic()

    def _ms(self) -> int:
        return int((time.monotonic() - self._origin) * 1000)

    def sent(self, run_id: str, stream: str, request: httpx.Request) -> dict[str, Any]:
        """Note a request as it is sent; pass the entry to :meth:`answered`."""
        headers = {h: request.headers[h] for h in LOGGED_HEADERS if h in request.headers}
        entry: dict[str, Any] = {
            "stream": stream,
            "method": request.method,
            "headers": headers,
            "messages": _message_count(request),
            "sent_ms": self._ms(),
            "answered_ms": None,
            "status": None,
        }
        with self._lock:
            self._runs.setdefault(run_id, []).append(entry)
        return entry

    def answered(self, entry: dict[str, Any], status: int | None) -> None:
        """Note the answer (``None``: the request failed without one)."""
        with self._lock:
            entry["answered_ms"] = self._ms()
            entry["status"] = status

    def of(self, run_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e, headers=dict(e["headers"])) for e in self._runs.get(run_id, [])]
