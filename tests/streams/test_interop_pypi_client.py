"""The published Python client (PyPI ``durable-streams`` 0.1.0) against OUR server.

An independent client written against the same protocol: if it can create,
append, read, long-poll and follow SSE on ``dwf streams serve`` (in memory and on
SQLite), our server speaks the protocol as others read it, not only as our own
client does. (0.1.0 predates stream closure and idempotent producers, so those
are covered by the Node interop tests instead.)
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from durable_streams import (
    AsyncDurableStream,
    DurableStream,
    SeqConflictError,
    StreamExistsError,
    StreamNotFoundError,
)

from tests.support.embedded_server import EmbeddedServer, embedded_server

# Live reads of the 0.1.0 client loop inside its iterators; a hang fails fast.
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module", params=["memory", "sqlite"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedServer]:
    data_dir: Path | None = None
    if request.param == "sqlite":
        data_dir = tmp_path_factory.mktemp("streams-data")
    with embedded_server(data_dir=data_dir, long_poll_timeout=0.5) as ours:
        yield ours


def url(server: EmbeddedServer) -> str:
    return server.stream_url(f"pypi/{uuid.uuid4().hex[:12]}")


def append_later(stream_url: str, items: list[Any], content_type: str = "application/json") -> None:
    def run() -> None:
        time.sleep(0.3)
        writer = DurableStream(stream_url, content_type=content_type)
        try:
            for item in items:
                writer.append(item)
        finally:
            writer.close()

    threading.Thread(target=run, daemon=True).start()


def test_create_append_read_head_delete(server: EmbeddedServer) -> None:
    stream_url = url(server)
    with DurableStream.create(stream_url, content_type="application/json") as handle:
        first = handle.append({"n": 1})
        second = handle.append([1, 2])  # the client wraps it: one message
        assert first.next_offset < second.next_offset
        with handle.stream(live=False) as response:
            assert response.read_json() == [{"n": 1}, [1, 2]]
            assert response.up_to_date
            assert response.offset == second.next_offset
        head = handle.head()
        assert head.content_type == "application/json" and head.offset == second.next_offset
        with handle.stream(offset=first.next_offset, live=False) as response:
            assert response.read_json() == [[1, 2]]
        handle.delete()
    with pytest.raises(StreamNotFoundError):
        DurableStream.connect(stream_url)


def test_create_is_idempotent_and_conflicts_on_other_config(server: EmbeddedServer) -> None:
    stream_url = url(server)
    DurableStream.create(stream_url, content_type="text/plain").close()
    DurableStream.create(stream_url, content_type="text/plain").close()
    with pytest.raises(StreamExistsError):
        DurableStream.create(stream_url, content_type="application/json")


def test_text_stream_with_initial_body(server: EmbeddedServer) -> None:
    stream_url = url(server)
    with DurableStream.create(stream_url, content_type="text/plain", body="hello ") as handle:
        handle.append("world")
        with handle.stream(live=False) as response:
            assert response.read_text() == "hello world"


def test_stream_seq_conflict(server: EmbeddedServer) -> None:
    with DurableStream.create(url(server), content_type="application/json") as handle:
        handle.append({"a": 1}, seq="0002")
        with pytest.raises(SeqConflictError):
            handle.append({"a": 2}, seq="0001")


@pytest.mark.parametrize("live", ["long-poll", "sse"])
def test_live_reads_receive_new_messages(server: EmbeddedServer, live: Any) -> None:
    stream_url = url(server)
    with DurableStream.create(stream_url, content_type="application/json") as handle:
        handle.append({"before": True})
        append_later(stream_url, [{"live": 1}, {"live": 2}])
        seen: list[Any] = []
        with handle.stream(offset="-1", live=live) as response:
            for item in response.iter_json():
                seen.append(item)
                if len(seen) == 3:
                    break
        assert seen == [{"before": True}, {"live": 1}, {"live": 2}]


@pytest.mark.parametrize("live", ["long-poll", "sse"])
def test_live_read_from_the_tail(server: EmbeddedServer, live: Any) -> None:
    stream_url = url(server)
    with DurableStream.create(stream_url, content_type="application/json") as handle:
        handle.append({"old": True})
        tail = handle.head().offset
        append_later(stream_url, [{"new": True}])
        with handle.stream(offset=tail, live=live) as response:
            item = next(iter(response.iter_json()))
        assert item == {"new": True}


def test_sse_text_stream(server: EmbeddedServer) -> None:
    # 0.1.0 reads SSE as text or JSON only (it predates base64 data events).
    stream_url = url(server)
    with DurableStream.create(stream_url, content_type="text/plain") as handle:
        handle.append("hello, ")
        append_later(stream_url, ["SSE"], content_type="text/plain")
        received = ""
        with handle.stream(offset="-1", live="sse") as response:
            for text in response.iter_text():
                received += text
                if len(received) >= len("hello, SSE"):
                    break
        assert received == "hello, SSE"


def test_async_client(server: EmbeddedServer) -> None:
    async def main() -> None:
        stream_url = url(server)
        handle = await AsyncDurableStream.create(stream_url, content_type="application/json")
        try:
            await handle.append({"a": 1})
            await handle.append({"b": 2})
            async with handle.stream(live=False) as response:
                assert await response.read_json() == [{"a": 1}, {"b": 2}]
            await handle.delete()
        finally:
            await handle.aclose()

    asyncio.run(main())
