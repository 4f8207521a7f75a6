"""The blocking client: carries the core's requests over ``httpx.Client``."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar, Unpack

import httpx

from ..errors import StreamNetworkError
from ._core import (
    OFFSET_START,
    AppendResult,
    Appends,
    CreateOptions,
    CreateResult,
    LiveMode,
    Op,
    ReadResult,
    Request,
    Response,
    Sleep,
    StreamInfo,
    check_options,
    join_url,
    run_sync,
)
from ._http import (
    DEFAULT_LIVE_TIMEOUT,
    DEFAULT_TIMEOUT,
    HTTPClient,
    ProducerHandle,
    ProducerOptions,
    StreamHandle,
    no_response,
    to_response,
)
from ._live import LiveReader
from ._producer import ProducerCore

__all__ = ["IdempotentProducer", "Stream", "StreamClient"]

T = TypeVar("T")


class StreamClient(HTTPClient[httpx.Client]):
    """A connection pool to one Durable Streams server.

    ``base_url`` is the prefix stream paths are relative to, e.g.
    ``http://127.0.0.1:4437/v1/stream``. ``headers`` go on every request (for
    example ``Authorization``). ``timeout`` bounds ordinary requests;
    ``live_timeout`` bounds the wait for a long-poll answer or the next SSE bytes.
    Pass ``http`` to use your own ``httpx.Client`` (it is then not closed here).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        live_timeout: float = DEFAULT_LIVE_TIMEOUT,
        http: httpx.Client | None = None,
        auth: httpx.Auth | None = None,
    ) -> None:
        # ``auth`` (a credential, :mod:`durable_workflows.access`) applies to the
        # client this one creates; a given ``http`` brings its own.
        super().__init__(
            base_url,
            http if http is not None else httpx.Client(auth=auth),
            owned=http is None,
            headers=headers,
            timeout=timeout,
            live_timeout=live_timeout,
        )

    def stream(self, path: str, *, content_type: str | None = None) -> Stream:
        """A handle on the stream at ``path`` (relative to ``base_url``, or a full URL)."""
        return Stream(self, join_url(self.base_url, path), content_type=content_type)

    def close(self) -> None:
        if self._owned:
            self._http.close()

    def __enter__(self) -> StreamClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- transport

    def _send(self, request: Request) -> Response:
        with no_response(request):
            response = self._http.send(self._build(request))
        return to_response(response, response.content)

    def _run(self, op: Op[T]) -> T:
        return run_sync(op, self._send, time.sleep)

    def _follow(self, reader: LiveReader) -> Generator[ReadResult, None, None]:
        while (step := reader.next_step()) is not None:
            if isinstance(step, Sleep):
                time.sleep(step.seconds)
                continue
            try:
                if step.streaming:
                    yield from self._read_sse(reader, step)
                else:
                    yield from reader.on_response(self._send(step))
            except StreamNetworkError as exc:
                reader.on_network_error(exc)

    def _read_sse(self, reader: LiveReader, request: Request) -> Generator[ReadResult, None, None]:
        with no_response(request):
            response = self._http.send(self._build(request), stream=True)
            try:
                if response.status_code != 200:
                    yield from reader.on_response(to_response(response, response.read()))
                    return
                reader.on_stream_open(to_response(response))
                for chunk in response.iter_bytes():
                    yield from reader.feed(chunk)
                    if reader.done:
                        break
            finally:
                response.close()
        yield from reader.on_stream_end()


class _Appends:
    """The appends of a stream or a producer, each run by ``_run``."""

    def _appends(self) -> Appends:
        raise NotImplementedError

    def _run(self, op: Op[T]) -> T:
        raise NotImplementedError

    def append(
        self,
        data: bytes,
        *,
        content_type: str | None = None,
        seq: str | None = None,
        close: bool = False,
    ) -> AppendResult:
        """POST raw bytes (``content_type`` defaults to the stream's; looked up if unknown)."""
        return self._run(
            self._appends().append(data, content_type=content_type, seq=seq, close=close)
        )

    def append_json(
        self, message: Any, *, seq: str | None = None, close: bool = False
    ) -> AppendResult:
        """Append ``message`` as exactly one message (arrays included)."""
        return self._run(self._appends().append_json(message, seq=seq, close=close))

    def append_json_batch(
        self, messages: Iterable[Any], *, seq: str | None = None, close: bool = False
    ) -> AppendResult:
        """Append each element of ``messages`` as one message, in one request."""
        return self._run(self._appends().append_json_batch(messages, seq=seq, close=close))

    def close(self) -> AppendResult:
        """Close the stream (idempotent). To append a last message and close, pass
        ``close=True`` to an append."""
        return self._run(self._appends().close())


class Stream(StreamHandle[StreamClient], _Appends):
    """One stream. Every method is one protocol operation (PROTOCOL.md section 5)."""

    def _appends(self) -> Appends:
        return self._core

    def _run(self, op: Op[T]) -> T:
        return self.client._run(op)

    def create(
        self,
        content_type: str | None = None,
        *,
        data: bytes | None = None,
        **options: Unpack[CreateOptions],
    ) -> CreateResult:
        """PUT: create the stream, or confirm an identical one exists (``created`` False).

        ``ttl`` (seconds, sliding) and ``expires_at`` exclude each other; ``closed``
        creates it closed with ``data`` as its whole content; ``forked_from`` (the
        source's path or URL) with ``fork_offset``/``fork_sub_offset`` makes a fork.
        """
        return self.client._run(self._core.create(content_type, data=data, **options))

    def create_json(
        self, messages: Iterable[Any] | None = None, **options: Unpack[CreateOptions]
    ) -> CreateResult:
        """PUT an ``application/json`` stream, each element of ``messages`` one message."""
        return self.client._run(self._core.create_json(messages, **options))

    def head(self) -> StreamInfo:
        return self.client._run(self._core.head())

    def delete(self) -> None:
        self.client._run(self._core.delete())

    def read(self, offset: str = OFFSET_START) -> ReadResult:
        """Catch-up read from ``offset`` until up-to-date."""
        return self.client._run(self._core.read(offset))

    def follow(
        self, offset: str = OFFSET_START, *, live: LiveMode = "long-poll", max_failures: int = 5
    ) -> Generator[ReadResult, None, None]:
        """Live read: yields each batch (empty ones included, they report
        ``up_to_date``) until the stream is closed. Break out to stop earlier."""
        return self.client._follow(LiveReader(self._core, offset, live, max_failures=max_failures))

    def producer(self, producer_id: str, **options: Unpack[ProducerOptions]) -> IdempotentProducer:
        """An idempotent producer on this stream (see :class:`IdempotentProducer`)."""
        check_options(ProducerOptions, options, "producer")
        return IdempotentProducer(self, ProducerCore(self._core, producer_id, **options))


class IdempotentProducer(ProducerHandle[Stream], _Appends):
    """Appends with ``Producer-Id``/``Producer-Epoch``/``Producer-Seq``, one request at a time.

    A request that got no answer is retried unchanged up to ``max_retries`` times.
    Raises :class:`~durable_workflows.streams.ProducerFenced` when a newer epoch
    holds the id (unless ``auto_claim``) and
    :class:`~durable_workflows.streams.ProducerSequenceGap` on a gap.
    """

    def __init__(self, stream: Stream, core: ProducerCore) -> None:
        super().__init__(stream, core)
        self._lock = threading.Lock()

    def _appends(self) -> Appends:
        return self._core

    def _run(self, op: Op[T]) -> T:
        with self._lock:  # one request in flight keeps Producer-Seq in order
            return self.stream.client._run(op)
