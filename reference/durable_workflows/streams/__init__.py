"""Durable Streams: the client the runtime uses, and an embedded server.

The client speaks the Durable Streams protocol (upstream ``PROTOCOL.md``) over
httpx, in a blocking and an asyncio flavour that share one sans-IO core::

    from durable_workflows.streams import StreamClient

    with StreamClient("http://127.0.0.1:4437/v1/stream") as client:
        history = client.stream("workflows/runs/r1/history")
        history.create_json()
        history.append_json({"type": "run", "key": "r1", "value": {}, "headers": {...}})
        for batch in history.follow(live="sse"):
            ...

Offsets are opaque strings: pass back what the server gave (``next_offset``), or
the sentinels ``"-1"`` (start) and ``"now"`` (tail). Errors are typed (see
:mod:`durable_workflows.streams.errors`). The embedded server lives in
:mod:`durable_workflows.streams.server` and is started by ``dwf streams serve``.
"""

from .client import (
    AppendResult,
    AsyncIdempotentProducer,
    AsyncStream,
    AsyncStreamClient,
    CreateResult,
    IdempotentProducer,
    ReadResult,
    Stream,
    StreamClient,
    StreamInfo,
)
from .client._core import OFFSET_NOW, OFFSET_START, LiveMode
from .errors import (
    BadRequest,
    ContentTypeMismatch,
    OperationNotSupported,
    PayloadTooLarge,
    ProducerFenced,
    ProducerSequenceGap,
    RateLimited,
    SequenceConflict,
    ServerError,
    StreamClosed,
    StreamConfigConflict,
    StreamConflict,
    StreamError,
    StreamForbidden,
    StreamGone,
    StreamHTTPError,
    StreamNetworkError,
    StreamNotFound,
    StreamProtocolError,
)

__all__ = [
    "OFFSET_NOW",
    "OFFSET_START",
    "AppendResult",
    "AsyncIdempotentProducer",
    "AsyncStream",
    "AsyncStreamClient",
    "BadRequest",
    "ContentTypeMismatch",
    "CreateResult",
    "IdempotentProducer",
    "LiveMode",
    "OperationNotSupported",
    "PayloadTooLarge",
    "ProducerFenced",
    "ProducerSequenceGap",
    "RateLimited",
    "ReadResult",
    "SequenceConflict",
    "ServerError",
    "Stream",
    "StreamClient",
    "StreamClosed",
    "StreamConfigConflict",
    "StreamConflict",
    "StreamError",
    "StreamForbidden",
    "StreamGone",
    "StreamHTTPError",
    "StreamInfo",
    "StreamNetworkError",
    "StreamNotFound",
    "StreamProtocolError",
]
