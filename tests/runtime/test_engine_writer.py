"""The fenced writer and the ending protocol against real servers (fencing.md).

Every test runs against our embedded server and the Node reference server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from durable_workflows.engine.namespace import Namespace, NamespaceIO
from durable_workflows.engine.writer import Fenced, FencedWriter, finish_run, stream_seq
from durable_workflows.streams import AsyncStreamClient, StreamClient, StreamClosed

from .engine_support import SERVER_KINDS, Server, any_server, submission, unique

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with any_server(request.param) as running:
        yield running


def msg(n: int) -> dict[str, Any]:
    """A stand-in history message (the writer does not look inside)."""
    return {"type": "record", "key": f"m{n}", "value": {"n": n}, "headers": {"operation": "insert"}}


def namespace(server: Server) -> Namespace:
    return Namespace(f"{server.stream_base}/{unique('ns')}")


def test_stream_seq_is_sixteen_digits() -> None:
    assert stream_seq(0) == "0000000000000000"
    assert stream_seq(42) == "0000000000000042"


@pytest.mark.req("FENCE-004", "FENCE-005", "FENCE-010", "FENCE-011")
def test_two_writers_racing_for_one_position_exactly_one_wins(server: Server) -> None:
    ns = namespace(server)

    async def scenario() -> tuple[list[BaseException | None], list[Any]]:
        async with AsyncStreamClient(timeout=10) as client:
            io = NamespaceIO(ns, client)
            await io.create_history("r1")
            await io.create_history("r1")  # idempotent: creation is never the race
            writers = [FencedWriter(io.history("r1"), 0, worker=f"w{i}") for i in range(2)]

            async def go(i: int) -> BaseException | None:
                try:
                    await writers[i].append([msg(10 * i), msg(10 * i + 1)])
                except Fenced as exc:
                    return exc
                return None

            outcomes = await asyncio.gather(go(0), go(1))
            loser = writers[outcomes.index(None) ^ 1] if None in outcomes else None
            if loser is not None:
                with pytest.raises(Fenced):  # FENCE-011: a fenced writer refuses everything
                    await loser.append([msg(99)])
            history = await io.read_history("r1")
            assert history is not None
            return list(outcomes), history.items

    outcomes, items = asyncio.run(scenario())
    assert sum(o is None for o in outcomes) == 1
    assert sum(isinstance(o, Fenced) for o in outcomes) == 1
    assert len(items) == 2
    assert {m["key"] for m in items} in ({"m0", "m1"}, {"m10", "m11"})


@pytest.mark.req("FENCE-005", "FENCE-006")
def test_positions_advance_by_message_count(server: Server) -> None:
    ns = namespace(server)

    async def scenario() -> list[Any]:
        async with AsyncStreamClient(timeout=10) as client:
            io = NamespaceIO(ns, client)
            await io.create_history("r2")
            writer = FencedWriter(io.history("r2"), 0)
            await writer.append([msg(0), msg(1)])
            await writer.append([msg(2)])
            assert writer.position == 3
            stale = FencedWriter(io.history("r2"), 2)  # missed message 2
            with pytest.raises(Fenced):
                await stale.append([msg(3)])
            fresh = FencedWriter(io.history("r2"), 3)
            await fresh.append([msg(3)])
            history = await io.read_history("r2")
            assert history is not None
            return history.items

    assert [m["key"] for m in asyncio.run(scenario())] == ["m0", "m1", "m2", "m3"]


class LoseFirstResponse(httpx.AsyncBaseTransport):
    """Forwards every request; for the first history POST, the response is lost
    after the server processed it (the ambiguous failure of FENCE-013)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.lost = 0
        self.posts: list[dict[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path.endswith("/history"):
            self.posts.append({k: v for k, v in request.headers.items() if "seq" in k.lower()})
            if self.lost == 0:
                self.lost += 1
                await response.aread()
                await response.aclose()
                raise httpx.ReadTimeout("response lost", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.req("FENCE-009", "FENCE-013", "FENCE-014")
def test_a_retry_of_a_landed_append_is_deduplicated(server: Server) -> None:
    ns = namespace(server)
    transport = LoseFirstResponse()

    async def scenario() -> list[Any]:
        async with httpx.AsyncClient(transport=transport) as http:
            client = AsyncStreamClient(timeout=10, http=http)
            io = NamespaceIO(ns, client)
            await io.create_history("r3")
            writer = FencedWriter(io.history("r3"), 0, retry_delay=0.01)
            await writer.append([msg(0), msg(1)])  # lost, retried, 204
            await writer.append([msg(2)])
            assert writer.position == 3
            history = await io.read_history("r3")
            assert history is not None
            return history.items

    items = asyncio.run(scenario())
    assert [m["key"] for m in items] == ["m0", "m1", "m2"]
    first, retry = transport.posts[0], transport.posts[1]
    assert first == retry  # the identical request: same Stream-Seq and producer headers
    assert first["stream-seq"] == "0000000000000000"


@pytest.mark.req("MODEL-032", "MODEL-033", "MODEL-034", "INPUT-040")
def test_ending_closes_inbox_then_history_with_the_rejections(server: Server) -> None:
    ns = namespace(server)
    seen: list[list[Any]] = []

    def rejections(inbox: list[Any]) -> list[dict[str, Any]]:
        seen.append(inbox)
        return [msg(100 + i) for i, _ in enumerate(inbox)]

    async def scenario() -> None:
        async with AsyncStreamClient(timeout=10) as client:
            io = NamespaceIO(ns, client)
            await io.ensure_inbox("r4")
            await io.create_history("r4")
            await io.inbox("r4").append_json(submission("s1", "approval", True))
            writer = FencedWriter(io.history("r4"), 0)
            await writer.append([msg(0)])  # stands for the terminal event
            await finish_run(writer, io.inbox("r4"), rejections)
            history = await io.read_history("r4")
            assert history is not None and history.closed
            assert [m["key"] for m in history.items] == ["m0", "m100"]
            # A second ending (a crash after the close, MODEL-035) changes nothing.
            again = FencedWriter(io.history("r4"), 1)
            await finish_run(again, io.inbox("r4"), rejections)
            history = await io.read_history("r4")
            assert history is not None and len(history.items) == 2

    asyncio.run(scenario())
    assert [m["key"] for m in seen[0]] == ["s1"]
    with StreamClient(timeout=10) as client:  # a late client gets the synchronous 409
        late = client.stream(ns.inbox_url("r4"))
        with pytest.raises(StreamClosed):
            late.append_json(submission("s2", "approval", False))


def test_ending_without_rejections_closes_history_with_close_only(server: Server) -> None:
    ns = namespace(server)

    async def scenario() -> None:
        async with AsyncStreamClient(timeout=10) as client:
            io = NamespaceIO(ns, client)
            await io.ensure_inbox("r5")
            await io.create_history("r5")
            writer = FencedWriter(io.history("r5"), 0)
            await writer.append([msg(0)])
            await finish_run(writer, io.inbox("r5"), lambda inbox: [])
            history = await io.read_history("r5")
            assert history is not None and history.closed and len(history.items) == 1

    asyncio.run(scenario())


def test_namespace_urls_and_run_id_checks() -> None:
    ns = Namespace("http://127.0.0.1:4437/v1/stream/workflows/")
    assert ns.index_url == "http://127.0.0.1:4437/v1/stream/workflows/index"
    assert ns.history_url("a-1") == "http://127.0.0.1:4437/v1/stream/workflows/runs/a-1/history"
    assert ns.split_root() == ("http://127.0.0.1:4437/v1/stream", "workflows")
    assert ns.run_id_of_inbox("runs/a-1/inbox") == "a-1"
    assert ns.run_id_of_inbox("runs/a-1/history") is None
    for bad in ["", "..", "__ds", "a/b", "-x", "x" * 129]:
        with pytest.raises(ValueError):
            ns.history_url(bad)


def test_url_option_takes_a_namespace_or_a_server_base() -> None:
    from durable_workflows.engine.namespace import resolve_namespace_url

    base = "http://127.0.0.1:4437"
    assert resolve_namespace_url(base) == f"{base}/v1/stream/workflows"
    assert resolve_namespace_url(base + "/v1/stream/") == f"{base}/v1/stream/workflows"
    assert resolve_namespace_url(base + "/v1/stream/tenant-a") == f"{base}/v1/stream/tenant-a"
    with pytest.raises(ValueError):
        resolve_namespace_url("ftp://x")


@pytest.mark.req("EVT-097")
def test_read_annotations_are_removed_before_validation() -> None:
    from durable_workflows.engine.namespace import first_requests, strip_read_annotations

    request = {
        "type": "start",
        "key": "r-1",
        "value": {"run_id": "r-1", "workflow": "wf", "input": None},
        "headers": {"operation": "insert", "offset": "0000000000000000_0000000000000153"},
    }
    assert strip_read_annotations([request])[0]["headers"] == {"operation": "insert"}
    assert request["headers"]["offset"]  # the input is not modified
    assert list(first_requests([request])) == ["r-1"]
