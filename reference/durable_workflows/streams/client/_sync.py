"""The blocking client: carries the core's requests over ``httpx.Client``."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx

from ..errors import StreamNetworkError
from ._core import (
    OFFSET_START,
    AppendResult,
    CreateResult,
    LiveMode,
    Op,
    ReadResult,
    Request,
    Response,
    Sleep,
    StreamCore,
    StreamInfo,
    join_url,
    run_sync,
)
from ._live import LiveReader
from ._producer import ProducerCore

__all__ = ["IdempotentProducer", "Stream", "StreamClient"]

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0
DEFAULT_LIVE_TIMEOUT = 120.0


def network_error(request: Request, exc: Exception) -> StreamNetworkError:
    return StreamNetworkError(
        f"{request.method} {request.url}: no response ({type(exc).__name__}: {exc})",
        method=request.method,
        url=request.url,
    )


def to_response(response: httpx.Response, content: bytes = b"") -> Response:
    return Response(response.status_code, dict(response.headers.items()), content)


class StreamClient:
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
    ) -> None:
        self.base_url = base_url
        self._timeout = httpx.Timeout(timeout)
        self._live_timeout = httpx.Timeout(timeout, read=live_timeout)
        self._owned = http is None
        self._http = http if http is not None else httpx.Client()
        self._headers = dict(headers or {})

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

    def _build(self, request: Request) -> httpx.Request:
        return self._http.build_request(
            request.method,
            request.url,
            headers={**self._headers, **request.headers},
            content=request.content or None,
            timeout=self._live_timeout if request.live else self._timeout,
        )

    def _send(self, request: Request) -> Response:
        try:
            response = self._http.send(self._build(request))
        except httpx.TransportError as exc:
            raise network_error(request, exc) from exc
        return to_response(response, response.content)

    def _run(self, op: Op[T]) -> T:
        return run_sync(op, self._send, time.sleep)

    def _follow(self, reader: LiveReader) -> Generator[ReadResult, None, None]:
        while True:
            step = reader.next_step()
            if step is None:
                return
            if isinstance(step, Sleep):
                time.sleep(step.seconds)
                continue
            try:
                if not step.streaming:
                    yield from reader.on_response(self._send(step))
                    continue
                with self._http.stream(
                    step.method,
                    step.url,
                    headers={**self._headers, **step.headers},
                    timeout=self._live_timeout,
                ) as response:
                    if response.status_code != 200:
                        yield from reader.on_response(to_response(response, response.read()))
                        continue
                    reader.on_stream_open(to_response(response))
                    for chunk in response.iter_bytes():
                        yield from reader.feed(chunk)
                        if reader.done:
                            break
                yield from reader.on_stream_end()
            except StreamNetworkError as exc:
                reader.on_network_error(exc)
            except httpx.TransportError as exc:  # while reading an SSE body
                reader.on_network_error(network_error(step, exc))


class Stream:
    """One stream. Every method is one protocol operation (PROTOCOL.md section 5)."""

    def __init__(self, client: StreamClient, url: str, *, content_type: str | None = None):
        self.client = client
        self._core = StreamCore(url, content_type=content_type)

    @property
    def url(self) -> str:
        return self._core.url

    @property
    def content_type(self) -> str | None:
        """The stream's content type, once known (from create, head or a read)."""
        return self._core.content_type

    def __repr__(self) -> str:
        return f"Stream({self.url!r})"

    def create(
        self,
        content_type: str | None = None,
        *,
        data: bytes | None = None,
        ttl: int | None = None,
        expires_at: str | datetime | None = None,
        closed: bool = False,
        forked_from: str | None = None,
        fork_offset: str | None = None,
        fork_sub_offset: int | None = None,
    ) -> CreateResult:
        """PUT: create the stream, or confirm an identical one exists (``created`` False).

        ``ttl`` (seconds, sliding) and ``expires_at`` exclude each other; ``closed``
        creates it closed with ``data`` as its whole content; ``forked_from`` (the
        source's path or URL) with ``fork_offset``/``fork_sub_offset`` makes a fork.
        """
        return self.client._run(
            self._core.create(
                content_type,
                data=data,
                ttl=ttl,
                expires_at=expires_at,
                closed=closed,
                forked_from=forked_from,
                fork_offset=fork_offset,
                fork_sub_offset=fork_sub_offset,
            )
        )

    def create_json(
        self,
        messages: Iterable[Any] | None = None,
        *,
        ttl: int | None = None,
        expires_at: str | datetime | None = None,
        closed: bool = False,
        forked_from: str | None = None,
        fork_offset: str | None = None,
        fork_sub_offset: int | None = None,
    ) -> CreateResult:
        """PUT an ``application/json`` stream, each element of ``messages`` one message."""
        return self.client._run(
            self._core.create_json(
                messages,
                ttl=ttl,
                expires_at=expires_at,
                closed=closed,
                forked_from=forked_from,
                fork_offset=fork_offset,
                fork_sub_offset=fork_sub_offset,
            )
        )

    def head(self) -> StreamInfo:
        return self.client._run(self._core.head())

    def delete(self) -> None:
        self.client._run(self._core.delete())

    def append(
        self,
        data: bytes,
        *,
        content_type: str | None = None,
        seq: str | None = None,
        close: bool = False,
    ) -> AppendResult:
        """POST raw bytes (``content_type`` defaults to the stream's; looked up if unknown)."""
        return self.client._run(
            self._core.append(data, content_type=content_type, seq=seq, close=close)
        )

    def append_json(
        self, message: Any, *, seq: str | None = None, close: bool = False
    ) -> AppendResult:
        """Append ``message`` as exactly one message (arrays included)."""
        return self.client._run(self._core.append_json(message, seq=seq, close=close))

    def append_json_batch(
        self, messages: Iterable[Any], *, seq: str | None = None, close: bool = False
    ) -> AppendResult:
        """Append each element of ``messages`` as one message, in one request."""
        return self.client._run(self._core.append_json_batch(messages, seq=seq, close=close))

    def close(self) -> AppendResult:
        """Close the stream (idempotent). To append a last message and close, pass
        ``close=True`` to an append."""
        return self.client._run(self._core.close())

    def read(self, offset: str = OFFSET_START) -> ReadResult:
        """Catch-up read from ``offset`` until up-to-date."""
        return self.client._run(self._core.read(offset))

    def follow(
        self, offset: str = OFFSET_START, *, live: LiveMode = "long-poll", max_failures: int = 5
    ) -> Generator[ReadResult, None, None]:
        """Live read: yields each batch (empty ones included, they report
        ``up_to_date``) until the stream is closed. Break out to stop earlier."""
        return self.client._follow(LiveReader(self._core, offset, live, max_failures=max_failures))

    def producer(
        self,
        producer_id: str,
        *,
        epoch: int = 0,
        seq: int = 0,
        auto_claim: bool = False,
        max_retries: int = 3,
    ) -> IdempotentProducer:
        """An idempotent producer on this stream (see :class:`IdempotentProducer`)."""
        return IdempotentProducer(
            self,
            ProducerCore(
                self._core,
                producer_id,
                epoch=epoch,
                seq=seq,
                auto_claim=auto_claim,
                max_retries=max_retries,
            ),
        )


