"""The httpx front ends (sync and async) over a mock transport: no server, no sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing
from typing import Any

import httpx
import pytest

from durable_workflows.streams import (
    AsyncStreamClient,
    ProducerFenced,
    StreamClient,
    StreamNetworkError,
    StreamNotFound,
)

BASE = "http://h/v1/stream"
O1 = "0000000000000000_0000000000000010"
O2 = "0000000000000000_0000000000000020"
JSON = {"content-type": "application/json"}


def sse_body() -> list[bytes]:
    return [
        b"event: data\ndata: [1,",
        b"2]\n\nevent: control\ndata: ",
        json.dumps({"streamNextOffset": O1, "streamCursor": "1", "upToDate": True}).encode(),
        b"\n\nevent: data\ndata: [3]\n\nevent: control\n",
        b'data: {"streamNextOffset":"' + O2.encode() + b'","streamClosed":true}\n\n',
    ]


class Server:
    """A scripted stand-in: records requests, answers by method and query."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.drop_next = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.drop_next:
            self.drop_next -= 1
            raise httpx.ConnectError("refused", request=request)
        path = request.url.path
        if path.endswith("/missing"):
            return httpx.Response(404, text="Stream not found")
        if request.method == "PUT":
            return httpx.Response(201, headers={**JSON, "stream-next-offset": O1})
        if request.method == "HEAD":
            return httpx.Response(200, headers={**JSON, "stream-next-offset": O1})
        if request.method == "POST":
            if request.headers.get("producer-epoch") == "0":
                return httpx.Response(403, headers={"producer-epoch": "2"}, text="Stale")
            return httpx.Response(204, headers={"stream-next-offset": O2})
        live = request.url.params.get("live")
        if live == "sse":
            return httpx.Response(
                200, headers={"content-type": "text/event-stream"}, content=sse_body()
            )
        if live == "long-poll":
            return httpx.Response(204, headers={"stream-next-offset": O1, "stream-closed": "true"})
        return httpx.Response(
            200,
            headers={**JSON, "stream-next-offset": O1, "stream-up-to-date": "true"},
            content=b'[{"a":1}]',
        )


class AsyncBody(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


def async_handler(server: Server) -> Callable[[httpx.Request], Any]:
    async def handle(request: httpx.Request) -> httpx.Response:
        response = server.handle(request)
        if response.headers.get("content-type") == "text/event-stream":
            return httpx.Response(200, headers=response.headers, stream=AsyncBody(sse_body()))
        return response

    return handle


@pytest.fixture
def server() -> Server:
    return Server()


@pytest.fixture
def client(server: Server) -> Iterator[StreamClient]:
    http = httpx.Client(transport=httpx.MockTransport(server.handle))
    with StreamClient(BASE, http=http, headers={"Authorization": "Bearer t"}) as client:
        yield client
    http.close()


def test_sync_operations(client: StreamClient, server: Server) -> None:
    stream = client.stream("runs/r1/history")
    assert stream.create_json().created
    assert stream.append_json({"a": 1}).next_offset == O2
    assert stream.read().items == [{"a": 1}]
    assert stream.head().next_offset == O1
    put, post = server.requests[0], server.requests[1]
    assert str(put.url) == f"{BASE}/runs/r1/history"
    assert put.headers["authorization"] == "Bearer t"
    assert post.content == b'[{"a":1}]' and post.headers["content-type"] == "application/json"


def test_sync_follow_sse_and_long_poll(client: StreamClient) -> None:
    batches = list(client.stream("s").follow(live="sse"))
    assert [(b.items, b.closed) for b in batches] == [([1, 2], False), ([3], True)]
    [eof] = list(client.stream("s").follow(live="long-poll"))
    assert eof.closed


def test_sync_errors_are_typed(client: StreamClient) -> None:
    with pytest.raises(StreamNotFound, match="404"):
        client.stream("missing").head()
    with pytest.raises(ProducerFenced) as info:
        client.stream("s").producer("p").append_json(1)
    assert info.value.current_epoch == 2


def test_sync_network_errors(client: StreamClient, server: Server) -> None:
    server.drop_next = 1
    assert client.stream("s").read().items == [{"a": 1}]  # reads retry
    server.drop_next = 10
    with pytest.raises(StreamNetworkError, match="no response"):
        client.stream("s").append_json(1)


def test_producer_network_error_is_retried_unchanged(client: StreamClient, server: Server) -> None:
    producer = client.stream("s").producer("p", epoch=1)
    server.drop_next = 2
    assert producer.append_json(1).next_offset == O2
    posts = [r for r in server.requests if r.method == "POST"]
    assert len(posts) == 3
    assert {(r.headers["producer-epoch"], r.headers["producer-seq"]) for r in posts} == {("1", "0")}
    assert producer.seq == 1


def test_async_operations_and_follow(server: Server) -> None:
    async def main() -> None:
        http = httpx.AsyncClient(transport=httpx.MockTransport(async_handler(server)))
        async with AsyncStreamClient(BASE, http=http) as client:
            stream = client.stream("s")
            assert (await stream.create_json()).created
            assert (await stream.append_json(1)).next_offset == O2
            assert (await stream.read()).items == [{"a": 1}]
            batches = [b async for b in stream.follow(live="sse")]
            assert [b.items for b in batches] == [[1, 2], [3]]
            async with aclosing(stream.follow(live="long-poll")) as live:
                assert [b.closed async for b in live] == [True]
            with pytest.raises(StreamNotFound):
                await client.stream("missing").delete()
            with pytest.raises(ProducerFenced):
                await stream.producer("p").append_json(1)
            server.drop_next = 1
            assert (await stream.producer("q", epoch=3).append_json(1)).next_offset == O2
        await http.aclose()

    asyncio.run(main())
