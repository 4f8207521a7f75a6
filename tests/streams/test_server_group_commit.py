"""Group commit: writes that arrive together share one transaction and one fsync.

Driven two ways: :meth:`StreamCore.run_batch` directly (a batch built by hand, so
its content is exact), and concurrent HTTP requests to a real server (uvicorn in
a thread, SQLite) whose storage counts its commits.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from durable_workflows.streams.server import StreamsApp
from durable_workflows.streams.server.core import (
    AppendResult,
    Producer,
    ProtocolError,
    StreamCore,
    Tx,
    format_body,
)
from durable_workflows.streams.server.storage import MemoryStorage, SqliteStorage
from tests.streams.test_server_core import CREATE_DEFAULTS
from tests.support.embedded_server import in_process_server

WRITERS = 50


def _create(path: str, **options: Any) -> Any:
    settings = {**CREATE_DEFAULTS, **options}
    return lambda core, tx: core.create(path, tx=tx, **settings)


def _append(
    path: str,
    body: bytes = b"{}",
    *,
    close: bool = False,
    seq: str | None = None,
    producer: tuple[str, int, int] | None = None,
) -> Any:
    def op(core: StreamCore, tx: Tx) -> AppendResult:
        return core.append(
            path,
            content_type="application/json",
            body=body,
            close=close,
            stream_seq=seq,
            producer=None if producer is None else Producer(*producer),
            tx=tx,
        )

    return op


def _batch(core: StreamCore, *ops: Any) -> list[Any]:
    """Run ``ops`` as one batch; each outcome as a status (or the created flag)."""
    outcomes = core.run_batch([lambda tx, op=op: op(core, tx) for op in ops])
    results: list[Any] = []
    for outcome in outcomes:
        if outcome.error is not None:
            assert isinstance(outcome.error, ProtocolError), outcome.error
            results.append(outcome.error.status)
        elif isinstance(outcome.value, AppendResult):
            results.append(outcome.value.status)
        else:
            results.append(outcome.value)
    return results


def _messages(core: StreamCore, path: str) -> list[Any]:
    result = core.read(path, "-1")
    decoded: list[Any] = json.loads(format_body(result.meta, result.records))
    return decoded


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------ run_batch, exact


def test_a_batch_checks_each_producer_append_against_the_ones_before_it() -> None:
    storage = MemoryStorage()
    core = StreamCore(storage, Clock())
    core.run(lambda tx: _create("s")(core, tx))
    before = storage.commits
    statuses = _batch(
        core,
        _append("s", b"[0]", producer=("w", 0, 0)),
        _append("s", b"[1]", producer=("w", 0, 1)),
        _append("s", b"[1]", producer=("w", 0, 1)),  # a retry: duplicate, not appended
        _append("s", b"[3]", producer=("w", 0, 3)),  # a gap: refused alone
        _append("s", b"[2]", producer=("w", 0, 2)),
        _append("s", b"[9]", producer=("v", 0, 1)),  # unknown producer must start at 0
        _append("s", b"[4]", producer=("v", 0, 0)),
    )
    assert statuses == [200, 200, 204, 409, 200, 409, 200]
    assert storage.commits == before + 1
    assert _messages(core, "s") == [0, 1, 2, 4]
    meta = core.head("s")
    assert (meta.producers["w"].last_seq, meta.producers["v"].last_seq) == (2, 0)


def test_a_stale_epoch_in_a_batch_is_refused_alone_after_the_epoch_rose_in_it() -> None:
    storage = MemoryStorage()
    core = StreamCore(storage, Clock())
    core.run(lambda tx: _create("s")(core, tx))
    core.run(lambda tx: _append("s", b"[0]", producer=("w", 0, 0))(core, tx))
    outcomes = core.run_batch(
        [
            lambda tx: _append("s", b"[1]", producer=("w", 1, 0))(core, tx),  # new epoch
            lambda tx: _append("s", b"[2]", producer=("w", 0, 1))(core, tx),  # zombie
            lambda tx: _append("s", b"[3]", producer=("w", 1, 1))(core, tx),
            lambda tx: _append("s", b"[4]", producer=("w", 2, 5))(core, tx),  # must start at 0
        ]
    )
    stale = outcomes[1].error
    assert isinstance(stale, ProtocolError) and stale.status == 403
    assert stale.headers == {"producer-epoch": "1"}
    bad_start = outcomes[3].error
    assert isinstance(bad_start, ProtocolError) and bad_start.status == 400
    assert [o.unwrap().status for o in (outcomes[0], outcomes[2])] == [200, 200]
    assert _messages(core, "s") == [0, 1, 3]
    assert core.head("s").producers["w"].epoch == 1


def test_a_batch_gives_the_same_answers_as_the_same_requests_one_by_one() -> None:
    def scenario() -> list[Any]:
        return [
            _create("a"),
            _append("a", b"[1]", seq="1"),
            _append("a", b"[2]", seq="1"),  # Stream-Seq regression
            _create("a", content_type="text/plain"),  # different config: 409
            _create("a"),  # idempotent: 200 (not created)
            _append("a", b"[3]", close=True, producer=("w", 0, 0)),
            _append("a", b"[3]", close=True, producer=("w", 0, 0)),  # retried close: 204
            _append("a", b"[4]"),  # closed: 409
            _create("b", body=b"[7]"),
            lambda core, tx: core.delete("b", tx),
            _append("b", b"[8]"),  # deleted: 404
            _create("b", body=b"[9]"),  # re-created at once: no record of the old one
            _create("c", forked_from="a", fork_offset=None),
            lambda core, tx: core.delete("a", tx),  # a fork keeps it: soft
            _append("a", b"[5]"),  # gone: 410
        ]

    one_by_one = StreamCore(MemoryStorage(), Clock())
    expected: list[Any] = []
    for op in scenario():
        try:
            value = one_by_one.run(lambda tx, op=op: op(one_by_one, tx))
        except ProtocolError as error:
            expected.append(error.status)
        else:
            expected.append(value.status if isinstance(value, AppendResult) else value)

    storage = MemoryStorage()
    batched = StreamCore(storage, Clock())
    results = _batch(batched, *scenario())
    # create returns (created, meta) and the metas differ by uid: compare the flags.
    flags = [r[0] if isinstance(r, tuple) else r for r in results]
    assert flags == [e[0] if isinstance(e, tuple) else e for e in expected]
    assert storage.commits == 1
    for core in (one_by_one, batched):
        assert _messages(core, "b") == [9]
        assert _messages(core, "c") == [1, 3]
        assert core.find("a") is None


def test_live_readers_hear_of_a_batch_only_after_its_commit() -> None:
    events: list[str] = []

    class Recording(MemoryStorage):
        def commit(self, *args: Any, **kwargs: Any) -> None:
            events.append("commit")
            super().commit(*args, **kwargs)

    core = StreamCore(Recording(), Clock(), on_change=lambda path, _: events.append(path))
    core.run(lambda tx: _create("s")(core, tx))
    events.clear()
    _batch(core, _append("s", b"[1]"), _append("s", b"[2]"), _append("missing", b"[3]"))
    assert events == ["commit", "s", "s"]


def test_an_expired_stream_a_refused_operation_found_stays_retired() -> None:
    changes: list[str] = []
    clock = Clock()
    core = StreamCore(MemoryStorage(), clock, on_change=lambda path, _: changes.append(path))
    core.run(lambda tx: _create("t", ttl_seconds=5)(core, tx))
    core.run(lambda tx: _create("u")(core, tx))
    clock.now += 10
    changes.clear()
    # The append to "t" is refused (404: it expired), the one to "u" is not.
    assert _batch(core, _append("t", b"[1]"), _append("u", b"[2]")) == [404, 204]
    assert changes == ["t", "u"]  # "t" was retired (as before batching) and readers told
    assert core.transaction().get("t") is None
    # Alone (no batch), the same: the refusal keeps the retirement.
    core.run(lambda tx: _create("v", ttl_seconds=5)(core, tx))
    clock.now += 10
    with pytest.raises(ProtocolError):
        core.run(lambda tx: _append("v", b"[3]")(core, tx))
    assert core.transaction().get("v") is None


# ------------------------------------------------------ concurrent HTTP, SQLite


def _app(data_dir: Path) -> tuple[StreamsApp, SqliteStorage]:
    storage = SqliteStorage(data_dir)
    return StreamsApp(StreamCore(storage, clock=time.time)), storage


async def _concurrent_appends(base: str, paths: list[str]) -> list[tuple[str, int, str]]:
    """One POST per path, all at once on separate connections; (path, n, offset)."""
    limits = httpx.Limits(max_connections=len(paths), max_keepalive_connections=len(paths))
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:

        async def post(n: int, path: str) -> tuple[str, int, str]:
            response = await client.post(
                f"{base}/v1/stream/{path}",
                headers={"content-type": "application/json"},
                content=json.dumps({"n": n}).encode(),
            )
            assert response.status_code == 204, response.text
            return path, n, response.headers["stream-next-offset"]

        return await asyncio.gather(*(post(n, path) for n, path in enumerate(paths)))


@pytest.mark.parametrize("streams", [1, WRITERS], ids=["one-stream", "many-streams"])
def test_concurrent_appends_share_commits_and_survive_a_restart(
    tmp_path: Path, streams: int
) -> None:
    data_dir = tmp_path / "data"
    app, storage = _app(data_dir)
    paths = [f"s{i % streams}" for i in range(WRITERS)]
    with in_process_server(app) as server:
        for path in sorted(set(paths)):
            created = httpx.put(server.url(path), headers={"content-type": "application/json"})
            assert created.status_code == 201
        commits, batches, operations = storage.commits, app.writes.batches, app.writes.operations
        acked = asyncio.run(_concurrent_appends(server.base_url, paths))
        commits = storage.commits - commits
        batches = app.writes.batches - batches
        assert app.writes.operations - operations == WRITERS
    # Every request waited for a commit, and fewer commits ran than requests.
    assert 1 <= commits == batches < WRITERS, (commits, batches)

    app, _ = _app(data_dir)  # a new server on the same directory
    with in_process_server(app) as server:
        for path in sorted(set(paths)):
            body = httpx.get(server.url(path), params={"offset": "-1"})
            assert body.status_code == 200
            stored = [m["n"] for m in body.json()]
            mine = sorted((offset, n) for p, n, offset in acked if p == path)
            assert stored == [n for _, n in mine]  # every acknowledged append, in offset order
            assert body.headers["stream-next-offset"] == mine[-1][0]


def test_concurrent_producer_appends_with_a_gap_or_stale_epoch_refuse_only_those(
    tmp_path: Path,
) -> None:
    app, storage = _app(tmp_path / "data")

    async def scenario() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await client.put("/v1/stream/p", headers={"content-type": "application/json"})
            commits = storage.commits

            async def post(producer: str, epoch: int, seq: int) -> int:
                response = await client.post(
                    "/v1/stream/p",
                    headers={
                        "content-type": "application/json",
                        "producer-id": producer,
                        "producer-epoch": str(epoch),
                        "producer-seq": str(seq),
                    },
                    content=json.dumps({"id": producer, "seq": seq}).encode(),
                )
                return response.status_code

            statuses = await asyncio.gather(
                *(post(f"w{i}", 0, 0) for i in range(10)),
                post("w0", 0, 2),  # a gap after seq 0 of the same batch
                post("w1", 0, 1),
                post("w2", 1, 0),  # w2 fences its epoch 0...
                post("w2", 0, 1),  # ...so this zombie is refused
            )
            # Fewer commits than applied writes (a refused one commits nothing): the
            # ASGI transport runs them all on this loop, so in practice exactly one.
            assert storage.commits - commits < statuses.count(200)
            return list(statuses)

    statuses = asyncio.run(scenario())
    assert statuses == [200] * 10 + [409, 200, 200, 403]
    result = app.core.read("p", "-1")
    stored = json.loads(format_body(result.meta, result.records))
    assert sorted((m["id"], m["seq"]) for m in stored) == sorted(
        [(f"w{i}", 0) for i in range(10)] + [("w1", 1), ("w2", 0)]
    )
