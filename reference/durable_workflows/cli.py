"""The ``dwf`` command line.

Each subcommand imports its implementation lazily, so ``dwf validate`` does not
pay for the server's imports and the other way round.

Client commands (``start``, ``submit``, ``cancel``, ``inspect``) take ``--url`` (a
namespace URL such as ``http://127.0.0.1:4437/v1/stream/workflows``, or a server
base, which means its ``workflows`` namespace), else ``$DWF_URL``; ``--json`` prints
a JSON document for scripts.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .core import Limits

from . import __version__


def _cmd_validate(args: argparse.Namespace) -> int:
    from .validate import run_validate

    return run_validate(args.files, as_json=args.json)


def add_access_options(parser: argparse.ArgumentParser) -> None:
    """``--keys``, ``--insecure-no-auth`` and ``--cors-origin``, shared by both servers."""
    parser.add_argument(
        "--keys",
        metavar="FILE",
        default=None,
        help="signing keys (JWKS) that credentials are checked with; created if missing "
        "(default: keys.json in the --data directory, or a new temporary file)",
    )
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="no authentication at all: anyone may write any stream (tests only; "
        "loopback addresses only)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a web origin (https://app.example) that browsers may call the server from; "
        "repeatable (default: none)",
    )


def _cmd_streams_serve(args: argparse.Namespace) -> int:
    from .streams.serve import run_server
    from .streams.server import DEFAULT_MAX_BODY_BYTES

    return run_server(
        host=args.host,
        port=args.port,
        data_dir=None if args.memory else args.data,
        long_poll_timeout=args.long_poll_timeout,
        max_body_bytes=args.max_body_bytes or DEFAULT_MAX_BODY_BYTES,
        key_file=args.keys,
        insecure_no_auth=args.insecure_no_auth,
        cors_origins=args.cors_origin,
    )


def _run_conformance(argv: Sequence[str]) -> int:
    """``dwf conformance ...`` hands its arguments to the suite's own runner."""
    try:
        from durable_workflows_conformance.cli import main as conformance_main
    except ImportError as exc:  # the suite's test dependencies are an extra
        print(
            f"dwf conformance needs the conformance extra ({exc.name} is missing): "
            "pip install 'durable-workflows[conformance]'",
            file=sys.stderr,
        )
        return 2
    return conformance_main(list(argv))


LIMIT_NAMES = (
    "submission_bytes",
    "submissions_per_run",
    "result_bytes",
    "history_messages",
    "rejections_per_run",
)


def _limit(text: str) -> tuple[str, int]:
    """One ``--limit NAME=N``: an engine limit of security.md (SEC-011)."""
    name, _, number = text.partition("=")
    if name not in LIMIT_NAMES or not number.isdigit() or int(number) < 1:
        raise argparse.ArgumentTypeError(
            f"expected NAME=N with NAME one of {', '.join(LIMIT_NAMES)} and N >= 1, got {text!r}"
        )
    return name, int(number)


def _limit_option(parser: argparse.ArgumentParser) -> None:
    from .engine.defaults import UNKNOWN_GRACE_SECONDS

    parser.add_argument(
        "--unknown-workflow-grace",
        type=float,
        default=UNKNOWN_GRACE_SECONDS,
        metavar="SECONDS",
        help="how long a new run of a workflow this worker lacks is left for a worker "
        "that has it, before this one fails it with UnknownWorkflow (MODEL-038; "
        f"default {UNKNOWN_GRACE_SECONDS:g}; 0: at once)",
    )
    parser.add_argument(
        "--limit",
        type=_limit,
        action="append",
        default=[],
        metavar="NAME=N",
        help="change an engine limit (SEC-011; repeatable): " + ", ".join(LIMIT_NAMES),
    )


def _limits(values: list[tuple[str, int]]) -> Limits | None:
    """The engine's limits with the ``--limit`` options applied, or None for the defaults."""
    if not values:
        return None
    from .core import Limits

    return Limits(**dict(values))


def _cmd_serve(args: argparse.Namespace) -> int:
    from .engine.app import run_serve

    harness = None
    if args.conformance:  # a test interface, mounted only when asked for (SEC-017)
        from .adapter import conformance_harness

        harness = conformance_harness
        # The suite proves replay: every activation replays the history, unless the
        # operator asks for kept runs (DWF_STICKY_RUNS=1000) to test that path instead.
        os.environ.setdefault("DWF_STICKY_RUNS", "0")

    return run_serve(
        host=args.host,
        port=args.port,
        data_dir=None if args.memory else args.data,
        workflows=args.workflows,
        namespace=args.namespace,
        worker=not args.no_worker,
        long_poll_timeout=args.long_poll_timeout,
        subscription=args.subscribe,
        harness=harness,
        limits=_limits(args.limit),
        key_file=args.keys,
        insecure_no_auth=args.insecure_no_auth,
        cors_origins=args.cors_origin,
        unknown_grace=args.unknown_workflow_grace,
        ui=args.ui,
    )


