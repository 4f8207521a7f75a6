"""Wire-level facts of the Durable Streams protocol shared by our server and client.

Header names, the offset format, and the parsers for the few header values with
strict syntax (``Stream-TTL``, ``Stream-Expires-At``, producer integers). Nothing
here does I/O; both sides import it so they agree on spelling and syntax.
"""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime

# Header names (lower case, as ASGI and httpx present them).
CONTENT_TYPE = "content-type"
STREAM_NEXT_OFFSET = "stream-next-offset"
STREAM_UP_TO_DATE = "stream-up-to-date"
STREAM_CLOSED = "stream-closed"
STREAM_CURSOR = "stream-cursor"
STREAM_SEQ = "stream-seq"
STREAM_TTL = "stream-ttl"
STREAM_EXPIRES_AT = "stream-expires-at"
STREAM_FORKED_FROM = "stream-forked-from"
STREAM_FORK_OFFSET = "stream-fork-offset"
STREAM_FORK_SUB_OFFSET = "stream-fork-sub-offset"
STREAM_SSE_DATA_ENCODING = "stream-sse-data-encoding"
PRODUCER_ID = "producer-id"
PRODUCER_EPOCH = "producer-epoch"
PRODUCER_SEQ = "producer-seq"
PRODUCER_EXPECTED_SEQ = "producer-expected-seq"
PRODUCER_RECEIVED_SEQ = "producer-received-seq"
WEBHOOK_SIGNATURE = "webhook-signature"

# Query parameters.
OFFSET_PARAM = "offset"
LIVE_PARAM = "live"
CURSOR_PARAM = "cursor"

# Offset sentinels (PROTOCOL.md section 8); a server never mints these.
OFFSET_START = "-1"
OFFSET_NOW = "now"

#: Our offsets are ``<records:016d>_<bytes:016d>``: the number of appends and the
#: number of stored bytes up to that position. Both only grow, so fixed-width
#: decimal makes byte-wise string order equal stream order, as section 8 requires.
#: (The Node reference server uses the same shape; clients treat it as opaque.)
OFFSET_ZERO = "0000000000000000_0000000000000000"
_OFFSET_RE = re.compile(r"^[0-9]{16}_[0-9]{16}$")

JSON_CONTENT_TYPE = "application/json"
DEFAULT_CONTENT_TYPE = "application/octet-stream"

#: JavaScript's Number.MAX_SAFE_INTEGER bounds producer epochs and sequences.
MAX_SAFE_INTEGER = 2**53 - 1

_DECIMAL_RE = re.compile(r"^(0|[1-9][0-9]*)$")
_DIGITS_RE = re.compile(r"^[0-9]+$")
_MEDIA_TYPE_RE = re.compile(r"^[\w.+-]+/[\w.+-]+")


def is_offset(value: str) -> bool:
    """True for a well-formed real offset (not a sentinel)."""
    return _OFFSET_RE.match(value) is not None


def make_offset(records: int, size: int) -> str:
    return f"{records:016d}_{size:016d}"


def split_offset(offset: str) -> tuple[int, int]:
    """The (records, bytes) pair of a well-formed offset."""
    records, size = offset.split("_")
    return int(records), int(size)


def advance_offset(offset: str, nbytes: int) -> str:
    """The offset after one more stored record of ``nbytes`` bytes."""
    records, size = split_offset(offset)
    return make_offset(records + 1, size + nbytes)


def parse_ttl(value: str) -> int | None:
    """``Stream-TTL`` seconds: a plain decimal without sign, point or leading zero."""
    return int(value) if _DECIMAL_RE.match(value) else None


def parse_non_negative(value: str) -> int | None:
    """A plain non-negative decimal (``Stream-Fork-Sub-Offset``)."""
    return int(value) if _DECIMAL_RE.match(value) else None


def parse_producer_int(value: str) -> int | None:
    """``Producer-Epoch``/``Producer-Seq``: digits only, at most 2^53-1."""
    if not _DIGITS_RE.match(value):
        return None
    number = int(value)
    return number if number <= MAX_SAFE_INTEGER else None


def parse_expires_at(value: str) -> datetime | None:
    """An RFC 3339 timestamp with a zone (``Z`` or ``+hh:mm``), as UTC."""
    text = value.strip()
    if not re.match(
        r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$", text
    ):
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
    except ValueError:
        return None
    return parsed.astimezone(UTC)


def is_true(value: str | None) -> bool:
    """``Stream-Closed`` counts only when its value is ``true`` (any case)."""
    return value is not None and value.strip().lower() == "true"


def media_type(content_type: str | None) -> str:
    """The lower-cased media type without parameters (``text/plain; charset=x``)."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def is_valid_content_type(content_type: str | None) -> bool:
    return content_type is not None and _MEDIA_TYPE_RE.match(content_type.strip()) is not None


def is_json(content_type: str | None) -> bool:
    return media_type(content_type) == JSON_CONTENT_TYPE


def sse_is_text(content_type: str | None) -> bool:
    """SSE carries text and JSON streams as UTF-8; everything else as base64."""
    kind = media_type(content_type)
    return kind.startswith("text/") or kind == JSON_CONTENT_TYPE


# Cursors (PROTOCOL.md section 10.1): 20 s intervals since 2024-10-09T00:00:00Z.
CURSOR_EPOCH = datetime(2024, 10, 9, tzinfo=UTC).timestamp()
CURSOR_INTERVAL_SECONDS = 20


def response_cursor(client_cursor: str | None, now: float) -> str:
    """The cursor for a live response; strictly above a client's current-or-future one.

    Jitter of 1 to 3600 s keeps clients of one CDN key from looping on a cached reply.
    """
    current = int((now - CURSOR_EPOCH) // CURSOR_INTERVAL_SECONDS)
    if client_cursor is None or not _DIGITS_RE.match(client_cursor):
        return str(current)
    client = int(client_cursor)
    if client < current:
        return str(current)
    jitter_seconds = random.randint(1, 3600)
    return str(client + max(1, -(-jitter_seconds // CURSOR_INTERVAL_SECONDS)))
