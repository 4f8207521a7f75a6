"""The ``dwf`` command line.

Each subcommand imports its implementation lazily, so ``dwf validate`` does not
pay for the server's imports and the other way round.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__


def _cmd_validate(args: argparse.Namespace) -> int:
    from .validate import run_validate

    return run_validate(args.files, as_json=args.json)


def _cmd_streams_serve(args: argparse.Namespace) -> int:
    from .streams.serve import run_server

    return run_server(
        host=args.host,
        port=args.port,
        data_dir=None if args.memory else args.data,
        long_poll_timeout=args.long_poll_timeout,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dwf", description="Durable Workflows: runtime, stream server and tools."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser(
        "validate", help="validate JSON files of events against the protocol's schemas"
    )
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument("--json", action="store_true", help="print a JSON report")
    validate.set_defaults(handler=_cmd_validate)

    streams = commands.add_parser("streams", help="the embedded Durable Streams server")
    streams_commands = streams.add_subparsers(dest="streams_command", required=True)
    serve = streams_commands.add_parser("serve", help="serve Durable Streams over HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=4437)
    storage = serve.add_mutually_exclusive_group()
    storage.add_argument("--data", metavar="DIR", default=None, help="SQLite storage in DIR")
    storage.add_argument("--memory", action="store_true", help="in-memory storage (default)")
    serve.add_argument(
        "--long-poll-timeout", type=float, default=30.0, metavar="SECONDS",
        help="how long a long-poll read waits for data",
    )
    serve.set_defaults(handler=_cmd_streams_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
