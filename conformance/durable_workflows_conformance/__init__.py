"""The Durable Workflows conformance suite: drives any engine over HTTP."""

__version__ = "0.1.0.dev0"

__all__ = ["__version__"]
