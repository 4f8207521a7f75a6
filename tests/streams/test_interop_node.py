"""Our client (sync and async) against real servers.

Every test runs against the Node reference server (``@durable-streams/server``,
the behaviour to match) and against our embedded server (``dwf streams serve``,
in memory and on SQLite); test ids carry ``node``, ``embedded`` or
``embedded-sqlite``. Tests that need the
reference server's fault injection (``/_test/inject-error``) run on Node only.
Each server is started once per module on a free 127.0.0.1 port and stopped at
the end; long-poll waits are 500 ms so live tests stay quick.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from contextlib import aclosing, closing
from typing import Any, Protocol

import httpx
import pytest

from durable_workflows.streams import (
    AsyncStreamClient,
    BadRequest,
    ContentTypeMismatch,
    LiveMode,
    PayloadTooLarge,
    ProducerFenced,
    ProducerSequenceGap,
    RateLimited,
    ReadResult,
    SequenceConflict,
    ServerError,
    StreamClient,
    StreamClosed,
    StreamConfigConflict,
    StreamGone,
    StreamHTTPError,
    StreamNetworkError,
    StreamNotFound,
)
from tests.support.embedded_server import embedded_server
from tests.support.node_server import node_server

pytestmark = pytest.mark.peers

LIVE_DEADLINE = 10.0  # seconds a live test may wait for an expected batch


class Server(Protocol):
    @property
    def base_url(self) -> str: ...

    @property
    def stream_base(self) -> str: ...


@pytest.fixture(scope="module", params=["node", "embedded", "embedded-sqlite"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    if request.param == "node":
        with node_server(long_poll_timeout_ms=500) as node:
            yield node
    elif request.param == "embedded":
        with embedded_server(long_poll_timeout=0.5) as ours:
            yield ours
    else:
        data = tmp_path_factory.mktemp("streams-data")
        with embedded_server(data_dir=data, long_poll_timeout=0.5) as ours:
            yield ours


@pytest.fixture(scope="module")
def node() -> Iterator[Server]:
    with node_server(long_poll_timeout_ms=500) as node:
        yield node


@pytest.fixture
def client(server: Server) -> Iterator[StreamClient]:
    with StreamClient(server.stream_base, timeout=10, live_timeout=10) as client:
        yield client


def name(prefix: str = "s") -> str:
    return f"interop/{prefix}-{uuid.uuid4().hex[:12]}"


def collect(
    batches: Generator[ReadResult, None, None], until: int, deadline: float = LIVE_DEADLINE
) -> list[Any]:
    """Items from a live iterator until ``until`` items arrived, it ended, or time ran out."""
    items: list[Any] = []
    end = time.monotonic() + deadline
    with closing(batches):
        for batch in batches:
            items += batch.items
            if len(items) >= until or time.monotonic() > end:
                break
    return items


def later(delay: float, action: Any) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# ---------------------------------------------------------------- lifecycle


def test_create_append_read_head_close_delete(client: StreamClient) -> None:
    stream = client.stream(name())
    created = stream.create_json()
    assert created.created and created.next_offset and not created.closed
    first = stream.append_json({"n": 1})
    assert first.next_offset and first.next_offset > created.next_offset
    stream.append_json_batch([{"n": 2}, {"n": 3}])
    result = stream.read()
    assert result.items == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert result.up_to_date and not result.closed
    info = stream.head()
    assert info.next_offset == result.next_offset and info.content_type == "application/json"
    assert not info.closed
    closed = stream.close()
    assert closed.closed and closed.next_offset == result.next_offset
    assert stream.close().closed  # idempotent
    assert stream.head().closed
    final = stream.read()
    assert final.closed and final.items == [{"n": 1}, {"n": 2}, {"n": 3}]
    stream.delete()
    with pytest.raises(StreamNotFound):
        stream.head()


def test_create_is_idempotent_for_the_same_config_only(client: StreamClient) -> None:
    stream = client.stream(name())
    assert stream.create("text/plain").created
    again = stream.create("text/plain")
    assert not again.created
    with pytest.raises(StreamConfigConflict):
        stream.create("application/json")
    with pytest.raises(StreamConfigConflict):
        stream.create("text/plain", closed=True)


def test_ttl_and_expiry_are_reported_by_head(client: StreamClient) -> None:
    ttl = client.stream(name())
    ttl.create("text/plain", ttl=3600)
    assert ttl.head().ttl == 3600
    expiring = client.stream(name())
    expiring.create("text/plain", expires_at="2099-01-01T00:00:00Z")
    assert expiring.head().expires_at is not None
    with pytest.raises(ValueError):  # both at once: refused before sending
        client.stream(name()).create("text/plain", ttl=1, expires_at="2099-01-01T00:00:00Z")


def test_create_closed_with_content(client: StreamClient) -> None:
    stream = client.stream(name())
    created = stream.create("text/plain", data=b"all of it", closed=True)
    assert created.closed
    result = stream.read()
    assert result.data == b"all of it" and result.closed
    with pytest.raises(StreamClosed) as info:
        stream.append(b"more")
    assert info.value.final_offset == result.next_offset


def test_close_with_a_final_append(client: StreamClient) -> None:
    stream = client.stream(name())
    stream.create_json()
    last = stream.append_json({"final": True}, close=True)
    assert last.closed
    result = stream.read()
    assert result.items == [{"final": True}] and result.closed
    with pytest.raises(StreamClosed) as info:
        stream.append_json({"late": True})
    assert info.value.final_offset == last.next_offset
    assert "closed" in str(info.value)


def test_offsets_are_opaque_resume_points(client: StreamClient) -> None:
    stream = client.stream(name())
    stream.create_json()
    middle = stream.append_json("a").next_offset
    assert middle is not None
    stream.append_json("b")
    assert stream.read(middle).items == ["b"]
    tail = stream.read("now")
    assert tail.items == [] and tail.up_to_date and tail.next_offset == stream.head().next_offset


def test_paths_with_odd_characters(client: StreamClient) -> None:
    stream = client.stream(f"interop/odd name ü/{uuid.uuid4().hex}")
    stream.create_json(["x"])
    assert stream.read().items == ["x"]


def test_large_catch_up_read(client: StreamClient) -> None:
    stream = client.stream(name())
    stream.create("application/octet-stream")
    chunk = bytes(range(256)) * 1024  # 256 KiB
    for _ in range(8):
        stream.append(chunk)
    result = stream.read()
    assert result.data == chunk * 8 and result.up_to_date


# ---------------------------------------------------------------- JSON mode


def test_json_flattening(client: StreamClient) -> None:
    stream = client.stream(name())
    stream.create_json([{"init": 1}, [0]])
    stream.append_json([1, 2])  # one message that is an array
    stream.append_json_batch([[3, 4], [5]])  # two messages
    stream.append(b"[[[6,7]]]")  # raw: one level flattened -> one message [[6,7]]
    stream.append(b'{"bare":true}')
    assert stream.read().items == [{"init": 1}, [0], [1, 2], [3, 4], [5], [[6, 7]], {"bare": True}]


def test_empty_json_batch_and_invalid_json(client: StreamClient) -> None:
    stream = client.stream(name())
    stream.create_json()
    with pytest.raises(ValueError):
        stream.append_json_batch([])
    with pytest.raises(BadRequest):
        stream.append(b"[]")
    with pytest.raises(BadRequest):
        stream.append(b"{not json")
    assert stream.read().items == []


# ---------------------------------------------------------------- live reads


@pytest.mark.parametrize("live", ["long-poll", "sse"])
def test_live_read_sees_appends_and_ends_at_close(client: StreamClient, live: Any) -> None:
    stream = client.stream(name())
    stream.create_json(["before"])
    writer = client.stream(stream.url)

    def write() -> None:
        writer.append_json("during-1")
        writer.append_json_batch(["during-2", ["during-3"]], close=True)

    writer_thread = later(0.3, write)
    batches = list(stream.follow(live=live))  # ends by itself at the closed signal
    writer_thread.join(LIVE_DEADLINE)
    items = [item for batch in batches for item in batch.items]
    assert items == ["before", "during-1", "during-2", ["during-3"]]
    assert batches[-1].closed and all(not b.closed for b in batches[:-1])
    assert batches[-1].next_offset == stream.head().next_offset


@pytest.mark.parametrize("live", ["long-poll", "sse"])
def test_live_read_from_now_skips_history(client: StreamClient, live: Any) -> None:
    stream = client.stream(name())
    stream.create_json(["old"])
    writer_thread = later(0.3, lambda: client.stream(stream.url).append_json("new"))
    items = collect(stream.follow("now", live=live), until=1)
    writer_thread.join(LIVE_DEADLINE)  # its answer may still be on the way
    assert items == ["new"]


@pytest.mark.parametrize("live", ["long-poll", "sse"])
def test_live_read_of_a_closed_stream_at_its_tail_ends_at_once(
    client: StreamClient, live: Any
) -> None:
    stream = client.stream(name())
    stream.create_json(["x"])
    stream.close()
    start = time.monotonic()
    batches = list(stream.follow("now", live=live))
    assert time.monotonic() - start < 2.0
    assert [b.closed for b in batches] == [True] and batches[0].items == []


def test_long_poll_echoes_the_servers_cursor(server: Server) -> None:
    urls: list[str] = []
    http = httpx.Client(event_hooks={"request": [lambda request: urls.append(str(request.url))]})
    with StreamClient(server.stream_base, http=http) as client:
        stream = client.stream(name())
        stream.create_json(["x"])
        batches = collect_batches(stream.follow(live="long-poll"), count=3)
    http.close()
    cursors = [b.cursor for b in batches]
    assert all(cursors), cursors  # required on every live answer of an open stream
    live = [u for u in urls if "live=long-poll" in u]
    assert "cursor=" not in live[0]
    for batch, url in zip(batches, live[1:], strict=False):
        assert f"cursor={batch.cursor}&" in url  # parameters sorted: cursor, live, offset


def collect_batches(batches: Generator[ReadResult, None, None], count: int) -> list[ReadResult]:
    out: list[ReadResult] = []
    with closing(batches):
        for batch in batches:
            out.append(batch)
            if len(out) == count:
                break
    return out


def test_sse_binary_stream_round_trips(client: StreamClient) -> None:
    stream = client.stream(name())
    payload = bytes(range(256))
    stream.create("application/octet-stream", data=payload)
    stream.append(b"\x00\r\n\xff", close=True)
    data = b"".join(item for batch in stream.follow(live="sse") for item in batch.items)
    assert data == payload + b"\x00\r\n\xff"


def test_sse_text_stream(client: StreamClient) -> None:
    stream = client.stream(name())
    stream.create("text/plain", data=b"line 1\nline 2", closed=True)
    data = b"".join(item for batch in stream.follow(live="sse") for item in batch.items)
    assert data == b"line 1\nline 2"


# ---------------------------------------------------------------- Stream-Seq and conflicts


def test_stream_seq_regression_is_a_sequence_conflict(client: StreamClient) -> None:
    stream = client.stream(name())
    stream.create_json()
    stream.append_json("a", seq="0000000000000000")
    stream.append_json("b", seq="0000000000000001")
    for stale in ("0000000000000001", "0000000000000000"):
        with pytest.raises(SequenceConflict) as info:
            stream.append_json("x", seq=stale)
        assert info.value.seq == stale and info.value.status == 409
    assert stream.read().items == ["a", "b"]


def test_content_type_mismatch(client: StreamClient) -> None:
    stream = client.stream(name())
    stream.create_json()
    with pytest.raises(ContentTypeMismatch) as info:
        stream.append(b"text", content_type="text/plain")
    assert info.value.stream_content_type == "application/json"
    with pytest.raises(ContentTypeMismatch):
        stream.append(b"text", content_type="text/plain", seq="0000000000000005")


def test_missing_stream_errors(client: StreamClient) -> None:
    missing = client.stream(name("missing"))
    for call in (missing.head, missing.read, missing.delete, lambda: missing.append_json(1)):
        with pytest.raises(StreamNotFound):
            call()
    with pytest.raises(StreamNotFound):
        list(missing.follow(live="long-poll"))


def test_malformed_offset_is_a_bad_request(client: StreamClient) -> None:
    stream = client.stream(name())
    stream.create_json()
    with pytest.raises(BadRequest):
        stream.read("not/an,offset")


def test_fork_and_soft_delete(client: StreamClient) -> None:
    source = client.stream(name("src"))
    source.create_json(["a"])
    fork_point = source.append_json("b").next_offset
    source.append_json("c")
    fork = client.stream(name("fork"))
    fork.create_json(forked_from=source.url, fork_offset=fork_point)
    fork.append_json("fork-only")
    assert fork.read().items == ["a", "b", "fork-only"]
    source.delete()
    with pytest.raises(StreamGone):
        source.head()
    with pytest.raises(StreamConfigConflict):
        source.create_json()
    with pytest.raises(StreamNotFound):
        client.stream(name()).create_json(forked_from="/v1/stream/interop/no-such-source")


# ---------------------------------------------------------------- idempotent producer


def test_producer_appends_and_deduplicates(client: StreamClient) -> None:
    stream = client.stream(name())
    stream.create_json()
    producer = stream.producer("writer-a")
    first = producer.append_json({"i": 0})
    assert (first.producer_epoch, first.producer_seq, first.duplicate) == (0, 0, False)
    producer.append_json_batch([{"i": 1}, {"i": 2}])
    # A retry after a lost answer: the same (id, epoch, seq) again.
    retry = stream.producer("writer-a", seq=1).append_json_batch([{"i": 1}, {"i": 2}])
    assert retry.duplicate
    assert stream.read().items == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_producer_retry_with_stream_seq_is_a_duplicate_not_a_conflict(
    client: StreamClient,
) -> None:
    # The workflow history pattern: producer headers + Stream-Seq on every append.
    stream = client.stream(name())
    stream.create_json()
    producer = stream.producer("worker-1")
    producer.append_json("run-started", seq="0000000000000000")
    retry = stream.producer("worker-1", seq=0).append_json("run-started", seq="0000000000000000")
    assert retry.duplicate
    rival = stream.producer("worker-2")
    with pytest.raises(SequenceConflict):
        rival.append_json("rival", seq="0000000000000000")
    assert rival.seq == 0  # nothing was stored, the sequence is unused
    assert stream.read().items == ["run-started"]


def test_producer_fencing_and_auto_claim(client: StreamClient) -> None:
    stream = client.stream(name())
    stream.create_json()
    zombie = stream.producer("svc")
    zombie.append_json("epoch-0")
    successor = stream.producer("svc", epoch=1)
    successor.append_json("epoch-1")
    with pytest.raises(ProducerFenced) as info:
        zombie.append_json("zombie write")
    assert (info.value.current_epoch, info.value.epoch) == (1, 0)
    claimer = stream.producer("svc", auto_claim=True)
    claimed = claimer.append_json("claimed")
    assert claimer.epoch == 2 and claimed.producer_epoch == 2 and claimer.seq == 1
    with pytest.raises(ProducerFenced):
        successor.append_json("now fenced")
    assert stream.read().items == ["epoch-0", "epoch-1", "claimed"]


def test_producer_gap(client: StreamClient) -> None:
    stream = client.stream(name())
    stream.create_json()
    with pytest.raises(ProducerSequenceGap) as info:
        stream.producer("gappy", seq=3).append_json("x")
    assert (info.value.expected, info.value.received) == (0, 3)
    producer = stream.producer("gappy")
    producer.append_json("ok")
    with pytest.raises(ProducerSequenceGap) as info:
        stream.producer("gappy", seq=5).append_json("x")
    assert (info.value.expected, info.value.received) == (1, 5)


def test_producer_bump_epoch_and_close(client: StreamClient) -> None:
    stream = client.stream(name())
    stream.create_json()
    producer = stream.producer("closer")
    producer.append_json("a")
    assert producer.bump_epoch() == 1
    last = producer.append_json("last", close=True)
    assert last.closed and last.producer_epoch == 1
    again = stream.producer("closer", epoch=1, seq=0).append_json("last", close=True)
    assert again.duplicate and again.closed  # retry of the closing request
    with pytest.raises(StreamClosed):
        stream.producer("closer", epoch=1, seq=1).append_json("after")
    assert stream.read().items == ["a", "last"]


# ---------------------------------------------------------------- async


def test_async_client(server: Server) -> None:
    async def main() -> None:
        async with AsyncStreamClient(server.stream_base, timeout=10, live_timeout=10) as client:
            stream = client.stream(name("async"))
            assert (await stream.create_json()).created
            await stream.append_json({"n": 1})
            await stream.append_json_batch([[2], [3]])
            result = await stream.read()
            assert result.items == [{"n": 1}, [2], [3]]
            assert (await stream.head()).next_offset == result.next_offset

            modes: tuple[LiveMode, ...] = ("long-poll", "sse")
            for live in modes:

                async def write(live: str = live) -> None:
                    await asyncio.sleep(0.3)
                    await client.stream(stream.url).append_json(live)

                task = asyncio.create_task(write())
                seen: list[Any] = []
                async with aclosing(stream.follow(result.next_offset, live=live)) as batches:
                    async for batch in batches:
                        seen += batch.items
                        if seen:
                            break
                await task
                assert seen == [live]
                result = await stream.read(result.next_offset)

            producer = stream.producer("async-writer")
            await producer.append_json("p0", seq="0000000000000001")
            with pytest.raises(SequenceConflict):
                await stream.append_json("stale", seq="0000000000000001")
            with pytest.raises(ProducerFenced):
                await _fence(stream)
            await stream.append_json("end", close=True)
            with pytest.raises(StreamClosed):
                await stream.append_json("late")
            batches_ = [b async for b in stream.follow(live="sse")]
            assert batches_[-1].closed
            await stream.delete()
            with pytest.raises(StreamNotFound):
                await stream.head()

    asyncio.run(main())


async def _fence(stream: Any) -> None:
    await stream.producer("async-writer", epoch=1).append_json("p1")
    await stream.producer("async-writer", epoch=0, seq=1).append_json("zombie")


# ---------------------------------------------------------------- Node only: injected faults


def _inject(node: Server, path: str, **fault: Any) -> None:
    response = httpx.post(f"{node.base_url}/_test/inject-error", json={"path": path, **fault})
    assert response.status_code == 200, response.text


def test_producer_retries_after_dropped_connections(node: Server) -> None:
    with StreamClient(node.stream_base) as client:
        stream = client.stream(name())
        stream.create_json()
        path = "/v1/stream/" + stream.url.split("/v1/stream/", 1)[1]
        producer = stream.producer("retrier", max_retries=3)
        _inject(node, path, dropConnection=True, method="POST", count=2)
        result = producer.append_json("once")
        assert not result.duplicate and producer.seq == 1
        assert stream.read().items == ["once"]
        _inject(node, path, dropConnection=True, method="POST", count=5)
        with pytest.raises(StreamNetworkError):
            producer.append_json("never")
        assert producer.seq == 1
        httpx.delete(f"{node.base_url}/_test/inject-error")


@pytest.mark.parametrize(
    "status, cls",
    [(429, RateLimited), (413, PayloadTooLarge), (500, ServerError)],
)
def test_injected_error_statuses_are_typed(
    node: Server, status: int, cls: type[StreamHTTPError]
) -> None:
    with StreamClient(node.stream_base) as client:
        stream = client.stream(name())
        stream.create_json()
        path = "/v1/stream/" + stream.url.split("/v1/stream/", 1)[1]
        _inject(node, path, status=status, method="POST", retryAfter=3)
        with pytest.raises(cls) as info:
            stream.append_json("x")
        assert info.value.status == status
        if isinstance(info.value, RateLimited):
            assert info.value.retry_after == 3


def test_reads_wait_out_an_overloaded_server(node: Server) -> None:
    with StreamClient(node.stream_base, live_timeout=10) as client:
        stream = client.stream(name())
        stream.create_json(["a"])
        path = "/v1/stream/" + stream.url.split("/v1/stream/", 1)[1]
        _inject(node, path, status=503, method="GET", count=1, retryAfter=0)
        assert stream.read().items == ["a"]
        _inject(node, path, status=503, method="GET", count=2, retryAfter=0)
        writer_thread = later(0.3, lambda: client.stream(stream.url).append_json("b", close=True))
        assert [i for b in stream.follow(live="sse") for i in b.items] == ["a", "b"]
        writer_thread.join(LIVE_DEADLINE)


def test_live_read_survives_a_dropped_connection(node: Server) -> None:
    with StreamClient(node.stream_base, live_timeout=10) as client:
        stream = client.stream(name())
        stream.create_json(["a"])
        path = "/v1/stream/" + stream.url.split("/v1/stream/", 1)[1]
        _inject(node, path, dropConnection=True, method="GET", count=1)
        writer_thread = later(0.3, lambda: client.stream(stream.url).append_json("b", close=True))
        items = [i for b in stream.follow(live="long-poll") for i in b.items]
        writer_thread.join(LIVE_DEADLINE)
        assert items == ["a", "b"]


# ---------------------------------------------------------------- embedded only


def test_body_over_the_servers_limit_is_payload_too_large() -> None:
    with (
        embedded_server(long_poll_timeout=0.5, max_body_bytes=1024) as ours,
        StreamClient(ours.stream_base) as client,
    ):
        stream = client.stream(name())
        stream.create("application/octet-stream")
        with pytest.raises(PayloadTooLarge) as info:
            stream.append(b"x" * 4096)
        assert info.value.status == 413 and "4096-byte body" in str(info.value)
        assert stream.append(b"x" * 512).next_offset
