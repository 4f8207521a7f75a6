"""The client's sans-IO core: request building, response parsing, typed errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from durable_workflows.streams import (
    BadRequest,
    ContentTypeMismatch,
    OperationNotSupported,
    PayloadTooLarge,
    ProducerFenced,
    ProducerSequenceGap,
    RateLimited,
    SequenceConflict,
    ServerError,
    StreamClosed,
    StreamConfigConflict,
    StreamConflict,
    StreamForbidden,
    StreamGone,
    StreamHTTPError,
    StreamNetworkError,
    StreamNotFound,
    StreamProtocolError,
)
from durable_workflows.streams.client._core import ProducerHeaders as PH
from durable_workflows.streams.client._core import (
    ReadResult,
    Request,
    Response,
    Sleep,
    StreamCore,
    build_append,
    build_create,
    build_read,
    encode_batch,
    encode_message,
    error_from_response,
    join_url,
    parse_read,
    run_sync,
    with_query,
)
from tests.support import drive

URL = "http://h/v1/stream/s"
OFF1 = "0000000000000000_0000000000000010"
OFF2 = "0000000000000000_0000000000000020"


def resp(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> Response:
    return Response(status, {k.lower(): v for k, v in (headers or {}).items()}, body)


# ---------------------------------------------------------------- URLs and requests


def test_query_parameters_are_sorted_and_offsets_fully_encoded() -> None:
    req = build_read(URL, "a b+c/=&?", live="long-poll", cursor="42")
    assert req.url == f"{URL}?cursor=42&live=long-poll&offset=a%20b%2Bc%2F%3D%26%3F"
    assert req.live and not req.streaming


def test_existing_query_parameters_are_kept_and_sorted_with_ours() -> None:
    assert with_query(URL + "?token=t&a=1", {"offset": "-1", "live": None}) == (
        URL + "?a=1&offset=-1&token=t"
    )


def test_sse_read_is_streaming() -> None:
    req = build_read(URL, "now", live="sse")
    assert req.url.endswith("?live=sse&offset=now")
    assert req.streaming and req.live


def test_empty_offset_is_rejected() -> None:
    with pytest.raises(ValueError):
        build_read(URL, "")


def test_join_url_encodes_segments_and_keeps_absolute_urls() -> None:
    assert join_url("http://h/v1/stream/", "/runs/a b/history") == (
        "http://h/v1/stream/runs/a%20b/history"
    )
    assert join_url("http://h/x", "https://other/s") == "https://other/s"
    with pytest.raises(ValueError):
        join_url(None, "relative")


def test_create_sets_every_config_header() -> None:
    req = build_create(
        URL,
        content_type="application/json",
        body=b"[]",
        ttl=3600,
        closed=True,
        forked_from="/v1/stream/src",
        fork_offset=OFF1,
        fork_sub_offset=2,
    )
    assert req.method == "PUT"
    assert req.content == b"[]"
    assert req.headers == {
        "Content-Type": "application/json",
        "Stream-TTL": "3600",
        "Stream-Closed": "true",
        "Stream-Forked-From": "/v1/stream/src",
        "Stream-Fork-Offset": OFF1,
        "Stream-Fork-Sub-Offset": "2",
    }


def test_fork_source_may_be_given_as_a_url() -> None:
    req = build_create(URL, forked_from="http://h/v1/stream/runs/a%20b")
    assert req.headers["Stream-Forked-From"] == "/v1/stream/runs/a%20b"


def test_expires_at_is_sent_as_rfc3339_utc() -> None:
    when = datetime(2030, 1, 2, 4, 4, 5, 123000, tzinfo=timezone(timedelta(hours=1)))
    req = build_create(URL, expires_at=when)
    assert req.headers["Stream-Expires-At"] == "2030-01-02T03:04:05.123Z"
    assert build_create(URL, expires_at="2030-01-02T03:04:05Z").headers["Stream-Expires-At"] == (
        "2030-01-02T03:04:05Z"
    )


@pytest.mark.parametrize(
    "options",
    [
        {"ttl": 10, "expires_at": "2030-01-01T00:00:00Z"},
        {"ttl": -1},
        {"ttl": True},
        {"expires_at": "tomorrow"},
        {"expires_at": datetime(2030, 1, 1)},  # naive
        {"fork_offset": OFF1},
        {"forked_from": "/s", "fork_sub_offset": -1},
    ],
)
def test_create_rejects_invalid_config_before_sending(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        build_create(URL, **options)


def test_append_headers() -> None:
    req = build_append(
        URL, b"x", content_type="text/plain", seq="0007", close=True, producer=PH("p", 2, 5)
    )
    assert req.headers == {
        "Content-Type": "text/plain",
        "Stream-Seq": "0007",
        "Stream-Closed": "true",
        "Producer-Id": "p",
        "Producer-Epoch": "2",
        "Producer-Seq": "5",
    }


def test_close_only_append_has_no_body_and_no_content_type() -> None:
    req = build_append(URL, b"", content_type="application/json", close=True)
    assert req.content == b""
    assert req.headers == {"Stream-Closed": "true"}


@pytest.mark.parametrize(
    "body, options",
    [
        (b"", {"content_type": "text/plain"}),  # empty without close
        (b"x", {"content_type": None}),
        (b"x", {"content_type": "text/plain", "seq": ""}),
        (b"x", {"content_type": "text/plain", "producer": PH("", 0, 0)}),
        (b"x", {"content_type": "text/plain", "producer": PH("p", 2**53, 0)}),
        (b"x", {"content_type": "text/plain", "producer": PH("p", 0, -1)}),
    ],
)
def test_append_rejects_invalid_requests_before_sending(
    body: bytes, options: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        build_append(URL, body, **options)


# ---------------------------------------------------------------- JSON mode


def test_one_message_is_wrapped_once_so_arrays_survive_flattening() -> None:
    assert encode_message({"a": 1}) == b'[{"a":1}]'
    assert encode_message([1, 2]) == b"[[1,2]]"
    assert encode_message("é") == '["é"]'.encode()


def test_a_batch_is_one_array_of_messages() -> None:
    assert encode_batch([{"a": 1}, [1, 2]]) == b'[{"a":1},[1,2]]'
    assert encode_batch(iter([1])) == b"[1]"
    with pytest.raises(ValueError):
        encode_batch([])


def test_non_finite_numbers_are_not_sent() -> None:
    with pytest.raises(ValueError):
        encode_message(float("nan"))


# ---------------------------------------------------------------- reads


def test_parse_json_read() -> None:
    req = build_read(URL, "-1")
    result = parse_read(
        req,
        resp(
            200,
            {
                "Content-Type": "application/json",
                "Stream-Next-Offset": OFF1,
                "Stream-Up-To-Date": "true",
                "Stream-Cursor": "9",
            },
            b'[{"a":1},[2]]',
        ),
    )
    assert result == ReadResult([{"a": 1}, [2]], OFF1, True, False, "9", "application/json")


def test_empty_json_body_is_no_messages_and_closed_implies_up_to_date() -> None:
    req = build_read(URL, OFF1)
    result = parse_read(
        req,
        resp(
            200,
            {
                "Content-Type": "application/json",
                "Stream-Next-Offset": OFF1,
                "Stream-Closed": "TRUE",
            },
        ),
    )
    assert result.items == [] and result.closed and result.up_to_date


def test_bytes_read_keeps_chunks() -> None:
    result = parse_read(
        build_read(URL),
        resp(200, {"Content-Type": "text/plain", "Stream-Next-Offset": OFF1}, b"abc"),
    )
    assert result.items == [b"abc"] and result.data == b"abc" and not result.up_to_date


def test_json_result_has_no_data_bytes() -> None:
    with pytest.raises(TypeError):
        _ = ReadResult([1], OFF1, True, False, content_type="application/json").data


def test_long_poll_timeout_is_up_to_date_and_closed_only_when_said() -> None:
    req = build_read(URL, OFF1, live="long-poll")
    result = parse_read(req, resp(204, {"Stream-Next-Offset": OFF1, "Stream-Cursor": "5"}))
    assert result == ReadResult([], OFF1, True, False, "5", None)
    closed = parse_read(req, resp(204, {"Stream-Next-Offset": OFF1, "Stream-Closed": "true"}))
    assert closed.closed and closed.cursor is None


@pytest.mark.parametrize(
    "response",
    [
        resp(200, {"Content-Type": "application/json"}, b"[]"),  # no offset
        resp(200, {"Content-Type": "application/json", "Stream-Next-Offset": OFF1}, b"{}"),
        resp(200, {"Content-Type": "application/json", "Stream-Next-Offset": OFF1}, b"[1,"),
        resp(204, {}),
    ],
)
def test_malformed_read_answers_are_protocol_errors(response: Response) -> None:
    with pytest.raises(StreamProtocolError):
        parse_read(build_read(URL, OFF1, live="long-poll"), response)


def test_catch_up_read_follows_chunks_until_up_to_date() -> None:
    pages = {
        "-1": resp(
            200,
            {"Content-Type": "application/json", "Stream-Next-Offset": OFF1},
            b"[1,2]",
        ),
        OFF1: resp(
            200,
            {
                "Content-Type": "application/json",
                "Stream-Next-Offset": OFF2,
                "Stream-Up-To-Date": "true",
            },
            b"[3]",
        ),
    }

    def answer(step: Any) -> Response:
        return pages[step.url.split("offset=")[1]]

    core = StreamCore(URL)
    result, steps = drive(core.read(), answer)
    assert result.items == [1, 2, 3] and result.next_offset == OFF2 and result.up_to_date
    assert [s.url for s in steps] == [f"{URL}?offset=-1", f"{URL}?offset={OFF1}"]
    assert core.content_type == "application/json"


def test_catch_up_read_that_does_not_advance_is_a_protocol_error() -> None:
    stuck = resp(200, {"Content-Type": "text/plain", "Stream-Next-Offset": OFF1}, b"x")
    with pytest.raises(StreamProtocolError, match="neither advanced"):
        drive(StreamCore(URL).read(OFF1), lambda step: stuck)


def test_reads_retry_network_failures_a_bounded_number_of_times() -> None:
    ok = resp(
        200,
        {"Content-Type": "text/plain", "Stream-Next-Offset": OFF1, "Stream-Up-To-Date": "true"},
    )
    failures = iter([True, True, False])

    def flaky(step: Any) -> Response | None:
        if isinstance(step, Sleep):
            return None
        if next(failures):
            raise StreamNetworkError("reset")
        return ok

    result, steps = drive(StreamCore(URL).read(), flaky)
    assert result.next_offset == OFF1
    assert [type(s).__name__ for s in steps] == ["Request", "Sleep", "Request", "Sleep", "Request"]

    def down(step: Any) -> Response | None:
        if isinstance(step, Sleep):
            return None
        raise StreamNetworkError("down")

    with pytest.raises(StreamNetworkError):
        drive(StreamCore(URL, read_retries=1).read(), down)


# ---------------------------------------------------------------- writes


def test_append_without_content_type_asks_head_once_then_remembers() -> None:
    answers = {
        "HEAD": resp(200, {"Content-Type": "text/plain", "Stream-Next-Offset": OFF1}),
        "POST": resp(204, {"Stream-Next-Offset": OFF2}),
    }
    core = StreamCore(URL)
    result, steps = drive(core.append(b"hi"), lambda s: answers[s.method])
    assert result.next_offset == OFF2 and not result.duplicate
    assert [s.method for s in steps] == ["HEAD", "POST"]
    assert steps[1].headers["Content-Type"] == "text/plain"
    _, steps = drive(core.append(b"again"), lambda s: answers[s.method])
    assert [s.method for s in steps] == ["POST"]


def test_create_reports_created_or_existing() -> None:
    core = StreamCore(URL)
    created, _ = drive(
        core.create_json([{"a": 1}]),
        lambda s: resp(201, {"Content-Type": "application/json", "Stream-Next-Offset": OFF1}),
    )
    assert created.created and created.next_offset == OFF1
    again, steps = drive(core.create_json(), lambda s: resp(200, {"Stream-Next-Offset": OFF1}))
    assert not again.created and again.content_type == "application/json"
    assert steps[0].content == b""


# ---------------------------------------------------------------- errors


def _error(
    status: int,
    headers: dict[str, str] | None = None,
    *,
    request: Request | None = None,
    probe: Response | None = None,
    body: bytes = b"",
) -> StreamHTTPError:
    request = request or build_append(URL, b"[1]", content_type="application/json")
    return error_from_response(request, resp(status, headers, body), probe=probe)


@pytest.mark.parametrize(
    "status, cls",
    [
        (400, BadRequest),
        (403, StreamForbidden),
        (404, StreamNotFound),
        (405, OperationNotSupported),
        (501, OperationNotSupported),
        (410, StreamGone),
        (413, PayloadTooLarge),
        (429, RateLimited),
        (500, ServerError),
        (503, ServerError),
        (418, StreamHTTPError),
    ],
)
def test_each_error_status_has_its_type(status: int, cls: type[StreamHTTPError]) -> None:
    err = _error(status, body=b"nope")
    assert type(err) is cls
    assert err.status == status
    assert str(err).startswith(f"POST {URL} -> {status}: ")
    assert "nope" in str(err)


def test_closed_stream_conflict_carries_the_final_offset() -> None:
    err = _error(409, {"Stream-Closed": "true", "Stream-Next-Offset": OFF2})
    assert isinstance(err, StreamClosed) and isinstance(err, StreamConflict)
    assert err.final_offset == OFF2
    assert "closed" in str(err) and OFF2 in str(err)


def test_producer_gap_carries_expected_and_received() -> None:
    req = build_append(URL, b"[1]", content_type="application/json", producer=PH("p", 0, 7))
    err = _error(409, {"Producer-Expected-Seq": "3", "Producer-Received-Seq": "7"}, request=req)
    assert isinstance(err, ProducerSequenceGap)
    assert (err.expected, err.received) == (3, 7)
    assert "expected 3" in str(err)


def test_stale_epoch_is_producer_fenced_with_the_current_epoch() -> None:
    req = build_append(URL, b"[1]", content_type="application/json", producer=PH("p", 1, 0))
    err = _error(403, {"Producer-Epoch": "4"}, request=req)
    assert isinstance(err, ProducerFenced) and isinstance(err, StreamForbidden)
    assert (err.current_epoch, err.epoch) == (4, 1)
    assert "epoch 4" in str(err)


def test_put_conflict_is_a_config_conflict() -> None:
    err = _error(409, request=build_create(URL, content_type="text/plain"))
    assert isinstance(err, StreamConfigConflict)


def test_fork_source_missing_is_named() -> None:
    err = _error(404, request=build_create(URL, forked_from="/v1/stream/gone"))
    assert isinstance(err, StreamNotFound) and "/v1/stream/gone" in str(err)


def test_append_conflict_without_stream_seq_is_a_content_type_mismatch() -> None:
    probe = resp(200, {"Content-Type": "text/plain", "Stream-Next-Offset": OFF1})
    err = _error(409, probe=probe)
    assert isinstance(err, ContentTypeMismatch)
    assert (err.sent, err.stream_content_type) == ("application/json", "text/plain")


def test_append_conflict_with_stream_seq_is_told_apart_by_the_probe() -> None:
    req = build_append(URL, b"[1]", content_type="application/json; charset=utf-8", seq="5")
    same = resp(200, {"Content-Type": "application/json", "Stream-Next-Offset": OFF1})
    other = resp(200, {"Content-Type": "text/plain", "Stream-Next-Offset": OFF1})
    seq_err = _error(409, request=req, probe=same)
    assert isinstance(seq_err, SequenceConflict) and seq_err.seq == "5"
    assert isinstance(_error(409, request=req, probe=other), ContentTypeMismatch)


def test_without_a_probe_the_servers_words_decide() -> None:
    req = build_append(URL, b"[1]", content_type="application/json", seq="5")
    assert isinstance(_error(409, request=req, body=b"Sequence conflict"), SequenceConflict)
    assert isinstance(_error(409, request=req, body=b"Content-type mismatch"), ContentTypeMismatch)


def test_ambiguous_append_conflict_probes_with_head() -> None:
    answers = {
        "POST": resp(409, body=b"Sequence conflict"),
        "HEAD": resp(200, {"Content-Type": "application/json", "Stream-Next-Offset": OFF1}),
    }
    core = StreamCore(URL, content_type="application/json")
    with pytest.raises(SequenceConflict):
        drive(core.append_json(1, seq="0001"), lambda s: answers[s.method])


def test_probe_failure_falls_back_on_the_body() -> None:
    def answer(step: Any) -> Response:
        if step.method == "HEAD":
            raise StreamNetworkError("down")
        return resp(409, body=b"Content-type mismatch")

    core = StreamCore(URL, content_type="application/json")
    with pytest.raises(ContentTypeMismatch):
        drive(core.append_json(1, seq="0001"), answer)


def test_rate_limit_keeps_the_retry_after_hint() -> None:
    err = _error(429, {"Retry-After": "2"})
    assert isinstance(err, RateLimited) and err.retry_after == 2.0
    assert "retry after 2 s" in str(err)


def test_error_bodies_are_truncated() -> None:
    err = _error(500, body=b"x" * 10_000)
    assert len(err.body) == 300


def test_error_types_reject_unknown_attributes() -> None:
    with pytest.raises(TypeError):
        StreamClosed("x", status=409, method="POST", url=URL, no_such=1)


# ---------------------------------------------------------------- drivers


def test_run_sync_sleeps_and_throws_network_errors_into_the_op() -> None:
    pauses: list[float] = []
    head = resp(200, {"Content-Type": "text/plain", "Stream-Next-Offset": OFF1})
    calls: Iterator[Response | Exception] = iter([StreamNetworkError("x"), head])

    def transport(request: Request) -> Response:
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    info = run_sync(StreamCore(URL).head(), transport, pauses.append)
    assert info.next_offset == OFF1 and info.content_type == "text/plain"
    assert len(pauses) == 1 and pauses[0] > 0


def test_timestamps_use_utc() -> None:
    assert build_create(URL, expires_at=datetime(2030, 1, 1, tzinfo=UTC)).headers[
        "Stream-Expires-At"
    ] == ("2030-01-01T00:00:00.000Z")


def test_reads_wait_out_overload_answers() -> None:
    ok = resp(
        200,
        {"Content-Type": "text/plain", "Stream-Next-Offset": OFF1, "Stream-Up-To-Date": "true"},
    )
    answers = iter([resp(503, {"Retry-After": "30"}), None, resp(429), None, ok])
    result, steps = drive(StreamCore(URL).read(), lambda step: next(answers))
    assert result.next_offset == OFF1
    sleeps = [s.seconds for s in steps if isinstance(s, Sleep)]
    assert sleeps[0] == 10.0  # Retry-After, capped
    assert 0 < sleeps[1] < 1
    overloaded = iter([resp(503), None, resp(503), None, resp(503)])
    with pytest.raises(ServerError):
        drive(StreamCore(URL).read(), lambda step: next(overloaded))


# ---------------------------------------------------------------- the sans-IO boundary

SANS_IO_MODULES = ("_core", "_sse", "_live", "_producer")
IO_MODULES = {"httpx", "socket", "ssl", "asyncio", "threading", "time", "select", "selectors"}


@pytest.mark.parametrize("module", SANS_IO_MODULES)
def test_the_core_does_no_io(module: str) -> None:
    """The core never imports a network, clock or concurrency module, nor the
    front ends: sync and async share it unchanged."""
    import ast
    import importlib

    source = importlib.import_module(f"durable_workflows.streams.client.{module}").__file__
    assert source is not None
    tree = ast.parse(Path(source).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(("." * node.level) + (node.module or "").split(".")[0])
    assert not imported & IO_MODULES, imported & IO_MODULES
    assert not imported & {"._sync", "._async"}, imported
