"""Message classification with a memo: each distinct message is schema-checked once per process.

Validating a message against its event schema costs about a millisecond, and a shell that
builds an :class:`~.activation.Activation` per wake would otherwise check the whole history
and inbox again on every wake. The memo is keyed by the message's canonical JSON text, so a
message that changes in any way is checked again. It holds no I/O and no clock.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..schemas import identify

__all__ = ["classify_message"]

_MAX_ENTRIES = 200_000
_SEEN: dict[tuple[str, bytes], str] = {}


def classify_message(message: Any, stream: str) -> str:
    """``identify(message, stream)``, remembered for messages already found valid."""
    try:
        text = json.dumps(message, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return identify(message, stream)  # raises SchemaError with the schema's words
    # A 128-bit digest: a crafted message cannot pass for one validated before.
    key = (stream, hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest())
    event = _SEEN.get(key)
    if event is not None:
        return event
    event = identify(message, stream)
    if len(_SEEN) >= _MAX_ENTRIES:
        _SEEN.pop(next(iter(_SEEN)))
    _SEEN[key] = event
    return event
