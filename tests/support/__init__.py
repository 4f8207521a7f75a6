"""Helpers the tests share: servers to test against (started and stopped by the test)."""

from __future__ import annotations

import socket
from pathlib import Path

#: The repository root (tests/support/ is two levels down).
REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (prefer letting the server bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
