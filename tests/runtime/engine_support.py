"""Helpers shared by the engine tests (shell side): servers, messages, clients."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from tests.support.embedded_server import embedded_server
from tests.support.node_server import node_server

SERVER_KINDS = ["embedded", "node"]


class Server(Protocol):
    @property
    def base_url(self) -> str: ...

    @property
    def stream_base(self) -> str: ...


@contextmanager
def any_server(kind: str) -> Iterator[Server]:
    """A running stream server of ``kind`` (``embedded`` or ``node``)."""
    if kind == "node":
        with node_server(long_poll_timeout_ms=500) as node:
            yield node
    else:
        with embedded_server(long_poll_timeout=0.5) as ours:
            yield ours


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def submission(sub_id: str, request: str, value: Any) -> dict[str, Any]:
    return {
        "type": "submission",
        "key": sub_id,
        "value": {"submission_id": sub_id, "request": request, "value": value},
        "headers": {"operation": "insert"},
    }


def cancel(cancel_id: str, reason: str | None = None) -> dict[str, Any]:
    return {
        "type": "cancel",
        "key": cancel_id,
        "value": {"cancel_id": cancel_id, "reason": reason},
        "headers": {"operation": "insert"},
    }