def _cmd_worker(args: argparse.Namespace) -> int:
    from .engine.worker import run_worker

    return run_worker(
        url=args.url,
        workflows=args.workflows,
        name=args.name,
        stats_every=args.stats_every,
        wake=args.wake,
        limits=_limits(args.limit),
        token=args.token,
        keys=args.keys,
        unknown_grace=args.unknown_workflow_grace,
    )


def _cmd_start(args: argparse.Namespace) -> int:
    from .engine import commands as c

    return c.run_command(
        lambda: c.start(
            args.workflow,
            c.parse_json(args.input, "--input"),
            run_id=args.run_id,
            url=args.url,
            as_json=args.json,
            wait=args.wait,
            auth=c.Auth(args.token, args.keys),
        )
    )


def _cmd_submit(args: argparse.Namespace) -> int:
    from .engine import commands as c

    return c.run_command(
        lambda: c.submit(
            args.run,
            args.request,
            c.parse_json(args.value, "--value"),
            submission_id=args.submission_id,
            url=args.url,
            as_json=args.json,
            wait=args.wait,
            auth=c.Auth(args.token, args.keys),
        )
    )


def _cmd_cancel(args: argparse.Namespace) -> int:
    from .engine import commands as c

    return c.run_command(
        lambda: c.cancel(
            args.run,
            reason=args.reason,
            cancel_id=args.cancel_id,
            url=args.url,
            as_json=args.json,
            wait=args.wait,
            auth=c.Auth(args.token, args.keys),
        )
    )


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .engine import commands as c

    return c.run_command(
        lambda: c.inspect(
            args.run, url=args.url, as_json=args.json, auth=c.Auth(args.token, args.keys)
        )
    )


def _cmd_runs(args: argparse.Namespace) -> int:
    from .engine import commands as c

    return c.run_command(
        lambda: c.runs(
            url=args.url, status=args.status, as_json=args.json, auth=c.Auth(args.token, args.keys)
        )
    )


def _cmd_replay(args: argparse.Namespace) -> int:
    from .engine.replay import run_replay

    return run_replay(args.history, args.workflow, as_json=args.json)


def _credential_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token",
        default=None,
        help="bearer credential for the stream server (default: $DWF_TOKEN)",
    )
    parser.add_argument(
        "--keys",
        default=None,
        metavar="FILE",
        help="without a token: mint an engine credential from this key file "
        "(default: $DWF_KEYS, else .dwf/keys.json when it exists)",
    )


