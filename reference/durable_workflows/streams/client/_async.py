"""The asyncio client: carries the core's requests over ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable, Mapping
from contextlib import aclosing
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

__all__ = ["AsyncIdempotentProducer", "AsyncStream", "AsyncStreamClient"]

T = TypeVar("T")


async def run_async(op: Op[T], client: AsyncStreamClient) -> T:
    """Drive an op to completion over the async transport (twin of ``run_sync``)."""
    try:
        step = next(op)
        while True:
            if isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
                step = op.send(None)
                continue
            try:
                response = await client._send(step)
            except StreamNetworkError as exc:
                step = op.throw(exc)
            else:
                step = op.send(response)
    except StopIteration as stop:
        result: T = stop.value
        return result
    finally:
        op.close()


class AsyncStreamClient(HTTPClient[httpx.AsyncClient]):
    """The asyncio twin of :class:`~durable_workflows.streams.StreamClient`."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        live_timeout: float = DEFAULT_LIVE_TIMEOUT,
        http: httpx.AsyncClient | None = None,
        auth: httpx.Auth | None = None,
    ) -> None:
        # ``auth`` (a credential, :mod:`durable_workflows.access`) applies to the
        # client this one creates; a given ``http`` brings its own.
        super().__init__(
            base_url,
            http if http is not None else httpx.AsyncClient(auth=auth),
            owned=http is None,
            headers=headers,
            timeout=timeout,
            live_timeout=live_timeout,
        )

    def stream(self, path: str, *, content_type: str | None = None) -> AsyncStream:
        """A handle on the stream at ``path`` (relative to ``base_url``, or a full URL)."""
        return AsyncStream(self, join_url(self.base_url, path), content_type=content_type)

    async def aclose(self) -> None:
        if self._owned:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncStreamClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def send(self, request: Request) -> Response:
        """``request`` as it is, its response whatever the status: for APIs beside
        the stream operations (the reserved ``__ds`` routes)."""
        return await self._send(request)

    # -- transport

    async def _send(self, request: Request) -> Response:
        with no_response(request):
            response = await self._http.send(self._build(request))
        return to_response(response, response.content)

    async def _run(self, op: Op[T]) -> T:
        return await run_async(op, self)

    async def _follow(self, reader: LiveReader) -> AsyncGenerator[ReadResult, None]:
        while (step := reader.next_step()) is not None:
            if isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
                continue
            try:
                if step.streaming:
                    async with aclosing(self._read_sse(reader, step)) as results:
                        async for result in results:
                            yield result
                else:
                    for result in reader.on_response(await self._send(step)):
                        yield result
            except StreamNetworkError as exc:
                reader.on_network_error(exc)

    async def _read_sse(
        self, reader: LiveReader, request: Request
    ) -> AsyncGenerator[ReadResult, None]:
        with no_response(request):
            response = await self._http.send(self._build(request), stream=True)
            try:
                if response.status_code != 200:
                    for result in reader.on_response(to_response(response, await response.aread())):
                        yield result
                    return
                reader.on_stream_open(to_response(response))
                async for chunk in response.aiter_bytes():
                    for result in reader.feed(chunk):
                        yield result
                    if reader.done:
                        break
            finally:
                await response.aclose()
        for result in reader.on_stream_end():
            yield result


class _AsyncAppends:
    """The asyncio twin of the sync appends of a stream or a producer."""

    def _appends(self) -> Appends:
        raise NotImplementedError

    async def _run(self, op: Op[T]) -> T:
        raise NotImplementedError

    async def append(
        self,
        data: bytes,
        *,
        content_type: str | None = None,
        seq: str | None = None,
        close: bool = False,
    ) -> AppendResult:
        return await self._run(
            self._appends().append(data, content_type=content_type, seq=seq, close=close)
        )

    async def append_json(
        self, message: Any, *, seq: str | None = None, close: bool = False
    ) -> AppendResult:
        return await self._run(self._appends().append_json(message, seq=seq, close=close))

    async def append_json_batch(
        self, messages: Iterable[Any], *, seq: str | None = None, close: bool = False
    ) -> AppendResult:
        return await self._run(self._appends().append_json_batch(messages, seq=seq, close=close))

    async def close(self) -> AppendResult:
        return await self._run(self._appends().close())


class AsyncStream(StreamHandle[AsyncStreamClient], _AsyncAppends):
    """The asyncio twin of :class:`~durable_workflows.streams.Stream`."""

    def _appends(self) -> Appends:
        return self._core

    async def _run(self, op: Op[T]) -> T:
        return await self.client._run(op)

    async def create(
        self,
        content_type: str | None = None,
        *,
        data: bytes | None = None,
        **options: Unpack[CreateOptions],
    ) -> CreateResult:
        return await self._run(self._core.create(content_type, data=data, **options))

    async def create_json(
        self, messages: Iterable[Any] | None = None, **options: Unpack[CreateOptions]
    ) -> CreateResult:
        return await self._run(self._core.create_json(messages, **options))

    async def head(self) -> StreamInfo:
        return await self._run(self._core.head())

    async def delete(self) -> None:
        await self._run(self._core.delete())

    async def read(self, offset: str = OFFSET_START) -> ReadResult:
        return await self._run(self._core.read(offset))

    def follow(
        self, offset: str = OFFSET_START, *, live: LiveMode = "long-poll", max_failures: int = 5
    ) -> AsyncGenerator[ReadResult, None]:
        """Live read as an async iterator; close it (``contextlib.aclosing``) when
        breaking out early."""
        return self.client._follow(LiveReader(self._core, offset, live, max_failures=max_failures))

    def producer(
        self, producer_id: str, **options: Unpack[ProducerOptions]
    ) -> AsyncIdempotentProducer:
        check_options(ProducerOptions, options, "producer")
        return AsyncIdempotentProducer(self, ProducerCore(self._core, producer_id, **options))


class AsyncIdempotentProducer(ProducerHandle[AsyncStream], _AsyncAppends):
    """The asyncio twin of :class:`~durable_workflows.streams.IdempotentProducer`."""

    def __init__(self, stream: AsyncStream, core: ProducerCore) -> None:
        super().__init__(stream, core)
        self._lock = asyncio.Lock()

    def _appends(self) -> Appends:
        return self._core

    async def _run(self, op: Op[T]) -> T:
        async with self._lock:  # one request in flight keeps Producer-Seq in order
            return await self.stream.client._run(op)
