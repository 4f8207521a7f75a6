"""Acknowledged appends survive ``kill -9`` of the server (SQLite storage).

A writer thread appends (idempotent producer + ``Stream-Seq``) as fast as it can;
once enough appends are acknowledged the server gets SIGKILL mid-load and is
restarted on the same data directory. Every append that got a 2xx must be there,
in order, at the offset it was acknowledged with; producer state, ``Stream-Seq``,
closure and TTL/expiry settings must have survived too.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.embedded_server import embedded_server

pytestmark = pytest.mark.slow

MIN_ACKED = 300  # kill once this many appends are acknowledged...
MAX_LOAD_SECONDS = 10.0  # ...or after this long, whichever comes first
MAX_APPENDS = 20_000
PRODUCER = "durability-writer"


@dataclass(frozen=True)
class Ack:
    seq: int
    offset: str


def _stream_seq(n: int) -> str:
    return f"{n:016d}"


def _writer(
    url: str,
    acked: list[Ack],
    stop: threading.Event,
    producer: str = PRODUCER,
    *,
    seq_header: bool = True,
) -> None:
    """Append {"n": seq} until the server dies or ``stop``; record each 2xx."""
    with httpx.Client(timeout=5.0) as client:
        for seq in range(MAX_APPENDS):
            if stop.is_set():
                return
            headers = {
                "content-type": "application/json",
                "producer-id": producer,
                "producer-epoch": "0",
                "producer-seq": str(seq),
            }
            if seq_header:
                headers["stream-seq"] = _stream_seq(seq)
            body = f'{{"n":{seq}}}' if producer == PRODUCER else f'{{"w":"{producer}","n":{seq}}}'
            try:
                response = client.post(url, content=body, headers=headers)
            except httpx.TransportError:
                return  # the server was killed
            if response.status_code != 200:
                return
            acked.append(Ack(seq, response.headers["stream-next-offset"]))


def _read_all(client: httpx.Client, url: str) -> list[object]:
    messages: list[object] = []
    offset = "-1"
    for _ in range(10_000):
        response = client.get(url, params={"offset": offset})
        assert response.status_code == 200
        messages.extend(response.json())
        offset = response.headers["stream-next-offset"]
        if response.headers.get("stream-up-to-date") == "true":
            return messages
    raise AssertionError("the stream never reported up-to-date")


def test_acknowledged_appends_survive_kill_9(tmp_path: Path) -> None:
    data = tmp_path / "data"
    acked: list[Ack] = []
    with embedded_server(data_dir=data) as server:
        url = server.stream_url("durability/log")
        with httpx.Client(timeout=5.0) as client:
            created = client.put(
                url, headers={"content-type": "application/json", "stream-ttl": "3600"}
            )
            assert created.status_code == 201
            closed_url = server.stream_url("durability/closed")
            client.put(closed_url, headers={"content-type": "text/plain"}, content=b"final")
            assert client.post(closed_url, headers={"stream-closed": "true"}).status_code == 204
            expiring_url = server.stream_url("durability/expiring")
            expires = "2099-01-01T00:00:00Z"
            client.put(expiring_url, headers={"stream-expires-at": expires})
            shared_url = server.stream_url("durability/shared")
            client.put(shared_url, headers={"content-type": "application/json"})
        stop = threading.Event()
        writer = threading.Thread(target=_writer, args=(url, acked, stop), daemon=True)
        # Concurrent writers on one more stream, interleaving their appends.
        shared: dict[str, list[Ack]] = {f"w{i}": [] for i in range(3)}
        others = [
            threading.Thread(
                target=_writer,
                args=(shared_url, acks, stop, name),
                kwargs={"seq_header": False},
                daemon=True,
            )
            for name, acks in shared.items()
        ]
        for thread in [writer, *others]:
            thread.start()
        deadline = time.monotonic() + MAX_LOAD_SECONDS
        while len(acked) < MIN_ACKED and time.monotonic() < deadline and writer.is_alive():
            time.sleep(0.01)
        server.kill()  # mid-load: every writer is still sending
        for thread in [writer, *others]:
            thread.join(timeout=10)
        stop.set()
        assert not any(thread.is_alive() for thread in [writer, *others])
    print(f"{len(acked)} + {sum(map(len, shared.values()))} appends acknowledged before the kill")
    assert len(acked) >= 50, f"only {len(acked)} appends were acknowledged before the kill"

    with embedded_server(data_dir=data) as server, httpx.Client(timeout=5.0) as client:
        url = server.stream_url("durability/log")
        messages = _read_all(client, url)
        # Every acknowledged append is there, in order; at most the one request
        # in flight at the kill may also have been committed.
        assert messages[: len(acked)] == [{"n": ack.seq} for ack in acked]
        assert len(messages) - len(acked) in (0, 1)
        in_flight_committed = len(messages) == len(acked) + 1

        # Same offsets: reading after each acknowledged offset starts right after it.
        for before, ack in itertools.pairwise(acked):
            response = client.get(url, params={"offset": before.offset})
            assert response.json()[0] == {"n": ack.seq}
        tail = client.head(url).headers["stream-next-offset"]
        assert (tail == acked[-1].offset) != in_flight_committed

        # Producer state survived: a retry of the last acknowledged request is a
        # duplicate (204), answered before the Stream-Seq check.
        last = acked[-1].seq
        retry = client.post(
            url,
            content=f'{{"n":{last}}}',
            headers={
                "content-type": "application/json",
                "producer-id": PRODUCER,
                "producer-epoch": "0",
                "producer-seq": str(last),
                "stream-seq": _stream_seq(last),
            },
        )
        assert retry.status_code == 204
        gap = client.post(
            url,
            content="{}",
            headers={
                "content-type": "application/json",
                "producer-id": PRODUCER,
                "producer-epoch": "0",
                "producer-seq": str(last + 5),
            },
        )
        assert gap.status_code == 409
        expected = last + (2 if in_flight_committed else 1)
        assert gap.headers["producer-expected-seq"] == str(expected)

        # Stream-Seq survived: the last acknowledged value is now a regression.
        regression = client.post(
            url,
            content="{}",
            headers={"content-type": "application/json", "stream-seq": _stream_seq(last)},
        )
        assert regression.status_code == 409

        # TTL, expiry and closure survived.
        head = client.head(url)
        assert head.headers["stream-ttl"] == "3600"
        closed = client.head(server.stream_url("durability/closed"))
        assert closed.headers["stream-closed"] == "true"
        assert client.get(server.stream_url("durability/closed")).text == "final"
        expiring = client.head(server.stream_url("durability/expiring"))
        assert expiring.headers["stream-expires-at"] == "2099-01-01T00:00:00Z"

        # The shared stream: each writer's acknowledged appends, in its order;
        # beyond them at most its one in-flight request.
        stored = _read_all(client, server.stream_url("durability/shared"))
        for name, acks in shared.items():
            mine = [m["n"] for m in stored if isinstance(m, dict) and m.get("w") == name]
            assert mine[: len(acks)] == [ack.seq for ack in acks]
            assert len(mine) - len(acks) in (0, 1)
        offsets = [ack.offset for acks in shared.values() for ack in acks]
        assert len(set(offsets)) == len(offsets)