def _client_options(parser: argparse.ArgumentParser, wait: bool = True) -> None:
    parser.add_argument(
        "--url", default=None, help="namespace URL or server base (default: $DWF_URL)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    _credential_options(parser)
    if wait:
        parser.add_argument(
            "--wait",
            type=float,
            default=0.0,
            metavar="SECONDS",
            help="wait up to SECONDS for the engine's decision in the history",
        )


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``dwf`` parser; given the ``command`` word about to be parsed, it leaves out the
    access commands' stack (JWT, cryptography, HTTP) when that command is not one of them."""
    parser = argparse.ArgumentParser(
        prog="dwf", description="Durable Workflows: runtime, stream server and tools."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser(
        "validate", help="validate JSON files of events against the protocol's schemas"
    )
    validate.add_argument(
        "files", nargs="+", metavar="FILE", help="JSON files: one message, an array, or JSON lines"
    )
    validate.add_argument("--json", action="store_true", help="print a JSON report")
    validate.set_defaults(handler=_cmd_validate)

    streams = commands.add_parser("streams", help="the embedded Durable Streams server")
    streams_commands = streams.add_subparsers(dest="streams_command", required=True)
    sserve = streams_commands.add_parser("serve", help="serve Durable Streams over HTTP")
    sserve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    sserve.add_argument(
        "--port", type=int, default=4437, help="port (default 4437; 0 picks a free one)"
    )
    storage = sserve.add_mutually_exclusive_group()
    storage.add_argument("--data", metavar="DIR", default=None, help="SQLite storage in DIR")
    storage.add_argument("--memory", action="store_true", help="in-memory storage (default)")
    sserve.add_argument(
        "--long-poll-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long a long-poll read waits for data",
    )
    sserve.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        metavar="BYTES",
        help="largest request body accepted, 413 above it (default 8 MiB)",
    )
    add_access_options(sserve)
    sserve.set_defaults(handler=_cmd_streams_serve)

    serve = commands.add_parser("serve", help="streams server, wake handler and worker on one port")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    serve.add_argument(
        "--port", type=int, default=4437, help="port (default 4437; 0 picks a free one)"
    )
    storage = serve.add_mutually_exclusive_group()
    storage.add_argument("--data", metavar="DIR", default=None, help="SQLite storage in DIR")
    storage.add_argument("--memory", action="store_true", help="in-memory storage (default)")
    serve.add_argument(
        "--workflows",
        nargs="*",
        metavar="MODULE",
        default=None,
        help="modules that define workflows (default: the bundled examples)",
    )
    serve.add_argument(
        "--namespace", default="workflows", help="namespace path (default: workflows)"
    )
    serve.add_argument("--no-worker", action="store_true", help="serve the handler only")
    serve.add_argument(
        "--long-poll-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long a long-poll read waits for data (default 30)",
    )
    serve.add_argument(
        "--subscribe",
        default=None,
        metavar="ID",
        help="wake the handler by a __ds/subscriptions webhook with this id",
    )
    serve.add_argument(
        "--conformance",
        action="store_true",
        help="also serve the conformance adapter (a test interface: never in production)",
    )
    serve.add_argument(
        "--ui",
        default=None,
        metavar="DIR",
        help="serve the web app built in DIR at / (with /ui/session.json: where the "
        "namespace is, the workflows and a client token; loopback addresses only)",
    )
    _limit_option(serve)
    add_access_options(serve)
    serve.set_defaults(handler=_cmd_serve)

    worker = commands.add_parser("worker", help="a long-running worker for a namespace")
    worker.add_argument("--url", default=None, help="namespace URL (default: $DWF_URL)")
    worker.add_argument(
        "--workflows",
        nargs="+",
        metavar="MODULE",
        required=True,
        help="modules (dotted names or .py files) that define workflows",
    )
    worker.add_argument(
        "--name", default="worker", help="readable worker name (Producer-Id prefix)"
    )
    worker.add_argument(
        "--stats-every",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="print a line of counts every SECONDS",
    )
    worker.add_argument(
        "--wake",
        choices=("auto", "subscription", "long-poll"),
        default="auto",
        help="how new runs and inbox messages are noticed: one pull-wake subscription "
        "shared by the pool, or a long-poll per inbox (auto: the subscription when the "
        "stream server offers it)",
    )
    _limit_option(worker)
    _credential_options(worker)
    worker.set_defaults(handler=_cmd_worker)

    start = commands.add_parser("start", help="request a run (append run-requested to the index)")
    start.add_argument("workflow", help="the name of the workflow to run")
    start.add_argument(
        "--input", default="null", metavar="JSON", help="the run's input, JSON (default null)"
    )
    start.add_argument(
        "--run-id", default=None, metavar="ID", help="the run id (default: a new random one)"
    )
    _client_options(start)
    start.set_defaults(handler=_cmd_start)

    submit = commands.add_parser("submit", help="answer an input request of a run")
    submit.add_argument("run", metavar="RUN", help="the run id")
    submit.add_argument("request", metavar="REQUEST", help="the name of the input request")
    submit.add_argument("--value", required=True, metavar="JSON", help="the answer, JSON")
    submit.add_argument(
        "--submission-id",
        default=None,
        metavar="ID",
        help="reuse it when retrying the same answer (default: a new random one)",
    )
    _client_options(submit)
    submit.set_defaults(handler=_cmd_submit)

    cancel = commands.add_parser("cancel", help="cancel a run")
    cancel.add_argument("run", metavar="RUN", help="the run id")
    cancel.add_argument("--reason", default=None, help="a short text for people")
    cancel.add_argument(
        "--cancel-id",
        default=None,
        metavar="ID",
        help="reuse it when retrying the same cancel (default: a new random one)",
    )
    _client_options(cancel)
    cancel.set_defaults(handler=_cmd_cancel)

    inspect = commands.add_parser("inspect", help="show a run's timeline and what it waits for")
    inspect.add_argument("run", metavar="RUN", help="the run id")
    _client_options(inspect, wait=False)
    inspect.set_defaults(handler=_cmd_inspect)

    runs = commands.add_parser(
        "runs", help="list the runs of the namespace and what each waits for (run-status stream)"
    )
    runs.add_argument(
        "--status",
        choices=["running", "sleeping", "waiting", "completed", "failed", "cancelled"],
        default=None,
        help="only runs with this status (for example waiting: the task list)",
    )
    _client_options(runs, wait=False)
    runs.set_defaults(handler=_cmd_runs)

    replay = commands.add_parser(
        "replay", help="replay a saved history against workflow code (non-determinism check)"
    )
    replay.add_argument(
        "history", metavar="HISTORY", help="a saved history: a JSON array of messages"
    )
    replay.add_argument(
        "--workflow",
        required=True,
        metavar="MODULE:FUNCTION",
        help="the workflow function to replay it against",
    )
    replay.add_argument("--json", action="store_true", help="print a JSON report")
    replay.set_defaults(handler=_cmd_replay)

    # Loading the access commands costs a cold ``dwf replay`` more than its replay; a
    # command defined above parses without them (its help and errors name only itself).
    if command not in commands.choices:
        from .access.commands import add_commands

        add_commands(commands)

    # Listed for --help only: main() hands everything after the word to the suite's runner.
    commands.add_parser(
        "conformance",
        help="run the conformance suite against an engine (see dwf conformance --help)",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["conformance"]:
        return _run_conformance(arguments[1:])
    args = build_parser(arguments[0] if arguments else None).parse_args(arguments)
    handler = args.handler
    try:
        result: int = handler(args)
    except KeyboardInterrupt:
        # Ctrl-C: servers have shut down gracefully by now; 130 is the shell's
        # status for a command ended by SIGINT.
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
