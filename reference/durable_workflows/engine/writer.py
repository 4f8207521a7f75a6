"""Fenced history appends and the ending protocol (fencing.md).

One :class:`FencedWriter` belongs to one activation. Each append carries
``Stream-Seq`` = the number of history messages before it, 16 digits
(FENCE-004/005), and producer headers with a ``Producer-Id`` unique to the
activation, epoch 0, seq per request (FENCE-006/007). A request whose outcome is
unknown is sent again unchanged (FENCE-013); ``409``/``403`` fence the activation
(FENCE-010), after which the writer refuses everything (FENCE-011). A batch the
server refuses as too large (413) is sent as several appends, in order, each with
its own ``Stream-Seq`` (security.md, limits); a single message it refuses is
:class:`MessageTooLarge`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from ..streams import (
    AsyncStream,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    StreamClosed,
    StreamConflict,
    StreamForbidden,
    StreamHTTPError,
    StreamNetworkError,
    StreamNotFound,
)
from .namespace import strip_read_annotations

__all__ = [
    "Fenced",
    "FencedWriter",
    "MessageTooLarge",
    "WriterError",
    "finish_run",
    "stream_seq",
]

#: How often an append with an unknown outcome is sent again before giving up.
DEFAULT_MAX_ATTEMPTS = 8


class Fenced(Exception):
    """The activation lost the run (FENCE-010) or gave up on an unknown outcome
    (FENCE-015): it must stop at once and record nothing more (FENCE-011)."""


class WriterError(Exception):
    """The request or the stream is wrong (400, 404, 410, 413): the activation ends
    and the error is reported (fencing.md, answers to a history append)."""


class MessageTooLarge(WriterError):
    """The stream server refused one history message as too large (413): it can never
    be recorded, so the run must end without it (SEC-035)."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


def stream_seq(position: int) -> str:
    """FENCE-004: the position as exactly 16 decimal digits."""
    if not 0 <= position < 10**16:
        raise ValueError(f"position {position} out of range")
    return f"{position:016d}"


def new_producer_id(worker: str = "dwf") -> str:
    """FENCE-007: a readable prefix and 122 random bits."""
    return f"{worker}-{uuid.uuid4()}"


class FencedWriter:
    """The only way an activation writes its run's history."""

    def __init__(
        self,
        history: AsyncStream,
        position: int,
        *,
        worker: str = "dwf",
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_delay: float = 0.1,
    ) -> None:
        self.history = history
        self.position = position
        self.producer_id = new_producer_id(worker)
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self.fenced = False
        self.closed = False
        self.appends = 0
        #: The history's tail offset after the last acknowledged append, when the
        #: server said it (a duplicate's 204 may not): where a later read resumes.
        self.next_offset: str | None = None
        self._producer = history.producer(self.producer_id, epoch=0, seq=0)
        self._lock = asyncio.Lock()  # FENCE-008: one append in flight

    def _check(self) -> None:
        if self.fenced:
            raise Fenced("this activation was fenced; it records nothing more (FENCE-011)")

    async def append(self, messages: Sequence[dict[str, Any]], *, close: bool = False) -> None:
        """Append ``messages`` as ONE request (MODEL-029), optionally closing the history.

        Returns once the server has acknowledged them (200, or 204 for a retry that
        had landed, FENCE-009); raises :class:`Fenced` or :class:`WriterError`. A batch
        the server finds too large (413) goes out as two halves, each split again if
        need be; only the last part closes the history.
        """
        if not messages:
            raise ValueError("an append needs at least one message")
        async with self._lock:
            await self._append(list(messages), close)

    async def _append(self, messages: list[dict[str, Any]], close: bool) -> None:
        try:
            await self._append_once(messages, close)
        except PayloadTooLarge as exc:
            if len(messages) == 1:
                size = len(json.dumps(messages, separators=(",", ":")).encode("utf-8"))
                raise MessageTooLarge(str(exc), size) from exc
            # Nothing was stored and the producer's seq was not used (no 2xx), so the
            # parts are new requests at the same position.
            half = len(messages) // 2
            await self._append(messages[:half], False)
            await self._append(messages[half:], close)

    async def _append_once(self, messages: list[dict[str, Any]], close: bool) -> None:
        self._check()
        seq = stream_seq(self.position)
        attempt = 0
        while True:
            attempt += 1
            try:
                # The producer keeps (id, epoch, seq) until a 2xx, so a repeat
                # of this call is the identical request (FENCE-013/014).
                result = await self._producer.append_json_batch(messages, seq=seq, close=close)
            except (StreamNetworkError, ServerError, RateLimited) as exc:
                if attempt >= self.max_attempts:
                    self.fenced = True  # FENCE-015
                    raise Fenced(f"gave up after {attempt} attempts: {exc}") from exc
                await asyncio.sleep(min(2.0, self.retry_delay * 2 ** (attempt - 1)))
                continue
            except (StreamConflict, StreamForbidden) as exc:
                self.fenced = True  # FENCE-010
                raise Fenced(f"fenced at position {self.position}: {exc}") from exc
            except PayloadTooLarge:
                raise
            except StreamHTTPError as exc:
                self.fenced = True
                raise WriterError(str(exc)) from exc
            self.position += len(messages)  # FENCE-005
            self.appends += 1
            self.next_offset = result.next_offset
            self.closed = self.closed or close or result.closed
            return

    def created(self, count: int, next_offset: str) -> None:
        """The history was created holding this writer's first ``count`` messages
        (FENCE-001): what an acknowledged append of them at position 0 would leave."""
        if self.position != 0 or self.appends:
            raise ValueError("only a writer that has appended nothing can create")
        self.position = count
        self.appends = 1
        self.next_offset = next_offset

    async def close_history(self) -> None:
        """Close-only POST on the history: no Stream-Seq, no producer headers (MODEL-034)."""
        async with self._lock:
            self._check()
            await _with_retries(self.history.close, self.max_attempts, self.retry_delay)
            self.closed = True


