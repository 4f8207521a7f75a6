"""Live reads under stress: dropped and slow clients leak nothing and corrupt nothing.

The server runs in-process (uvicorn in a thread) so the tests can look inside:
``app.waiters`` counts registered live readers, and the event loop's tasks show
whether a disconnect watcher outlived its request.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from durable_workflows.streams.server import build_app
from tests.support.embedded_server import InProcessServer, in_process_server, wait_for


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InProcessServer]:
    with in_process_server(build_app(tmp_path / "data", long_poll_timeout=30.0)) as running:
        yield running


def raw_get(server: InProcessServer, target: str) -> socket.socket:
    host, port = server.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return sock


def test_dropped_long_poll_client_leaves_no_waiter(server: InProcessServer) -> None:
    httpx.put(server.url("lp"), headers={"content-type": "text/plain"})
    sock = raw_get(server, "/v1/stream/lp?offset=now&live=long-poll")
    wait_for(lambda: server.app.waiters.count() == 1, 5)
    assert server.watcher_tasks() == 1
    sock.close()  # long before the 30 s timeout
    wait_for(lambda: server.app.waiters.count() == 0, 5)
    wait_for(lambda: server.watcher_tasks() == 0, 5)
    # The stream is unharmed and the next append is served normally.
    response = httpx.post(server.url("lp"), headers={"content-type": "text/plain"}, content=b"x")
    assert response.status_code == 204


def test_dropped_sse_client_leaves_no_waiter(server: InProcessServer) -> None:
    httpx.put(server.url("sse"), headers={"content-type": "text/plain"}, content=b"hello")
    sock = raw_get(server, "/v1/stream/sse?offset=-1&live=sse")
    assert b"event: control" in sock.recv(65536) or b"event: control" in sock.recv(65536)
    wait_for(lambda: server.app.waiters.count() == 1, 5)
    sock.close()
    httpx.post(server.url("sse"), headers={"content-type": "text/plain"}, content=b"more")
    wait_for(lambda: server.app.waiters.count() == 0, 5)
    wait_for(lambda: server.watcher_tasks() == 0, 5)


def test_many_abandoned_long_polls_are_all_released(server: InProcessServer) -> None:
    httpx.put(server.url("many"), headers={"content-type": "application/json"})
    sockets = [raw_get(server, "/v1/stream/many?offset=now&live=long-poll") for _ in range(50)]
    wait_for(lambda: server.app.waiters.count() == 50, 10)
    for sock in sockets:
        sock.close()
    wait_for(lambda: server.app.waiters.count() == 0, 10)
    wait_for(lambda: server.watcher_tasks() == 0, 10)


def test_slow_sse_reader_gets_every_byte_and_does_not_block_others(
    server: InProcessServer,
) -> None:
    url = server.url("slow")
    httpx.put(url, headers={"content-type": "application/octet-stream"})
    chunks = [os.urandom(256 * 1024) for _ in range(64)]  # 16 MiB: more than socket buffers
    with (
        httpx.Client(timeout=30.0) as reader,
        reader.stream("GET", url, params={"offset": "-1", "live": "sse"}) as sse,
    ):
        assert sse.headers["stream-sse-data-encoding"] == "base64"
        wait_for(lambda: server.app.waiters.count() == 1, 5)
        # The reader reads nothing while we write: its socket buffers fill and the
        # server has to hold back. Writers and other readers must not notice.
        with httpx.Client(timeout=5.0) as writer:
            for chunk in chunks:
                started = time.monotonic()
                response = writer.post(
                    url, headers={"content-type": "application/octet-stream"}, content=chunk
                )
                assert response.status_code == 204
                assert time.monotonic() - started < 2.0
            assert writer.head(url).status_code == 200
        received = bytearray()
        event_type, data_lines = "", []
        for line in sse.iter_lines():
            if line.startswith("event:"):
                event_type = line[6:].strip()
            elif line.startswith("data:"):
                data_lines.append(line[5:])
            elif line == "":
                if event_type == "data":
                    received += base64.b64decode("".join(data_lines))
                elif event_type == "control":
                    control = json.loads("".join(data_lines))
                    if control.get("upToDate") and len(received) == sum(map(len, chunks)):
                        break
                event_type, data_lines = "", []
    assert bytes(received) == b"".join(chunks)
    wait_for(lambda: server.app.waiters.count() == 0, 5)
    wait_for(lambda: server.watcher_tasks() == 0, 5)
