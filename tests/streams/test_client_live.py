"""The live-read state machine: long-poll and SSE without a network."""

from __future__ import annotations

import base64

import pytest

from durable_workflows.streams import (
    StreamError,
    StreamGone,
    StreamNetworkError,
    StreamProtocolError,
)
from durable_workflows.streams.client._core import Request, Response, Sleep, StreamCore
from durable_workflows.streams.client._live import LiveReader

URL = "http://h/v1/stream/s"
O1 = "0000000000000000_0000000000000010"
O2 = "0000000000000000_0000000000000020"
O3 = "0000000000000000_0000000000000030"
SSE_HEAD = Response(200, {"content-type": "text/event-stream"})


def resp(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> Response:
    return Response(status, {k.lower(): v for k, v in (headers or {}).items()}, body)


def request(reader: LiveReader) -> Request:
    step = reader.next_step()
    assert isinstance(step, Request), step
    return step


def control(offset: str, **extra: object) -> bytes:
    import json

    return (
        b"event: control\ndata: "
        + json.dumps({"streamNextOffset": offset, **extra}).encode()
        + (b"\n\n")
    )


# ---------------------------------------------------------------- long-poll


def test_long_poll_echoes_the_cursor_and_stops_at_closed() -> None:
    reader = LiveReader(StreamCore(URL), "-1", "long-poll")
    first = request(reader)
    assert first.url == f"{URL}?live=long-poll&offset=-1" and first.live
    [batch] = reader.on_response(
        resp(
            200,
            {
                "Content-Type": "application/json",
                "Stream-Next-Offset": O1,
                "Stream-Cursor": "100",
                "Stream-Up-To-Date": "true",
            },
            b"[1,2]",
        )
    )
    assert batch.items == [1, 2] and batch.up_to_date and not batch.closed
    second = request(reader)
    assert second.url == f"{URL}?cursor=100&live=long-poll&offset={O1}"
    [timeout] = reader.on_response(resp(204, {"Stream-Next-Offset": O1, "Stream-Cursor": "101"}))
    assert timeout.items == [] and timeout.up_to_date
    assert "cursor=101" in request(reader).url
    [eof] = reader.on_response(resp(204, {"Stream-Next-Offset": O1, "Stream-Closed": "true"}))
    assert eof.closed and reader.done
    assert reader.next_step() is None


def test_long_poll_errors_are_typed() -> None:
    reader = LiveReader(StreamCore(URL), O1, "long-poll")
    request(reader)
    with pytest.raises(StreamGone):
        reader.on_response(resp(410))


def test_network_failures_back_off_then_give_up() -> None:
    reader = LiveReader(StreamCore(URL), O1, "long-poll", max_failures=2)
    delays = []
    for _ in range(2):
        request(reader)
        reader.on_network_error(StreamNetworkError("reset"))
        step = reader.next_step()
        assert isinstance(step, Sleep)
        delays.append(step.seconds)
    assert delays[1] > delays[0] > 0
    request(reader)
    with pytest.raises(StreamNetworkError):
        reader.on_network_error(StreamNetworkError("reset"))


def test_a_success_resets_the_failure_count() -> None:
    reader = LiveReader(StreamCore(URL), O1, "long-poll", max_failures=1)
    for _ in range(3):
        request(reader)
        reader.on_network_error(StreamNetworkError("reset"))
        assert isinstance(reader.next_step(), Sleep)
        request(reader)
        reader.on_response(resp(204, {"Stream-Next-Offset": O1}))


# ---------------------------------------------------------------- SSE


def test_sse_learns_the_content_type_first_when_unknown() -> None:
    core = StreamCore(URL)
    reader = LiveReader(core, "-1", "sse")
    head = request(reader)
    assert head.method == "HEAD"
    assert (
        reader.on_response(
            resp(200, {"Content-Type": "application/json", "Stream-Next-Offset": O1})
        )
        == []
    )
    get = request(reader)
    assert get.method == "GET" and get.streaming and get.url.endswith("live=sse&offset=-1")
    assert core.content_type == "application/json"


def test_sse_batches_data_until_the_control_event() -> None:
    reader = LiveReader(StreamCore(URL, content_type="application/json"), "-1", "sse")
    request(reader)
    reader.on_stream_open(SSE_HEAD)
    assert reader.feed(b"event: data\ndata: [1,\ndata: 2]\n\nevent: data\ndata: [[3]]\n\n") == []
    [batch] = reader.feed(control(O1, streamCursor="7", upToDate=True))
    assert batch.items == [1, 2, [3]] and batch.next_offset == O1 and batch.up_to_date
    assert batch.cursor == "7"
    [empty] = reader.feed(control(O1, streamCursor="8"))
    assert empty.items == [] and not empty.up_to_date


def test_sse_reconnects_from_the_last_control_offset_dropping_unconfirmed_data() -> None:
    reader = LiveReader(StreamCore(URL, content_type="application/json"), "-1", "sse")
    request(reader)
    reader.on_stream_open(SSE_HEAD)
    reader.feed(b"event: data\ndata: [1]\n\n" + control(O1, streamCursor="5"))
    reader.feed(b"event: data\ndata: [2]\n\n")  # no control: not confirmed
    assert reader.on_stream_end() == []
    again = request(reader)
    assert again.url == f"{URL}?cursor=5&live=sse&offset={O1}"


def test_sse_stops_at_stream_closed() -> None:
    reader = LiveReader(StreamCore(URL, content_type="application/json"), O1, "sse")
    request(reader)
    reader.on_stream_open(SSE_HEAD)
    batches = reader.feed(
        b"event: data\ndata: [9]\n\n" + control(O2, streamClosed=True) + control(O3)
    )
    assert [(b.items, b.closed, b.up_to_date) for b in batches] == [([9], True, True)]
    assert reader.done and reader.on_stream_end() == [] and reader.next_step() is None


def test_sse_base64_data_is_decoded() -> None:
    reader = LiveReader(StreamCore(URL, content_type="application/octet-stream"), "-1", "sse")
    request(reader)
    reader.on_stream_open(
        Response(200, {"content-type": "text/event-stream", "stream-sse-data-encoding": "base64"})
    )
    text = base64.b64encode(bytes(range(10))).decode()
    body = f"event: data\ndata: {text[:6]}\ndata: {text[6:]}\n\n".encode() + control(O1)
    [batch] = reader.feed(body)
    assert batch.data == bytes(range(10))


def test_sse_text_data_is_bytes() -> None:
    reader = LiveReader(StreamCore(URL, content_type="text/plain"), "-1", "sse")
    request(reader)
    reader.on_stream_open(SSE_HEAD)
    [batch] = reader.feed(b"event: data\ndata: a\ndata: b\n\n" + control(O1))
    assert batch.data == b"a\nb"


def test_sse_ignores_unknown_events() -> None:
    reader = LiveReader(StreamCore(URL, content_type="application/json"), "-1", "sse")
    request(reader)
    reader.on_stream_open(SSE_HEAD)
    [batch] = reader.feed(b"event: unknown\ndata: zzz\n\n" + control(O1))
    assert batch.items == []


@pytest.mark.parametrize(
    "body",
    [
        b"event: control\ndata: not json\n\n",
        b'event: control\ndata: {"streamCursor":"1"}\n\n',
        b"event: data\ndata: {not json\n\n",
    ],
)
def test_sse_malformed_events_are_protocol_errors(body: bytes) -> None:
    reader = LiveReader(StreamCore(URL, content_type="application/json"), "-1", "sse")
    request(reader)
    reader.on_stream_open(SSE_HEAD)
    with pytest.raises(StreamProtocolError):
        reader.feed(body)


def test_sse_with_another_content_type_is_a_protocol_error() -> None:
    reader = LiveReader(StreamCore(URL, content_type="application/json"), "-1", "sse")
    request(reader)
    with pytest.raises(StreamProtocolError):
        reader.on_stream_open(Response(200, {"content-type": "application/json"}))


def test_sse_error_status_is_typed() -> None:
    reader = LiveReader(StreamCore(URL, content_type="application/json"), "-1", "sse")
    request(reader)
    with pytest.raises(StreamGone):
        reader.on_response(resp(410))


def test_connections_that_end_without_a_control_event_back_off_then_fail() -> None:
    reader = LiveReader(
        StreamCore(URL, content_type="application/json"), "-1", "sse", max_failures=1
    )
    request(reader)
    reader.on_stream_open(SSE_HEAD)
    reader.on_stream_end()
    assert isinstance(reader.next_step(), Sleep)
    request(reader)
    reader.on_stream_open(SSE_HEAD)
    with pytest.raises(StreamProtocolError, match="without a control event"):
        reader.on_stream_end()


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        LiveReader(StreamCore(URL), "-1", "poll")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LiveReader(StreamCore(URL), "", "sse")


def test_overload_answers_are_retried_after_retry_after() -> None:
    reader = LiveReader(StreamCore(URL), O1, "long-poll", max_failures=2)
    request(reader)
    assert reader.on_response(resp(503, {"Retry-After": "1.5"})) == []
    step = reader.next_step()
    assert isinstance(step, Sleep) and step.seconds == 1.5
    request(reader)
    assert reader.on_response(resp(429)) == []
    assert isinstance(reader.next_step(), Sleep)
    request(reader)
    with pytest.raises(StreamError) as info:
        reader.on_response(resp(429))
    assert info.value.status == 429  # type: ignore[attr-defined]
