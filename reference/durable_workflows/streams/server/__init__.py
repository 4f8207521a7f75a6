"""An embedded Durable Streams server: protocol core, storage, ASGI app.

:func:`build_app` wires the pieces; ``dwf streams serve`` runs it under uvicorn.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from .app import DEFAULT_MAX_BODY_BYTES, Cors, StreamsApp
from .core import ProtocolError, StreamCore
from .storage import MemoryStorage, SqliteStorage

if TYPE_CHECKING:
    from ...access import Grant, KeySet

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "Cors",
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
    keys: KeySet | None = None,
    anonymous: Grant | None = None,
    cors: Cors | None = None,
) -> StreamsApp:
    """A ready ASGI app: SQLite storage in ``data_dir``, or memory when None.

    With ``keys``, every request needs a credential those keys verify, and may do only
    what security.md lets it (:mod:`durable_workflows.access`); ``anonymous`` is what a
    request without one may do (nothing when None). Without ``keys`` anyone may do
    anything: a bare Durable Streams server, for tests and the official suite.
    """
    storage: MemoryStorage | SqliteStorage = (
        MemoryStorage() if data_dir is None else SqliteStorage(data_dir)
    )
    core = StreamCore(storage, clock=time.time)
    manager = None
    if subscriptions:
        from .subscriptions import SubscriptionManager

        manager = SubscriptionManager(core, storage if isinstance(storage, SqliteStorage) else None)
    gate = None
    if keys is not None:
        from ...access.guard import AccessGuard

        gate = AccessGuard(
            keys,
            anonymous=anonymous,
            subscription_paths=None if manager is None else manager.paths_of,
        )
    return StreamsApp(
        core,
        long_poll_timeout=long_poll_timeout,
        max_body_bytes=max_body_bytes,
        subscriptions=manager,
        gate=gate,
        cors=cors,
    )
