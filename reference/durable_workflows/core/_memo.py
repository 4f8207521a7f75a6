"""Message classification with a memo for what the compiled checks do not pass.

A valid message passes the compiled schema checks (:mod:`.._compiled_schemas`) and the
event rules in a few microseconds, less than hashing it, so it is checked every time. A
message they refuse goes to ``jsonschema`` for the words of its error, which costs about
a millisecond; that outcome is remembered, so an inbox full of junk costs one full check
per distinct message, not one per message and activation (issue: bounded cost per
request). The memo is keyed by the message's canonical JSON text, so a message that
changes in any way is checked again. It holds no I/O and no clock.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, cast

from ..schemas import STREAM_EVENTS, SchemaError, Stream, identify, identify_valid

__all__ = ["classify_message"]

_MAX_ENTRIES = 200_000
_SEEN: dict[tuple[str, bytes], str | SchemaError] = {}


def classify_message(message: Any, stream: str) -> str:
    """``identify(message, stream)``, remembered for messages already checked."""
    # A valid message passes the compiled checks in a few microseconds, less than hashing
    # it; the memo keeps refusals (and anything the compiled checks cannot confirm).
    if stream in STREAM_EVENTS:
        event = identify_valid(message, cast(Stream, stream))
        if event is not None:
            return event
    try:
        text = json.dumps(message, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return identify(message, stream)  # raises SchemaError with the schema's words
    # A 128-bit digest: a crafted message cannot pass for one validated before.
    key = (stream, hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest())
    known = _SEEN.get(key)
    if isinstance(known, SchemaError):
        raise known.with_traceback(None)
    if known is not None:
        return known
    try:
        event = identify(message, stream)
    except SchemaError as exc:
        exc.__traceback__ = None  # kept for its words only, not its frames
        _remember(key, exc)
        raise
    _remember(key, event)
    return event


def _remember(key: tuple[str, bytes], outcome: str | SchemaError) -> None:
    if len(_SEEN) >= _MAX_ENTRIES:
        _SEEN.pop(next(iter(_SEEN)))
    _SEEN[key] = outcome
