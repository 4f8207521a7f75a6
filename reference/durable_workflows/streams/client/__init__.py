"""The Durable Streams client: sync and async front ends over one sans-IO core.

``_core``, ``_sse``, ``_live`` and ``_producer`` build requests and interpret
responses without touching the network; ``_sync`` and ``_async`` only carry the
requests over httpx, with what they share in ``_http``. The public names are
re-exported by :mod:`durable_workflows.streams`.
"""

from __future__ import annotations

from ._async import AsyncIdempotentProducer, AsyncStream, AsyncStreamClient
from ._core import AppendResult, CreateResult, ReadResult, StreamInfo
from ._sync import IdempotentProducer, Stream, StreamClient

__all__ = [
    "AppendResult",
    "AsyncIdempotentProducer",
    "AsyncStream",
    "AsyncStreamClient",
    "CreateResult",
    "IdempotentProducer",
    "ReadResult",
    "Stream",
    "StreamClient",
    "StreamInfo",
]