async def _with_retries(call: Callable[[], Any], max_attempts: int, retry_delay: float) -> Any:
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except (StreamNetworkError, ServerError, RateLimited) as exc:
            if attempt >= max_attempts:
                raise Fenced(f"gave up after {attempt} attempts: {exc}") from exc
            await asyncio.sleep(min(2.0, retry_delay * 2 ** (attempt - 1)))


async def read_to_final_offset(inbox: AsyncStream) -> list[Any]:
    """Every message of a closed inbox (a read that reports ``Stream-Closed``)."""
    items: list[Any] = []
    offset = "-1"
    for _ in range(10_000):
        part = await inbox.read(offset)
        items.extend(strip_read_annotations(part.items))
        if part.closed:
            return items
        if part.next_offset == offset and part.up_to_date:
            raise WriterError(f"{inbox.url} was closed but a read does not say so")
        offset = part.next_offset
    raise WriterError(f"{inbox.url}: too many reads to reach the final offset")


async def finish_run(
    writer: FencedWriter,
    inbox: AsyncStream,
    rejections: Callable[[list[Any]], Sequence[dict[str, Any]]],
) -> None:
    """The ending protocol (MODEL-032..034, MODEL-032..035), once the terminal run
    event is acknowledged: close the inbox, read it to its final offset, append the
    rejections ``rejections(inbox_messages)`` with ``Stream-Closed: true`` (or close
    the history with a close-only POST when there are none).

    Every step is idempotent or fenced, so a crash anywhere is repaired by the next
    activation (MODEL-035).
    """
    if writer.fenced:
        raise Fenced("a fenced activation closes nothing (FENCE-011)")
    try:
        await _with_retries(inbox.close, writer.max_attempts, writer.retry_delay)
    except StreamNotFound:
        # The engine creates the inbox before run-started (MODEL-016); if it is gone
        # anyway, recreate it so that late clients get a clear 409 (MODEL-004).
        await inbox.create_json()
        await _with_retries(inbox.close, writer.max_attempts, writer.retry_delay)
    final = await read_to_final_offset(inbox)
    messages = list(rejections(final))
    try:
        if messages:
            await writer.append(messages, close=True)
        else:
            await writer.close_history()
    except Fenced as exc:
        # Another activation closed the history first with the same final append
        # (MODEL-037): nothing is left to do.
        if isinstance(exc.__cause__, StreamClosed):
            writer.closed = True
            return
        raise
