"""The I/O shells of the reference runtime, over the sans-IO core.

- :mod:`.namespace`: stream URLs of a namespace and the reads and creations of them.
- :mod:`.writer`: fenced history appends (Stream-Seq + idempotent producer) and the
  ending protocol (fencing.md).
- :mod:`.runner`: one activation end to end, shared by the worker and the handler.
- :mod:`.worker`: the long-running worker (waking.md, long-running shape).
- :mod:`.handler`: the request-driven handler (plain wakes and subscription webhooks).
- :mod:`.app`: ``dwf serve``: streams server, handler and worker on one port.

Submodules are imported on use, so a client command does not load the server.
"""
