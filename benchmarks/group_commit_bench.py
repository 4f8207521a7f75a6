"""Appends/s of our SQLite stream server against a baseline checkout of it (group commit).

    python benchmarks/group_commit_bench.py --baseline DIR --out group-commit.json

``DIR`` is another checkout's ``reference`` directory (for instance ``git archive main
reference | tar -x -C /tmp/base`` gives ``/tmp/base/reference``). Both servers run
``dwf streams serve --data`` on this machine in this run, on free 127.0.0.1 ports,
and are measured in turn (the order rotates every round):

- ``sequential_httpx``: one writer over an httpx client, one JSON message per POST,
  each waiting for its answer (as the unbatched figure of ``streams_bench.py``);
- ``writers_N_one_stream`` and ``writers_N_streams``: ``N`` writers (``--writers``)
  on their own connections, each appending one message per POST and waiting for the
  answer before the next, to one shared stream and to one stream each. ``N = 1`` is
  again a sequential writer, with a lighter client: group commit must not slow it;
  with more writers it shares commits between their requests.

The report gives every round, the medians and the ratio ours / baseline (above 1 is
faster). A benchmark, not a test: nothing passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the server harness lives in tests/support
    sys.path.insert(0, str(ROOT))

from tests.support.embedded_server import embedded_server  # noqa: E402

JSON = {"content-type": "application/json"}
BODY = json.dumps({"type": "step", "key": "k", "value": {"result": "x" * 120}}).encode()


def _create(client: httpx.Client, base: str) -> str:
    url = f"{base}/bench/{uuid.uuid4().hex}"
    client.put(url, headers=JSON).raise_for_status()
    return url


def sequential(base: str, appends: int) -> float:
    with httpx.Client(timeout=60) as client:
        url = _create(client, base)
        start = time.perf_counter()
        for _ in range(appends):
            client.post(url, headers=JSON, content=BODY).raise_for_status()
        elapsed = time.perf_counter() - start
        client.delete(url)
    return appends / elapsed


async def _post_loop(url: str, appends: int) -> None:
    """``appends`` POSTs of BODY on one keep-alive connection, each awaiting its answer.

    A bare HTTP/1.1 exchange over asyncio streams: an httpx pool with dozens of
    concurrent requests costs more CPU than the server, on a machine they share.
    """
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    try:
        for _ in range(appends):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            if status != 204:
                raise RuntimeError(f"append answered {status}: {head!r}")
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            if length:
                await reader.readexactly(int(length.group(1)))
    finally:
        writer.close()
        await writer.wait_closed()


def concurrent(base: str, writers: int, appends: int, shared: bool) -> float:
    """Appends/s of ``writers`` writers, ``appends`` each, each on its own connection."""
    with httpx.Client(timeout=60) as setup:
        urls = (
            [_create(setup, base)] * writers
            if shared
            else [_create(setup, base) for _ in range(writers)]
        )

        async def run() -> float:
            start = time.perf_counter()
            await asyncio.gather(*(_post_loop(url, appends) for url in urls))
            return writers * appends / (time.perf_counter() - start)

        rate = asyncio.run(run())
        for url in set(urls):
            setup.delete(url)
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="another checkout's reference dir")
    parser.add_argument(
        "--baseline-label", default="baseline", help="what the baseline is (for the report)"
    )
    parser.add_argument("--out", required=True, help="write the JSON report here")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--appends", type=int, default=500, help="appends per round of a sequential writer"
    )
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--per-writer", type=int, default=50, help="appends per writer")
    args = parser.parse_args(argv)

    metrics = ["sequential_httpx"] + [
        f"writers_{w}_{where}"
        for w in args.writers
        for where in (("one_stream",) if w == 1 else ("one_stream", "streams"))
    ]
    with tempfile.TemporaryDirectory(prefix="group-commit-bench-") as tmp, ExitStack() as stack:
        factories: dict[str, Callable[[], AbstractContextManager[Any]]] = {
            "baseline": lambda: embedded_server(
                data_dir=Path(tmp) / "baseline", source=args.baseline
            ),
            "ours": lambda: embedded_server(data_dir=Path(tmp) / "ours"),
        }
        bases = {name: stack.enter_context(make()).stream_base for name, make in factories.items()}
        for base in bases.values():  # warm up
            sequential(base, 50)
            concurrent(base, 4, 10, shared=True)
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in bases}
        names = list(bases)
        for round_no in range(args.rounds):
            order = names[round_no % 2 :] + names[: round_no % 2]
            row: dict[str, dict[str, float]] = {name: {} for name in names}
            for metric in metrics:
                for name in order:
                    base = bases[name]
                    if metric == "sequential_httpx":
                        value = sequential(base, args.appends)
                    else:
                        _, count, where, *_ = metric.split("_")
                        writers = int(count)
                        each = args.appends if writers == 1 else args.per_writer
                        value = concurrent(base, writers, each, shared=where == "one")
                    row[name][metric] = value
            for name in names:
                rounds[name].append(row[name])
                print(f"round {round_no + 1} {name}: {row[name]}", file=sys.stderr, flush=True)

    medians = {
        name: {m: statistics.median(r[m] for r in rs) for m in metrics}
        for name, rs in rounds.items()
    }
    given = list(sys.argv[1:] if argv is None else argv)
    given = ["DIR" if arg == args.baseline else arg for arg in given]  # no machine paths
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    report = {
        "command": "python benchmarks/group_commit_bench.py " + " ".join(given),
        "date": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "ours": commit,
        "baseline": args.baseline_label,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_after": os.getloadavg(),
        "rounds": rounds,
        "median": medians,
        "ratio": {m: medians["ours"][m] / medians["baseline"][m] for m in metrics},
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("| appends/s, median | baseline | ours | ours / baseline |")
    print("| --- | ---: | ---: | ---: |")
    for m in metrics:
        b, o = medians["baseline"][m], medians["ours"][m]
        print(f"| {m} | {b:,.0f} | {o:,.0f} | {o / b:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
