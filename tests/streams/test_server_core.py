"""The stream server's protocol core, driven directly (no HTTP, a fake clock)."""

from __future__ import annotations

import ast
import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from durable_workflows.streams import protocol as p
from durable_workflows.streams.server import StreamsApp
from durable_workflows.streams.server.core import (
    AppendResult,
    Producer,
    ProtocolError,
    StorageError,
    StreamCore,
    format_body,
)
from durable_workflows.streams.server.storage import MemoryStorage, SqliteStorage
from tests.support import REPO_ROOT


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def core(clock: Clock) -> StreamCore:
    return StreamCore(MemoryStorage(), clock)


#: The arguments of StreamCore.create for a plain JSON stream; tests override some.
CREATE_DEFAULTS: dict[str, Any] = {
    "content_type": "application/json",
    "ttl_seconds": None,
    "expires_at": None,
    "expires_at_ts": None,
    "closed": False,
    "body": b"",
}


def create(core: StreamCore, path: str, **options: Any) -> None:
    core.create(path, **{**CREATE_DEFAULTS, **options})


def append(
    core: StreamCore,
    path: str,
    body: bytes = b"{}",
    *,
    content_type: str | None = "application/json",
    close: bool = False,
    seq: str | None = None,
    producer: tuple[str, int, int] | None = None,
) -> AppendResult:
    return core.append(
        path,
        content_type=content_type,
        body=body,
        close=close,
        stream_seq=seq,
        producer=None if producer is None else Producer(*producer),
    )


