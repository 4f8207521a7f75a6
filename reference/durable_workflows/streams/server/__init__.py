"""An embedded Durable Streams server: protocol core, storage, ASGI app.

:func:`build_app` wires the pieces; ``dwf streams serve`` runs it under uvicorn.
"""

from __future__ import annotations

import time
from pathlib import Path

from .app import DEFAULT_MAX_BODY_BYTES, StreamsApp
from .core import ProtocolError, StreamCore
from .storage import MemoryStorage, SqliteStorage

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "MemoryStorage",
    "ProtocolError",
    "SqliteStorage",
    "StreamCore",
    "StreamsApp",
    "build_app",
]


def build_app(
    data_dir: Path | None = None,
    *,
    long_poll_timeout: float = 30.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    subscriptions: bool = True,
) -> StreamsApp:
    """A ready ASGI app: SQLite storage in ``data_dir``, or memory when None."""
    storage: MemoryStorage | SqliteStorage = (
        MemoryStorage() if data_dir is None else SqliteStorage(data_dir)
    )
    core = StreamCore(storage, clock=time.time)
    manager = None
    if subscriptions:
        from .subscriptions import SubscriptionManager

        manager = SubscriptionManager(core, storage if isinstance(storage, SqliteStorage) else None)
    return StreamsApp(
        core,
        long_poll_timeout=long_poll_timeout,
        max_body_bytes=max_body_bytes,
        subscriptions=manager,
    )
