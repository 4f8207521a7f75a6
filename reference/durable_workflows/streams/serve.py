"""``dwf streams serve``: run the embedded Durable Streams server with uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .server import DEFAULT_MAX_BODY_BYTES, Cors, build_app

log = logging.getLogger(__name__)

#: How long the server waits for its ``before_shutdown`` work when it stops.
BEFORE_SHUTDOWN_SECONDS = 10.0


if TYPE_CHECKING:
    import uvicorn

    from ..access import KeySet

NO_AUTH_WARNING = (
    "WARNING: authentication is OFF (--insecure-no-auth): any HTTP client that reaches "
    "{url} can create, append to, close and delete every stream, forge any run's "
    "history and delete its inbox. For tests only; never expose this server."
)


class SetupError(Exception):
    """A server option that cannot be honoured (exit status 2)."""


@dataclass
class Access:
    """How a server started by a ``serve`` command authenticates requests."""

    keys: KeySet | None  # None: no authentication
    key_file: Path | None
    cors: Cors

    def ready_suffix(self) -> str:
        """The end of the ``ready`` line: where the keys are, or that there are none."""
        return "auth off" if self.key_file is None else f"keys {self.key_file}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def setup_access(
    host: str,
    data_dir: str | Path | None,
    key_file: str | Path | None,
    insecure_no_auth: bool,
    cors_origins: Sequence[str] = (),
) -> Access:
    """The keys a server verifies credentials with: ``key_file``, else ``keys.json`` in
    the data directory, else (memory storage) a new file in a fresh temporary
    directory; each is created with one new key when missing. ``insecure_no_auth``
    turns authentication off, on a loopback address only."""
    from ..access import KeyFileError, KeySet

    cors = Cors(frozenset(cors_origins)) if cors_origins else Cors(frozenset())
    if insecure_no_auth:
        if not is_loopback(host):
            raise SetupError(
                f"refusing --insecure-no-auth on {host}: without authentication the server "
                "may listen on a loopback address only"
            )
        # A test server: any origin, as the official conformance suite expects.
        return Access(None, None, Cors(frozenset(cors_origins)) if cors_origins else Cors())
    if key_file is None:
        base = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="dwf-"))
        key_file = base / "keys.json"
    try:
        keys = KeySet.load_or_create(key_file)
    except (KeyFileError, OSError) as exc:
        raise SetupError(f"cannot use the key file {key_file}: {exc}") from exc
    return Access(keys, Path(key_file), cors)


def graceful_server(
    config: uvicorn.Config, before_shutdown: Callable[[], Awaitable[None]]
) -> uvicorn.Server:
    """A uvicorn server that awaits ``before_shutdown`` while it still serves, then
    shuts down: the place to end live reads (and stop in-process clients) so that
    no request is cancelled mid-response by the graceful-shutdown timeout."""
    import uvicorn

    class Graceful(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            try:
                await asyncio.wait_for(before_shutdown(), BEFORE_SHUTDOWN_SECONDS)
            except Exception:
                log.exception("before shutdown")
            await super().shutdown(sockets)

    return Graceful(config)


def run_server(
    host: str,
    port: int,
    data_dir: str | Path | None,
    long_poll_timeout: float,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    *,
    key_file: str | Path | None = None,
    insecure_no_auth: bool = False,
    cors_origins: Sequence[str] = (),
) -> int:
    """Serve ``/v1/stream/*`` on host:port until SIGINT/SIGTERM; returns the exit code.

    ``data_dir`` selects durable SQLite storage there; None keeps streams in memory.
    Requests need a credential (:func:`setup_access`) unless ``insecure_no_auth``.
    """
    import uvicorn

    try:
        access = setup_access(host, data_dir, key_file, insecure_no_auth, cors_origins)
    except SetupError as exc:
        print(f"dwf streams serve: {exc}", file=sys.stderr)
        return 2
    app = build_app(
        None if data_dir is None else Path(data_dir),
        long_poll_timeout=long_poll_timeout,
        max_body_bytes=max_body_bytes,
        keys=access.keys,
        cors=access.cors,
    )
    # Bind first so port 0 works and the printed URL is the real one; a parent
    # process (tests, tools) waits for the "ready" line.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say
    # so, and without it a response's headers and body wait on Nagle (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        print(f"dwf streams serve: cannot listen on {host}:{port}: {error}", file=sys.stderr)
        return 1
    sock.listen(1024)  # connections queue from here on, before uvicorn accepts
    bound_port = sock.getsockname()[1]
    storage = "memory" if data_dir is None else f"sqlite in {data_dir}"
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound_port}"
    if access.keys is None:
        print(NO_AUTH_WARNING.format(url=url), file=sys.stderr, flush=True)
    print(f"ready {url} ({storage}) {access.ready_suffix()}", flush=True)
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        # Live reads are ended before shutdown (end_live_reads); anything still open
        # after a second is cancelled.
        timeout_graceful_shutdown=1,
    )

    async def before_shutdown() -> None:
        app.end_live_reads()

    graceful_server(config, before_shutdown).run(sockets=[sock])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m durable_workflows.streams.serve``: the same server, with every option."""
    parser = argparse.ArgumentParser(description="Serve Durable Streams over HTTP.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4437)
    storage = parser.add_mutually_exclusive_group()
    storage.add_argument("--data", metavar="DIR", default=None, help="SQLite storage in DIR")
    storage.add_argument("--memory", action="store_true", help="in-memory storage (default)")
    parser.add_argument("--long-poll-timeout", type=float, default=30.0, metavar="SECONDS")
    parser.add_argument(
        "--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, metavar="BYTES"
    )
    from ..cli import add_access_options

    add_access_options(parser)
    args = parser.parse_args(argv)
    data_dir = None if args.memory else args.data
    return run_server(
        args.host,
        args.port,
        data_dir,
        args.long_poll_timeout,
        args.max_body_bytes,
        key_file=args.keys,
        insecure_no_auth=args.insecure_no_auth,
        cors_origins=args.cors_origin,
    )


if __name__ == "__main__":
    sys.exit(main())