def refused(call: Any, *args: Any, **kwargs: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        call(*args, **kwargs)
    return info.value


def messages(core: StreamCore, path: str, offset: str = "-1") -> list[Any]:
    result = core.read(path, offset)
    decoded: list[Any] = json.loads(format_body(result.meta, result.records))
    return decoded


# ---------------------------------------------------------------- JSON mode


def test_json_post_flattens_one_array_level(core: StreamCore) -> None:
    create(core, "j")
    append(core, "j", b'[{"a":1},{"b":2}]')
    append(core, "j", b"[[1,2],[3,4]]")
    append(core, "j", b"[[[1,2,3]]]")
    append(core, "j", b'"scalar"')
    assert messages(core, "j") == [{"a": 1}, {"b": 2}, [1, 2], [3, 4], [[1, 2, 3]], "scalar"]


def test_json_empty_array_is_refused_on_post_and_allowed_on_put(core: StreamCore) -> None:
    create(core, "j", body=b"[]")
    assert messages(core, "j") == []
    assert refused(append, core, "j", b"[]").status == 400


@pytest.mark.parametrize(
    "body", [b"{", b"NaN", b"[Infinity]", b"1e400", b"\xff", b"[" * 100_000, b"{'a': 1}"]
)
def test_invalid_json_is_400(core: StreamCore, body: bytes) -> None:
    create(core, "j")
    assert refused(append, core, "j", body).status == 400
    assert messages(core, "j") == []


def test_lone_surrogate_is_stored_as_an_escape(core: StreamCore) -> None:
    create(core, "j")
    append(core, "j", b'["\\ud800", "\xc3\xa9"]')
    result = core.read("j", "-1")
    assert format_body(result.meta, result.records) == '["\\ud800","é"]'.encode()


# ------------------------------------------------------------------ offsets


def test_offsets_are_fixed_width_and_strictly_increasing(core: StreamCore) -> None:
    create(core, "b", content_type="application/octet-stream")
    offsets = [
        append(core, "b", b"x" * n, content_type="application/octet-stream").headers[
            p.STREAM_NEXT_OFFSET
        ]
        for n in (1, 9, 100, 1)
    ]
    assert offsets == sorted(offsets)
    assert len(set(offsets)) == len(offsets)
    assert all(p.is_offset(o) for o in offsets)
    assert core.read("b", offsets[1]).records[0].data == b"x" * 100
    assert core.read("b", offsets[-1]).up_to_date


# ---------------------------------------------------- Stream-Seq (per stream)


def test_stream_seq_is_scoped_per_stream_and_compared_bytewise(core: StreamCore) -> None:
    create(core, "a")
    create(core, "b")
    append(core, "a", seq="0000000000000005")
    append(core, "b", seq="0000000000000001")  # another stream: its own scope
    assert refused(append, core, "a", seq="0000000000000005").status == 409
    assert refused(append, core, "a", seq="0000000000000004").status == 409
    append(core, "a", seq="0000000000000006")
    append(core, "b", seq="2")
    assert refused(append, core, "b", seq="10").status == 409  # "10" < "2" byte-wise


# ------------------------------------------------------- idempotent producers


def test_producer_duplicate_is_204_before_the_stream_seq_check(core: StreamCore) -> None:
    create(core, "h")
    first = append(core, "h", b"[1]", seq="0000000000000000", producer=("w", 0, 0))
    assert first.status == 200
    retry = append(core, "h", b"[1]", seq="0000000000000000", producer=("w", 0, 0))
    assert retry.status == 204
    assert retry.headers[p.PRODUCER_SEQ] == "0"
    assert messages(core, "h") == [1]
    # The same Stream-Seq from another writer is the fencing 409.
    assert (
        refused(append, core, "h", b"[2]", seq="0000000000000000", producer=("v", 0, 0)).status
        == 409
    )


def test_producer_epochs_fence_and_gaps_conflict(core: StreamCore) -> None:
    create(core, "h")
    append(core, "h", producer=("w", 0, 0))
    append(core, "h", producer=("w", 0, 1))
    gap = refused(append, core, "h", producer=("w", 0, 3))
    assert (
        gap.status,
        gap.headers[p.PRODUCER_EXPECTED_SEQ],
        gap.headers[p.PRODUCER_RECEIVED_SEQ],
    ) == (409, "2", "3")
    assert refused(append, core, "h", producer=("w", 1, 1)).status == 400  # new epoch starts at 0
    assert append(core, "h", producer=("w", 1, 0)).status == 200
    stale = refused(append, core, "h", producer=("w", 0, 2))
    assert (stale.status, stale.headers[p.PRODUCER_EPOCH]) == (403, "1")
    unknown = refused(append, core, "h", producer=("new", 0, 4))
    assert (unknown.status, unknown.headers[p.PRODUCER_EXPECTED_SEQ]) == (409, "0")


def test_producer_close_is_idempotent_for_the_closing_tuple_only(core: StreamCore) -> None:
    create(core, "h")
    append(core, "h", producer=("w", 0, 0))
    closing = append(core, "h", b"[9]", close=True, producer=("w", 0, 1))
    assert closing.headers[p.STREAM_CLOSED] == "true"
    again = append(core, "h", b"[9]", close=True, producer=("w", 0, 1))
    assert (again.status, again.headers[p.STREAM_CLOSED]) == (204, "true")
    other = refused(append, core, "h", b"[9]", producer=("w", 0, 2))
    assert (other.status, other.headers[p.STREAM_CLOSED]) == (409, "true")
    assert messages(core, "h") == [{}, 9]


# ------------------------------------------------------------ closed streams


def test_closed_stream_check_comes_before_content_type(core: StreamCore) -> None:
    create(core, "c")
    tail = append(core, "c", close=True).headers[p.STREAM_NEXT_OFFSET]
    error = refused(append, core, "c", b"x", content_type="text/plain")
    assert error.status == 409
    assert error.headers == {p.STREAM_NEXT_OFFSET: tail, p.STREAM_CLOSED: "true"}
    assert append(core, "c", b"", close=True).status == 204  # close-only is idempotent
    result = core.read("c", tail)
    assert result.closed and result.up_to_date and not result.records


def test_content_type_mismatch_is_409_and_parameters_are_ignored(core: StreamCore) -> None:
    create(core, "t", content_type="text/plain")
    assert refused(append, core, "t", b"x", content_type="application/json").status == 409
    assert append(core, "t", b"x", content_type="Text/Plain; charset=utf-8").status == 204
    assert refused(append, core, "t", b"x", content_type=None).status == 400


# ---------------------------------------------------------------- TTL rules


def test_sliding_ttl_is_refreshed_by_reads_and_writes_but_not_head(
    core: StreamCore, clock: Clock
) -> None:
    create(core, "s", ttl_seconds=10)
    clock.now += 8
    core.head("s")  # HEAD does not refresh
    clock.now += 3
    assert core.find("s") is None
    create(core, "s", ttl_seconds=10)
    clock.now += 8
    core.touch("s")  # what every GET (catch-up, offset=now, live) does
    clock.now += 8
    append(core, "s", b"", close=True)  # a close-only POST refreshes too
    clock.now += 8
    assert core.find("s") is not None
    clock.now += 3
    assert refused(core.read, "s", "-1").status == 404


def test_producer_close_only_post_refreshes_the_ttl(core: StreamCore, clock: Clock) -> None:
    create(core, "s", ttl_seconds=10)
    clock.now += 8
    append(core, "s", b"", close=True, producer=("w", 0, 0))
    clock.now += 8
    assert core.find("s") is not None


def test_expires_at_is_absolute(core: StreamCore, clock: Clock) -> None:
    create(core, "e", expires_at="x", expires_at_ts=clock.now + 5)
    clock.now += 4
    core.touch("e")
    clock.now += 1
    assert core.find("e") is None


# --------------------------------------------------------------------- forks


def test_fork_does_not_inherit_producer_or_stream_seq_state(core: StreamCore) -> None:
    create(core, "src")
    tail = append(core, "src", seq="5", producer=("w", 3, 0)).headers[p.STREAM_NEXT_OFFSET]
    create(core, "fork", forked_from="src", fork_offset=tail)
    assert append(core, "fork", seq="1", producer=("w", 0, 0)).status == 200
    assert messages(core, "fork") == [{}, {}]


def test_deleting_a_source_with_forks_is_soft_until_the_last_fork_goes(core: StreamCore) -> None:
    create(core, "src", body=b"[1]")
    create(core, "fork", forked_from="src")
    core.delete("src")
    assert refused(core.read, "src", "-1").status == 410
    assert refused(create, core, "src").status == 409
    assert messages(core, "fork") == [1]
    core.delete("fork")
    assert refused(core.read, "src", "-1").status == 404


# ------------------------------------------------------------------- storage


def test_sqlite_state_survives_a_restart(tmp_path: Path, clock: Clock) -> None:
    first = StreamCore(SqliteStorage(tmp_path), clock)
    create(first, "d", ttl_seconds=60)
    append(first, "d", b"[1,2]", seq="a", producer=("w", 2, 0))
    tail = append(first, "d", b"[3]", close=True, seq="b", producer=("w", 2, 1)).headers[
        p.STREAM_NEXT_OFFSET
    ]
    first.close()

    second = StreamCore(SqliteStorage(tmp_path), clock)
    meta = second.head("d")
    assert (meta.tail, meta.closed, meta.ttl_seconds, meta.stream_seq) == (tail, True, 60, "b")
    assert meta.producers["w"].epoch == 2 and meta.producers["w"].last_seq == 1
    assert messages(second, "d") == [1, 2, 3]
    retry = append(second, "d", b"[3]", close=True, seq="b", producer=("w", 2, 1))
    assert retry.status == 204
    second.close()


# -------------------------------------------------------------- the boundary


@pytest.mark.parametrize("module", ["core.py", "storage.py"])
def test_core_and_storage_import_no_network_or_asgi_code(module: str) -> None:
    source = (REPO_ROOT / "reference/durable_workflows/streams/server" / module).read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    forbidden = {"asyncio", "socket", "httpx", "uvicorn", "starlette", "threading"}
    assert not imported & forbidden


# ------------------------------------------------------------ storage failure


class FlakyStorage(MemoryStorage):
    """Memory storage whose commits fail while ``broken`` is set, or when ``refuse``
    picks them (by the paths of the streams they install)."""

    broken = False

    def __init__(self, refuse: Callable[[list[str]], bool] | None = None) -> None:
        super().__init__()
        self.refuse = refuse

    def commit(self, metas: Any = (), *args: Any, **kwargs: Any) -> None:
        if self.broken or (self.refuse is not None and self.refuse([m.path for m in metas])):
            raise StorageError("disk full")
        super().commit(metas, *args, **kwargs)


def test_a_failed_commit_changes_nothing(clock: Clock) -> None:
    storage = FlakyStorage()
    core = StreamCore(storage, clock)
    create(core, "f")
    append(core, "f", b"[1]", seq="1", producer=("w", 0, 0))
    before = core.head("f")
    storage.broken = True
    with pytest.raises(StorageError):
        append(core, "f", b"[2]", seq="2", producer=("w", 0, 1))
    with pytest.raises(StorageError):
        append(core, "f", b"", close=True)
    storage.broken = False
    after = core.head("f")
    assert (after.tail, after.stream_seq, after.closed) == (before.tail, "1", False)
    assert after.producers["w"].last_seq == 0
    assert append(core, "f", b"[2]", seq="2", producer=("w", 0, 1)).status == 200  # the retry
    assert messages(core, "f") == [1, 2]


def test_storage_failure_is_a_503(clock: Clock) -> None:
    storage = FlakyStorage()
    app = StreamsApp(StreamCore(storage, clock))

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            created = await client.put("/v1/stream/x", headers={"content-type": "text/plain"})
            assert created.status_code == 201
            storage.broken = True
            response = await client.post(
                "/v1/stream/x", headers={"content-type": "text/plain"}, content=b"a"
            )
            assert response.status_code == 503
            storage.broken = False
            assert (await client.get("/v1/stream/x")).content == b""

    asyncio.run(scenario())


def test_sweep_retires_expired_streams(core: StreamCore, clock: Clock) -> None:
    create(core, "short", ttl_seconds=5)
    create(core, "long", ttl_seconds=500)
    clock.now += 10
    assert core.sweep() == 1
    assert core.paths() == ["long"]