class IdempotentProducer:
    """Appends with ``Producer-Id``/``Producer-Epoch``/``Producer-Seq``, one request at a time.

    A request that got no answer is retried unchanged up to ``max_retries`` times.
    Raises :class:`~durable_workflows.streams.ProducerFenced` when a newer epoch
    holds the id (unless ``auto_claim``) and
    :class:`~durable_workflows.streams.ProducerSequenceGap` on a gap.
    """

    def __init__(self, stream: Stream, core: ProducerCore) -> None:
        self.stream = stream
        self._core = core
        self._lock = threading.Lock()

    def _run(self, op: Op[T]) -> T:
        with self._lock:  # one request in flight keeps Producer-Seq in order
            return self.stream.client._run(op)

    @property
    def producer_id(self) -> str:
        return self._core.producer_id

    @property
    def epoch(self) -> int:
        return self._core.epoch

    @property
    def seq(self) -> int:
        """The Producer-Seq the next request will carry."""
        return self._core.seq

    def bump_epoch(self) -> int:
        return self._core.bump_epoch()

    def append(
        self,
        data: bytes,
        *,
        content_type: str | None = None,
        seq: str | None = None,
        close: bool = False,
    ) -> AppendResult:
        return self._run(self._core.append(data, content_type=content_type, seq=seq, close=close))

    def append_json(
        self, message: Any, *, seq: str | None = None, close: bool = False
    ) -> AppendResult:
        return self._run(self._core.append_json(message, seq=seq, close=close))

    def append_json_batch(
        self, messages: Iterable[Any], *, seq: str | None = None, close: bool = False
    ) -> AppendResult:
        return self._run(self._core.append_json_batch(messages, seq=seq, close=close))

    def close(self) -> AppendResult:
        return self._run(self._core.close())
