"""The reference runtime's conformance adapter (spec/adapter.md): a test interface,
mounted by ``dwf serve --conformance`` only. Never expose it in production (SEC-017)."""

from __future__ import annotations

from .app import FEATURES, PREFIX, ConformanceAdapter, conformance_harness
from .interpreter import BodyLog, ProgramRegistry

__all__ = [
    "FEATURES",
    "PREFIX",
    "BodyLog",
    "ConformanceAdapter",
    "ProgramRegistry",
    "conformance_harness",
]
