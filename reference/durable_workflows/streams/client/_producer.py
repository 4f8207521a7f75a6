"""The idempotent producer (PROTOCOL.md section 5.2.1), sans-IO.

Every append carries ``Producer-Id``, ``Producer-Epoch`` and ``Producer-Seq``; the
sequence counts requests (not messages) and starts at 0 in each epoch. A request
whose answer was lost is sent again unchanged, so the server can store it once:
200 means stored now, 204 means stored before (a duplicate). Requests go one at a
time (no pipelining), so a failed request leaves the sequence where it was and
the next request reuses it.

On 403 the server holds a newer epoch: this producer is a zombie. By default that
raises :class:`ProducerFenced`; with ``auto_claim`` the producer takes the epoch
after the server's one (seq 0) and sends the request again, once. That is for
ephemeral producers that do not keep their epoch, and it deliberately fences
whoever held the id before.
"""

from __future__ import annotations

from .. import protocol as p
from ._core import (
    AppendResult,
    Appends,
    Op,
    ProducerHeaders,
    Retries,
    StreamCore,
    build_append,
    fail,
    int_header,
    parse_append,
)

__all__ = ["ProducerCore"]


class ProducerCore(Appends):
    """Producer state (id, epoch, next seq) and the append op that uses it."""

    def __init__(
        self,
        stream: StreamCore,
        producer_id: str,
        *,
        epoch: int = 0,
        seq: int = 0,
        auto_claim: bool = False,
        max_retries: int = 3,
        retry_base_delay: float = 0.05,
    ) -> None:
        if not producer_id:
            raise ValueError("producer_id must be a non-empty string")
        ProducerHeaders(producer_id, epoch, seq).apply({})  # range checks
        self.stream = stream
        self.producer_id = producer_id
        self.epoch = epoch
        self.seq = seq
        self.auto_claim = auto_claim
        self.max_retries = max_retries
        self.retry_base_delay = retry_base_delay

    def bump_epoch(self) -> int:
        """Start the next epoch (after a restart): epoch + 1, seq 0. Returns the new epoch."""
        self.epoch += 1
        self.seq = 0
        return self.epoch

    def _stream_core(self) -> StreamCore:
        return self.stream

    def _append(
        self, data: bytes, content_type: str | None, seq: str | None, close: bool
    ) -> Op[AppendResult]:
        retries = Retries(self.max_retries, base=self.retry_base_delay)
        claimed = False
        while True:
            headers = ProducerHeaders(self.producer_id, self.epoch, self.seq)
            request = build_append(
                self.stream.url,
                data,
                content_type=content_type,
                seq=seq,
                close=close,
                producer=headers,
            )
            # A repeat of the same request is safe: the server deduplicates it.
            response = yield from retries.send(request)
            if response.status in (200, 204):
                self.seq = headers.seq + 1
                return parse_append(request, response)
            server_epoch = int_header(response, p.PRODUCER_EPOCH)
            if (
                response.status == 403
                and self.auto_claim
                and not claimed
                and server_epoch is not None
            ):
                claimed = True
                self.epoch = max(self.epoch, server_epoch) + 1
                self.seq = 0
                continue
            yield from fail(request, response)
