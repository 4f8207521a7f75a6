"""Helpers the tests share: servers to test against (started and stopped by the test)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: The repository root (tests/support/ is two levels down).
REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (prefer letting the server bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def drive(op: Generator[Any, Any, T], answer: Callable[[Any], Any]) -> tuple[T, list[Any]]:
    """Run a sans-IO client op against ``answer`` (a step -> response function).

    ``answer`` gets each step (a Request or a Sleep) and returns the Response for a
    request (None for a sleep), or raises an exception to throw into the op (e.g.
    StreamNetworkError). Returns the op's result and every step it took.
    """
    steps: list[Any] = []
    try:
        step = next(op)
        while True:
            steps.append(step)
            try:
                reply = answer(step)
            except Exception as exc:  # thrown into the op, like a driver does
                step = op.throw(exc)
            else:
                step = op.send(reply)
    except StopIteration as stop:
        result: T = stop.value
        return result, steps
