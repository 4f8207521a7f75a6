"""Bad input to the stream server: clear 4xx answers, nothing stored, nothing leaked."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import pytest

from tests.support.embedded_server import EmbeddedServer, embedded_server

LIMIT = 1024
_names = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedServer]:
    with embedded_server(max_body_bytes=LIMIT) as running:
        yield running


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as http:
        yield http


def new_stream(
    server: EmbeddedServer,
    client: httpx.Client,
    content_type: str = "text/plain",
    body: bytes = b"",
) -> str:
    url = server.stream_url(f"bad/{next(_names)}")
    assert client.put(url, headers={"content-type": content_type}, content=body).status_code == 201
    return url


# ----------------------------------------------------------------- body size


def test_body_over_the_limit_is_413_and_nothing_is_stored(
    server: EmbeddedServer, client: httpx.Client
) -> None:
    url = new_stream(server, client)
    too_big = client.post(url, headers={"content-type": "text/plain"}, content=b"x" * (LIMIT + 1))
    assert too_big.status_code == 413
    assert client.get(url).content == b""
    assert (
        client.post(url, headers={"content-type": "text/plain"}, content=b"x" * LIMIT).status_code
        == 204
    )


def test_chunked_body_over_the_limit_is_413(server: EmbeddedServer, client: httpx.Client) -> None:
    url = new_stream(server, client)

    def chunks() -> Iterator[bytes]:
        for _ in range(4):
            yield b"y" * 400

    response = client.post(url, headers={"content-type": "text/plain"}, content=chunks())
    assert response.status_code == 413
    assert client.get(url).content == b""


def test_oversized_create_body_creates_nothing(
    server: EmbeddedServer, client: httpx.Client
) -> None:
    url = server.stream_url(f"bad/{next(_names)}")
    response = client.put(url, headers={"content-type": "text/plain"}, content=b"z" * (LIMIT * 3))
    assert response.status_code == 413
    assert client.head(url).status_code == 404


# ------------------------------------------------------------ offsets, modes


@pytest.mark.parametrize(
    "query",
    [
        "offset=",
        "offset=abc",
        "offset=0,1",
        "offset=0%201",
        "offset=-2",
        "offset=1_2",
        "offset=..%2F..%2Fetc",
        "offset=-1&offset=now",
        "offset=-1&live=forever",
        "live=long-poll",
        "live=sse",
    ],
)
def test_malformed_reads_are_400(server: EmbeddedServer, client: httpx.Client, query: str) -> None:
    url = new_stream(server, client, body=b"data")
    assert client.get(f"{url}?{query}").status_code == 400


# -------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    "headers",
    [
        {"stream-ttl": "03600"},
        {"stream-ttl": "+3600"},
        {"stream-ttl": "3600.0"},
        {"stream-ttl": "3.6e3"},
        {"stream-ttl": "-1"},
        {"stream-ttl": ""},
        {"stream-expires-at": "tomorrow"},
        {"stream-expires-at": "2030-01-01T00:00:00"},  # no zone
        {"stream-ttl": "60", "stream-expires-at": "2030-01-01T00:00:00Z"},
        {"stream-fork-sub-offset": "0"},  # without Stream-Forked-From
        {"stream-forked-from": "/v1/stream/x", "stream-fork-offset": "12"},
    ],
)
def test_malformed_create_headers_are_400(
    server: EmbeddedServer, client: httpx.Client, headers: dict[str, str]
) -> None:
    url = server.stream_url(f"bad/{next(_names)}")
    assert client.put(url, headers={"content-type": "text/plain", **headers}).status_code == 400
    assert client.head(url).status_code == 404


@pytest.mark.parametrize(
    "headers",
    [
        {"producer-id": "p"},
        {"producer-id": "p", "producer-epoch": "0"},
        {"producer-id": "", "producer-epoch": "0", "producer-seq": "0"},
        {"producer-id": "p", "producer-epoch": "1abc", "producer-seq": "0"},
        {"producer-id": "p", "producer-epoch": "0", "producer-seq": "-1"},
        {"producer-id": "p", "producer-epoch": str(2**53), "producer-seq": "0"},
    ],
)
def test_malformed_producer_headers_are_400(
    server: EmbeddedServer, client: httpx.Client, headers: dict[str, str]
) -> None:
    url = new_stream(server, client)
    response = client.post(url, headers={"content-type": "text/plain", **headers}, content=b"x")
    assert response.status_code == 400
    assert client.get(url).content == b""


def test_bad_json_bodies_are_400(server: EmbeddedServer, client: httpx.Client) -> None:
    url = new_stream(server, client, "application/json")
    for body in (b"{", b"[]", b"NaN", b'{"a": Infinity}', b"\xfe\xff"):
        response = client.post(url, headers={"content-type": "application/json"}, content=body)
        assert response.status_code == 400, body
    assert client.get(url).json() == []


# ---------------------------------------------------------------- conflicts


def test_wrong_content_types_are_409(server: EmbeddedServer, client: httpx.Client) -> None:
    url = new_stream(server, client, "application/json")
    response = client.post(url, headers={"content-type": "text/plain"}, content=b"hi")
    assert response.status_code == 409
    assert client.put(url, headers={"content-type": "text/plain"}).status_code == 409


def test_append_to_a_closed_stream_is_409_with_stream_closed(
    server: EmbeddedServer, client: httpx.Client
) -> None:
    url = new_stream(server, client, body=b"last")
    closed = client.post(url, headers={"stream-closed": "true"})
    assert closed.status_code == 204
    for content_type in ("text/plain", "application/json"):  # closed wins over type
        late = client.post(url, headers={"content-type": content_type}, content=b"late")
        assert late.status_code == 409
        assert late.headers["stream-closed"] == "true"
        assert late.headers["stream-next-offset"] == closed.headers["stream-next-offset"]
    assert client.get(url).content == b"last"


def test_deleted_and_soft_deleted_streams(server: EmbeddedServer, client: httpx.Client) -> None:
    url = new_stream(server, client, body=b"a")
    assert client.delete(url).status_code == 204
    assert client.post(url, headers={"content-type": "text/plain"}, content=b"b").status_code == 404
    assert client.get(url).status_code == 404

    source = new_stream(server, client, body=b"shared")
    fork = server.stream_url(f"bad/{next(_names)}")
    source_path = "/v1/stream/" + source.split("/v1/stream/")[1]
    assert client.put(fork, headers={"stream-forked-from": source_path}).status_code == 201
    assert client.delete(source).status_code == 204
    assert (
        client.post(source, headers={"content-type": "text/plain"}, content=b"b").status_code == 410
    )
    assert client.get(source).status_code == 410
    assert client.head(source).status_code == 410
    assert client.delete(source).status_code == 410
    assert client.put(source, headers={"content-type": "text/plain"}).status_code == 409
    assert client.get(fork).content == b"shared"


def test_unknown_routes_and_methods(server: EmbeddedServer, client: httpx.Client) -> None:
    assert client.get(f"{server.base_url}/elsewhere").status_code == 404
    assert client.get(f"{server.base_url}/v1/stream/").status_code == 404
    url = new_stream(server, client)
    assert client.request("PATCH", url).status_code == 405
    preflight = client.options(url, headers={"access-control-request-headers": "if-none-match"})
    assert preflight.status_code == 204
    assert "if-none-match" in preflight.headers["access-control-allow-headers"]


@pytest.mark.parametrize("name", ["a%00b", "a%0d%0ab", "a%7fb", "a%09b"])
def test_a_stream_path_with_control_characters_is_400_and_creates_nothing(
    server: EmbeddedServer, client: httpx.Client, name: str
) -> None:
    url = f"{server.stream_base}/{name}"
    reply = client.put(url, headers={"content-type": "application/json"})
    assert reply.status_code == 400 and "control characters" in reply.text
    assert client.head(url).status_code in (400, 404)
    assert client.get(f"{server.stream_base}/a?offset=-1").status_code == 404


def test_location_is_the_path_as_sent(server: EmbeddedServer, client: httpx.Client) -> None:
    reply = client.put(f"{server.stream_base}/sp%20ace", headers={"content-type": "text/plain"})
    assert reply.status_code == 201
    assert reply.headers["location"].endswith("/v1/stream/sp%20ace")


def test_a_body_is_bounded_in_size_and_in_time() -> None:
    import asyncio

    from durable_workflows.streams.server.app import BodyError, read_bounded

    def chunks(*parts: bytes) -> object:
        queue = [{"type": "http.request", "body": p, "more_body": True} for p in parts]
        queue.append({"type": "http.request", "body": b"", "more_body": False})

        async def receive() -> dict[str, object]:
            return queue.pop(0)

        return receive

    async def stalled() -> dict[str, object]:
        await asyncio.sleep(3600)
        return {}

    assert asyncio.run(read_bounded(chunks(b"ab", b"cd"), 4, 1.0)) == b"abcd"  # type: ignore[arg-type]
    for receive, status in ((chunks(b"abc", b"de"), 413), (stalled, 408)):
        with pytest.raises(BodyError) as caught:
            asyncio.run(read_bounded(receive, 4, 0.05))  # type: ignore[arg-type]
        assert caught.value.status == status
