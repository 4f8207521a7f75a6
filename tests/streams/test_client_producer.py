"""The idempotent producer's sans-IO logic: sequencing, retries, fencing, auto-claim."""

from __future__ import annotations

from typing import Any

import pytest

from durable_workflows.streams import (
    ProducerFenced,
    ProducerSequenceGap,
    StreamNetworkError,
)
from durable_workflows.streams.client._core import Request, Response, Sleep, StreamCore
from durable_workflows.streams.client._producer import ProducerCore
from tests.support import drive

URL = "http://h/v1/stream/s"
O1 = "0000000000000000_0000000000000010"


def resp(status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(status, {k.lower(): v for k, v in (headers or {}).items()})


def producer(**options: Any) -> ProducerCore:
    return ProducerCore(StreamCore(URL, content_type="application/json"), "worker-1", **options)


def ids(steps: list[Any]) -> list[tuple[str, str, str] | str]:
    out: list[tuple[str, str, str] | str] = []
    for step in steps:
        if isinstance(step, Sleep):
            out.append("sleep")
        else:
            h = step.headers
            out.append((h["Producer-Id"], h["Producer-Epoch"], h["Producer-Seq"]))
    return out


def ok(step: Any) -> Response:
    h = step.headers
    return resp(
        200,
        {
            "Stream-Next-Offset": O1,
            "Producer-Epoch": h["Producer-Epoch"],
            "Producer-Seq": h["Producer-Seq"],
        },
    )


def test_seq_counts_requests_from_zero() -> None:
    prod = producer()
    for expected in range(3):
        result, steps = drive(prod.append_json_batch([1, 2, 3]), ok)
        assert ids(steps) == [("worker-1", "0", str(expected))]
        assert (result.producer_epoch, result.producer_seq) == (0, expected)
        assert not result.duplicate
    assert prod.seq == 3


def test_a_204_is_a_duplicate() -> None:
    result, _ = drive(producer().append_json(1), lambda s: resp(204, {"Producer-Seq": "0"}))
    assert result.duplicate and result.next_offset is None


def test_close_only_204_is_not_called_a_duplicate() -> None:
    result, steps = drive(
        producer().close(), lambda s: resp(204, {"Stream-Closed": "true", "Stream-Next-Offset": O1})
    )
    assert result.closed and not result.duplicate
    assert steps[0].content == b"" and steps[0].headers["Stream-Closed"] == "true"


def test_network_failures_resend_the_same_request() -> None:
    failures = iter([True, True, False])

    def flaky(step: Any) -> Response | None:
        if isinstance(step, Sleep):
            return None
        if next(failures):
            raise StreamNetworkError("reset")
        return resp(204)  # the first attempt had been stored after all

    prod = producer(seq=4)
    result, steps = drive(prod.append_json({"a": 1}, seq="0009"), flaky)
    assert result.duplicate
    requests = [s for s in steps if isinstance(s, Request)]
    assert len({(r.content, tuple(sorted(r.headers.items()))) for r in requests}) == 1
    assert requests[0].headers["Stream-Seq"] == "0009"
    assert ids(steps) == [("worker-1", "0", "4"), "sleep"] * 2 + [("worker-1", "0", "4")]
    assert prod.seq == 5


def test_retries_are_bounded_and_leave_the_seq_for_the_next_request() -> None:
    def down(step: Any) -> Response | None:
        if isinstance(step, Sleep):
            return None
        raise StreamNetworkError("down")

    prod = producer(max_retries=2)
    with pytest.raises(StreamNetworkError):
        drive(prod.append_json(1), down)
    assert prod.seq == 0


def test_stale_epoch_raises_fenced_without_auto_claim() -> None:
    prod = producer(epoch=1)
    with pytest.raises(ProducerFenced) as info:
        drive(prod.append_json(1), lambda s: resp(403, {"Producer-Epoch": "3"}))
    assert (info.value.current_epoch, info.value.epoch) == (3, 1)
    assert (prod.epoch, prod.seq) == (1, 0)


def test_auto_claim_takes_the_next_epoch_once() -> None:
    answers = iter([resp(403, {"Producer-Epoch": "5"})])
    prod = producer(auto_claim=True, seq=7)
    result, steps = drive(prod.append_json(1), lambda s: next(answers, None) or ok(s))
    assert ids(steps) == [("worker-1", "0", "7"), ("worker-1", "6", "0")]
    assert (prod.epoch, prod.seq) == (6, 1)
    assert result.producer_epoch == 6


def test_auto_claim_gives_up_when_fenced_again() -> None:
    prod = producer(auto_claim=True)
    with pytest.raises(ProducerFenced):
        drive(prod.append_json(1), lambda s: resp(403, {"Producer-Epoch": "9"}))


def test_sequence_gap_is_raised() -> None:
    with pytest.raises(ProducerSequenceGap) as info:
        drive(
            producer(seq=3).append_json(1),
            lambda s: resp(409, {"Producer-Expected-Seq": "1", "Producer-Received-Seq": "3"}),
        )
    assert (info.value.expected, info.value.received) == (1, 3)


def test_overload_is_retried_with_the_same_headers() -> None:
    answers = iter([resp(503), None, resp(429), None])

    def answer(step: Any) -> Response | None:
        got = next(answers, "done")
        return ok(step) if got == "done" else got  # type: ignore[return-value]

    result, steps = drive(producer().append_json(1), answer)
    assert result.producer_seq == 0
    assert ids(steps) == [("worker-1", "0", "0"), "sleep"] * 2 + [("worker-1", "0", "0")]


def test_bump_epoch_restarts_the_sequence() -> None:
    prod = producer(seq=9)
    assert prod.bump_epoch() == 1
    _, steps = drive(prod.append_json(1), ok)
    assert ids(steps) == [("worker-1", "1", "0")]


def test_invalid_producer_settings() -> None:
    with pytest.raises(ValueError):
        producer_core = ProducerCore(StreamCore(URL), "")
        del producer_core
    with pytest.raises(ValueError):
        producer(epoch=-1)


def test_overload_retry_honours_retry_after() -> None:
    answers = iter([resp(429, {"Retry-After": "0.25"})])

    def answer(step: Any) -> Response | None:
        if isinstance(step, Sleep):
            return None
        return next(answers, None) or ok(step)

    _, steps = drive(producer().append_json(1), answer)
    assert [s.seconds for s in steps if isinstance(s, Sleep)] == [0.25]
