"""The incremental SSE parser: the same events whatever the chunking."""

from __future__ import annotations

import pytest

from durable_workflows.streams.client._sse import SSEEvent, SSEParser

PROTOCOL_EXAMPLE = (
    b"event: data\n"
    b"data: [\n"
    b'data: {"k":"v"},\n'
    b'data: {"k":"w"},\n'
    b"data: ]\n"
    b"\n"
    b"event: control\n"
    b'data: {"streamNextOffset":"123456_789","streamCursor":"abc"}\n'
    b"\n"
)
EXPECTED = [
    SSEEvent("data", '[\n{"k":"v"},\n{"k":"w"},\n]'),
    SSEEvent("control", '{"streamNextOffset":"123456_789","streamCursor":"abc"}'),
]


def parse_all(body: bytes, chunk: int) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for start in range(0, len(body), chunk):
        events += parser.feed(body[start : start + chunk])
    return events + parser.finish()


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000])
def test_chunking_never_changes_the_events(chunk: int) -> None:
    assert parse_all(PROTOCOL_EXAMPLE, chunk) == EXPECTED


@pytest.mark.parametrize("newline", [b"\r\n", b"\r", b"\n"])
@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_every_line_ending_is_accepted(newline: bytes, chunk: int) -> None:
    assert parse_all(PROTOCOL_EXAMPLE.replace(b"\n", newline), chunk) == EXPECTED


def test_utf8_split_across_chunks_is_decoded() -> None:
    body = 'event: data\ndata: ["héllo ✓"]\n\n'.encode()
    assert parse_all(body, 1) == [SSEEvent("data", '["héllo ✓"]')]


def test_comments_ids_retry_and_unknown_fields_are_ignored() -> None:
    body = b": keep-alive\nid: 7\nretry: 10\nfoo: bar\nevent: control\ndata:{}\n\n"
    assert parse_all(body, 4) == [SSEEvent("control", "{}")]


def test_only_one_space_after_the_colon_is_dropped() -> None:
    assert parse_all(b"data:  two\n\n", 100) == [SSEEvent("message", " two")]


def test_an_event_without_data_is_not_dispatched() -> None:
    assert parse_all(b"event: control\n\nevent: data\ndata:\n\n", 100) == [SSEEvent("data", "")]


def test_a_leading_bom_is_skipped() -> None:
    assert parse_all(b"\xef\xbb\xbfdata: x\n\n", 1) == [SSEEvent("message", "x")]


def test_an_unterminated_event_at_the_end_is_dropped() -> None:
    parser = SSEParser()
    assert parser.feed(b"event: data\ndata: [1]\n") == []
    assert parser.finish() == []


def test_a_final_cr_waits_for_a_possible_lf() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r\n\r") == []
    assert parser.feed(b"\n") == [SSEEvent("message", "a")]
