"""The asyncio client: carries the core's requests over ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable, Mapping
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
)
from ._live import LiveReader
from ._producer import ProducerCore
from ._sync import DEFAULT_LIVE_TIMEOUT, DEFAULT_TIMEOUT, network_error, to_response

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


class AsyncStreamClient:
    """The asyncio twin of :class:`~durable_workflows.streams.StreamClient`."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        live_timeout: float = DEFAULT_LIVE_TIMEOUT,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url
        self._timeout = httpx.Timeout(timeout)
        self._live_timeout = httpx.Timeout(timeout, read=live_timeout)
        self._owned = http is None
        self._http = http if http is not None else httpx.AsyncClient()
        self._headers = dict(headers or {})

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

    # -- transport

    def _build(self, request: Request) -> httpx.Request:
        return self._http.build_request(
            request.method,
            request.url,
            headers={**self._headers, **request.headers},
            content=request.content or None,
            timeout=self._live_timeout if request.live else self._timeout,
        )

    async def _send(self, request: Request) -> Response:
        try:
            response = await self._http.send(self._build(request))
        except httpx.TransportError as exc:
            raise network_error(request, exc) from exc
        return to_response(response, response.content)

    async def _run(self, op: Op[T]) -> T:
        return await run_async(op, self)

    async def _follow(self, reader: LiveReader) -> AsyncGenerator[ReadResult, None]:
        while True:
            step = reader.next_step()
            if step is None:
                return
            if isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
                continue
            try:
                if not step.streaming:
                    for result in reader.on_response(await self._send(step)):
                        yield result
                    continue
                async with self._http.stream(
                    step.method,
                    step.url,
                    headers={**self._headers, **step.headers},
                    timeout=self._live_timeout,
                ) as response:
                    if response.status_code != 200:
                        body = await response.aread()
                        for result in reader.on_response(to_response(response, body)):
                            yield result
                        continue
                    reader.on_stream_open(to_response(response))
                    async for chunk in response.aiter_bytes():
                        for result in reader.feed(chunk):
                            yield result
                        if reader.done:
                            break
                for result in reader.on_stream_end():
                    yield result
            except StreamNetworkError as exc:
                reader.on_network_error(exc)
            except httpx.TransportError as exc:  # while reading an SSE body
                reader.on_network_error(network_error(step, exc))


class AsyncStream:
    """The asyncio twin of :class:`~durable_workflows.streams.Stream`."""

    def __init__(self, client: AsyncStreamClient, url: str, *, content_type: str | None = None):
        self.client = client
        self._core = StreamCore(url, content_type=content_type)

    @property
    def url(self) -> str:
        return self._core.url

    @property
    def content_type(self) -> str | None:
        return self._core.content_type

    def __repr__(self) -> str:
        return f"AsyncStream({self.url!r})"

    async def create(
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
        return await self.client._run(
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

    async def create_json(
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
        return await self.client._run(
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

    async def head(self) -> StreamInfo:
        return await self.client._run(self._core.head())

    async def delete(self) -> None:
        await self.client._run(self._core.delete())

    async def append(
        self,
        data: bytes,
        *,
        content_type: str | None = None,
        seq: str | None = None,
        close: bool = False,
    ) -> AppendResult:
        return await self.client._run(
            self._core.append(data, content_type=content_type, seq=seq, close=close)
        )

    async def append_json(
        self, message: Any, *, seq: str | None = None, close: bool = False
    ) -> AppendResult:
        return await self.client._run(self._core.append_json(message, seq=seq, close=close))

    async def append_json_batch(
        self, messages: Iterable[Any], *, seq: str | None = None, close: bool = False
    ) -> AppendResult:
        return await self.client._run(self._core.append_json_batch(messages, seq=seq, close=close))

    async def close(self) -> AppendResult:
        return await self.client._run(self._core.close())

    async def read(self, offset: str = OFFSET_START) -> ReadResult:
        return await self.client._run(self._core.read(offset))

    def follow(
        self, offset: str = OFFSET_START, *, live: LiveMode = "long-poll", max_failures: int = 5
    ) -> AsyncGenerator[ReadResult, None]:
        """Live read as an async iterator; close it (``contextlib.aclosing``) when
        breaking out early."""
        return self.client._follow(LiveReader(self._core, offset, live, max_failures=max_failures))

    def producer(
        self,
        producer_id: str,
        *,
        epoch: int = 0,
        seq: int = 0,
        auto_claim: bool = False,
        max_retries: int = 3,
    ) -> AsyncIdempotentProducer:
        return AsyncIdempotentProducer(
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


class AsyncIdempotentProducer:
    """The asyncio twin of :class:`~durable_workflows.streams.IdempotentProducer`."""

    def __init__(self, stream: AsyncStream, core: ProducerCore) -> None:
        self.stream = stream
        self._core = core
        self._lock = asyncio.Lock()

    async def _run(self, op: Op[T]) -> T:
        async with self._lock:  # one request in flight keeps Producer-Seq in order
            return await self.stream.client._run(op)

    @property
    def producer_id(self) -> str:
        return self._core.producer_id

    @property
    def epoch(self) -> int:
        return self._core.epoch

    @property
    def seq(self) -> int:
        return self._core.seq

    def bump_epoch(self) -> int:
        return self._core.bump_epoch()

    async def append(
        self,
        data: bytes,
        *,
        content_type: str | None = None,
        seq: str | None = None,
        close: bool = False,
    ) -> AppendResult:
        return await self._run(
            self._core.append(data, content_type=content_type, seq=seq, close=close)
        )

    async def append_json(
        self, message: Any, *, seq: str | None = None, close: bool = False
    ) -> AppendResult:
        return await self._run(self._core.append_json(message, seq=seq, close=close))

    async def append_json_batch(
        self, messages: Iterable[Any], *, seq: str | None = None, close: bool = False
    ) -> AppendResult:
        return await self._run(self._core.append_json_batch(messages, seq=seq, close=close))

    async def close(self) -> AppendResult:
        return await self._run(self._core.close())
