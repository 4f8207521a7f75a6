"""Durable Workflows: the reference runtime of the Durable Workflows protocol.

Durable workflows layered on Durable Streams: a run is a history stream that only
the engine writes and an inbox stream that clients (browsers included) append to.
"""

__version__ = "0.1.0.dev0"

#: Protocol versions (MAJOR.MINOR) this package implements.
PROTOCOL_VERSIONS = ("1.0",)

__all__ = ["PROTOCOL_VERSIONS", "__version__"]
