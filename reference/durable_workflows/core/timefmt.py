"""Timestamps as the protocol writes them (EVT-011/012): UTC, ``Z``, three fractional digits.

Instants are kept as timezone-aware ``datetime`` values; every recorded timestamp is a
whole millisecond, so comparisons between a clock reading and a recorded deadline are made
between whole milliseconds (a deadline is never met early by rounding).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["ceil_ms", "floor_ms", "format_ts", "parse_ts", "plus_ms"]

_MS = timedelta(milliseconds=1)


def _utc(instant: datetime) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("instants passed to the core must be timezone-aware")
    return instant.astimezone(UTC)


def floor_ms(instant: datetime) -> datetime:
    """``instant`` in UTC, cut to the whole millisecond (a clock reading)."""
    instant = _utc(instant)
    return instant.replace(microsecond=instant.microsecond // 1000 * 1000)


def ceil_ms(instant: datetime) -> datetime:
    """``instant`` in UTC, rounded up to the whole millisecond (a deadline, RETRY-004)."""
    floored = floor_ms(instant)
    return floored if floored == _utc(instant) else floored + _MS


def plus_ms(instant: datetime, ms: float) -> datetime:
    """``instant`` plus ``ms`` milliseconds (fractions kept; round with ceil_ms)."""
    return instant + timedelta(milliseconds=ms)


def format_ts(instant: datetime) -> str:
    """``2026-11-24T10:00:00.000Z`` for a whole-millisecond instant (floored otherwise)."""
    instant = floor_ms(instant)
    return instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}Z"


def parse_ts(text: str) -> datetime:
    """Parse an RFC 3339 UTC timestamp with ``Z`` (any number of fractional digits)."""
    if not text.endswith("Z"):
        raise ValueError(f"timestamp {text!r} does not end in Z")
    body = text[:-1]
    frac = ""
    if "." in body:
        body, frac = body.split(".", 1)
    base = datetime.strptime(body, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    micros = int((frac + "000000")[:6]) if frac else 0
    extra = 1 if frac[6:].strip("0") else 0  # sub-microsecond digits: round up, never early
    return base + timedelta(microseconds=micros + extra)
